"""The optimiser-like HebbFF learner: applies the HebbFF rule (HebbFF paper, Eq. 1-4) to a stack of Linear layers.

Every update is the rule of [`ghl_snn.rules.hebbff`][] -- the per-sample post-synaptic factor ``c = s σ(s (θ − g)) a``
of [`hebbff_coefficients`][ghl_snn.rules.hebbff.hebbff_coefficients] -- written into the weights with one matrix product
per layer::

    W ← (1 − η λ) W + η Σ_n c_n x̂_nᵀ,   b ← (1 − η λ) b + η Σ_n c_n        (Eq. 3-4; λ: optional weight decay)

in place under ``torch.no_grad()`` (``addmm_``: no ``E`` tensor, no autograd graph, no ``.grad``): the fused fast
path, the update of plain SGD.

**Any torch optimiser** (``mode="grad"``): the same update is written into every parameter's ``.grad`` instead, as the
GHL plug-in does, and the optimiser applies it::

    W.grad = λ W − Σ_n c_n x̂_nᵀ,   b.grad = λ b − Σ_n c_n           (= −ΔW / η of the fused step)

so ``torch.optim.SGD(lr=η)`` reproduces the fused step exactly and Adam, SGD with momentum, per-layer parameter
groups or a learning-rate schedule are one line each (``lr`` of the learner is then unused).  ``.grad`` is
overwritten, not accumulated; a layer the guard skips gets ``.grad = None`` (the optimiser leaves it unchanged).

Two entry points:

* [`HebbFF.step`][ghl_snn.learners.hebbff.HebbFF.step] takes the ``(x̂, a)`` traces of a positive and a negative pass
  (e.g. [`trace`][ghl_snn.models.mlp.ForwardForwardMLP.trace]) -- any network whose layers are ``nn.Linear``.
* [`HebbFF.train_step`][ghl_snn.learners.hebbff.HebbFF.train_step] is the fast path for a label-conditioned MLP: one
  pass computes the positive and the negative samples together, layer by layer, updating each layer as soon as its
  activity is known (the next layer's input was computed with the old weights, so the result equals
  ``step(trace(x, y), trace(x, y'))``). The first layer's image part ``W_x x̂`` is computed once for both phases (they
  share the image), and the label columns are read and updated by index (no one-hot product).  Per step: about two
  forward passes plus one weight-sized product per layer, and only one layer's activity alive at a time.

**Data parallelism** (``torch.distributed`` initialised, each process holding an equal shard of the batch): after
its own update every process averages each layer's weight and bias over the processes (with ``reduction="sum"``
its own term is first scaled by the number of processes), so all replicas hold the update of one process on the
whole batch: ``(1 − η λ) W + η Σ_n c_n x̂_nᵀ`` summed (or averaged) over every shard.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..guards import NonFinite
from ..plasticity.base import Learner
from ..selection import unsupported_reason
from ..ops.data_parallel import replica_count, replica_mean
from ..rules.hebbff import (DEFAULT_SATURATION_TOL, NEGATIVE, POSITIVE, HebbFFRule, LayerTrace, Reduction,
                            check_reduction, check_traces, goodness, hebbff_coefficients, saturation_message)


UpdateMode = Literal["fused", "grad"]
"""How [`HebbFF`][ghl_snn.HebbFF] writes its update: ``"fused"`` (in place, the plain-SGD fast path) or ``"grad"``
(into ``.grad``, for any ``torch.optim`` optimiser)."""
UPDATE_MODES = ("fused", "grad")


class LabelConditionedMLP(Protocol):
    """What [`HebbFF.train_step`][ghl_snn.learners.hebbff.HebbFF.train_step] needs from a model (e.g.
    [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP])."""

    layers: Sequence[nn.Linear]
    num_classes: int
    label_scale: float

    def normalize(self, h: Tensor) -> Tensor: ...

    def flatten_input(self, x: Tensor, labels: Tensor) -> Tensor: ...


class HebbFFLayerStats(NamedTuple):
    """Batch means of one layer's goodness and gates after a HebbFF step (0-d tensors, no sync)."""

    goodness_pos: Tensor
    goodness_neg: Tensor
    gate_pos: Tensor
    gate_neg: Tensor


class LayerHealth(NamedTuple):
    """Why a HebbFF / FF layer may not learn, measured on one positive and one negative batch.

    ``dead``: fraction of units never active on the batch; ``saturated``: fraction of gates within ``tol`` of 0 or
    1; ``separation``: ``(mean g_pos − mean g_neg) / std(g)`` (≤ 0: goodness does not tell the true label).
    """

    dead: float
    saturated: float
    separation: float
    goodness_pos: float
    goodness_neg: float


