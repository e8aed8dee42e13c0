"""The interface of timing rules: eligibilities that see every spike, one time step at a time.

A rate rule ([`EligibilityRule`][ghl_snn.EligibilityRule]) is a function of what a synapse saw over a window --
the pre-synaptic trace ``x`` and the post-synaptic current ``y`` -- evaluated once per window.  Spike-timing
dependent plasticity cannot be written that way: the sign of a pair's contribution depends on which spike came
first, and that order is gone from any window average.  A timing rule therefore consumes, at every step ``t``,
the pre-synaptic spikes ``s_pre_t`` (``(N, in)``) and the post-synaptic spikes ``s_post_t`` (``(N, out)``) of the
same step, keeps the per-neuron spike traces it needs (``O(N (in + out))`` state, flat in ``T``), and adds to
its weight-shaped eligibility ``E`` (batch mean over the ``N`` samples)::

    E_t = lambda E_{t-1} + e_t(s_pre_t, s_post_t, traces)          (lambda = 1: E_T is the window's sum)

A timing rule is an [`EligibilityRule`][ghl_snn.EligibilityRule] with ``timing = True``: the spiking learner
[`ThreeFactor`][ghl_snn.ThreeFactor] gives it the spikes of the layer's input and of the neuron after the layer at
every step instead of the window's traces, and reads ``E_T`` at the end of the window, where any modulator meets
it (``Ones``: unsupervised STDP, ``W <- W + eta E``).  Its ``linear`` raises: it has no window form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import EligibilityRule, Normalization, check_normalization


def check_time_constant(value: float, name: str) -> float:
    """A time constant in steps: a finite number > 0 (``ValueError`` otherwise)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of time steps > 0, got {value!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of time steps > 0, got {value!r}")
    return value


def decay_of(tau: float) -> float:
    """Per-step decay ``exp(-1 / tau)`` of an exponential trace with time constant ``tau`` (in steps)."""
    return math.exp(-1.0 / tau)


@dataclass
class TimingState:
    """One layer's state under a timing rule: named per-neuron traces (``(N, in)`` or ``(N, out)``), the
    eligibility ``E`` (shaped like the weight, float32 or float64 like the spikes) and the number of steps."""

    traces: dict[str, Tensor] = field(default_factory=dict)
    eligibility: Tensor | None = None
    steps: int = 0


def check_spikes(pre: Tensor, post: Tensor, weight_shape: tuple[int, ...]) -> None:
    """``pre`` (N, in) and ``post`` (N, out) must match a Linear weight ``(out, in)``."""
    if pre.dim() != 2 or post.dim() != 2 or pre.shape[0] != post.shape[0]:
        raise ValueError(f"a timing rule needs pre-synaptic spikes (N, in) and post-synaptic spikes (N, out) of "
                         f"the same step, got {tuple(pre.shape)} and {tuple(post.shape)}")
    if tuple(weight_shape) != (post.shape[1], pre.shape[1]):
        raise ValueError(f"spikes {tuple(pre.shape)} -> {tuple(post.shape)} do not match the weight "
                         f"{tuple(weight_shape)} (out, in)")


class TimingRule(EligibilityRule):
    """Base class of the spike-timing eligibilities (see the module docstring).

    Subclasses implement [`increment`][] (``e_t`` from the step's spikes and the traces *before* this step,
    updating the traces).  ``eligibility_decay`` is ``lambda`` of ``E_t = lambda E_{t-1} + e_t`` (1 unless the rule
    keeps a decaying eligibility trace, as reward-modulated STDP does).  ``normalize`` defaults to ``None``: an
    STDP eligibility is a sum over spike pairs whose size is the learning signal itself.
    """

    timing = True
    eligibility_decay: float = 1.0

    def __init__(self, normalize: Normalization = None) -> None:
        self.normalize = check_normalization(normalize)

    def increment(self, state: TimingState, pre: Tensor, post: Tensor) -> Tensor:
        """The batch-mean contribution ``e_t`` (``(out, in)``) of this step's spikes; updates ``state.traces``."""
        raise NotImplementedError

    def new_state(self) -> TimingState:
        return TimingState()

    def step(self, state: TimingState, pre: Tensor, post: Tensor, weight_shape: tuple[int, ...]) -> None:
        """One time step: ``E_t = lambda E_{t-1} + e_t`` (``pre``: (N, in) spikes into the layer, ``post``:
        (N, out) spikes of the neurons it drives, both of step ``t``)."""
        check_spikes(pre, post, weight_shape)
        dtype = torch.float64 if pre.dtype == torch.float64 else torch.float32
        pre, post = pre.detach().to(dtype), post.detach().to(dtype)
        if not state.traces:
            state.traces = self.initial_traces(pre, post)
        increment = self.increment(state, pre, post)
        if state.eligibility is None:
            state.eligibility = increment
        else:
            state.eligibility.mul_(self.eligibility_decay).add_(increment)
        state.steps += 1

    def initial_traces(self, pre: Tensor, post: Tensor) -> dict[str, Tensor]:
        """Zero traces for the first step (subclasses name theirs in ``trace_names``)."""
        shapes = {"pre": pre, "post": post}
        return {name: torch.zeros_like(shapes[side]) for name, side in self.trace_names.items()}

    #: trace name -> "pre" or "post" (which neurons it belongs to)
    trace_names: dict[str, str] = {}

    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} is a timing rule: it needs the spikes of every step, not window "
                        "traces; use it in the spiking learner ThreeFactor")

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> Tensor:
        raise TypeError(f"{type(self).__name__} is a timing rule for Linear synapses (spikes (N, in) -> (N, out))")
