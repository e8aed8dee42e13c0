"""Pair-based spike-timing dependent plasticity with exponential traces (Bi & Poo 1998; Song, Miller & Abbott
2000; the trace form of Morrison, Diesmann & Gerstner 2008, Biol. Cybern. 98:459).

A pair of a pre-synaptic spike at ``t_pre`` and a post-synaptic spike at ``t_post`` (in time steps) contributes::

    A_plus  exp(-(t_post - t_pre) / tau_plus)     if t_post >= t_pre   (potentiation; same step counts as causal)
    -A_minus exp(-(t_pre - t_post) / tau_minus)   if t_post <  t_pre   (depression)

``interaction="all"`` sums every pair (all-to-all); ``"nearest"`` pairs each post spike only with the latest
pre spike at or before it, and each pre spike only with the latest post spike before it (the symmetric
nearest-spike scheme, Morrison et al. 2008, Sec. 4.1.2).  Online, with per-neuron traces decaying by
``d = exp(-1 / tau)`` per step::

    all:      x_t = d_plus x_{t-1} + s_pre_t              y_t = d_minus y_{t-1} + s_post_t
    nearest:  x_t = d_plus x_{t-1} (1 - s_pre_t) + s_pre_t (a spike resets the trace to 1; likewise y)
    e_t     = (A_plus s_post_t^T x_t - A_minus (d_minus y_{t-1})^T s_pre_t) / N       (out, in), batch mean

so ``E_T = sum_t e_t`` is the window's pair sum (``W <- W + eta E`` with [`Ones`][ghl_snn.Ones]).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import Normalization
from .timing import TimingRule, TimingState, check_time_constant, decay_of

Interaction = Literal["all", "nearest"]


def decay_trace(trace: Tensor, spikes: Tensor, decay: float, nearest: bool) -> Tensor:
    """One step of an exponential spike trace, in place: ``decay * trace + spikes`` (all-to-all) or reset to 1 by a
    spike (nearest-spike, ``decay * trace * (1 - s) + s``)."""
    return add_spikes(trace.mul_(decay), spikes, nearest)


def add_spikes(decayed: Tensor, spikes: Tensor, nearest: bool) -> Tensor:
    """The jump of an already decayed trace at this step's spikes, in place (``+ s``, or reset to 1 if nearest)."""
    if nearest:
        decayed.mul_(1.0 - spikes)
    return decayed.add_(spikes)


class STDP(TimingRule):
    """Pair-based STDP eligibility (see the module docstring); time constants in steps."""

    trace_names = {"pre": "pre", "post": "post"}

    def __init__(self, a_plus: float = 1.0, a_minus: float = 1.0, tau_plus: float = 20.0, tau_minus: float = 20.0,
                 interaction: Interaction = "all", normalize: Normalization = None) -> None:
        super().__init__(normalize)
        if interaction not in ("all", "nearest"):
            raise ValueError(f"STDP interaction must be 'all' or 'nearest', got {interaction!r}")
        self.a_plus, self.a_minus = float(a_plus), float(a_minus)
        self.tau_plus = check_time_constant(tau_plus, "tau_plus")
        self.tau_minus = check_time_constant(tau_minus, "tau_minus")
        self.interaction = interaction

    def pair_increment(self, state: TimingState, pre: Tensor, post: Tensor) -> Tensor:
        """``e_t`` of the pair rule; ``state.traces`` holds ``pre`` (x) and ``post`` (y) and is advanced."""
        nearest = self.interaction == "nearest"
        x = decay_trace(state.traces["pre"], pre, decay_of(self.tau_plus), nearest)
        y_before = state.traces["post"].mul_(decay_of(self.tau_minus))  # post spikes before t, seen at t
        depression = torch.mm(y_before.t(), pre)
        eligibility = torch.mm(post.t(), x).mul_(self.a_plus).add_(depression, alpha=-self.a_minus)
        add_spikes(y_before, post, nearest)
        return eligibility.div_(pre.shape[0])

    def increment(self, state: TimingState, pre: Tensor, post: Tensor) -> Tensor:
        return self.pair_increment(state, pre, post)

    def extra_repr(self) -> str:
        return (f"a_plus={self.a_plus:g}, a_minus={self.a_minus:g}, tau_plus={self.tau_plus:g}, "
                f"tau_minus={self.tau_minus:g}, interaction={self.interaction!r}")
