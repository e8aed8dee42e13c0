"""The eligibility-rule interface shared by every local plasticity term.

An eligibility rule maps what a synapse can see locally -- the pre-synaptic input ``x``, the post-synaptic
pre-activation ``y = W x`` and the weight ``W`` itself -- to a tensor ``E`` shaped like ``W`` (factors 1 and 2 of the
three-factor rule; see [Architecture][architecture-three-factors]).  Sign convention: ``E`` is the direction a purely
Hebbian learner would *add* to the weight (``W <- W + eta * E``).
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..ops.weight_gradient import conv_input

Normalization = Literal["max", "mean", "rms", "channel", "channel-mean"] | None
"""How a layer's eligibility is scaled: ``"max"`` (``E / max|E|``, GHL's reference), ``"mean"``
(``E / mean|E|``), ``"rms"``, ``"channel"`` (per output unit by its max), ``"channel-mean"``, or ``None`` (raw)."""

#: ``"max"`` is the GHL reference; the others keep the Hebbian *shape* of ``E`` but change its *scale*
SUPPORTED_NORMALIZATIONS = ("max", "mean", "rms", "channel", "channel-mean", None)


def check_tau(tau: float, name: str = "tau") -> float:
    """Return ``tau`` as a float: ``TypeError`` unless it is a real number, ``ValueError`` unless it is finite and
    > 0.  ``name`` is the argument named in the message."""
    if isinstance(tau, (str, bytes, bool)):
        tau_value = None
    else:
        try:
            tau_value = float(tau)
        except (TypeError, ValueError, RuntimeError):
            tau_value = None
    if tau_value is None:
        raise TypeError(f"{name} (the softmax temperature) must be a number > 0, got {tau!r} "
                        f"of type {type(tau).__name__}")
    if not tau_value > 0 or tau_value == float("inf"):
        raise ValueError(f"softmax temperature {name} must be a finite number > 0, got {tau!r}")
    return tau_value


def check_normalization(normalize: Normalization) -> Normalization:
    """Validate a normalisation mode (one of ``SUPPORTED_NORMALIZATIONS``)."""
    if normalize not in SUPPORTED_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {SUPPORTED_NORMALIZATIONS}, got {normalize!r}")
    return normalize


def normalize_eligibility(eligibility: Tensor, normalize: Normalization, inplace: bool = False) -> Tensor:
    """Per-layer (or per-output-neuron) normalisation of an eligibility tensor ``E`` shaped like the weight.

    The GHL update is ``M ⊙ |E|`` (GHL paper Eq. 6); normalising ``E`` sets the size of the step while the
    Hebbian *shape* (which synapses move more than others) is kept.  With ``s`` the scale below, ``E / s``:

    * ``"max"``: ``s = max|E|`` over the whole layer (the GHL reference implementation); ``|E/s| <= 1`` and most
      entries are a small fraction of 1.
    * ``"mean"``: ``s = mean|E|`` over the layer, so ``mean|E/s| = 1`` -- the same mean step as the sign-only
      ablation (``|E| := 1``) at the same learning rate.
    * ``"rms"``: ``s = sqrt(mean E²)`` over the layer, so ``mean (E/s)² = 1``.
    * ``"channel"``: ``s_k = max_{i} |E_{k i}|`` per output neuron / channel ``k`` (the first weight dimension;
      ``i`` runs over every input index and kernel position), so every neuron's largest entry is 1.
    * ``"channel-mean"``: ``s_k = mean_i |E_{k i}|`` per output neuron / channel.
    * ``None``: ``E`` unchanged.

    A zero scale (an all-zero layer or neuron) leaves those entries zero.  ``inplace=True`` divides ``E`` itself
    (for a buffer the caller owns) and returns it; the max scales are taken as ``max(max E, -min E)`` in one
    reduction that allocates no weight-sized ``|E|``.
    """
    check_normalization(normalize)
    if normalize is None:
        return eligibility
    if normalize in ("channel", "channel-mean"):
        per_row = eligibility.reshape(eligibility.shape[0], -1) if eligibility.dim() > 1 else eligibility.reshape(-1, 1)
        if normalize == "channel":
            low, high = torch.aminmax(per_row, dim=1)
            scale = torch.maximum(high, -low)  # = max_i |E_ki| (NaN propagates) without a weight-sized |E|
        else:
            scale = per_row.abs().mean(dim=1)
        scale = scale.reshape((-1,) + (1,) * (eligibility.dim() - 1)) if eligibility.dim() > 1 else scale
    elif normalize == "max":
        low, high = torch.aminmax(eligibility)
        scale = torch.maximum(high, -low)
    elif normalize == "mean":
        scale = eligibility.abs().mean()
    else:  # "rms"
        scale = eligibility.square().mean().sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return eligibility.div_(scale) if inplace else eligibility / scale


def as_tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """A convolution's ``stride`` / ``padding`` / ``dilation`` as ``dims`` ints: one int is repeated, a sequence
    must have ``dims`` entries (``ValueError`` otherwise)."""
    if type(value) is tuple and len(value) == dims:  # a module's own attribute
        return value
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(int(v) for v in value)
    if len(values) != dims:
        raise ValueError(f"expected {dims} values, got {value!r}")
    return values


def bias_free(module: nn.Module, output: Tensor) -> Tensor:
    """A Linear / ConvNd layer's synaptic pre-activation ``y = W x``: its ``output`` without the bias (which the
    Oja term and the Hebbian diagnostics leave out)."""
    bias = module.bias
    if bias is None:
        return output
    bias = bias.detach()
    if bias.dtype != output.dtype:
        bias = bias.to(output.dtype)
    if isinstance(module, nn.modules.conv._ConvNd):
        return output - bias.view(-1, *([1] * (len(module.kernel_size))))
    return output - bias


_ACCEPTS_OUT: dict[type, bool] = {}


class EligibilityRule:
    """Base class of an eligibility term ``E(x, y, W)``.

    Subclasses implement ``linear`` and ``conv2d``; both return the *batch-mean* eligibility in float32,
    shaped like the weight, before any normalisation.  ``y`` is the pre-activation **without bias**.  Rules that
    also handle Conv1d / Conv3d and grouped convolutions override [`conv`][]; attention projections go through
    [`projection`][] (by default one ``linear`` call per group of output units).
    """

    #: per-layer normalisation applied by the plug-in after (distributed) accumulation
    normalize: Normalization = "max"
    #: True for rules that read the spikes of every step ([`TimingRule`][ghl_snn.rules.timing.TimingRule])
    timing: bool = False

    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def accepts_out(self) -> bool:
        """Whether this rule's ``linear`` (and ``__call__``) take ``out=``: a float32 weight-shaped buffer, kept by
        the plug-in across steps, that ``E`` is written into instead of a fresh tensor (on CPU a fresh 100 MB
        tensor costs more in page faults than the matrix product that fills it)."""
        cls = type(self)
        if cls not in _ACCEPTS_OUT:
            _ACCEPTS_OUT[cls] = all("out" in inspect.signature(method).parameters
                                    for method in (cls.linear, cls.__call__))
        return _ACCEPTS_OUT[cls]

    def linear_factors(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(U, F)`` with this rule's batch-mean Linear eligibility ``E = U^T x - F[:, None] * W`` (``U``: (N, out),
        ``F``: (out,)), for rules of that form (a rank-``N`` Hebbian product minus a per-unit multiple of the
        weight, as Oja's); ``None`` (the default) otherwise.  The plug-in then may keep ``U``, ``x`` and ``F``
        instead of ``E`` until ``step()`` when they are smaller than the weight, and form ``E`` one row block at a
        time while it uses it."""
        return None

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def conv(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
             dilation: tuple[int, ...], groups: int) -> Tensor:
        """Eligibility of a Conv1d / Conv2d / Conv3d layer with ``groups``; the default handles ungrouped Conv2d
        through ``conv2d`` and raises ``NotImplementedError`` otherwise."""
        if x.dim() == 4 and groups == 1:
            return self.conv2d(x, y, weight, stride, padding, dilation)
        raise NotImplementedError(f"{type(self).__name__} has no eligibility for a {x.dim() - 2}-d convolution "
                                  f"with groups={groups}; it implements conv2d (groups=1) only")

    def projection(self, x: Tensor, y: Tensor, weight: Tensor, groups: int) -> Tensor:
        """Eligibility of a Linear projection whose output units form ``groups`` separate competitions (the
        packed query / key / value projection of an attention layer): one ``linear`` call per group."""
        if groups == 1:
            return self.linear(x, y, weight)
        return torch.cat([self.linear(x, y_g, w_g) for y_g, w_g in zip(y.chunk(groups, dim=1),
                                                                        weight.chunk(groups, dim=0))])

    def __call__(self, module: nn.Module, x: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        """Eligibility of ``module`` (Linear or ConvNd) for input ``x`` and bias-free pre-activation ``y``
        (float32, like the weight).  ``out``: a buffer a Linear layer's ``E`` may be written into (used only
        when the rule [`accepts_out`][]); the result is returned either way."""
        weight = module.weight.detach().float()
        x, y = x.detach().float(), y.detach().float()
        if isinstance(module, nn.modules.conv._ConvNd):
            if x.dim() == len(module.kernel_size) + 1:  # unbatched input
                x, y = x.unsqueeze(0), y.unsqueeze(0)
            x, padding = conv_input(module, x)
            return self.conv(x, y, weight, module.stride, padding, module.dilation, module.groups)
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if out is not None and self.accepts_out:
            return self.linear(x, y, weight, out=out)  # type: ignore[call-arg]
        return self.linear(x, y, weight)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
