"""Soft-winner-take-all Oja eligibility (GHL paper, Eq. 4 and Algorithm 1 lines 5-6).

For post-synaptic unit ``k`` and pre-synaptic input ``i``::

    u_k  = softmax_k(y / tau)                      (Algorithm 1, line 5; over output units / channels)
    E_ik = mean_n  sum_pos  u_k (x_i - y_k w_ik)   (Eq. 4, summed over spatial positions for Conv2d)

Expanding the bracket gives two vectorised terms, for Linear ``E = (u^T x - diag(sum_n u y) W) / N`` and for
Conv2d ``E = (conv2d_weight(x, W.shape, u) - (sum u y)_k W_k) / N``: the first term is exactly the weight-gradient
convolution of the layer with ``u`` in place of the output gradient (no unfold / im2col).

When ``y`` is exactly the layer's own bias-free output ``W x`` (the plug-in's case, ``y_is_wx=True``), the
forgetting sum needs no pass over the activations: ``sum_{n,pos} u_k y_k = sum_i w_ik H_ik`` with ``H`` the
Hebbian term above, a weight-sized product.  The trace-based callers (time-averaged ``x`` and ``y``) keep the
explicit sum.

Bias: the Oja term uses the synaptic pre-activation ``y = W x`` **without** the bias (the plug-in subtracts it
from the module output before calling the rule), and the rule produces no eligibility for the bias: a plastic
layer's bias keeps its ordinary back-propagated gradient.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import EligibilityRule, Normalization, check_normalization, check_tau, normalize_eligibility

IntPair = int | Sequence[int]


def _pair(value: IntPair) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def swta_oja_linear(x: Tensor, y: Tensor, weight: Tensor, tau: float, y_is_wx: bool = False) -> Tensor:
    """Batch-mean SWTA-Oja eligibility of a Linear layer; ``x``: (N, in), ``y``: (N, out), weight (out, in).

    ``y_is_wx=True`` promises ``y = x W^T`` and takes the forgetting sum from the Hebbian term (module docstring).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear eligibility needs x (N, in) and y (N, out), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if weight.shape != (y.shape[1], x.shape[1]):
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match x {tuple(x.shape)} -> "
                         f"y {tuple(y.shape)}")
    competition = torch.softmax(y if tau == 1.0 else y / tau, dim=1)
    hebbian = competition.t() @ x
    if y_is_wx:  # sum_n u_nk y_nk = sum_i w_ki (u^T x)_ki
        forgetting = torch.linalg.vecdot(hebbian, weight, dim=1)
    else:
        forgetting = competition.mul_(y).sum(dim=0)  # u no longer needed: reuse its memory for u * y
    return hebbian.sub_(forgetting[:, None] * weight).div_(x.shape[0])


def swta_oja_conv2d(x: Tensor, y: Tensor, weight: Tensor, tau: float, stride: IntPair = 1, padding: IntPair = 0,
                    dilation: IntPair = 1, y_is_wx: bool = False) -> Tensor:
    """Batch-mean SWTA-Oja eligibility of a Conv2d layer (groups=1); softmax over channels at every position.

    ``y_is_wx=True`` promises ``y = conv2d(x, W)`` with the same geometry and takes the forgetting sum from the
    Hebbian term (module docstring).
    """
    if x.dim() != 4 or y.dim() != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"conv2d eligibility needs x (N, C, H, W) and y (N, K, H', W'), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if weight.dim() != 4 or weight.shape[0] != y.shape[1] or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match x {tuple(x.shape)} -> "
                         f"y {tuple(y.shape)} (groups=1 required)")
    competition = torch.softmax(y if tau == 1.0 else y / tau, dim=1)
    hebbian = torch.nn.grad.conv2d_weight(x, weight.shape, competition, stride=_pair(stride),
                                          padding=_pair(padding), dilation=_pair(dilation))
    if y_is_wx:  # sum_{n,pos} u_k y_k = sum_{c,a,b} w_kcab H_kcab
        forgetting = torch.linalg.vecdot(hebbian.flatten(1), weight.flatten(1), dim=1)
    else:
        forgetting = competition.mul_(y).sum(dim=(0, 2, 3))  # u no longer needed: reuse its memory for u * y
    return hebbian.sub_(forgetting[:, None, None, None] * weight).div_(x.shape[0])


def swta_oja(x: Tensor, y: Tensor, weight: Tensor, tau: float = 1.0, stride: IntPair = 1, padding: IntPair = 0,
             dilation: IntPair = 1, normalize: Normalization = None) -> Tensor:
    """SWTA-Oja eligibility ``E`` shaped like ``weight`` (GHL Eq. 4), optionally max-abs normalised.

    ``x`` is the layer input, ``y = W * x`` the bias-free pre-activation.  2-d ``x`` means a Linear layer, 4-d a
    Conv2d layer with the given ``stride``, ``padding`` and ``dilation``.  Computed in float32 (or float64 when
    the inputs are float64).
    """
    tau = check_tau(tau)
    check_normalization(normalize)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y, weight = x.detach().to(dtype), y.detach().to(dtype), weight.detach().to(dtype)
    if x.dim() == 4:
        eligibility = swta_oja_conv2d(x, y, weight, tau, stride, padding, dilation)
    else:
        eligibility = swta_oja_linear(x, y, weight, tau)
    return normalize_eligibility(eligibility, normalize)


class SWTAOja(EligibilityRule):
    """SWTA-Oja eligibility rule (GHL Eq. 4) with softmax temperature ``tau > 0``.

    ``normalize="max"`` (default, the reference behaviour) divides the layer's ``E`` by ``max|E|`` after batch
    accumulation; ``None`` keeps the raw batch-mean.  See the module docstring for the bias.
    """

    def __init__(self, tau: float = 1.0, normalize: Normalization = "max") -> None:
        self.tau = check_tau(tau)
        self.normalize = check_normalization(normalize)

    # the rule interface's y is the layer's own bias-free output W x: the forgetting sum is weight-sized
    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        return swta_oja_linear(x, y, weight, self.tau, y_is_wx=True)

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> Tensor:
        return swta_oja_conv2d(x, y, weight, self.tau, stride, padding, dilation, y_is_wx=True)

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, normalize={self.normalize!r}"
