"""Delayed reward: per-stream synaptic tags that decay while the reward is on its way.

In a task the reward for an action often arrives ``D`` time steps after the activity that earned it, while the
network already processes the next stimuli.  Each synapse keeps an **eligibility trace** (a synaptic tag) that
decays by ``lambda`` per time step and receives the product of the chosen output's attention tag and the synapse's
presynaptic trace whenever an action is chosen (Izhikevich 2007, "distal reward"; Q-AGREL's tags, Pozzi et al.
2020)::

    E_n,t = lambda E_n,t-1 + e_n,t,      e_n,t = tag_nk x_ni   at the end of a presentation window, else 0
    grad  = -sum_n RPE_n E_n,t / N       when the reward of stream n's earlier action arrives at step t

``n`` is one of ``N`` independent streams (agents) that share the weights -- the samples of a batch, each with
its own sequence of stimuli -- so the tag is per stream, shaped ``(N, *weight.shape)`` (Linear synapses); its
memory does not depend on ``D`` or on the number of pending rewards.  The RPE ``r_n - Q_n,a`` of an action is a
scalar per stream and waits in a queue until its reward arrives.  Rewards that arrive during the next window see
the tags decayed to their arrival time; activity of the windows shown in between has added its own tags, which a
reward uncorrelated with them averages out (the credit-assignment problem the decay ``lambda`` trades off).  In a
trial protocol the next stimulus waits for the reward:
[`advance`][ghl_snn.spiking.delayed_reward.DelayedReward.advance] lets the ``D`` steps pass without an action, so
the reward meets its own action's tag decayed by ``lambda^D`` and the earlier trials' tags decayed by at least
``lambda^(2D + T)``.

[`DelayedReward`][ghl_snn.spiking.delayed_reward.DelayedReward] keeps the tags and the queue;
[`TagRecorder`][ghl_snn.spiking.delayed_reward.TagRecorder] obtains each layer's attention tag and
presynaptic trace from a [`ThreeFactor`][ghl_snn.ThreeFactor] window without touching the weights.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..modulators.attention_gated import AttentionGatedReward
from ..modulators.base import LayerSignals


class TagRecorder(AttentionGatedReward):
    """An [`AttentionGatedReward`][ghl_snn.AttentionGatedReward] that records, per layer, the attention tag of the
    chosen output and the presynaptic trace (``tags[name] = (tag (N, K), x (N, I))``) and writes a zero update."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tags: dict[str, tuple[Tensor, Tensor]] = {}

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        if layer.inputs is None:
            raise RuntimeError(f"TagRecorder needs the input of layer {layer.name!r}")
        self.tags[layer.name] = (self.tag(layer, **context).detach().float(), layer.inputs.detach().float().clone())
        return torch.zeros_like(layer.module.weight)


class DelayedReward:
    """Per-stream synaptic tags with decay ``lambda`` per step and a queue of rewards arriving ``delay`` steps after
    the end of the window whose action earned them (see the module docstring).

    Call [`end_window`][ghl_snn.spiking.delayed_reward.DelayedReward.end_window] once per presentation window of
    ``window`` steps; it returns the update (``.grad`` per layer, descent convention) of every reward that arrived
    during that window, in arrival order.
    """

    def __init__(self, decay: float, delay: int, window: int) -> None:
        decay = float(decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay lambda must lie in [0, 1], got {decay!r}")
        if int(delay) != delay or delay < 0:
            raise ValueError(f"delay must be a whole number of steps >= 0, got {delay!r}")
        if int(window) != window or window <= 0:
            raise ValueError(f"window must be a whole number of steps > 0, got {window!r}")
        self.decay, self.delay, self.window = decay, int(delay), int(window)
        self.time = 0
        self.traces: dict[str, Tensor] = {}
        self.pending: deque[tuple[int, Tensor]] = deque()

    def _factor(self, steps: int) -> float:
        return 1.0 if steps == 0 else self.decay ** steps

    def _credit(self, rpe: Tensor, scale: float) -> dict[str, Tensor]:
        """``-scale sum_n RPE_n E_n / N`` for every layer (``E`` as it stands now)."""
        weights = (-scale / rpe.shape[0]) * rpe
        return {name: torch.einsum("n,n...->...", weights.to(trace), trace) for name, trace in self.traces.items()}

    def end_window(self, tags: Mapping[str, tuple[Tensor, Tensor]], rpe: Tensor) -> list[dict[str, Tensor]]:
        """Close a window: decay every tag by ``lambda^window``, add ``tag_nk x_ni`` of this window's action,
        queue its ``rpe`` (``(N,)``) for step ``now + delay`` and return the credits of the rewards that arrive in
        ``(previous window's end, now]`` (those before ``now`` see the tags decayed to their arrival step)."""
        rpe = rpe.detach().float().reshape(-1)
        if not torch.isfinite(rpe).all():
            raise ValueError("DelayedReward got a non-finite reward-prediction error")
        start, end = self.time, self.time + self.window
        credits = []
        while self.pending and self.pending[0][0] < end:
            arrival, waiting = self.pending.popleft()
            credits.append(self._credit(waiting, self._factor(arrival - start)))
        for name, (tag, pre) in tags.items():
            if tag.dim() != 2 or pre.dim() != 2 or tag.shape[0] != pre.shape[0] or tag.shape[0] != rpe.shape[0]:
                raise ValueError(f"layer {name!r}: tags need tag (N, K) and x (N, I) for the {rpe.shape[0]} "
                                 f"streams, got {tuple(tag.shape)} and {tuple(pre.shape)}")
            new = tag[:, :, None] * pre[:, None, :]
            trace = self.traces.get(name)
            self.traces[name] = new if trace is None else trace.mul_(self._factor(self.window)).add_(new)
        self.pending.append((end + self.delay, rpe))
        while self.pending and self.pending[0][0] == end:
            credits.append(self._credit(self.pending.popleft()[1], 1.0))
        self.time = end
        return credits

    def advance(self, steps: int) -> list[dict[str, Tensor]]:
        """Let ``steps`` steps pass without an action (e.g. the gap before the next trial): return the credits of
        the rewards that arrive in ``(now, now + steps]`` (each seeing the tags decayed to its arrival step), then
        decay every tag by ``lambda^steps``."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")
        start, end = self.time, self.time + int(steps)
        credits = []
        while self.pending and self.pending[0][0] <= end:
            arrival, waiting = self.pending.popleft()
            credits.append(self._credit(waiting, self._factor(arrival - start)))
        for trace in self.traces.values():
            trace.mul_(self._factor(end - start))
        self.time = end
        return credits

    def reset(self) -> None:
        """Forget every tag and pending reward (a new episode)."""
        self.time = 0
        self.traces.clear()
        self.pending.clear()
