"""The GHL plug-in: three-factor plasticity for the Linear, ConvNd and attention layers of any ``nn.Module``.

After ``loss.backward()``, [`GHL.step`][ghl_snn.plasticity.GHL.step] overwrites each plastic weight's ``.grad`` with
``M ⊙ |E|`` (GHL paper Eq. 5-6, Algorithm 1): ``E`` the local eligibility computed from the ``(x, y)`` captured by
forward hooks (default SWTA-Oja, Eq. 4), ``M`` the broadcast sign of a [`Modulator`][ghl_snn.Modulator] (default
[`GradSign`][ghl_snn.GradSign]).  Any ``torch.optim`` optimiser then applies ``W <- W - eta * grad`` with its own
learning rates, schedules, weight decay and parameter groups; parameters that are not selected (classifier, BatchNorm,
biases) keep their back-propagated gradients.

The eligibility is computed inside each plastic layer's forward hook (float32, autocast off) and accumulated until
``step()``, so the layer output is not retained and in-place operations after the layer cannot corrupt ``E``.  A
Linear layer's ``E`` is written into a float32 buffer kept across steps (freed by
[`GHL.remove`][ghl_snn.plasticity.GHL.remove]; on CPU its rows are padded when their length is a multiple of 128,
or of 1024 from 8192 values on).  On CPU, where the rule has the form ``E = U^T x - F W``
(``EligibilityRule.linear_factors``; SWTA-Oja) and the step writes in place (GradSign, SignOnly; ``"max"`` or no
normalisation), a Linear layer keeps the factors ``U``, ``x`` and ``F`` instead while they are smaller than its
weight, and ``step()`` forms ``E`` one cache-sized row block at a time, using each block while it is in cache.

Plastic layer kinds: ``nn.Linear``; ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` with any ``groups`` (grouped and
depthwise: the SWTA softmax of Eq. 4 runs over the output channels of each group), padding and padding mode;
``nn.MultiheadAttention`` and torchvision's Swin window attention, whose query / key / value input projections
(packed or separate) and output projection are plastic synapses, each with its own softmax over its output units.
The projections are recorded where the attention layer calls them (``F.linear`` inside its forward), since their
sub-modules' hooks never run.

No silent failure: [`GHL.step`][ghl_snn.plasticity.GHL.step] warns (``strict=True``: raises) about every selected
layer that recorded nothing, raises ``FloatingPointError`` instead of writing a non-finite update
(``nonfinite="skip"``: warns and leaves that weight without a gradient for this step), and never writes into a
weight with ``requires_grad=False`` (the shared [`UpdateGuard`][ghl_snn.guards.UpdateGuard]).

Usage::

    rule = GHL(model, tau=1.0)
    loss.backward(); rule.step(); optimizer.step()

Mixed precision (``torch.amp``): ``E`` is always accumulated in float32.  With a ``GradScaler`` call
``scaler.scale(loss).backward(); scaler.unscale_(optimizer); rule.step(); scaler.step(optimizer);
scaler.update()`` -- unscale *before* ``rule.step()``, otherwise ``scaler.step`` would divide the Hebbian update
by the loss scale.  Distributed data parallel: when ``torch.distributed`` is initialised with more than one
process, ``E`` is all-reduced (averaged) *before* normalisation (and a per-neuron modulator's credit before its sign),
so every replica applies the identical update.
"""
from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .guards import NonFinite, UpdateGuard, all_finite
from .modulators.base import LayerSignals, Modulator
from .modulators.grad_sign import GradSign
from .ops.data_parallel import replica_count, replica_mean
from .rules.base import EligibilityRule, Normalization, bias_free, check_normalization, check_tau, is_attention, \
    normalize_eligibility
from .rules.stochastic import batch_subset, check_eligibility_fraction
from .rules.swta_oja import SWTAOja
from .selection import DEFAULT_LAYER_TYPES, PLASTIC_LAYER_TYPES, LayerSelector, PlasticityWarning, \
    plastic_reason, plastic_weights, select_layers

__all__ = ["GHL", "LayerSelector", "select_layers", "DEFAULT_LAYER_TYPES", "PLASTIC_LAYER_TYPES", "PlasticityWarning"]

TauSpec = float | Mapping[str, float] | Callable[[str, nn.Module], float]


