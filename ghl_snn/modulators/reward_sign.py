"""RewardSign: one reward-prediction error per sample, credited through attention-gated feedback (Q-AGREL).

A scalar alone assigns no credit, so the rule follows attention-gated reinforcement learning (AGREL, Roelfsema &
van Ooyen 2005; Q-AGREL, Pozzi et al. 2020): the network *chooses* one output (an action ``a_n``, with exploration,
e.g. [`choose_actions`][]), the environment returns a reward ``r_n``, and learning uses

* **one scalar per sample, broadcast to every synapse**: the zero-mean reward-prediction error
  ``RPE_n = r_n - v_n`` (magnitude kept), where the prediction ``v_n`` is the chosen output unit's activity
  ``Q_n,a`` (``value="readout"``, default: the output units learn to predict their reward) or a running mean of
  the reward (``value="baseline"``);
* **an attention tag** from the chosen output only: output unit ``a_n`` feeds back through a fixed random matrix
  ``B`` (no weight transport), so hidden neuron ``k`` is tagged with ``B_k,a`` times its f-I slope ``f'(I_nk)``;
  the output layer's tag is ``1`` for the chosen unit, ``0`` elsewhere;
* **at the synapse**: its own presynaptic trace ``x_ni``.  Per-neuron signal ``delta_nk = -RPE_n tag_nk``, per
  synapse ``M_ik = sign(sum_n delta_nk x_ni)``, update ``M ⊙ |E|`` ([`ghl_snn.modulators.credit`][]).

This equals [`FeedbackSign`][ghl_snn.FeedbackSign] with the output error replaced by
``e_n = -RPE_n onehot(a_n)`` -- the gradient of ``(r_n - Q_n,a)^2 / 2`` at the chosen output.  It is an
**approximation** of GHL: one scalar per sample and the identity of the chosen output, nothing else.

Usage (spiking learner)::

    out = learner.run(x, T, encoder)
    action = choose_actions(out, epsilon=0.05)
    learner.step(reward=(action == y).float(), action=action)
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from .base import LayerSignals
from .feedback_sign import FeedbackSign

Value = Literal["readout", "baseline"]


def choose_actions(readout: Tensor, epsilon: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Epsilon-greedy choice of one output per sample: the argmax, or with probability ``epsilon`` a uniformly
    random output (exploration)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")
    greedy = readout.argmax(dim=1)
    if epsilon == 0.0:
        return greedy
    device = readout.device
    explore = torch.rand(readout.shape[0], generator=generator, device=generator.device if generator else device)
    random = torch.randint(readout.shape[1], (readout.shape[0],), generator=generator,
                           device=generator.device if generator else device)
    return torch.where(explore.to(device) < epsilon, random.to(device), greedy)


class RewardSign(FeedbackSign):
    """Reward-prediction error per sample with attention-gated feedback (see the module docstring)."""

    def __init__(self, seed: int = 0, value: Value = "readout", momentum: float = 0.05, baseline: float = 0.0,
                 output_layers: Iterable[str] = ()) -> None:
        super().__init__(seed, output_layers)
        if value not in ("readout", "baseline"):
            raise ValueError(f"RewardSign value must be 'readout' or 'baseline', got {value!r}")
        momentum = float(momentum)
        if not 0 < momentum <= 1:
            raise ValueError(f"RewardSign momentum must lie in (0, 1], got {momentum!r}")
        self.value = value
        self.momentum = momentum
        self.baseline = float(baseline)
        self.last_rpe: Tensor | None = None
        self._pending: float | None = None
        self._seen: set[str] = set()

    def commit(self) -> None:
        """Fold the pending mean reward into the running baseline (done when the next update starts)."""
        if self._pending is not None:
            self.baseline += self.momentum * (self._pending - self.baseline)
        self._pending = None
        self._seen.clear()

    def output_error(self, layer: LayerSignals, reward: Tensor | float | None = None, action: Tensor | None = None,
                     value: Tensor | None = None, **context: Any) -> Tensor:
        if reward is None or action is None:
            raise RuntimeError("RewardSign needs step(reward=r, action=a): one reward and the chosen output per "
                               "sample")
        readout = layer.extra.get("readout")
        action = torch.as_tensor(action).long().reshape(-1)
        if readout is None and value is None and self.value == "readout":
            raise RuntimeError("RewardSign needs the outputs' activity: pass step(value=v) (the predicted reward) "
                               "or use the spiking learner, which passes its read-out")
        outputs = int(readout.shape[1]) if readout is not None else int(context.get("num_outputs", 0))
        if outputs <= 0:
            raise RuntimeError("RewardSign cannot tell the number of outputs: pass step(num_outputs=C)")
        rewards = torch.as_tensor(reward, dtype=torch.float32, device=action.device).reshape(-1)
        if rewards.numel() == 1:
            rewards = rewards.expand(action.shape[0])
        if rewards.shape != action.shape:
            raise ValueError(f"{rewards.numel()} rewards for {action.numel()} actions")
        if layer.name in self._seen:
            self.commit()
        self._seen.add(layer.name)
        self._pending = float(rewards.mean())
        if value is not None:
            prediction = torch.as_tensor(value, dtype=torch.float32, device=action.device).reshape(-1)
        elif self.value == "readout":
            prediction = readout.detach().float().gather(1, action[:, None]).squeeze(1)
        else:
            prediction = torch.full_like(rewards, self.baseline)
        rpe = rewards - prediction
        self.last_rpe = rpe
        error = torch.zeros(action.shape[0], outputs, device=action.device)
        return error.scatter_(1, action[:, None], -rpe[:, None])

    def state_dict(self) -> dict[str, Any]:
        """Feedback matrices, the running baseline and what decides its next value: the mean reward of the
        current step not yet folded in (``pending``) and the layers that have already seen it (``seen``)."""
        return {**super().state_dict(), "baseline": self.baseline, "momentum": self.momentum,
                "pending": self._pending, "seen": sorted(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.baseline = float(state.pop("baseline", self.baseline))
        self.momentum = float(state.pop("momentum", self.momentum))
        pending = state.pop("pending", None)
        self._pending = None if pending is None else float(pending)
        self._seen = set(state.pop("seen", ()))
        super().load_state_dict(state)

    def __repr__(self) -> str:
        return f"RewardSign(seed={self.seed}, value={self.value!r})"
