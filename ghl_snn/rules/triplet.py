"""Triplet STDP (Pfister & Gerstner 2006, J. Neurosci. 26:9673, the all-to-all "minimal" model, Eqs. 2-3).

Two traces per side, decaying with their own time constants (in steps): pre ``r1`` (``tau_plus``), ``r2``
(``tau_x``); post ``o1`` (``tau_minus``), ``o2`` (``tau_y``); each jumps by 1 at its neuron's spikes.  At a post
spike the weight grows by ``r1 (A2_plus + A3_plus o2)`` with ``o2`` taken *before* its own jump; at a pre spike it
shrinks by ``o1 (A2_minus + A3_minus r2)`` with ``r2`` taken before its jump.  Over spike times this is the sum over
every pair and every triplet::

    post at t:  sum_{t_pre <= t} exp(-(t - t_pre)/tau_plus)
                    [A2_plus + A3_plus sum_{t' < t, post} exp(-(t - t')/tau_y)]
    pre at t:  -sum_{t_post < t} exp(-(t - t_post)/tau_minus)
                    [A2_minus + A3_minus sum_{t'' < t, pre} exp(-(t - t'')/tau_x)]

Per step (batch mean over ``N``)::

    e_t = ( (s_post_t (A2_plus + A3_plus o2_t-))^T r1_t - o1_t-^T (s_pre_t (A2_minus + A3_minus r2_t-)) ) / N

with ``q_t- = d_q q_{t-1}`` a trace decayed to step ``t`` before this step's jump.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Normalization
from .stdp import add_spikes, decay_trace
from .timing import TimingRule, TimingState, check_time_constant, decay_of


class TripletSTDP(TimingRule):
    """Triplet STDP eligibility (see the module docstring).  Defaults: the visual-cortex all-to-all fit of
    Pfister & Gerstner (2006, Table 4) in ms read as steps of 1 ms."""

    trace_names = {"r1": "pre", "r2": "pre", "o1": "post", "o2": "post"}

    def __init__(self, a2_plus: float = 5e-10, a3_plus: float = 6.2e-3, a2_minus: float = 7e-3,
                 a3_minus: float = 2.3e-4, tau_plus: float = 16.8, tau_minus: float = 33.7, tau_x: float = 101.0,
                 tau_y: float = 125.0, normalize: Normalization = None) -> None:
        super().__init__(normalize)
        self.a2_plus, self.a3_plus = float(a2_plus), float(a3_plus)
        self.a2_minus, self.a3_minus = float(a2_minus), float(a3_minus)
        self.tau_plus = check_time_constant(tau_plus, "tau_plus")
        self.tau_minus = check_time_constant(tau_minus, "tau_minus")
        self.tau_x = check_time_constant(tau_x, "tau_x")
        self.tau_y = check_time_constant(tau_y, "tau_y")

    def increment(self, state: TimingState, pre: Tensor, post: Tensor) -> Tensor:
        traces = state.traces
        r1 = decay_trace(traces["r1"], pre, decay_of(self.tau_plus), nearest=False)
        r2 = traces["r2"].mul_(decay_of(self.tau_x))  # the traces before this step's jumps, decayed to t
        o1 = traces["o1"].mul_(decay_of(self.tau_minus))
        o2 = traces["o2"].mul_(decay_of(self.tau_y))
        potentiation = post * (self.a2_plus + self.a3_plus * o2)
        depression = pre * (self.a2_minus + self.a3_minus * r2)
        eligibility = torch.mm(potentiation.t(), r1).sub_(torch.mm(o1.t(), depression))
        for trace, spikes in ((r2, pre), (o1, post), (o2, post)):
            add_spikes(trace, spikes, nearest=False)
        return eligibility.div_(pre.shape[0])

    def extra_repr(self) -> str:
        return (f"a2_plus={self.a2_plus:g}, a3_plus={self.a3_plus:g}, a2_minus={self.a2_minus:g}, "
                f"a3_minus={self.a3_minus:g}, tau_plus={self.tau_plus:g}, tau_minus={self.tau_minus:g}, "
                f"tau_x={self.tau_x:g}, tau_y={self.tau_y:g}")