class _Projection(nn.Module):
    """What a modulator sees as ``LayerSignals.module`` for one projection of an attention layer: a Linear-like
    stand-in whose ``weight`` is that projection's weight (not registered, so it owns no parameter)."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.__dict__["weight"] = weight


@dataclass
class _Synapse:
    """One plastic weight: the selected layer that owns it, the parameter and its number of competition groups;
    ``signal_module`` is what the modulator receives (the layer itself, or a ``_Projection``)."""

    layer: str
    module: nn.Module
    weight: nn.Parameter
    groups: int = 1
    signal_module: nn.Module | None = None


@dataclass
class _Capture:
    """What one training-mode forward through a plastic Linear / ConvNd layer leaves for
    [`GHL.step`][ghl_snn.plasticity.GHL.step].

    The eligibility itself is computed inside the forward hook and summed into ``GHL._eligibility_sums``, so
    the layer's output ``y`` is not kept alive until ``step()``; only a Linear layer's input (for modulators with
    ``needs_inputs``, e.g. a pre-synaptic gate) and, on request, ``dL/dy`` are held.
    """

    x: Tensor | None = None
    output_grad: Tensor | None = None
    #: attention projections: the (first row, row count) of the weight block that this call used
    rows: tuple[int, int] | None = None


def _keep_output_grad(output: Tensor, capture: _Capture,
                      transform: Callable[[Tensor], Tensor] | None = None) -> None:
    """Store ``dL/dy`` of ``output`` (detached, ``transform``-ed) in ``capture`` when the backward pass reaches it."""
    def record(grad: Tensor) -> None:
        grad = grad.detach()
        capture.output_grad = grad if transform is None else transform(grad)
    output.register_hook(record)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A context with autocast off for ``device_type`` (a no-op context when it is not on: entering
    ``torch.autocast`` costs a few microseconds per plastic layer and forward)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _without_torch_function_check(func: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of a ``torch.nn.functional`` function whose own ``has_torch_function`` test is off.

    ``F.multi_head_attention_forward`` hands itself to an active torch function mode as one call; running this copy
    inside the mode lets the mode see the ``F.linear`` calls of the projections instead.
    """
    namespace = dict(func.__globals__)
    namespace["has_torch_function"] = lambda *_: False
    clone = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    clone.__kwdefaults__ = func.__kwdefaults__
    return clone


_MHA_FORWARD = F.multi_head_attention_forward
_MHA_FORWARD_OPEN = _without_torch_function_check(F.multi_head_attention_forward)


