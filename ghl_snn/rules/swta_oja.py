"""Soft-winner-take-all Oja eligibility (GHL paper, Eq. 4 and Algorithm 1 lines 5-6).

For post-synaptic unit ``k`` and pre-synaptic input ``i``::

    u_k  = softmax_k(y / tau)                      (Algorithm 1, line 5; over output units / channels)
    E_ik = mean_n  sum_pos  u_k (x_i - y_k w_ik)   (Eq. 4, summed over spatial positions for Conv2d)

Expanding the bracket gives two vectorised terms, for Linear ``E = (u^T x - diag(sum_n u y) W) / N`` and for
ConvNd ``E = (convNd_weight(x, W.shape, u, groups) - (sum u y)_k W_k) / N``: the first term is exactly the
weight-gradient convolution of the layer with ``u`` in place of the output gradient (no unfold / im2col).

Groups: a grouped (or depthwise) convolution is ``groups`` independent layers side by side, so the softmax runs
over the output channels of each group; likewise the packed query / key / value projection of an attention layer
is three Linear layers, each with its own softmax over its output units.

When ``y`` is exactly the layer's own bias-free output ``W x`` (the plug-in's case, ``y_is_wx=True``), the
forgetting sum needs no pass over the activations: ``sum_{n,pos} u_k y_k = sum_i w_ik H_ik`` with ``H`` the
Hebbian term above, a weight-sized product.  That form is used only when the activations ``y`` are larger than
the weight; otherwise (small batches, large fully-connected layers) the explicit sum over ``u * y`` is the
cheaper pass.  The trace-based callers (time-averaged ``x`` and ``y``) always keep the explicit sum.

Bias: the Oja term uses the synaptic pre-activation ``y = W x`` **without** the bias (the plug-in subtracts it
from the module output before calling the rule), and the rule produces no eligibility for the bias: a plastic
layer's bias keeps its ordinary back-propagated gradient.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import EligibilityRule, Normalization, as_tuple, check_normalization, check_tau, \
    normalize_eligibility
from ..ops.weight_gradient import conv_weight_gradient

IntTuple = int | Sequence[int]


def _competition(y: Tensor, tau: float, groups: int) -> Tensor:
    """``u = softmax(y / tau)`` over dim 1, separately within each of ``groups`` equal blocks of units / channels
    (exactly 1 where every block is a single unit, as in a depthwise convolution: no softmax is computed then)."""
    if groups == y.shape[1]:
        return torch.ones_like(y)
    scaled = y if tau == 1.0 else y / tau
    if groups == 1:
        return torch.softmax(scaled, dim=1)
    return torch.softmax(scaled.unflatten(1, (groups, y.shape[1] // groups)), dim=2).flatten(1, 2)


def swta_oja_linear(x: Tensor, y: Tensor, weight: Tensor, tau: float, groups: int = 1,
                    y_is_wx: bool = False, out: Tensor | None = None) -> Tensor:
    """Batch-mean SWTA-Oja eligibility of a Linear layer; ``x``: (N, in), ``y``: (N, out), weight (out, in).

    ``groups > 1`` splits the output units into that many equal blocks, each with its own softmax (the packed
    query / key / value projection of an attention layer is three layers side by side).
    ``y_is_wx=True`` promises ``y = x W^T`` and takes the forgetting sum from the Hebbian term (module docstring).
    ``out``: a float32 tensor shaped like ``weight`` that ``E`` is written into (and returned).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear eligibility needs x (N, in) and y (N, out), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if weight.shape != (y.shape[1], x.shape[1]):
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match x {tuple(x.shape)} -> "
                         f"y {tuple(y.shape)}")
    if groups < 1 or y.shape[1] % groups:
        raise ValueError(f"{y.shape[1]} output units cannot be split into groups={groups} competitions")
    competition = _competition(y, tau, groups)
    fold = competition.numel() < weight.numel()  # apply the batch mean's 1/N to the smaller of u and E
    if fold:
        competition.div_(x.shape[0])
    if y_is_wx and y.numel() > weight.numel():  # sum_n u_nk y_nk = sum_i w_ki (u^T x)_ki, the cheaper pass
        hebbian = torch.mm(competition.t(), x, out=out)
        forgetting = torch.linalg.vecdot(hebbian, weight, dim=1)
        eligibility = hebbian.addcmul_(forgetting[:, None], weight, value=-1.0)
    else:  # the Oja term first, then the Hebbian product accumulated onto it: no separate weight-sized pass
        forgetting = (competition * y).sum(dim=0)
        eligibility = torch.mul(weight, forgetting[:, None].neg_(), out=out).addmm_(competition.t(), x)
    return eligibility if fold else eligibility.div_(x.shape[0])


