"""ScalarReward: one global reward signal times the signed eligibility (the dopamine factor of reward-modulated
STDP: Florian 2007, Eq. 13; Izhikevich 2007, Eq. 2; Frémaux & Gerstner 2016, Front. Neural Circuits 9:85).

``W <- W + eta (r - b) E`` where ``r`` is the window's reward (the batch mean when ``N > 1``: one dopamine signal
for the whole batch), ``b`` a running mean of past rewards (``momentum``; ``0`` keeps ``b`` at ``baseline``, the
plain reward of Florian's MSTDPET) and ``E`` the eligibility *with its sign* -- for STDP the sign is the causal
order of the spikes, which ``M ⊙ |E|`` would discard.  In the descent convention: ``.grad = -(r - b) E``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LayerSignals, Modulator, StepContext


class ScalarReward(Modulator):
    """Global reward (minus a running baseline) times the signed eligibility (see the module docstring).

    Examples:
        Reward-modulated STDP: one global reward times the signed STDP eligibility (Florian 2007).

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, ScalarReward, RewardSTDP, LIF
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), LIF(), nn.Linear(16, 3, bias=False), LIF())
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, ScalarReward(momentum=0.9), rule=RewardSTDP())
        >>> _ = learner.run(x, num_steps=10, encoder=BernoulliEncoder())
        >>> learner.step(reward=1.0)
        >>> net[0].weight.grad.shape
        torch.Size([16, 8])
    """

    needs_weight_grad = False

    def __init__(self, momentum: float = 0.0, baseline: float = 0.0) -> None:
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"ScalarReward momentum must lie in [0, 1], got {momentum!r}")
        self.momentum = momentum
        self.baseline = float(baseline)
        self._pending: float | None = None

    def begin_step(self, context: StepContext) -> None:
        """A new window: the last one's reward moves the baseline."""
        if self._pending is not None:
            self.baseline += self.momentum * (self._pending - self.baseline)
        self._pending = None
        super().begin_step(context)

    def advantage(self, layer: LayerSignals, reward: Tensor | float | None = None, **context: Any) -> float:
        """``r - b`` for this window; the baseline moves towards ``r`` once every layer of the window was updated."""
        if reward is None:
            raise RuntimeError("ScalarReward needs the reward: call step(reward=r)")
        value = torch.as_tensor(reward, dtype=torch.float64)
        if value.numel() == 0 or not torch.isfinite(value).all():
            raise ValueError(f"ScalarReward needs a finite reward, got {reward!r}")
        self._pending = float(value.mean())
        return self._pending - self.baseline

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return -torch.sign(torch.tensor(self.advantage(layer, **context))) * layer.eligibility.sign()

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return layer.eligibility * -self.advantage(layer, **context)

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"baseline", "momentum"}
        if unknown:
            raise KeyError(f"ScalarReward state has unknown keys {sorted(unknown)}")
        self.baseline = float(state.get("baseline", self.baseline))
        self.momentum = float(state.get("momentum", self.momentum))
        self._pending = None

    def __repr__(self) -> str:
        return f"ScalarReward(momentum={self.momentum:g})"
