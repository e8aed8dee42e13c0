"""Hebbian Forward-Forward (HebbFF) eligibility and update (HebbFF paper, Eq. 1-4).

For one fully connected layer with ReLU activations ``a = relu(W x̂ + b)``, where ``x̂`` is the layer's
normalised input (in :class:`~ghl_snn.models.mlp.ForwardForwardMLP`: the L2-normalised previous activity with the
scaled one-hot label appended), and a mini-batch of positive samples (true label) and negative samples (random
wrong label)::

    g       = (1/n) Σ_k a_k²                                         (Eq. 1, n = units of the layer)
    w_pos   = σ(θ − g_pos),    w_neg = σ(g_neg − θ)                  (Eq. 2, the goodness gates)
    E_W     = Σ_{i∈pos} w_pos,i a_i x̂_iᵀ − Σ_{j∈neg} w_neg,j a_j x̂_jᵀ    (Eq. 3 without η)
    E_b     = Σ_{i∈pos} w_pos,i a_i      − Σ_{j∈neg} w_neg,j a_j         (Eq. 4 without η)
    W ← (1 − η λ) W + η E_W,   b ← (1 − η λ) b + η E_b                (λ: optional weight decay)

Sign convention as in :mod:`ghl_snn.rules.base`: ``E`` is what a Hebbian learner *adds* to the weight.

**Equivalence with Forward-Forward.**  The FF softplus loss of the layer (Hinton 2022, with the paper's mean
goodness) is ``L = Σ_pos softplus(θ − g_pos) + Σ_neg softplus(g_neg − θ)``.  Since ``softplus' = σ``,
``∂g/∂W = (2/n) (a ⊙ relu'(z)) x̂ᵀ`` and ``a ⊙ relu'(z) = a`` for ReLU, with ``x̂`` treated as a constant (FF
detaches every layer's input)::

    −∇_W L = (2/n) E_W,   −∇_b L = (2/n) E_b,     i.e.  E = (n/2) · (−∇ L)

exactly, for every batch (with ``reduction="mean"`` on both sides the same constant holds).  A HebbFF step with
learning rate η is therefore an SGD step on the FF loss with learning rate ``η n/2`` for that layer; HebbFF simply
never builds the autograd graph.  ``tests/test_hebbff_equivalence.py`` checks this against autograd.

The update is one rank-``(B_pos + B_neg)`` matrix product per layer; :class:`HebbFF` applies it in place with
``addmm_`` so no ``E`` tensor is materialised.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["sum", "mean"]
LayerTrace = tuple[Tensor, Tensor]  # (normalised layer input x̂ (B, in), ReLU activation a (B, out))

#: a gate is "saturated" when min(w, 1 - w) is below this; it corresponds to |θ - g| > ~6.9
DEFAULT_SATURATION_TOL = 1e-3


class HebbFFEligibility(NamedTuple):
    """Result of :func:`hebbff_eligibility`: ``weight`` (out, in) and ``bias`` (out,) eligibilities, the gates
    ``w_pos`` / ``w_neg`` (Eq. 2) and goodness values ``g_pos`` / ``g_neg`` (Eq. 1) per sample."""

    weight: Tensor
    bias: Tensor
    gate_pos: Tensor
    gate_neg: Tensor
    goodness_pos: Tensor
    goodness_neg: Tensor


def goodness(a: Tensor) -> Tensor:
    """Per-sample goodness ``g = (1/n) Σ_k a_k²`` (Eq. 1) of activations ``a`` (B, n) -> (B,)."""
    if a.dim() != 2:
        raise ValueError(f"goodness needs activations shaped (batch, units), got {tuple(a.shape)}")
    return a.pow(2).mean(dim=1)


def hebbff_gates(goodness_pos: Tensor, goodness_neg: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    """Goodness gates ``w_pos = σ(θ − g_pos)``, ``w_neg = σ(g_neg − θ)`` (Eq. 2)."""
    return torch.sigmoid(theta - goodness_pos), torch.sigmoid(goodness_neg - theta)


def _check_reduction(reduction: str) -> Reduction:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' (Eq. 3 as written) or 'mean', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _check_theta(theta: float) -> float:
    value = float(theta)
    if not math.isfinite(value):
        raise ValueError(f"goodness threshold theta must be finite, got {theta!r}")
    return value


def _check_pair(x: Tensor, a: Tensor, which: str) -> None:
    if x.dim() != 2 or a.dim() != 2:
        raise ValueError(f"HebbFF {which} samples need x̂ (batch, in) and a (batch, out), got {tuple(x.shape)} "
                         f"and {tuple(a.shape)}")
    if x.shape[0] != a.shape[0]:
        raise ValueError(f"HebbFF {which} samples: x̂ has {x.shape[0]} rows but a has {a.shape[0]}")


def _check_traces(x_pos: Tensor, a_pos: Tensor, x_neg: Tensor, a_neg: Tensor) -> None:
    _check_pair(x_pos, a_pos, "positive")
    _check_pair(x_neg, a_neg, "negative")
    if x_pos.shape[1] != x_neg.shape[1] or a_pos.shape[1] != a_neg.shape[1]:
        raise ValueError(f"positive (in={x_pos.shape[1]}, out={a_pos.shape[1]}) and negative "
                         f"(in={x_neg.shape[1]}, out={a_neg.shape[1]}) samples have different layer sizes")


def _coefficients(a_pos: Tensor, a_neg: Tensor, theta: float, reduction: Reduction
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-sample post-synaptic factors ``+w_pos a`` and ``−w_neg a`` (already divided by the count for "mean")."""
    g_pos, g_neg = goodness(a_pos), goodness(a_neg)
    w_pos, w_neg = hebbff_gates(g_pos, g_neg, theta)
    c_pos, c_neg = w_pos[:, None] * a_pos, -w_neg[:, None] * a_neg
    if reduction == "mean":
        c_pos, c_neg = c_pos / a_pos.shape[0], c_neg / a_neg.shape[0]
    return c_pos, c_neg, w_pos, w_neg, g_pos, g_neg