def hebbff_health(positive: Sequence[LayerTrace], negative: Sequence[LayerTrace], theta: float,
                  tol: float = DEFAULT_SATURATION_TOL) -> list[LayerHealth]:
    """Per-layer [`LayerHealth`][] of the positive / negative traces of one batch."""
    report = []
    for (_, a_pos), (_, a_neg) in zip(positive, negative):
        a_pos, a_neg = a_pos.detach().float(), a_neg.detach().float()
        g_pos, g_neg = goodness(a_pos), goodness(a_neg)
        gates = torch.cat([torch.sigmoid(theta - g_pos), torch.sigmoid(g_neg - theta)])
        spread = torch.cat([g_pos, g_neg]).std().clamp_min(1e-12)
        report.append(LayerHealth(
            dead=float((torch.cat([a_pos, a_neg]).amax(dim=0) <= 0).float().mean()),
            saturated=float((torch.minimum(gates, 1 - gates) < tol).float().mean()),
            separation=float((g_pos.mean() - g_neg.mean()) / spread),
            goodness_pos=float(g_pos.mean()), goodness_neg=float(g_neg.mean())))
    return report


def health_message(report: Sequence[LayerHealth], theta: float) -> str:
    """One sentence naming the measured cause(s) of a run that did not learn (empty when none is found)."""
    causes = []
    for index, layer in enumerate(report):
        if layer.dead >= 0.5:
            causes.append(f"layer {index}: {100 * layer.dead:.0f}% dead units (never active)")
        if layer.saturated >= 0.9:
            causes.append(f"layer {index}: {100 * layer.saturated:.0f}% of goodness gates saturated (theta={theta:g}, "
                          f"goodness pos={layer.goodness_pos:.3g}, neg={layer.goodness_neg:.3g})")
        if layer.separation < 0.1:
            causes.append(f"layer {index}: goodness not separating true from wrong labels (separation "
                          f"{layer.separation:.2f} std, pos={layer.goodness_pos:.3g}, neg={layer.goodness_neg:.3g})")
    return "; ".join(causes)


