"""RewardSign: one scalar sign ``s = sign(r - r_bar)`` for the whole network (dopamine-like third factor).

``r`` is the reward of the current update (a scalar, or one per sample: its mean is used) and ``r_bar`` a running
baseline, ``r_bar <- (1 - momentum) r_bar + momentum r`` (starting at ``baseline``), updated once per update step
(detected when a layer name comes round again; :meth:`commit` forces it).

The scalar sets the *polarity* of the local Hebbian term: ``M = -s · sign(E)``, so ``.grad = -s E`` and
``W <- W + eta s E`` -- Hebbian after a better-than-expected reward, anti-Hebbian after a worse one (reward-
modulated Hebbian learning).  Note: a literal ``M = s`` in ``M ⊙ |E|`` would move every synapse of the network in
the same direction, so ``E``'s sign is kept.  This is an **approximation** of GHL: one bit per update for the
whole network, no credit assignment to individual neurons.  With ``layer.extra["per_sample"]``
(``ThreeFactor(per_sample=True)``) and one reward per sample, each sample's eligibility gets its own polarity
``sign(r_n - r_bar)`` (the baseline still tracks the batch mean).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LayerSignals, Modulator


class RewardSign(Modulator):
    """Reward-modulated Hebbian sign with a running baseline (see the module docstring)."""

    needs_weight_grad = False
    needs_output_grad = False

    def __init__(self, momentum: float = 0.1, baseline: float = 0.0) -> None:
        momentum = float(momentum)
        if not 0 < momentum <= 1:
            raise ValueError(f"RewardSign momentum must lie in (0, 1], got {momentum!r}")
        self.momentum = momentum
        self.baseline = float(baseline)
        self._pending: float | None = None
        self._seen: set[str] = set()

    def commit(self) -> None:
        """Fold the pending reward into the baseline (done automatically when the next update starts)."""
        if self._pending is not None:
            self.baseline += self.momentum * (self._pending - self.baseline)
        self._pending = None
        self._seen.clear()

    def sign(self, layer: LayerSignals, reward: float | Tensor | None = None, **context: Any) -> Tensor:
        if reward is None:
            raise RuntimeError("RewardSign needs a reward: call step(reward=r) with a scalar or per-sample reward")
        rewards = torch.as_tensor(reward, dtype=torch.float64)
        value = float(rewards.mean())
        if layer.name in self._seen:
            self.commit()
        self._seen.add(layer.name)
        self._pending = value
        if layer.extra.get("per_sample") and rewards.dim() == 1:
            eligibility = layer.eligibility
            if rewards.shape[0] != eligibility.shape[0]:
                raise ValueError(f"{rewards.shape[0]} rewards for {eligibility.shape[0]} per-sample eligibilities")
            polarity = torch.sign(rewards - self.baseline).to(eligibility)
            return -polarity.view(-1, *([1] * (eligibility.dim() - 1))) * eligibility.sign()
        polarity = (value > self.baseline) - (value < self.baseline)
        return -float(polarity) * layer.eligibility.sign()

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"baseline", "momentum"}
        if unknown:
            raise KeyError(f"RewardSign state has unknown keys {sorted(unknown)}")
        self.baseline = float(state.get("baseline", self.baseline))
        self.momentum = float(state.get("momentum", self.momentum))
        self._pending, self._seen = None, set()

    def __repr__(self) -> str:
        return f"RewardSign(momentum={self.momentum:g}, baseline={self.baseline:g})"