def swta_oja_linear_factors(x: Tensor, y: Tensor, tau: float, groups: int = 1) -> tuple[Tensor, Tensor]:
    """The factors of the batch-mean SWTA-Oja eligibility of a Linear layer, ``E = U^T x - F[:, None] * W`` with
    ``U = u / N`` and ``F_k = sum_n U_nk y_nk`` (Eq. 4 with the bracket expanded; ``x``: (N, in), ``y``: (N, out),
    ``groups`` separate competitions as in [`swta_oja_linear`][])."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear eligibility needs x (N, in) and y (N, out), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if groups < 1 or y.shape[1] % groups:
        raise ValueError(f"{y.shape[1]} output units cannot be split into groups={groups} competitions")
    competition = _competition(y, tau, groups).div_(x.shape[0])
    return competition, (competition * y).sum(dim=0)


def swta_oja_conv(x: Tensor, y: Tensor, weight: Tensor, tau: float, stride: IntTuple = 1, padding: IntTuple = 0,
                  dilation: IntTuple = 1, groups: int | None = None, y_is_wx: bool = False) -> Tensor:
    """Batch-mean SWTA-Oja eligibility of a Conv1d / Conv2d / Conv3d layer (GHL Eq. 4), any ``groups``.

    ``x``: (N, C, *S), ``y``: (N, K, *S'), weight (K, C / groups, *kernel); ``groups=None`` infers it from the
    shapes.  The competition ``u`` is a softmax over the output channels **of each group**, at every sample and
    position: a group of a grouped convolution is a layer of its own (it sees only its ``C / groups`` input
    channels), so its channels compete among themselves.  For a depthwise convolution (one channel per group)
    ``u = 1`` and Eq. 4 reduces to ``E_ik = sum_pos (x_i - y_k w_ik)``.  The Hebbian term is the grouped
    weight-gradient convolution ([`conv_weight_gradient`][ghl_snn.ops.weight_gradient.conv_weight_gradient]
    with ``u`` in place of the output gradient),
    the Oja term ``(sum u y)_k w_k``.  ``y_is_wx=True`` promises ``y = convNd(x, W)`` with the same geometry and
    takes that sum from the Hebbian term (module docstring).
    """
    dims = x.dim() - 2
    if dims not in (1, 2, 3) or y.dim() != x.dim() or x.shape[0] != y.shape[0]:
        raise ValueError(f"conv eligibility needs x (N, C, *S) and y (N, K, *S') with 1-3 spatial dims, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if groups is None:
        groups = x.shape[1] // weight.shape[1] if weight.dim() > 1 and weight.shape[1] else 1
    if (weight.dim() != x.dim() or weight.shape[0] != y.shape[1] or weight.shape[1] * groups != x.shape[1]
            or y.shape[1] % groups):
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match x {tuple(x.shape)} -> "
                         f"y {tuple(y.shape)} with groups={groups}")
    competition = _competition(y, tau, groups)
    fold = competition.numel() < weight.numel()  # apply the batch mean's 1/N to the smaller of u and E
    if fold:
        competition.div_(x.shape[0])
    hebbian = conv_weight_gradient(x, weight, competition, as_tuple(stride, dims), as_tuple(padding, dims),
                                   as_tuple(dilation, dims), groups)
    if y_is_wx and y.numel() > weight.numel():  # sum_{n,pos} u_k y_k = sum over the kernel of w_k * H_k
        forgetting = torch.linalg.vecdot(hebbian.flatten(1), weight.flatten(1), dim=1)
    else:
        forgetting = competition.mul_(y).sum(dim=(0, *range(2, y.dim())))  # reuse u's memory for u * y
    eligibility = hebbian.addcmul_(forgetting.view(-1, *([1] * (dims + 1))), weight, value=-1.0)
    return eligibility if fold else eligibility.div_(x.shape[0])


def swta_oja(x: Tensor, y: Tensor, weight: Tensor, tau: float = 1.0, stride: IntTuple = 1, padding: IntTuple = 0,
             dilation: IntTuple = 1, normalize: Normalization = None, groups: int = 1) -> Tensor:
    """SWTA-Oja eligibility ``E`` shaped like ``weight`` (GHL Eq. 4), optionally max-abs normalised.

    ``x`` is the layer input, ``y = W * x`` the bias-free pre-activation.  2-d ``x`` means a Linear layer (``groups``
    separate competitions over its outputs), 3-/4-/5-d a Conv1d/2d/3d layer with the given ``stride``,
    ``padding``, ``dilation`` and ``groups``.  Computed in float32 (or float64 when the inputs are float64).
    """
    tau = check_tau(tau)
    check_normalization(normalize)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y, weight = x.detach().to(dtype), y.detach().to(dtype), weight.detach().to(dtype)
    if x.dim() >= 3:
        eligibility = swta_oja_conv(x, y, weight, tau, stride, padding, dilation, groups)
    else:
        eligibility = swta_oja_linear(x, y, weight, tau, groups)
    return normalize_eligibility(eligibility, normalize)


class SWTAOja(EligibilityRule):
    """SWTA-Oja eligibility rule (GHL Eq. 4) with softmax temperature ``tau > 0``.

    ``normalize="max"`` (default, the reference behaviour) divides the layer's ``E`` by ``max|E|`` after batch
    accumulation; ``"mean"``, ``"rms"``, ``"channel"`` and ``"channel-mean"`` use other scales
    ([`normalize_eligibility`][ghl_snn.rules.base.normalize_eligibility]); ``None`` keeps the raw batch-mean.  See
    the module docstring for the bias.
    """

    def __init__(self, tau: float = 1.0, normalize: Normalization = "max") -> None:
        self.tau = check_tau(tau)
        self.normalize = check_normalization(normalize)

    # the rule interface's y is the layer's own bias-free output W x: the forgetting sum is weight-sized
    def linear(self, x: Tensor, y: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
        return swta_oja_linear(x, y, weight, self.tau, y_is_wx=True, out=out)

    def linear_factors(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        if type(self).linear is not SWTAOja.linear:  # a subclass with its own formula: no factors of this one
            return None
        return swta_oja_linear_factors(x, y, self.tau)

    def conv(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
             dilation: tuple[int, ...], groups: int) -> Tensor:
        return swta_oja_conv(x, y, weight, self.tau, stride, padding, dilation, groups, y_is_wx=True)

    def projection(self, x: Tensor, y: Tensor, weight: Tensor, groups: int) -> Tensor:
        return swta_oja_linear(x, y, weight, self.tau, groups)

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, normalize={self.normalize!r}"