class HebbFF(Learner):
    """Gradient-free HebbFF learner for a stack of ``nn.Linear`` layers, used like a ``torch.optim`` optimiser.

    ``layers``: the layers in forward order, or a module whose ``nn.Linear`` submodules (registration order) are
    taken.  ``train_step`` is the fast path (module docstring); ``step(positive_traces, negative_traces)`` takes the
    ``(x̂, a)`` traces of any stack of Linear layers (see Examples).

    The update is the rule [`HebbFFRule`][ghl_snn.HebbFFRule] (``self.rule``; Eq. 1-4) for both phases.
    ``reduction="mean"`` (default) divides each phase's sums by its batch size (``"sum"``: Eq. 3 as written; the
    learning rate then scales with the batch).  ``state_dict()`` holds ``lr``, ``theta``, ``weight_decay``,
    ``reduction``, ``mode`` and the step counter.  A non-finite goodness raises ``FloatingPointError``; when every
    gate of a layer is saturated (``min(w, 1 − w) < saturation_tol``) a ``RuntimeWarning`` is emitted once.

    Guards ([`UpdateGuard`][ghl_snn.guards.UpdateGuard], as every learner): NaN / Inf in a layer's input, weight or
    post-synaptic factor raises ``FloatingPointError`` naming the layer (its index) before that layer is written
    (``nonfinite="skip"``: warns and leaves it unchanged); an empty batch is refused.  HebbFF writes its layers in
    place without autograd (``requires_grad=False`` on every parameter is the usual setting), so a layer is kept
    fixed by leaving it out of ``layers``.

    Examples:
        One HebbFF step on a label-conditioned MLP (positive data: the true labels; negative: wrong ones):

        >>> import torch
        >>> from ghl_snn import ForwardForwardMLP, HebbFF
        >>> from ghl_snn.rules.hebbff import random_wrong_labels
        >>> model = ForwardForwardMLP(in_features=64, hidden=[32, 16], num_classes=4)
        >>> learner = HebbFF(model.layers, lr=1.0, theta=2.0)
        >>> x, y = torch.rand(8, 64), torch.randint(0, 4, (8,))
        >>> stats = learner.train_step(model, x, y, random_wrong_labels(y, 4))   # both phases, one pass
        >>> len(stats)                                                            # one record per layer
        2

        The same update from traces, for a stack of Linear layers with its own forward:

        >>> with torch.no_grad():
        ...     stats = learner.step(model.trace(x, y), model.trace(x, random_wrong_labels(y, 4)))

        Any torch optimiser: ``mode="grad"`` writes ``−ΔW/η`` into ``.grad`` and the optimiser applies it
        (Adam here; SGD with momentum or a schedule the same way):

        >>> hebb = HebbFF(model.layers, theta=2.0, mode="grad")
        >>> optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> stats = hebb.train_step(model, x, y, random_wrong_labels(y, 4)); optimizer.step()
        >>> model.layers[0].weight.grad.shape
        torch.Size([32, 68])
    """

    def __init__(self, layers: Iterable[nn.Linear] | nn.Module, lr: float | None = None, theta: float = 1.0,
                 weight_decay: float = 0.0, reduction: Reduction = "mean",
                 saturation_tol: float = DEFAULT_SATURATION_TOL, nonfinite: NonFinite = "raise",
                 mode: UpdateMode = "fused") -> None:
        if isinstance(layers, nn.Module) and not isinstance(layers, nn.ModuleList):
            layers = [m for m in layers.modules() if isinstance(m, nn.Linear)]
        layers = list(layers)
        if not layers:
            raise ValueError("HebbFF needs at least one nn.Linear layer")
        for index, layer in enumerate(layers):
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"HebbFF layer {index} is {type(layer).__name__}; only nn.Linear is supported")
        if mode not in UPDATE_MODES:
            raise ValueError(f"mode must be 'fused' (in-place SGD step) or 'grad' (write .grad for a torch "
                             f"optimiser), got {mode!r}")
        if lr is None:
            if mode == "fused":
                raise ValueError("HebbFF(mode='fused') needs a learning rate lr (mode='grad' leaves it to the "
                                 "optimiser)")
            lr = 1.0
        # the layers in forward order, named by their index ("0", "1", ...); one rule for all of them
        # (it writes without autograd: requires_grad=False is its usual setting, not a frozen layer)
        super().__init__(nn.ModuleList(layers), types=(nn.Linear,), rule=HebbFFRule(theta), nonfinite=nonfinite,
                         check=unsupported_reason)
        if not float(lr) > 0:
            raise ValueError(f"learning rate must be > 0, got {lr!r}")
        self.mode: UpdateMode = mode
        if not float(weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.reduction = check_reduction(reduction)
        self.saturation_tol = float(saturation_tol)
        self._warned_saturation = False
        self._skipped: set[int] = set()  # layers whose update of this step the guard skipped

    @property
    def rule(self) -> HebbFFRule:
        """The HebbFF rule (Eq. 1-4) every layer learns by."""
        return self.rules["0"]  # type: ignore[return-value]

    @property
    def theta(self) -> float:
        return self.rule.theta

    @theta.setter
    def theta(self, value: float) -> None:
        self.rules = dict.fromkeys(self.rules, HebbFFRule(value))

    @property
    def linear_layers(self) -> list[nn.Linear]:
        """The layers in forward order."""
        return list(self.layers.values())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the update of one layer
    def _apply(self, layer: nn.Linear, inputs: Tensor, post: Tensor, label_columns: tuple[Tensor, float] | None,
               shared_batch: int | None = None, index: int = 0) -> None:
        """``W[:, :k] ← decay W[:, :k] + η postᵀ inputs`` (k = inputs' width); the label columns by index.

        ``shared_batch=B``: the positive and negative halves of ``post`` (B rows each) saw the same images
        ``inputs`` (first layer), so the image part is ``(post_pos + post_neg)ᵀ inputs``: one B-row product.
        A layer whose input, weight or ``post`` holds NaN / Inf is not written (see the guards)."""
        if not self.guard.finite(str(index), "input, weight or post-synaptic factor", inputs, post, layer.weight,
                                 layer.bias):
            self._skipped.add(index)
            if self.mode == "grad":
                for parameter in (layer.weight, layer.bias):
                    if parameter is not None:
                        parameter.grad = None
            return
        if self.mode == "grad":
            self._write_grad(layer, inputs, post, label_columns, shared_batch)
            return
        decay = 1.0 - self.lr * self.weight_decay
        replicas = replica_count()
        # the replicas' weights are averaged afterwards: a summed update must count every shard in full
        lr = self.lr * replicas if self.reduction == "sum" else self.lr
        weight = layer.weight
        post = post.to(weight.dtype)
        image_post = post if shared_batch is None else post[:shared_batch] + post[shared_batch:]
        if label_columns is None:
            weight.addmm_(image_post.t(), inputs.to(weight.dtype), beta=decay, alpha=lr)
        else:
            labels, scale = label_columns
            width = inputs.shape[1]
            weight[:, :width].addmm_(image_post.t(), inputs.to(weight.dtype), beta=decay, alpha=lr)
            label_weight = weight[:, width:]
            if decay != 1.0:
                label_weight.mul_(decay)
            # x̂'s label part is scale · onehot(label): its outer product is a scatter into the label's column
            label_weight.index_add_(1, labels, post.t(), alpha=lr * scale)
        if layer.bias is not None:
            layer.bias.mul_(decay).add_(post.sum(dim=0), alpha=lr)
        if replicas > 1:
            for parameter in (weight, layer.bias):
                if parameter is not None:
                    replica_mean(parameter.data, replicas)

    def _write_grad(self, layer: nn.Linear, inputs: Tensor, post: Tensor,
                    label_columns: tuple[Tensor, float] | None, shared_batch: int | None) -> None:
        """``.grad ← λ W − postᵀ x̂`` (and ``λ b − Σ post``): ``−ΔW/η`` of the fused step, for a torch
        optimiser."""
        replicas = replica_count()
        # the replicas' gradients are averaged afterwards: a summed update must count every shard in full
        alpha = -float(replicas) if self.reduction == "sum" else -1.0
        weight = layer.weight
        post = post.to(weight.dtype)
        image_post = post if shared_batch is None else post[:shared_batch] + post[shared_batch:]
        grad = weight.grad
        if grad is None or grad.shape != weight.shape:
            grad = torch.empty_like(weight)
        width = inputs.shape[1]
        grad[:, :width].copy_(image_post.t() @ inputs.to(weight.dtype)).mul_(alpha)
        if label_columns is not None:
            # x̂'s label part is scale · onehot(label): its outer product is a scatter into the label's column
            labels, scale = label_columns
            grad[:, width:].zero_().index_add_(1, labels, post.t(), alpha=alpha * scale)
        if self.weight_decay:
            grad.add_(weight, alpha=self.weight_decay)
        weight.grad = grad
        if layer.bias is not None:
            bias_grad = post.sum(dim=0).mul_(alpha)
            if self.weight_decay:
                bias_grad.add_(layer.bias, alpha=self.weight_decay)
            layer.bias.grad = bias_grad
        if replicas > 1:
            for parameter in (weight, layer.bias):
                if parameter is not None:
                    replica_mean(parameter.grad, replicas)

    def _coefficients(self, a: Tensor, phase: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        coefficients = hebbff_coefficients(a, self.rule.theta, phase, self.reduction)
        return coefficients.post, coefficients.gate, coefficients.goodness

    def _record(self, checks: list[Tensor], stats: list[HebbFFLayerStats], gate: Tensor, g: Tensor,
                n_pos: int) -> None:
        checks.append(torch.stack([torch.isfinite(g).all().float(),
                                   (torch.minimum(gate, 1 - gate) < self.saturation_tol).all().float()]))
        stats.append(HebbFFLayerStats(g[:n_pos].mean(), g[n_pos:].mean(), gate[:n_pos].mean(), gate[n_pos:].mean()))

    # ------------------------------------------------------------------ entry points
    @torch.no_grad()
    def step(self, positive: Sequence[LayerTrace], negative: Sequence[LayerTrace]) -> list[HebbFFLayerStats]:
        """Apply Eq. 3-4 to every layer from its positive and negative ``(x̂, a)``; returns per-layer stats."""
        if len(positive) != len(self.layers) or len(negative) != len(self.layers):
            raise ValueError(f"HebbFF.step needs one (x̂, a) pair per layer ({len(self.layers)}), got "
                             f"{len(positive)} positive and {len(negative)} negative")
        stats: list[HebbFFLayerStats] = []
        checks: list[Tensor] = []
        for index, (layer, (x_pos, a_pos), (x_neg, a_neg)) in enumerate(zip(self.linear_layers, positive, negative)):
            self.guard.batch(x_pos, f"positive input of layer {index}")
            self.guard.batch(x_neg, f"negative input of layer {index}")
            check_traces(x_pos, a_pos, x_neg, a_neg)
            if x_pos.shape[1] != layer.in_features or a_pos.shape[1] != layer.out_features:
                raise ValueError(f"HebbFF layer {index} is {layer.in_features}->{layer.out_features} but got "
                                 f"x̂ {tuple(x_pos.shape)} and a {tuple(a_pos.shape)}")
            c_pos, w_pos, g_pos = self._coefficients(a_pos, POSITIVE)
            c_neg, w_neg, g_neg = self._coefficients(a_neg, NEGATIVE)
            # One GEMM for both phases: E_W = [c_pos; c_neg]ᵀ [x̂_pos; x̂_neg], added in place (no E tensor).
            self._apply(layer, torch.cat([x_pos, x_neg]), torch.cat([c_pos, c_neg]), None, index=index)
            self._record(checks, stats, torch.cat([w_pos, w_neg]), torch.cat([g_pos, g_neg]), a_pos.shape[0])
        self._finish(checks, stats)
        return stats

    @torch.no_grad()
    def train_step(self, model: LabelConditionedMLP, x: Tensor, labels: Tensor, negative_labels: Tensor
                   ) -> list[HebbFFLayerStats]:
        """One HebbFF step on a label-conditioned MLP from images ``x`` with true ``labels`` (positive samples)
        and ``negative_labels`` (negative samples of the same images); fast path of the module docstring.

        Equal to ``step(model.trace(x, labels), model.trace(x, negative_labels))``.  The model provides
        ``layers`` (this learner's layers), ``num_classes``, ``label_scale``, ``normalize(h)`` and
        ``flatten_input(x, labels)``; layer ``l`` sees ``[normalize(h_{l−1}) ; label_scale · onehot(label)]``.
        """
        if list(model.layers) != self.linear_layers:
            raise ValueError("train_step: the model's layers are not the layers this HebbFF learner updates")
        self.guard.batch(x)
        h = model.flatten_input(x, labels)
        model.flatten_input(x, negative_labels)  # checks the negative labels (same images)
        batch, scale, classes = h.shape[0], float(model.label_scale), int(model.num_classes)
        both = torch.cat([labels, negative_labels])
        phase = torch.cat([torch.ones(batch, device=h.device), -torch.ones(batch, device=h.device)]).to(h.dtype)
        stats: list[HebbFFLayerStats] = []
        checks: list[Tensor] = []
        for index, layer in enumerate(self.linear_layers):
            width = layer.in_features - classes
            inputs = model.normalize(h)
            weight = layer.weight
            label_part = weight[:, width:].t()[both] * scale                     # (2B, out): W_y[:, label] s
            if index == 0:   # positive and negative samples share the image: W_x x̂ once
                shared = F.linear(inputs, weight[:, :width], layer.bias)
                activity = label_part.add_(shared.repeat(2, 1)).relu_()
            else:
                activity = label_part.add_(F.linear(inputs, weight[:, :width], layer.bias)).relu_()
            post, gate, g = self._coefficients(activity, phase)
            self._apply(layer, inputs, post, (both, scale), shared_batch=batch if index == 0 else None, index=index)
            self._record(checks, stats, gate, g, batch)
            h = activity
        self._finish(checks, stats)
        return stats

    def _finish(self, checks: list[Tensor], stats: list[HebbFFLayerStats]) -> None:
        self.steps += 1
        skipped, self._skipped = self._skipped, set()
        for index, (finite, saturated) in enumerate(torch.stack(checks).cpu().tolist()):
            if not finite and index not in skipped:
                raise FloatingPointError(f"HebbFF: goodness of layer {index} became non-finite at step "
                                         f"{self.steps} (lr={self.lr:g} too large?)")
            if saturated and not self._warned_saturation:
                self._warned_saturation = True
                message = saturation_message(index, self.rule.theta, float(stats[index].goodness_pos),
                                             float(stats[index].goodness_neg))
                warnings.warn("HebbFF: " + message, RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The shared layout (``steps``) plus ``lr``, ``theta``, ``weight_decay``, ``reduction``,
        ``saturation_tol`` and ``mode``."""
        return {**super().state_dict(), "lr": self.lr, "theta": self.rule.theta, "weight_decay": self.weight_decay,
                "reduction": self.reduction, "saturation_tol": self.saturation_tol, "mode": self.mode}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.lr = float(state["lr"])
        self.theta = state["theta"]
        self.weight_decay = float(state["weight_decay"])
        self.reduction = check_reduction(state["reduction"])
        self.saturation_tol = float(state.get("saturation_tol", DEFAULT_SATURATION_TOL))
        self.mode = state.get("mode", "fused")

    def __repr__(self) -> str:
        return (f"HebbFF(layers={len(self.layers)}, lr={self.lr:g}, theta={self.rule.theta:g}, "
                f"weight_decay={self.weight_decay:g}, reduction={self.reduction!r}, mode={self.mode!r})")
