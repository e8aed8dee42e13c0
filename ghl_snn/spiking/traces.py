"""The online neuron traces of a plastic synapse (see [`ghl_snn.spiking.learner`][]): per sample and neuron, the
presynaptic trace ``x_bar`` of the input spikes and the matching bias-free current ``y_bar = W x_bar``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

PreTrace = Literal["mean"] | float
"""A synapse's presynaptic trace: ``"mean"`` (running mean over the window) or a decay ``alpha`` in ``[0, 1)``."""


@dataclass
class SynapseTrace:
    """Per-layer online state: per-sample neuron traces ``x_bar`` (input) and ``y_bar`` (bias-free current), the
    number of steps, and -- only with ``eligibility="step"`` -- the eligibility trace and its weight sum."""

    x_bar: Tensor | None = None
    y_bar: Tensor | None = None
    steps: int = 0
    eligibility: Tensor | None = None
    weight_sum: float = 0.0


def check_pre_trace(pre_trace: PreTrace) -> PreTrace:
    if pre_trace == "mean":
        return "mean"
    if isinstance(pre_trace, str) or not 0.0 <= float(pre_trace) < 1.0:
        raise ValueError(f"pre_trace must be 'mean' or a decay alpha in [0, 1), got {pre_trace!r}")
    return float(pre_trace)


def check_trace_decay(decay: float) -> float:
    decay = float(decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"trace_decay lambda must lie in (0, 1], got {decay!r}")
    return decay


def update_trace(state: SynapseTrace, spikes: Tensor, current: Tensor, pre_trace: PreTrace) -> None:
    """One online step of a synapse's neuron traces (``O(N (in + out))``); ``current`` is ``W s_t`` without bias.

    Both forms are one in-place interpolation per trace, ``x_bar <- x_bar + w (s_t - x_bar)``, with ``w = 1 / t``
    (running mean) or ``w = 1 - alpha`` (low-pass from zero)."""
    state.steps += 1
    weight = 1.0 / state.steps if pre_trace == "mean" else 1.0 - pre_trace
    if state.x_bar is None:
        state.x_bar, state.y_bar = spikes * weight, current * weight
    else:
        state.x_bar.lerp_(spikes, weight)
        state.y_bar.lerp_(current, weight)
