"""The runner's training loop for spiking networks: one window per batch, trained online by a
[`ThreeFactor`][ghl_snn.spiking.learner.ThreeFactor] learner or by surrogate-gradient BPTT.

[`SpikingTrainer`][] is a [`Trainer`][ghl_snn.comparison.runner.Trainer] (checkpoints, bit-identical ``--resume``,
divergence stops) whose model is either

* a [`RateCoded`][ghl_snn.spiking.encoders.RateCoded] network (static inputs such as images, encoded for
  ``model.steps`` steps), or
* a bare [`SpikingNetwork`][ghl_snn.spiking.network.SpikingNetwork] fed recorded frames ``(N, T, ...)``, replayed one
  per step ([`present`][ghl_snn.spiking.encoders.present]); its evaluation adds the neurons' mean firing rate
  ([`spike_scores`][]).

Per batch: without a learner (BPTT) the time-averaged read-out ``z = (1/T) sum_t W s_t`` keeps its graph through time
and ``loss.backward()`` writes the gradients; with a learner the window runs without a graph and ``learner.step``
writes the three-factor updates ``dW = M ⊙ E`` into ``.grad`` — from the loss ``CE(z, y)`` (GradSign, FeedbackSign,
...) or, for a reward modulator, from the reward ``r = [a == y]`` of an action ``a`` chosen from ``z``
(epsilon-greedy or softmax; the label never reaches the learner: Roelfsema & van Ooyen 2005, Florian 2007) — before
the optimiser steps.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..modulators.actions import boltzmann_actions, choose_actions
from ..spiking import RateCoded, SpikingNetwork, ThreeFactor, present
from .methods import REWARD_MODULATORS
from .runner import Trainer

__all__ = ["SpikingTrainer", "spike_scores", "REWARD_MODULATORS"]

@torch.no_grad()
def spike_scores(net: SpikingNetwork, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """``test_loss`` (cross-entropy of the time-averaged read-out), ``test_acc`` and ``hidden_rate`` (mean firing
    rate of the network's neurons, averaged over neurons and samples) over ``batches`` of recorded frames
    ``(N, T, ...)`` and labels."""
    loss_sum, correct, seen, rate_sum = 0.0, 0, 0, 0.0
    for frames, labels in batches:
        out = present(net, frames)
        loss_sum += float(F.cross_entropy(out, labels)) * len(labels)
        correct += int((out.argmax(1) == labels).sum())
        seen += len(labels)
        rates = [v.mean() for k, v in net.mean_outputs.items() if k in net.neurons()]
        rate_sum += float(torch.stack(rates).mean()) * len(labels) if rates else 0.0
    return {"test_loss": loss_sum / max(seen, 1), "test_acc": correct / max(seen, 1),
            "hidden_rate": rate_sum / max(seen, 1)}


@dataclass
class SpikingTrainer(Trainer):
    """The runner's loop with the spiking window: present the batch -> loss -> ``learner.step`` (or
    ``loss.backward()`` when ``learner`` is ``None``) -> optimiser.  ``policy`` (``"epsilon"``: a random output with
    probability ``epsilon``, else the largest; ``"softmax"``: Boltzmann with ``temperature``) chooses the action of
    the reward modulators.  ``shuffle``, the data loader's generator if any, is saved in the checkpoint so that a
    resumed epoch draws the same batches."""

    learner: ThreeFactor | None = None
    epsilon: float = 0.05
    policy: str = "epsilon"
    temperature: float = 0.05
    shuffle: torch.Generator | None = None
    _labels: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.policy not in ("epsilon", "softmax"):
            raise ValueError(f"policy must be 'epsilon' or 'softmax', got {self.policy!r}")

    def _prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        self._labels = labels
        return images, labels

    def _forward(self, inputs: Tensor) -> Tensor:
        model = self.model
        if isinstance(model, RateCoded):
            return model(inputs) if self.learner is None else self.learner.run(inputs, model.steps, model.encoder)
        return present(model if self.learner is None else self.learner, inputs)  # type: ignore[arg-type]

    def _apply_update(self, loss: Tensor) -> None:
        if self.learner is None:  # BPTT: the graph through time was kept
            loss.backward()
        else:
            labels = self._labels
            if isinstance(getattr(self.learner.modulator, "base", self.learner.modulator), REWARD_MODULATORS):
                readout = self.learner.readout
                action = (boltzmann_actions(readout, self.temperature) if self.policy == "softmax"
                          else choose_actions(readout, self.epsilon))
                self.learner.step(action=action, reward=(action == labels).float())  # the reward, no label
            else:
                self.learner.step(loss_fn=lambda out: F.cross_entropy(out, labels))
        self.optimizer.step()

    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        if isinstance(self.model, RateCoded):
            return super().evaluate(batches)
        return spike_scores(self.model, batches)  # type: ignore[arg-type]

    def state_dict(self, epoch: int, elapsed: float) -> dict[str, Any]:
        state = super().state_dict(epoch, elapsed)
        state["shuffle_rng"] = self.shuffle.get_state() if self.shuffle is not None else None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, float]:
        if self.shuffle is not None and state.get("shuffle_rng") is not None:
            self.shuffle.set_state(state["shuffle_rng"])
        return super().load_state_dict(state)
