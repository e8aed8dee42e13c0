"""SoftHebb, the DeepHebb paper's rule (Journé, Rodriguez, Guo & Moraitis, ICLR 2023) -- the Table 1/3 and Fig. 2
baseline of the GHL paper -- as one [`EligibilityRule`][] (pure tensor kernels; the learner that applies it,
[`ghl_snn.learners.softhebb.SoftHebbLearner`][], and the layer-wise protocol
[`ghl_snn.learners.softhebb.train_softhebb`][] live with the other learners).

For post-synaptic channel ``k`` with bias-free pre-activation ``u_k = w_k . x`` (at every batch element and, for
Conv2d, every position)::

    y_k   = softmax_k(u / tau)                                   soft winner-take-all over channels
    s_k   = +1 if k = argmax_j u_j else -1                       winner Hebbian, non-winners anti-Hebbian
    E_ik  = mean_n sum_pos  s_k y_k (x_i - u_k w_ik)             (SWTA-Oja, GHL Eq. 4, with the sign s)
    dW_k  = eta * |r_k - 1|**p * E_k / max|E|,  r_k = ||w_k||_2   weight-norm-dependent learning rate (p = 1/2)

The learning rate of a neuron vanishes as its weight vector reaches the unit sphere (the Oja term's fixed point),
which makes the unsupervised phase converge.  Like SWTA-Oja, both terms are vectorised: for Conv2d the Hebbian term
is the weight-gradient convolution with ``s * y`` in place of the output gradient.

Training protocol (DeepHebb paper): each plastic layer in turn gets an unsupervised epoch with this rule (earlier
layers already trained and fixed, no labels), then the linear classifier (and any other non-plastic parameters)
is trained by backprop on the frozen features -- [`ghl_snn.learners.softhebb.train_softhebb`][].  DeepHebb's
activation is [`ghl_snn.models.activations.Triangle`][].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import EligibilityRule, Normalization, as_tuple, check_normalization, check_tau
from ..ops.weight_gradient import conv_weight_gradient

IntPair = tuple[int, int]


def _signed_competition(y: Tensor, tau: float) -> Tensor:
    """``s * softmax(y / tau)`` over dim 1: positive at the argmax channel, negative elsewhere."""
    competition = torch.softmax(y / tau, dim=1)
    winner = F.one_hot(y.argmax(dim=1), y.shape[1]).to(y.dtype)
    if y.dim() == 4:  # one_hot appends the channel dim last: (N, H, W, K) -> (N, K, H, W)
        winner = winner.permute(0, 3, 1, 2)
    return competition * (2 * winner - 1)


def softhebb_linear(x: Tensor, y: Tensor, weight: Tensor, tau: float) -> Tensor:
    """Batch-mean SoftHebb eligibility of a Linear layer: ``x`` (N, in), ``y`` (N, out), weight (out, in)."""
    signed = _signed_competition(y, tau)
    hebbian = signed.t() @ x
    forgetting = (signed * y).sum(dim=0)
    return (hebbian - forgetting[:, None] * weight) / x.shape[0]


def softhebb_conv2d(x: Tensor, y: Tensor, weight: Tensor, tau: float, stride: IntPair = (1, 1),
                    padding: IntPair = (0, 0), dilation: IntPair = (1, 1)) -> Tensor:
    """Batch-mean SoftHebb eligibility of a Conv2d layer (groups=1), competition over channels at each position."""
    signed = _signed_competition(y, tau)
    hebbian = conv_weight_gradient(x, weight, signed, as_tuple(stride, 2), as_tuple(padding, 2),
                                   as_tuple(dilation, 2))
    forgetting = (signed * y).sum(dim=(0, 2, 3))
    return (hebbian - forgetting[:, None, None, None] * weight) / x.shape[0]


def norm_learning_rate(weight: Tensor, power: float = 0.5, eps: float = 1e-10) -> Tensor:
    """Per-neuron factor ``|r_k - 1|**power + eps`` with ``r_k = ||w_k||_2``, shaped to broadcast over ``weight``."""
    radius = weight.detach().flatten(1).norm(dim=1)
    factor = (radius - 1).abs().pow(power) + eps
    return factor.view(-1, *([1] * (weight.dim() - 1)))


class SoftHebb(EligibilityRule):
    """SoftHebb eligibility (see the module docstring) with softmax temperature ``tau``.

    ``normalize="max"`` (default) divides the layer's ``E`` by ``max|E|``.  The weight-norm-dependent learning rate
    is applied by [`ghl_snn.learners.softhebb.SoftHebbLearner`][] (it is a step size, not part of the eligibility).
    """

    def __init__(self, tau: float = 1.0, normalize: Normalization = "max") -> None:
        self.tau = check_tau(tau)
        self.normalize = check_normalization(normalize)

    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        return softhebb_linear(x, y, weight, self.tau)

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: IntPair, padding: IntPair,
               dilation: IntPair) -> Tensor:
        return softhebb_conv2d(x, y, weight, self.tau, tuple(stride), tuple(padding), tuple(dilation))

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, normalize={self.normalize!r}"


def hpca_linear(x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
    """Batch-mean HPCA eligibility of a Linear layer (see [`HPCA`][])."""
    correlation = y.t() @ y
    return (y.t() @ x - torch.tril(correlation) @ weight) / x.shape[0]


def hpca_conv2d(x: Tensor, y: Tensor, weight: Tensor, stride: IntPair = (1, 1), padding: IntPair = (0, 0),
                dilation: IntPair = (1, 1)) -> Tensor:
    """Batch-mean HPCA eligibility of a Conv2d layer, summed over positions (see [`HPCA`][])."""
    hebbian = conv_weight_gradient(x, weight, y, as_tuple(stride, 2), as_tuple(padding, 2),
                                   as_tuple(dilation, 2))
    correlation = torch.einsum("nkhw,njhw->kj", y, y)
    forgetting = (torch.tril(correlation) @ weight.flatten(1)).view_as(weight)
    return (hebbian - forgetting) / x.shape[0]


class HPCA(EligibilityRule):
    """Hebbian PCA (Sanger's generalised Hebbian algorithm), FastHebb's second baseline (Lagani et al.; GHL paper
    Tables 1 and 3, "HPCA-FH"), kept here with the other Hebbian baselines.

    ``E_ik = mean_n sum_pos y_k (x_i - sum_{j <= k} y_j w_ji)`` with the linear pre-activation ``y = W x``; the
    lower-triangular sum makes neuron ``k`` learn the ``k``-th principal component of its input patches.
    Vectorised as ``conv_weight_gradient(x, W, y) - tril(Y^T Y) W``.
    """

    def __init__(self, normalize: Normalization = "max") -> None:
        self.normalize = check_normalization(normalize)

    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        return hpca_linear(x, y, weight)

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: IntPair, padding: IntPair,
               dilation: IntPair) -> Tensor:
        return hpca_conv2d(x, y, weight, tuple(stride), tuple(padding), tuple(dilation))

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}"