class _ProjectionRecorder(TorchFunctionMode):
    """Active during one training-mode forward of an attention layer: reports every ``F.linear`` call whose weight
    is (a block of rows of) one of the layer's plastic projection weights, with ``samples_first``, which turns that
    call's input or output into ``(samples, tokens, features)`` (``_samples_first``)."""

    def __init__(self, record: Callable[..., None], targets: dict[str, nn.Parameter],
                 samples_first: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.record = record
        self.targets = targets
        self.samples_first = samples_first

    def _match(self, weight: object) -> tuple[str, int] | None:
        if not isinstance(weight, Tensor):
            return None
        for name, param in self.targets.items():
            if weight is param:
                return name, 0
            if (weight._base is param and weight.dim() == 2 and weight.stride() == param.stride()
                    and weight.shape[1] == param.shape[1]):
                return name, (weight.storage_offset() - param.storage_offset()) // param.stride(0)
        return None

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _MHA_FORWARD:
            with self:
                return _MHA_FORWARD_OPEN(*args, **kwargs)
        out = func(*args, **kwargs)
        if func is F.linear:
            x = args[0] if args else kwargs["input"]
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            hit = self._match(weight)
            if hit is not None:
                self.record(hit[0], hit[1], x, weight, out, bias, self.samples_first)
        return out


def _samples_first(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    """For one forward of an attention layer: a function that turns what a projection's ``F.linear`` call sees
    (input or output) into ``(samples, tokens, features)``, so that a per-sample signal meets the tokens of its own
    sample.  ``nn.MultiheadAttention`` projects ``(T, N, E)`` sequences (whatever ``batch_first`` says: it
    transposes first) and feeds its output projection ``(T * N, E)`` rows, token-major; Swin's window attention
    projects ``(N * windows, tokens, C)``, sample-major."""
    if isinstance(module, nn.MultiheadAttention):
        query = args[0] if args else kwargs["query"]
        samples = (query.shape[0] if module.batch_first else query.shape[1]) if query.dim() == 3 else 1
        return lambda tensor: tensor.reshape(-1, samples, tensor.shape[-1]).transpose(0, 1)
    samples = (args[0] if args else kwargs["x"]).shape[0]
    return lambda tensor: tensor.reshape(samples, -1, tensor.shape[-1])


#: Row lengths (float32 values) whose multiples get padded rows in an eligibility buffer on CPU, and the padding;
#: rows of ``_LONG_ROW`` values or more are padded only when they are a multiple of ``_LONG_ALIGNED_ROW``.
_ALIGNED_ROW, _ROW_PADDING = 128, 16
_LONG_ROW, _LONG_ALIGNED_ROW = 8192, 1024


def _padded_rows(columns: int) -> bool:
    """Whether a CPU eligibility buffer with rows of ``columns`` float32 values gets padded rows (see
    ``_eligibility_buffer``)."""
    if columns % _ALIGNED_ROW:
        return False
    return columns < _LONG_ROW or columns % _LONG_ALIGNED_ROW == 0


def _eligibility_buffer(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """An uninitialised float32 tensor of ``shape`` for a Linear layer's ``E`` (the rank-``N`` update
    ``u^T x`` of Eq. 4 is written into it).

    On CPU a matrix whose rows are a multiple of ``_ALIGNED_ROW`` values (512 bytes) apart is returned as a view
    of rows ``_ROW_PADDING`` values longer: with power-of-two row strides every row of BLAS's output tile falls in
    the same cache sets, and a product with a small inner dimension (a batch of a few samples) runs 2-3.5
    times slower than into padded rows (9216-input layer, batch 8: 30 ms against 17 ms on one core).  Rows of
    ``_LONG_ROW`` values or more gain only when they are a multiple of ``_LONG_ALIGNED_ROW`` (4 KiB); otherwise
    padding makes the product up to 15 % slower (VGG's 25088-input layer), so they stay contiguous.  Elsewhere,
    and for other shapes, the buffer is contiguous.
    """
    device = torch.device(device)
    if device.type != "cpu" or len(shape) != 2 or not _padded_rows(shape[1]) or shape[0] < 2:
        return torch.empty(shape, dtype=torch.float32, device=device)
    rows, columns = shape
    return torch.empty(rows, columns + _ROW_PADDING, dtype=torch.float32, device=device)[:, :columns]


def _signals_of(name: str, module: nn.Module | None, eligibility: Tensor, weight_grad: Tensor | None,
                captures: list[_Capture]) -> LayerSignals:
    """A modulator's view of one plastic weight (or row block): ``E``, ``dL/dW`` and the per-sample inputs and
    ``dL/dy`` of ``captures``, concatenated over samples."""
    output_grads = [c.output_grad for c in captures if c.output_grad is not None]
    inputs = [c.x for c in captures if c.x is not None]
    return LayerSignals(
        name=name, module=module, eligibility=eligibility, weight_grad=weight_grad,
        output_grad=(output_grads[0] if len(output_grads) == 1 else torch.cat(output_grads)) if output_grads else None,
        inputs=(inputs[0] if len(inputs) == 1 else torch.cat(inputs)) if inputs else None)


#: Bytes of ``E`` per row block of ``step()``'s passes on CPU (one core's L2 cache): a block's ``E``, ``dL/dW`` and
#: weight rows are used by one operation after another while they are in cache, so that each weight-sized tensor
#: crosses the memory bus about once per pass instead of once per operation.
_BLOCK_BYTES = 2 << 20


def _row_blocks(tensor: Tensor) -> list[slice]:
    """Slices of ``tensor``'s first dimension, about ``_BLOCK_BYTES`` each on CPU; one slice of all rows elsewhere
    (a GPU gains nothing from blocking and would pay a kernel launch per block)."""
    if tensor.device.type != "cpu" or tensor.dim() < 2:
        return [slice(None)]
    row_bytes = max(1, tensor[0].numel() * tensor.element_size())
    rows = max(1, _BLOCK_BYTES // row_bytes)
    if rows >= tensor.shape[0]:
        return [slice(None)]
    return [slice(first, first + rows) for first in range(0, tensor.shape[0], rows)]


@dataclass
class _LowRankEligibility:
    """A Linear layer's ``E`` summed over the forwards since the last step, kept as its factors
    ``sum_f (U_f^T x_f - F_f W)`` (see ``EligibilityRule.linear_factors``; SWTA-Oja: ``U = u / N``, ``F`` the
    forgetting sums of Eq. 4) while they are smaller than the weight.  ``step()`` forms ``E`` one row block at a
    time and uses each block while it is in cache; elsewhere ``E`` is formed whole (``writer``)."""

    competition: list[Tensor]
    inputs: list[Tensor]
    forgetting: Tensor

    def numel(self) -> int:
        return sum(u.numel() + x.numel() for u, x in zip(self.competition, self.inputs))

    def add(self, competition: Tensor, inputs: Tensor, forgetting: Tensor) -> None:
        self.competition.append(competition)
        self.inputs.append(inputs)
        self.forgetting.add_(forgetting)

    def writer(self, weight: Tensor, out: Tensor, forwards: int) -> Callable[[slice], Tensor]:
        """A function writing rows ``rows`` of the mean ``E`` over ``forwards`` forwards into ``out[rows]``:
        ``out[rows] = (sum_f U_f[:, rows]^T x_f - F[rows] W[rows]) / forwards`` (one product over all forwards'
        samples)."""
        competition_t = (self.competition[0] if len(self.competition) == 1 else torch.cat(self.competition)).t()
        inputs = self.inputs[0] if len(self.inputs) == 1 else torch.cat(self.inputs)
        forgetting = self.forgetting.neg()[:, None]
        if forwards > 1:
            forgetting.div_(forwards)

        def write(rows: slice) -> Tensor:
            block = torch.mul(weight[rows], forgetting[rows], out=out[rows])
            return block.addmm_(competition_t[rows], inputs, alpha=1.0 / forwards)

        return write


class GHL:
    """Global-guided Hebbian learning plug-in (see the module docstring for the update and usage).

    Args:
        model: any ``nn.Module``; hooks are registered on the selected sub-layers.
        tau: SWTA softmax temperature (> 0): one float, a ``{layer name: tau}`` mapping (unlisted layers get 1.0)
            or a ``(name, module) -> tau`` function.  Ignored when ``rule`` is given.
        layers: which layers are plastic -- a type or tuple of types, a qualified name, a module object, an
            iterable of names / modules, or a ``(name, module) -> bool`` predicate; default every ``nn.Linear``,
            ``nn.Conv1d/2d/3d`` and attention layer.  Types, predicates and the default skip layers that cannot be
            plastic (transposed convolutions, recurrent layers, embeddings, frozen weights) with one
            [`PlasticityWarning`][] listing them; a named layer that cannot be plastic raises ``TypeError``.
        normalize: how each layer's ``E`` is scaled before use: ``"max"`` (divide by ``max|E|``, the reference
            behaviour), ``"mean"``, ``"rms"``, ``"channel"``, ``"channel-mean"`` or ``None``
            (see [`normalize_eligibility`][ghl_snn.rules.base.normalize_eligibility]).
        modulator: the third factor; default [`GradSign`][] (exact GHL).
        rule: an [`EligibilityRule`][] used for every layer instead of SWTA-Oja (its own ``normalize``
            attribute applies).
        eligibility_fraction: in ``(0, 1]``; below 1, each forward estimates ``E`` from a random
            ``ceil(fraction * N)`` of its ``N`` samples (unbiased for the batch-mean ``E``, see
            [`ghl_snn.rules.stochastic`][]), cutting the extra weight-gradient convolution by that fraction;
            normalisation then applies as before (attention projections: every call draws its own samples, each
            with all its tokens).  1 (default) is the exact rule.
        strict: raise instead of warning when a selected layer recorded no training-mode forward before ``step()``.
        nonfinite: ``"raise"`` (``FloatingPointError`` naming the layer) or ``"skip"`` (warn, and leave that weight
            without a gradient for this step, so the optimiser does not move it) when a layer's update is NaN/Inf.

    Forwards under ``torch.no_grad()`` or in ``eval()`` mode record nothing.  The plastic weights are
    [`parameters`][]; an attention layer contributes its projection weights (``<layer>.in_proj_weight`` or
    ``<layer>.q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``, and ``<layer>.out_proj.weight``; Swin:
    ``<layer>.qkv.weight``, ``<layer>.proj.weight``), which are also the names [`eligibility`][] takes and the
    ``LayerSignals.name`` its modulator sees (with a Linear-like ``LayerSignals.module`` holding that ``weight``).
    Per-neuron modulators ([`NeuronSign`][ghl_snn.NeuronSign], [`FeedbackSign`][ghl_snn.FeedbackSign],
    [`RewardSign`][ghl_snn.RewardSign]) receive a projection's input and ``dL/dy`` as ``(samples, tokens,
    features)``, one row block per ``F.linear`` call (query, key and value rows with their own inputs).

    Examples:
        GHL on the hidden layer of an MLP, backprop on the read-out, any optimiser:

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL
        >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        >>> rule = GHL(model, tau=1.0, layers=["0"])
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        >>> x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
        >>> optimizer.zero_grad()
        >>> F.cross_entropy(model(x), y).backward()     # the global signal dL/dW (only its sign is used)
        >>> rule.step()                                 # weight.grad <- sign(dL/dW) * |E| on layer "0"
        >>> optimizer.step()
        >>> float(model[0].weight.grad.abs().max())     # |E| is max-normalised
        1.0

        Another third factor or eligibility, and a layer chosen by type:

        >>> from ghl_snn import SignOnly
        >>> rule.remove()
        >>> rule = GHL(model, layers=nn.Linear, modulator=SignOnly())   # |E| := 1 (GHL Table 5 ablation)
        >>> sorted(rule.layers)
        ['0', '2']
    """

    def __init__(self, model: nn.Module, tau: TauSpec = 1.0, layers: LayerSelector = None,
                 normalize: Normalization = "max", modulator: Modulator | None = None,
                 rule: EligibilityRule | None = None, eligibility_fraction: float = 1.0, strict: bool = False,
                 nonfinite: NonFinite = "raise") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if modulator is not None and not isinstance(modulator, Modulator):
            raise TypeError(f"modulator must be a ghl_snn Modulator (e.g. GradSign()), got {type(modulator).__name__}")
        if rule is not None and not isinstance(rule, EligibilityRule):
            raise TypeError(f"rule must be an EligibilityRule (e.g. SWTAOja()), got {type(rule).__name__}")
        self.guard = UpdateGuard("GHL.step()", strict, nonfinite)
        if not (isinstance(tau, Mapping) or callable(tau)):
            check_tau(tau)
        check_normalization(normalize)
        self.eligibility_fraction = check_eligibility_fraction(eligibility_fraction)
        self.model = model
        self.modulator = modulator if modulator is not None else GradSign()
        self.layers = select_layers(model, layers, types=PLASTIC_LAYER_TYPES, check=plastic_reason)
        if isinstance(tau, Mapping) and set(tau) - set(self.layers):
            raise KeyError(f"tau given for layers that are not plastic: {sorted(set(tau) - set(self.layers))}; "
                           f"plastic layers: {list(self.layers)}")
        self.rules: dict[str, EligibilityRule] = {
            name: rule if rule is not None else SWTAOja(self._tau_for(tau, name, module), normalize)
            for name, module in self.layers.items()}
        self.synapses: dict[str, _Synapse] = {}
        for name, module in self.layers.items():
            for path, (weight, groups) in plastic_weights(module).items():
                if is_attention(module):
                    key = f"{name}.{path}" if name else path
                    self.synapses[key] = _Synapse(name, module, weight, groups, _Projection(weight))
                else:
                    self.synapses[name] = _Synapse(name, module, weight, groups, module)
        self._captures: dict[str, list[_Capture]] = {name: [] for name in self.synapses}
        self._eligibility_sums: dict[str, Tensor | _LowRankEligibility | None] = {name: None for name in self.synapses}
        # float32 weight-shaped buffers E is written into, kept across steps (see EligibilityRule.accepts_out)
        self._buffers: dict[str, Tensor] = {}
        self._forwards: dict[str, int] = {name: 0 for name in self.layers}
        self._removed = False
        self._handles: list[Any] = []
        for name, module in self.layers.items():
            if is_attention(module):
                self._handles += self._attention_hooks(name, module)
            else:
                self._handles.append(module.register_forward_hook(self._make_hook(name)))

    @staticmethod
    def _tau_for(tau: TauSpec, name: str, module: nn.Module) -> float:
        if isinstance(tau, Mapping):
            return check_tau(tau.get(name, 1.0), f"tau[{name!r}]")
        if callable(tau):
            return check_tau(tau(name, module), f"tau({name!r}, ...)")
        return check_tau(tau)

    @property
    def strict(self) -> bool:
        """Raise instead of warning about a selected layer that recorded nothing (see [`UpdateGuard`][ghl_snn.guards.UpdateGuard])."""
        return self.guard.strict

    @property
    def nonfinite(self) -> NonFinite:
        """``"raise"`` or ``"skip"`` a non-finite update (see [`UpdateGuard`][ghl_snn.guards.UpdateGuard])."""
        return self.guard.nonfinite

    @property
    def taus(self) -> dict[str, float]:
        """Per-layer softmax temperatures (layers whose rule has a ``tau``)."""
        return {name: rule.tau for name, rule in self.rules.items() if hasattr(rule, "tau")}

    def parameters(self) -> list[nn.Parameter]:
        """The plastic weights (biases are not included: they keep their back-propagated gradient)."""
        return [synapse.weight for synapse in self.synapses.values()]

    # ------------------------------------------------------------------ hooks
    def _make_hook(self, name: str) -> Callable[..., None]:
        captures, sums, rules = self._captures, self._eligibility_sums, self.rules
        linear = isinstance(self.layers[name], nn.Linear)

        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not (torch.is_grad_enabled() and module.training):
                return
            x = args[0]
            if x.numel() == 0:
                self.guard.batch(x, f"input of layer {name!r}")
            # E is computed now, in float32 (autocast off), while x and y are fresh: y need not outlive the
            # forward and later in-place ops on it (ReLU(inplace=True)) cannot corrupt it.
            with torch.no_grad(), _autocast_off(x.device.type):
                first = sums[name] is None
                if self.modulator.needs_eligibility:
                    x_e, y_e = x, output.detach()
                    if self.eligibility_fraction < 1.0:
                        x_e, y_e = batch_subset(x_e, y_e, self.eligibility_fraction)
                    y_e = bias_free(module, y_e)
                    if linear and self._keep_factors(name, module, x_e, y_e):
                        eligibility = None  # kept as its factors in sums[name]
                    elif first and linear and rules[name].accepts_out:
                        eligibility = rules[name](module, x_e, y_e, out=self._buffer(name, module.weight))
                    else:
                        eligibility = rules[name](module, x_e, y_e)
                elif first:  # the modulator ignores E (sign-only ablation): do not pay for it
                    eligibility = self._buffer(name, module.weight).zero_()
                else:
                    eligibility = None
                if eligibility is not None:
                    if sums[name] is None:
                        sums[name] = eligibility
                    else:
                        sums[name].add_(eligibility)
            self._forwards[name] += 1
            keep_input = self.modulator.needs_inputs  # the input is kept only for modulators that read it
            keep_output_grad = self.modulator.needs_output_grad and output.requires_grad
            if not (keep_input or keep_output_grad):
                return
            capture = _Capture(x=x.detach() if keep_input else None)
            if keep_output_grad:
                _keep_output_grad(output, capture)
            captures[name].append(capture)

        return hook

    def _keep_factors(self, name: str, module: nn.Module, x: Tensor, y: Tensor) -> bool:
        """Record this forward's ``E`` of Linear layer ``name`` as its factors (``_LowRankEligibility``) and return
        True, where that pays: on CPU, one process, a float32 weight, a rule with ``linear_factors`` and a modulator
        whose update ``step()`` writes in place with the ``"max"`` (or no) normalisation, and only while all the
        forwards' factors together stay smaller than the weight.  When they would not, the factors recorded so far
        become ``E`` in the layer's buffer and False is returned (this forward's ``E`` is then added to it)."""
        total = self._eligibility_sums[name]
        weight = module.weight
        rule = self.rules[name]
        if total is None:
            if not (x.device.type == "cpu" and weight.dtype == torch.float32 and self.modulator.in_place()
                    and rule.normalize in ("max", None) and replica_count() == 1):
                return False
        elif not isinstance(total, _LowRankEligibility):
            return False
        samples = x.numel() // x.shape[-1] if x.dim() else 0
        if samples == 0 or (total.numel() if total is not None else 0) + samples * sum(weight.shape) > weight.numel():
            if total is not None:  # the factors so far become E (a sum over forwards; step() divides by them)
                self._eligibility_sums[name] = total.writer(weight.detach(), self._buffer(name, weight), 1)(slice(None))
            return False
        inputs = x.detach().reshape(-1, x.shape[-1])
        factors = rule.linear_factors(inputs.float(), y.detach().reshape(-1, y.shape[-1]).float())
        if factors is None:
            return False
        inputs = inputs.to(torch.float32, copy=True)  # kept until step(): later in-place ops cannot reach it
        if total is None:
            self._eligibility_sums[name] = _LowRankEligibility([factors[0]], [inputs], factors[1])
        else:
            total.add(factors[0], inputs, factors[1])
        return True

    def _attention_hooks(self, name: str, module: nn.Module) -> list[Any]:
        """Pre- and post-forward hooks that record the projections of one attention layer (see the module
        docstring): a torch function mode is active during the layer's training-mode forwards only."""
        targets = {key: synapse.weight for key, synapse in self.synapses.items() if synapse.layer == name}
        active: list[_ProjectionRecorder] = []

        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if torch.is_grad_enabled() and module.training:
                recorder = _ProjectionRecorder(self._record_projection, targets, _samples_first(module, args, kwargs))
                recorder.__enter__()
                active.append(recorder)
                self._forwards[name] += 1

        def post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if active:
                active.pop().__exit__(None, None, None)

        return [module.register_forward_pre_hook(pre_hook, with_kwargs=True),
                module.register_forward_hook(post_hook, always_call=True)]

    def _record_projection(self, name: str, first_row: int, x: Tensor, weight: Tensor, output: Tensor,
                           bias: Tensor | None, samples_first: Callable[[Tensor], Tensor]) -> None:
        """Add the eligibility of one ``F.linear`` call of an attention layer to rows ``first_row:`` of ``name``, and
        keep that call's input and ``dL/dy`` (samples first) for modulators that read them."""
        synapse = self.synapses[name]
        rows = weight.shape[0]
        per_group = synapse.weight.shape[0] // synapse.groups
        groups = rows // per_group if rows % per_group == 0 else 1
        keep_output_grad = self.modulator.needs_output_grad and output.requires_grad
        if self.modulator.needs_inputs or keep_output_grad:
            capture = _Capture(x=samples_first(x.detach()) if self.modulator.needs_inputs else None,
                               rows=(first_row, rows))
            if keep_output_grad:
                _keep_output_grad(output, capture, samples_first)
            self._captures[name].append(capture)
        with torch.no_grad(), _autocast_off(x.device.type):
            total = self._eligibility_sums[name]
            if total is None:
                total = self._eligibility_sums[name] = self._buffer(name, synapse.weight).zero_()
            if not self.modulator.needs_eligibility:
                return
            x_e, y_e = x.detach().float(), output.detach().float()
            if bias is not None:
                y_e = y_e - bias.detach().float()
            if self.eligibility_fraction < 1.0:  # a random subset of the samples, each with all its tokens
                x_e, y_e = batch_subset(samples_first(x_e), samples_first(y_e), self.eligibility_fraction)
            eligibility = self.rules[synapse.layer].projection(
                x_e.reshape(-1, x_e.shape[-1]), y_e.reshape(-1, y_e.shape[-1]), weight.detach().float(), groups)
            total[first_row:first_row + rows].add_(eligibility)

    def _buffer(self, name: str, weight: Tensor) -> Tensor:
        """The float32 buffer (shaped and placed like ``weight``) that plastic weight ``name``'s ``E`` is written
        into, allocated once and reused every step (see ``_eligibility_buffer``)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != weight.shape or buffer.device != weight.device:
            buffer = self._buffers[name] = _eligibility_buffer(weight.shape, weight.device)
        return buffer

    def remove(self) -> None:
        """Detach every hook and drop captured activations and buffers; the model is left exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._removed = True
        self.clear()
        self._buffers.clear()

    def clear(self) -> None:
        """Forget what training-mode forwards recorded (e.g. after one that will not be followed by step())."""
        for name, captures in self._captures.items():
            captures.clear()
            self._eligibility_sums[name] = None
        for name in self._forwards:
            self._forwards[name] = 0

    def __enter__(self) -> GHL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------------ update
    def eligibility(self, name: str) -> Tensor | None:
        """Batch-mean float32 ``E`` of one plastic weight (a layer name, or ``<layer>.<weight>`` for attention
        projections) over its training-mode forwards since the last step, all-reduced (averaged) under DDP,
        before normalisation; ``None`` if nothing was recorded."""
        if name not in self.synapses:
            raise KeyError(f"{name!r} is not a plastic weight of this GHL; plastic weights: {list(self.synapses)}")
        return self._mean_eligibility(name, reuse=False, replicas=replica_count())

    def _mean_eligibility(self, name: str, reuse: bool, replicas: int) -> Tensor | None:
        """[`eligibility`][] of a plastic weight; ``reuse=True`` may return the accumulator itself (``step()`` drops
        it anyway); ``replicas``: the number of data-parallel processes it is averaged over."""
        total = self._eligibility_sums[name]
        if total is None:
            return None
        forwards = self._forwards[self.synapses[name].layer]
        if isinstance(total, _LowRankEligibility):
            weight = self.synapses[name].weight.detach()
            out = self._buffer(name, weight) if reuse else torch.empty(weight.shape, dtype=torch.float32,
                                                                       device=weight.device)
            return replica_mean(total.writer(weight, out, forwards)(slice(None)), replicas)
        if forwards > 1:
            eligibility = total.div_(forwards) if reuse else total / forwards
        else:
            eligibility = total if reuse else total.clone()
        return replica_mean(eligibility, replicas)

    def recorded(self) -> list[str]:
        """Plastic weights (names as in ``synapses``) that recorded an eligibility since the last step."""
        return [name for name, total in self._eligibility_sums.items() if total is not None]

    def _silent(self) -> list[str]:
        """Plastic weights that recorded nothing since the last step (with the reason)."""
        silent = []
        for name, synapse in self.synapses.items():
            if self._eligibility_sums[name] is None:
                ran = self._forwards[synapse.layer] > 0
                silent.append(f"{name!r} (its layer ran but never called this projection through F.linear)" if ran
                              else f"{name!r}")
        return silent

    @torch.no_grad()
    def step(self, **context: Any) -> None:
        """Write ``M ⊙ |E|`` into every plastic weight's ``.grad`` (GHL Eq. 6), then free the captures.

        Keyword arguments are passed to the modulator (e.g. a reward or the output error).  Raises
        ``RuntimeError`` when no training-mode forward was recorded (or after [`remove`][]), or when the
        modulator needs ``dL/dW`` and ``loss.backward()`` has not run; warns (``strict``: raises) naming every
        selected layer that recorded nothing; raises ``FloatingPointError`` for a non-finite update unless
        ``nonfinite="skip"``.  Weights with ``requires_grad=False`` are never written.
        """
        if self._removed:
            raise RuntimeError("GHL.step() called after remove(): its hooks are detached, so it records nothing; "
                               "create a new GHL for the model")
        if all(total is None for total in self._eligibility_sums.values()):
            raise RuntimeError("GHL.step() called before any training-mode forward pass with gradients enabled "
                               "(forwards under torch.no_grad() or model.eval() are not recorded)")
        try:
            self.guard.silent(self._silent())
            layers = []  # (name, synapse, E, normalisation, fast-path signals and reductions or None), in order
            replicas = replica_count()
            for name, synapse in self.synapses.items():
                total = self._eligibility_sums[name]
                if total is None:
                    continue
                if self.guard.frozen(name, synapse.weight):
                    continue
                normalize = self.rules[synapse.layer].normalize
                grad = synapse.weight.grad
                fast = None
                if (normalize in ("max", None) and self.modulator.in_place() and grad is not None
                        and grad.dtype == torch.float32 and grad.shape == synapse.weight.shape
                        and not grad.requires_grad):
                    write = None  # E from its factors, one row block at a time inside the reductions' pass
                    if isinstance(total, _LowRankEligibility) and replicas == 1:
                        weight = synapse.weight.detach()
                        eligibility = self._buffer(name, weight)
                        write = total.writer(weight, eligibility, self._forwards[synapse.layer])
                    else:
                        eligibility = self._mean_eligibility(name, reuse=True, replicas=replicas)
                    signals = self._signals(name, synapse, eligibility)
                    fast = signals, self._reductions(signals, normalize, write)
                else:
                    eligibility = self._mean_eligibility(name, reuse=True, replicas=replicas)
                layers.append((name, synapse, eligibility, normalize, fast))
            fetched = iter(self._fetch([fast[1] for *_, fast in layers if fast is not None]))
            for name, synapse, eligibility, normalize, fast in layers:
                if fast is not None:
                    signals = fast[0]
                    if self._update_in_place(signals, normalize, next(fetched)):
                        continue
                else:  # built here, one layer at a time: a modulator's per-sample signals can be activation-sized
                    signals = self._signals(name, synapse, eligibility)
                self._update(name, synapse.weight, signals, normalize, context)
        finally:
            self.clear()

    def _signals(self, name: str, synapse: _Synapse, eligibility: Tensor) -> LayerSignals:
        """What the modulator receives for one plastic weight: ``E``, ``dL/dW`` and the captured per-sample signals
        (concatenated over the forwards since the last step; an attention projection's are per row block, see
        ``_modulated``)."""
        whole_layer = [capture for capture in self._captures[name] if capture.rows is None]
        return _signals_of(name, synapse.signal_module, eligibility, synapse.weight.grad, whole_layer)

    def _modulated(self, name: str, signals: LayerSignals, context: dict[str, Any]) -> Tensor:
        """The modulator's update ``M ⊙ |E|`` of one plastic weight.  An attention projection whose per-sample
        signals were captured is modulated block by block: every row block that an ``F.linear`` call used (the
        query, key and value rows of a packed weight called with different inputs; all rows when one call used
        them all) is a Linear layer of its own for the modulator, named ``<weight>[first:last]`` unless it is the
        whole weight, with its own input and ``dL/dy``; rows no call used get no update."""
        captures = self._captures[name]
        if not captures or captures[0].rows is None:
            return self.modulator.update(signals, **context)
        weight, grad = self.synapses[name].weight.detach(), signals.weight_grad
        blocks: dict[tuple[int, int], list[_Capture]] = {}
        for capture in captures:
            blocks.setdefault(capture.rows, []).append(capture)  # type: ignore[arg-type]
        update = torch.zeros_like(signals.eligibility)
        for (first, count), block_captures in blocks.items():
            rows = slice(first, first + count)
            block_name = name if count == weight.shape[0] else f"{name}[{first}:{first + count}]"
            block = _signals_of(block_name, _Projection(weight[rows]), signals.eligibility[rows],
                                None if grad is None else grad[rows], block_captures)
            update[rows] = self.modulator.update(block, **context)
        return update

    def _reductions(self, signals: LayerSignals, normalize: Normalization,
                    write: Callable[[slice], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The fast path's two read-only reductions (see [`_update_in_place`][]), not yet fetched: ``sum dL/dW``
        and ``max|E|`` (``sum |E|`` without normalisation), after ``|E|`` is taken in place (M ⊙ |E| reads nothing
        else of E).  One pass over row blocks (``_row_blocks``); ``write(rows)``, when given, first forms those rows
        of ``E`` from its factors, so that they are still in cache for the rest of the pass."""
        magnitude, grad = signals.eligibility, signals.weight_grad
        totals, sums = [], []
        for rows in _row_blocks(magnitude):
            block = (magnitude[rows] if write is None else write(rows)).abs_()
            totals.append(block.amax() if normalize == "max" else block.sum())
            if self.modulator.needs_weight_grad:
                sums.append(grad[rows].sum())
        if len(totals) == 1:
            total = totals[0]
        else:
            total = torch.stack(totals).amax() if normalize == "max" else torch.stack(totals).sum()
        grad_sum = (sums[0] if len(sums) == 1 else torch.stack(sums).sum()) if sums else grad.new_zeros(())
        return grad_sum, total

    @staticmethod
    def _fetch(reductions: list[tuple[Tensor, Tensor]]) -> list[list[float]]:
        """Every layer's pair of reductions as Python floats, in the given order, with one stack and one device
        synchronisation per device instead of one per layer."""
        by_device: dict[torch.device, list[int]] = {}
        for index, pair in enumerate(reductions):
            by_device.setdefault(pair[0].device, []).append(index)
        values: list[list[float]] = [[] for _ in reductions]
        for indices in by_device.values():
            flat = torch.stack([value for i in indices for value in reductions[i]]).tolist()
            for index, first, second in zip(indices, flat[0::2], flat[1::2]):
                values[index] = [first, second]
        return values

    def _update_in_place(self, signals: LayerSignals, normalize: Normalization, values: list[float]) -> bool:
        """The fast path of [`step`][] (GradSign, SignOnly): ``.grad <- M ⊙ |E| / s`` written over ``dL/dW`` by the
        modulator's ``update_``, with ``|E|`` taken in place and the ``"max"`` scale ``s`` deferred into the
        modulator's product, so that ``E`` is never divided on its own.  ``values`` are ``sum dL/dW`` and
        ``s = max|E|`` (``sum |E|`` without normalisation), two read-only reductions that [`step`][] fetches for all
        layers together; both are finite exactly when ``E`` and ``dL/dW`` are, and then so is the update
        (``|E| / s <= 1``).  Returns False, with ``.grad`` untouched, when a value is not finite (the generic path
        then runs, with its own checks and messages)."""
        if not all(math.isfinite(value) for value in values):
            return False
        scale = values[1] if normalize == "max" and values[1] > 0 else 1.0  # all-zero E: the update is zero
        grad = signals.weight_grad
        blocks = _row_blocks(grad)
        if len(blocks) == 1:
            self.modulator.update_(signals, grad, scale=scale)
            return True
        for rows in blocks:  # the modulator's product is elementwise: block by block, each block in cache
            block = replace(signals, eligibility=signals.eligibility[rows], weight_grad=grad[rows])
            self.modulator.update_(block, grad[rows], scale=scale)
        return True

    def _update(self, name: str, weight: nn.Parameter, signals: LayerSignals, normalize: Normalization,
                context: dict[str, Any]) -> None:
        """The generic path of [`step`][]: ``.grad <- modulator.update(...)`` after normalising ``E`` in place, with
        a finiteness check of ``dL/dW`` and of the update (one synchronisation each)."""
        # E is this step's accumulator (overwritten by the next step): normalise it in place
        eligibility = signals.eligibility = normalize_eligibility(signals.eligibility, normalize, inplace=True)
        # what the modulator reads must be finite (dL/dW, dL/dy, the layer input, error= / reward=): sign(NaN) is 0,
        # so a NaN would vanish silently into a zero update
        read = (signals.weight_grad if self.modulator.needs_weight_grad else None, signals.output_grad, signals.inputs)
        if not all_finite(*read):
            self.guard.non_finite(name, self._cause(eligibility))
            weight.grad = None
            return
        if not self.guard.context(name, context):
            weight.grad = None
            return
        update = self._modulated(name, signals, context).to(weight.dtype)
        if not bool(torch.isfinite(update.sum())):  # one reduction: NaN/Inf propagate
            self.guard.non_finite(name, self._cause(eligibility))
            weight.grad = None
            return
        if weight.grad is None:
            weight.grad = update.expand_as(weight).clone()
        else:
            weight.grad.copy_(update)

    def _cause(self, eligibility: Tensor) -> str:
        """What made a plastic weight's update non-finite (its ``E``, or the modulator's signal)."""
        if not bool(torch.isfinite(eligibility).all()):
            return "eligibility E (the layer's input, output or weight holds NaN/Inf)"
        return (f"modulator signal of {type(self.modulator).__name__} (dL/dW, dL/dy or the layer input holds "
                "NaN/Inf: the loss or the backward pass diverged)")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Per-layer temperatures and the modulator's state (e.g. a reward baseline or feedback matrices)."""
        return {"taus": self.taus, "modulator": self.modulator.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state.get("taus", {})) - set(self.rules)
        if unknown:
            raise KeyError(f"state_dict has temperatures for layers this GHL does not hold: {sorted(unknown)}")
        for name, tau in state.get("taus", {}).items():
            self.rules[name].tau = check_tau(tau, f"tau[{name!r}]")
        self.modulator.load_state_dict(state.get("modulator", {}))

    def __repr__(self) -> str:
        lines = [f"  {name}: {type(s.module).__name__} {tuple(s.weight.shape)}"
                 + (f" groups={s.groups}" if s.groups > 1 else "") + f" {self.rules[s.layer]!r}"
                 for name, s in self.synapses.items()]
        return f"GHL(modulator={self.modulator!r},\n" + "\n".join(lines) + "\n)"
