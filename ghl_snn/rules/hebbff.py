"""Hebbian Forward-Forward (HebbFF) eligibility (HebbFF paper, Eq. 1-4): the pure kernel.

For one fully connected layer with post-synaptic activity ``a`` (rate form: ``a = relu(W x̂ + b)``; spiking form:
the observed spike rates) and normalised pre-synaptic input ``x̂`` (in [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP]:
the normalised previous activity with the scaled one-hot label appended), and a mini-batch of positive samples
(true label) and negative samples (random wrong label)::

    g       = (1/n) Σ_k a_k²                                         (Eq. 1, n = units of the layer)
    w_pos   = σ(θ − g_pos),    w_neg = σ(g_neg − θ)                  (Eq. 2, the goodness gates)
    E_W     = Σ_{i∈pos} w_pos,i a_i x̂_iᵀ − Σ_{j∈neg} w_neg,j a_j x̂_jᵀ    (Eq. 3 without η)
    E_b     = Σ_{i∈pos} w_pos,i a_i      − Σ_{j∈neg} w_neg,j a_j         (Eq. 4 without η)

Sign convention as in [`ghl_snn.rules.base`][]: ``E`` is what a Hebbian learner *adds* to the weight.

**Three factors.**  Write the phase of a sample as ``s = +1`` (positive) or ``s = −1`` (negative).  Eq. 2-3 are then
one formula, ``E = Σ_n s_n · σ(s_n (θ − g_n)) · a_n x̂_nᵀ``: a two-factor Hebbian product ``a x̂ᵀ`` (≥ 0 for ReLU /
spike-rate activity and non-negative inputs), gated by the layer's own goodness (post-synaptic, local), times the
phase ``s`` -- the broadcast third factor, one sign per sample for the whole network.  [`hebbff_coefficients`][]
computes the per-sample post-synaptic factor ``s σ(s (θ − g)) a`` that every form shares;
[`HebbFFRule`][] packages it as an [`EligibilityRule`][ghl_snn.EligibilityRule].

**Equivalence with Forward-Forward.**  The FF softplus loss of the layer (Hinton 2022, with the paper's mean
goodness) is ``L = Σ_pos softplus(θ − g_pos) + Σ_neg softplus(g_neg − θ)``.  Since ``softplus' = σ``,
``∂g/∂W = (2/n) (a ⊙ relu'(z)) x̂ᵀ`` and ``a ⊙ relu'(z) = a`` for ReLU, with ``x̂`` treated as a constant (FF
detaches every layer's input)::

    −∇_W L = (2/n) E_W,   −∇_b L = (2/n) E_b,     i.e.  E = (n/2) · (−∇ L)

exactly, for every batch (with ``reduction="mean"`` on both sides the same constant holds).  A HebbFF step with
learning rate η is therefore an SGD step on the FF loss with learning rate ``η n/2`` for that layer; HebbFF simply
never builds the autograd graph.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import EligibilityRule, Normalization, check_normalization

Reduction = Literal["sum", "mean"]
"""How the HebbFF update combines a batch: ``"sum"`` over samples (HebbFF Eq. 3 as written) or ``"mean"`` (the sum
divided by the phase's batch size)."""
LayerTrace = tuple[Tensor, Tensor]  # (normalised layer input x̂ (B, in), post-synaptic activity a (B, out))

#: a gate is "saturated" when min(w, 1 - w) is below this; it corresponds to |θ - g| > ~6.9
DEFAULT_SATURATION_TOL = 1e-3

POSITIVE, NEGATIVE = 1, -1


class HebbFFEligibility(NamedTuple):
    """Result of [`hebbff_eligibility`][]: ``weight`` (out, in) and ``bias`` (out,) eligibilities, the gates
    ``w_pos`` / ``w_neg`` (Eq. 2) and goodness values ``g_pos`` / ``g_neg`` (Eq. 1) per sample."""

    weight: Tensor
    bias: Tensor
    gate_pos: Tensor
    gate_neg: Tensor
    goodness_pos: Tensor
    goodness_neg: Tensor


class HebbFFCoefficients(NamedTuple):
    """Per-sample post-synaptic factor ``c = s σ(s (θ − g)) a`` (B, out) of one phase, its gate and goodness (B,)."""

    post: Tensor
    gate: Tensor
    goodness: Tensor


def goodness(a: Tensor) -> Tensor:
    """Per-sample goodness ``g = (1/n) Σ_k a_k²`` (Eq. 1) of activations ``a`` (B, n) -> (B,)."""
    if a.dim() != 2:
        raise ValueError(f"goodness needs activations shaped (batch, units), got {tuple(a.shape)}")
    return a.pow(2).mean(dim=1)


def hebbff_gates(goodness_pos: Tensor, goodness_neg: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    """Goodness gates ``w_pos = σ(θ − g_pos)``, ``w_neg = σ(g_neg − θ)`` (Eq. 2)."""
    return torch.sigmoid(theta - goodness_pos), torch.sigmoid(goodness_neg - theta)


def check_reduction(reduction: str) -> Reduction:
    """Validate ``reduction`` ("sum": Eq. 3 as written; "mean": sums divided by the phase's batch size)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' (Eq. 3 as written) or 'mean', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def check_theta(theta: float) -> float:
    """Return the goodness threshold θ as a float, raising ``ValueError`` unless it is finite."""
    value = float(theta)
    if not math.isfinite(value):
        raise ValueError(f"goodness threshold theta must be finite, got {theta!r}")
    return value


def check_phase(phase: int) -> int:
    """Validate a phase: ``+1`` (positive samples) or ``-1`` (negative samples)."""
    if phase not in (POSITIVE, NEGATIVE):
        raise ValueError(f"HebbFF phase must be +1 (positive samples) or -1 (negative samples), got {phase!r}")
    return int(phase)


def check_pair(x: Tensor, a: Tensor, which: str) -> None:
    """Raise ``ValueError`` unless ``x`` (B, in) and ``a`` (B, out) are 2-d with the same number of rows."""
    if x.dim() != 2 or a.dim() != 2:
        raise ValueError(f"HebbFF {which} samples need x̂ (batch, in) and a (batch, out), got {tuple(x.shape)} "
                         f"and {tuple(a.shape)}")
    if x.shape[0] != a.shape[0]:
        raise ValueError(f"HebbFF {which} samples: x̂ has {x.shape[0]} rows but a has {a.shape[0]}")


def check_traces(x_pos: Tensor, a_pos: Tensor, x_neg: Tensor, a_neg: Tensor) -> None:
    """Validate a positive and a negative ``(x̂, a)`` pair of one layer."""
    check_pair(x_pos, a_pos, "positive")
    check_pair(x_neg, a_neg, "negative")
    if x_pos.shape[1] != x_neg.shape[1] or a_pos.shape[1] != a_neg.shape[1]:
        raise ValueError(f"positive (in={x_pos.shape[1]}, out={a_pos.shape[1]}) and negative "
                         f"(in={x_neg.shape[1]}, out={a_neg.shape[1]}) samples have different layer sizes")


def hebbff_coefficients(a: Tensor, theta: float, phase: int | Tensor, reduction: Reduction = "sum"
                        ) -> HebbFFCoefficients:
    """Post-synaptic factor ``c_n = s_n σ(s_n (θ − g_n)) a_n`` (Eq. 1-2; ``s`` = ``phase``).

    ``phase`` is ``+1`` (all samples positive: ``c = w_pos a``), ``−1`` (negative: ``c = −w_neg a``) or a tensor of
    ±1, one per sample (positive and negative samples stacked in one batch).  With ``reduction="mean"`` each
    phase's ``c`` is divided by its number of samples.  The eligibility is ``cᵀ x̂`` (weight) and ``Σ_n c_n``
    (bias).
    """
    g = goodness(a)
    if isinstance(phase, Tensor):
        sign = phase.to(a.dtype)
        gate = torch.sigmoid(sign * (theta - g))
        factor = sign * gate
        if reduction == "mean":
            positives = (sign > 0).sum().clamp_min(1)
            negatives = (sign < 0).sum().clamp_min(1)
            factor = factor / torch.where(sign > 0, positives, negatives).to(a.dtype)
    else:
        gate = torch.sigmoid(phase * (theta - g))
        factor = gate if phase > 0 else -gate
        if reduction == "mean":
            factor = factor / max(a.shape[0], 1)
    return HebbFFCoefficients(factor[:, None] * a, gate, g)


def hebbff_eligibility(x_pos: Tensor, a_pos: Tensor, x_neg: Tensor, a_neg: Tensor, theta: float,
                       reduction: Reduction = "sum") -> HebbFFEligibility:
    """HebbFF eligibility of one layer (Eq. 1-4 without the learning rate).

    ``x_pos`` (B+, in) / ``x_neg`` (B-, in): normalised layer inputs; ``a_pos`` (B+, out) / ``a_neg`` (B-, out):
    their ReLU activations.  Returns ``E_W = Σ_pos w_pos a x̂ᵀ − Σ_neg w_neg a x̂ᵀ`` (out, in) and
    ``E_b = Σ_pos w_pos a − Σ_neg w_neg a`` (out,), plus gates and goodness.  ``reduction="mean"`` divides the
    positive and negative sums by their batch sizes.  Equals ``(n/2) · (−∇ ff_softplus_loss)`` (module docstring).
    """
    theta = check_theta(theta)
    reduction = check_reduction(reduction)
    check_traces(x_pos, a_pos, x_neg, a_neg)
    pos = hebbff_coefficients(a_pos, theta, POSITIVE, reduction)
    neg = hebbff_coefficients(a_neg, theta, NEGATIVE, reduction)
    weight = pos.post.t() @ x_pos + neg.post.t() @ x_neg
    bias = pos.post.sum(dim=0) + neg.post.sum(dim=0)
    return HebbFFEligibility(weight, bias, pos.gate, neg.gate, pos.goodness, neg.goodness)


def ff_softplus_loss(a_pos: Tensor, a_neg: Tensor, theta: float, reduction: Reduction = "sum") -> Tensor:
    """Forward-Forward layer loss ``Σ_pos softplus(θ − g_pos) + Σ_neg softplus(g_neg − θ)`` (g from Eq. 1).

    ``reduction="mean"`` averages the positive and the negative terms over their batches.  Its negative gradient
    is ``(2/n)`` times the HebbFF eligibility (module docstring).
    """
    theta = check_theta(theta)
    reduction = check_reduction(reduction)
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
    """The warning text for a layer whose gates are all saturated."""
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
    offset = torch.randint(1, num_classes, labels.shape, generator=generator,
                           device=generator.device if generator is not None else "cpu").to(labels.device)
    return (labels + offset) % num_classes


class HebbFFRule(EligibilityRule):
    """HebbFF as an eligibility rule (Eq. 1-3): ``E = mean_n s σ(s (θ − g_n)) a_n x̂_nᵀ`` for the current phase ``s``.

    ``a = activation(y + b)`` (default ReLU) is the layer's post-synaptic activity, ``x̂`` its input, ``θ`` the
    goodness threshold; the phase ``s`` (``+1`` positive, ``−1`` negative samples) is the broadcast third factor,
    set for the forwards that follow with [`phase`][]::

        rule = HebbFFRule(theta=2.0)
        ghl = GHL(model, rule=rule, layers=list_of_linear_names, modulator=Ones())  # .grad = −E
        with rule.phase(+1): model(x, labels)
        with rule.phase(-1): model(x, wrong_labels)
        ghl.step(); optimizer.step()       # W ← W + η · (E_pos + E_neg) / 2

    The signed eligibility (phase included) is returned un-normalised (``normalize=None``), so that the
    two-factor ablation modulator ``Ones`` (``M = −sign E``) writes ``.grad = −E``: an SGD step then performs the
    HebbFF weight update (Eq. 3) with learning rate ``lr/2`` per pair of forwards (the plug-in averages ``E`` over the
    forwards it recorded).  The bias eligibility (Eq. 4) is [`bias`][]; in the plug-in the bias keeps its own
    gradient.  Only ``nn.Linear`` layers are supported.
    """

    normalize: Normalization = None

    def __init__(self, theta: float, activation: nn.Module | None = None, normalize: Normalization = None) -> None:
        self.theta = check_theta(theta)
        self.activation = activation if activation is not None else nn.ReLU()
        self.normalize = check_normalization(normalize)
        self.current_phase = POSITIVE

    @contextmanager
    def phase(self, phase: int) -> Iterator[HebbFFRule]:
        """Within the block every eligibility is computed for phase ``phase`` (+1 positive, −1 negative)."""
        previous, self.current_phase = self.current_phase, check_phase(phase)
        try:
            yield self
        finally:
            self.current_phase = previous

    def coefficients(self, a: Tensor, phase: int | None = None, reduction: Reduction = "mean"
                     ) -> HebbFFCoefficients:
        """[`hebbff_coefficients`][] of activity ``a`` for ``phase`` (default: the current phase)."""
        phase = self.current_phase if phase is None else check_phase(phase)
        return hebbff_coefficients(a, self.theta, phase, check_reduction(reduction))

    def linear(self, x: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """Batch-mean signed eligibility ``cᵀ x̂`` with ``a = activation(y + bias)`` (``y`` without bias)."""
        check_pair(x, y, "positive" if self.current_phase > 0 else "negative")
        if weight.shape != (y.shape[1], x.shape[1]):
            raise ValueError(f"weight shape {tuple(weight.shape)} does not match x̂ {tuple(x.shape)} -> "
                             f"y {tuple(y.shape)}")
        a = self.activation(y if bias is None else y + bias)
        return self.coefficients(a).post.t() @ x

    def bias(self, a: Tensor) -> Tensor:
        """Batch-mean bias eligibility ``Σ_n c_n / B`` (Eq. 4) for activity ``a`` in the current phase."""
        return self.coefficients(a).post.sum(dim=0)

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> Tensor:
        raise TypeError("HebbFFRule supports nn.Linear layers only (goodness is defined per fully connected layer)")

    def __call__(self, module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if not isinstance(module, nn.Linear):
            raise TypeError(f"HebbFFRule supports nn.Linear layers only, got {type(module).__name__}")
        bias = module.bias.detach().float() if module.bias is not None else None
        x, y = x.detach().float(), y.detach().float()
        return self.linear(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), module.weight.detach().float(),
                           bias)

    def extra_repr(self) -> str:
        return f"theta={self.theta:g}, phase={self.current_phase:+d}"