def hebbff_eligibility(x_pos: Tensor, a_pos: Tensor, x_neg: Tensor, a_neg: Tensor, theta: float,
                       reduction: Reduction = "sum") -> HebbFFEligibility:
    """HebbFF eligibility of one layer (Eq. 1-4 without the learning rate).

    ``x_pos`` (B+, in) / ``x_neg`` (B-, in): normalised layer inputs; ``a_pos`` (B+, out) / ``a_neg`` (B-, out):
    their ReLU activations.  Returns ``E_W = Σ_pos w_pos a x̂ᵀ − Σ_neg w_neg a x̂ᵀ`` (out, in) and
    ``E_b = Σ_pos w_pos a − Σ_neg w_neg a`` (out,), plus gates and goodness.  ``reduction="mean"`` divides the
    positive and negative sums by their batch sizes.  Equals ``(n/2) · (−∇ ff_softplus_loss)`` (module docstring).
    """
    theta = _check_theta(theta)
    reduction = _check_reduction(reduction)
    _check_traces(x_pos, a_pos, x_neg, a_neg)
    c_pos, c_neg, w_pos, w_neg, g_pos, g_neg = _coefficients(a_pos, a_neg, theta, reduction)
    weight = c_pos.t() @ x_pos + c_neg.t() @ x_neg
    bias = c_pos.sum(dim=0) + c_neg.sum(dim=0)
    return HebbFFEligibility(weight, bias, w_pos, w_neg, g_pos, g_neg)


def ff_softplus_loss(a_pos: Tensor, a_neg: Tensor, theta: float, reduction: Reduction = "sum") -> Tensor:
    """Forward-Forward layer loss ``Σ_pos softplus(θ − g_pos) + Σ_neg softplus(g_neg − θ)`` (g from Eq. 1).

    ``reduction="mean"`` averages the positive and the negative terms over their batches.  Its negative gradient
    is ``(2/n)`` times the HebbFF eligibility (module docstring).
    """
    theta = _check_theta(theta)
    reduction = _check_reduction(reduction)
    pos, neg = F.softplus(theta - goodness(a_pos)), F.softplus(goodness(a_neg) - theta)
    if reduction == "mean":
        return pos.mean() + neg.mean()
    return pos.sum() + neg.sum()


