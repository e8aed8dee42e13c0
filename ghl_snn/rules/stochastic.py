"""Stochastic eligibility: estimate the batch-mean ``E`` from a random subset of the batch's samples.

Every eligibility rule returns a batch mean ``E = (1/N) sum_n e_n`` of per-sample terms (GHL Eq. 4: ``e_n`` is
``u_k (x_i - y_k w_ik)`` summed over the spatial positions of sample ``n``).  Drawing ``m = ceil(f N)`` samples
``S`` uniformly *without replacement* and applying the same rule to them gives ``(1/m) sum_{n in S} e_n``, whose
expectation over the draw is exactly ``E`` (each sample is in ``S`` with probability ``m / N``): the rule's own
``1/m`` is the ``N / m`` rescaling of the subset's sum.  Its variance is the finite-population one,
``Var = s^2 / m * (N - m) / (N - 1)`` per synapse, with ``s^2`` the population variance of ``e_n`` over the batch.

Why samples and not spatial positions: a sample's ``e_n`` depends on that sample alone (the softmax competes over
channels at one position of one sample), and dropping whole samples shrinks the weight-gradient convolution that
dominates the cost by ``m / N``.  Dropping random spatial positions would be equally unbiased, but the
convolution would still run over every position (masked to zero) unless the patches were unfolded, which costs
more than it saves.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def check_eligibility_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float, raising ``ValueError`` unless it is a number with ``0 < fraction <= 1``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"eligibility_fraction must be a number in (0, 1], got {fraction!r}")
    value = float(fraction)
    if not 0.0 < value <= 1.0:  # also rejects nan
        raise ValueError(f"eligibility_fraction must be in (0, 1] (1 = the exact batch-mean eligibility), "
                         f"got {fraction!r}")
    return value


def subset_size(batch: int, fraction: float) -> int:
    """``m = ceil(fraction * batch)`` samples (at least one) used by [`batch_subset`][]."""
    return min(batch, max(1, math.ceil(fraction * batch - 1e-9)))


def batch_subset(x: Tensor, y: Tensor, fraction: float,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The same random ``ceil(fraction * N)`` samples (dimension 0) of a layer's input ``x`` and output ``y``.

    The rule applied to the subset is an unbiased estimate of the rule on the whole batch (module docstring).
    ``fraction = 1`` (or a subset as large as the batch) returns ``x`` and ``y`` themselves and draws no random
    number, so the exact rule is reproduced bit for bit.
    """
    batch = x.shape[0]
    if y.shape[0] != batch:
        raise ValueError(f"x and y must share the batch dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    size = subset_size(batch, fraction)
    if size >= batch:
        return x, y
    index = torch.randperm(batch, device=x.device, generator=generator)[:size]
    return x.index_select(0, index), y.index_select(0, index)