def gates_saturated(goodness_pos: Tensor, goodness_neg: Tensor, theta: float,
                    tol: float = DEFAULT_SATURATION_TOL) -> bool:
    """True when every gate of Eq. 2 is within ``tol`` of 0 or 1 (θ far from all goodness values)."""
    gates = torch.cat(hebbff_gates(goodness_pos.detach(), goodness_neg.detach(), theta))
    return bool((torch.minimum(gates, 1 - gates) < tol).all())


def saturation_message(layer: int, theta: float, goodness_pos: float, goodness_neg: float) -> str:
    return (f"every goodness gate of layer {layer} is saturated (theta={theta:g}, mean goodness "
            f"pos={goodness_pos:.3g}, neg={goodness_neg:.3g}); the gates carry no information -- choose theta near "
            "the typical goodness")


def random_wrong_labels(labels: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random labels that are never the true one: ``(y + U{1, …, C−1}) mod C``."""
    if num_classes < 2:
        raise ValueError(f"negative labels need at least 2 classes, got num_classes={num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    offset = torch.randint(1, num_classes, labels.shape, generator=generator, device=labels.device)
    return (labels + offset) % num_classes


class HebbFFLayerStats(NamedTuple):
    """Batch means of one layer's goodness and gates after a :meth:`HebbFF.step` (0-d tensors, no sync)."""

    goodness_pos: Tensor
    goodness_neg: Tensor
    gate_pos: Tensor
    gate_neg: Tensor


class HebbFF:
    """Gradient-free HebbFF learner for a stack of ``nn.Linear`` layers, used like a ``torch.optim`` optimiser.

    ``layers``: the layers in forward order, or a module whose ``nn.Linear`` submodules (registration order) are
    taken.  Usage::

        rule = HebbFF(model.layers, lr=0.03, theta=0.01)
        with torch.no_grad():
            rule.step(model.trace(x, y), model.trace(x, random_wrong_labels(y, 10)))

    ``step(positive, negative)`` takes, for every layer in order, the pair ``(x̂, a)`` (normalised input, ReLU
    activation) of the positive and of the negative pass -- computed with the *current* weights, e.g. by
    :meth:`~ghl_snn.models.mlp.ForwardForwardMLP.trace` -- and updates all layers in the same call (the paper's
    concurrent variant)::

        W ← (1 − η λ) W + η E_W,  b ← (1 − η λ) b + η E_b       (Eq. 3-4, see :func:`hebbff_eligibility`)

    in place under ``torch.no_grad()``: no autograd graph, no ``.grad``.  ``state_dict()`` holds ``lr``,
    ``theta``, ``weight_decay``, ``reduction`` and the step counter.  A non-finite goodness raises
    ``FloatingPointError``; when every gate of a layer is saturated (``min(w, 1 − w) < saturation_tol``) a
    ``RuntimeWarning`` is emitted once, since θ is then far from every goodness value and the gating is inert.
    """

    def __init__(self, layers: Iterable[nn.Linear] | nn.Module, lr: float, theta: float,
                 weight_decay: float = 0.0, reduction: Reduction = "sum",
                 saturation_tol: float = DEFAULT_SATURATION_TOL) -> None:
        if isinstance(layers, nn.Module) and not isinstance(layers, nn.ModuleList):
            layers = [m for m in layers.modules() if isinstance(m, nn.Linear)]
        self.layers: list[nn.Linear] = list(layers)
        if not self.layers:
            raise ValueError("HebbFF needs at least one nn.Linear layer")
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"HebbFF layer {index} is {type(layer).__name__}; only nn.Linear is supported")
        if not float(lr) > 0:
            raise ValueError(f"learning rate must be > 0, got {lr!r}")
        if not float(weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = float(lr)
        self.theta = _check_theta(theta)
        self.weight_decay = float(weight_decay)
        self.reduction = _check_reduction(reduction)
        self.saturation_tol = float(saturation_tol)
        self.steps = 0
        self._warned_saturation = False

    @torch.no_grad()
    def step(self, positive: Sequence[LayerTrace], negative: Sequence[LayerTrace]) -> list[HebbFFLayerStats]:
        """Apply Eq. 3-4 to every layer from its positive and negative ``(x̂, a)``; returns per-layer stats."""
        if len(positive) != len(self.layers) or len(negative) != len(self.layers):
            raise ValueError(f"HebbFF.step needs one (x̂, a) pair per layer ({len(self.layers)}), got "
                             f"{len(positive)} positive and {len(negative)} negative")
        stats, checks = [], []
        for index, (layer, (x_pos, a_pos), (x_neg, a_neg)) in enumerate(zip(self.layers, positive, negative)):
            _check_traces(x_pos, a_pos, x_neg, a_neg)
            if x_pos.shape[1] != layer.in_features or a_pos.shape[1] != layer.out_features:
                raise ValueError(f"HebbFF layer {index} is {layer.in_features}->{layer.out_features} but got "
                                 f"x̂ {tuple(x_pos.shape)} and a {tuple(a_pos.shape)}")
            c_pos, c_neg, w_pos, w_neg, g_pos, g_neg = _coefficients(a_pos, a_neg, self.theta, self.reduction)
            decay = 1.0 - self.lr * self.weight_decay
            # One GEMM for both signs: E_W = [c_pos; c_neg]ᵀ [x̂_pos; x̂_neg], added in place (no E tensor).
            coef = torch.cat([c_pos, c_neg]).to(layer.weight.dtype)
            inputs = torch.cat([x_pos, x_neg]).to(layer.weight.dtype)
            layer.weight.addmm_(coef.t(), inputs, beta=decay, alpha=self.lr)
            if layer.bias is not None:
                layer.bias.mul_(decay).add_(coef.sum(dim=0), alpha=self.lr)
            gates = torch.cat([w_pos, w_neg])
            checks.append(torch.stack([torch.isfinite(torch.cat([g_pos, g_neg])).all().float(),
                                       (torch.minimum(gates, 1 - gates) < self.saturation_tol).all().float()]))
            stats.append(HebbFFLayerStats(g_pos.mean(), g_neg.mean(), w_pos.mean(), w_neg.mean()))
        self.steps += 1
        self._check(torch.stack(checks).cpu(), stats)
        return stats

    def _check(self, checks: Tensor, stats: list[HebbFFLayerStats]) -> None:
        for index, (finite, saturated) in enumerate(checks.tolist()):
            if not finite:
                raise FloatingPointError(f"HebbFF: goodness of layer {index} became non-finite at step "
                                         f"{self.steps} (lr={self.lr:g} too large?)")
            if saturated and not self._warned_saturation:
                self._warned_saturation = True
                message = saturation_message(index, self.theta, float(stats[index].goodness_pos),
                                             float(stats[index].goodness_neg))
                warnings.warn("HebbFF: " + message, RuntimeWarning, stacklevel=4)

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "theta": self.theta, "weight_decay": self.weight_decay,
                "reduction": self.reduction, "saturation_tol": self.saturation_tol, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.theta = _check_theta(state["theta"])
        self.weight_decay = float(state["weight_decay"])
        self.reduction = _check_reduction(state["reduction"])
        self.saturation_tol = float(state.get("saturation_tol", DEFAULT_SATURATION_TOL))
        self.steps = int(state["steps"])

    def __repr__(self) -> str:
        return (f"HebbFF(layers={len(self.layers)}, lr={self.lr:g}, theta={self.theta:g}, "
                f"weight_decay={self.weight_decay:g}, reduction={self.reduction!r})")
