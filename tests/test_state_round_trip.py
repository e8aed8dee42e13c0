"""Every learner's and modulator's ``state_dict`` holds all the state that decides its next update: a run
interrupted mid-training, rebuilt from fresh objects and its saved states, continues exactly as the uninterrupted
run (weights equal to the last bit)."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, IF, FeedbackAlignment, FeedbackSign, ForwardForwardMLP, GradSign, HebbFF, NeuronSign, Ones, \
    PlainGradient, PlainReadout, RewardSign, SignOnly, SpikingNetwork, ThreeFactor, UnitMagnitude
from ghl_snn.learners.softhebb import SoftHebbLearner
from ghl_snn.rules.hebbff import random_wrong_labels

MODULATORS: dict[str, Callable[[], Any]] = {
    "GradSign": GradSign, "NeuronSign": NeuronSign, "FeedbackSign": lambda: FeedbackSign(seed=3),
    "FeedbackAlignment": lambda: FeedbackAlignment(seed=3), "PlainGradient": PlainGradient, "Ones": Ones,
    "SignOnly": SignOnly, "UnitMagnitude": lambda: UnitMagnitude(FeedbackSign(seed=3)),
    "PlainReadout": lambda: PlainReadout(FeedbackSign(seed=3)),
    "RewardSign-readout": lambda: RewardSign(seed=3, momentum=0.5),
    "RewardSign-baseline": lambda: RewardSign(seed=3, value="baseline", momentum=0.5),
}


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.rand(6, 8, generator=generator), torch.randint(0, 3, (6,), generator=generator)


def _rewards(step: int) -> torch.Tensor:
    return torch.rand(6, generator=torch.Generator().manual_seed(200 + step))


class Spiking:
    def __init__(self, modulator: str) -> None:
        torch.manual_seed(0)
        self.net = SpikingNetwork(nn.Linear(8, 6, bias=False), IF(), nn.Linear(6, 3, bias=False))
        with torch.no_grad():
            self.net[0].weight.mul_(3)
        self.learner = ThreeFactor(self.net, modulator=MODULATORS[modulator]())
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)

    def step(self, step: int) -> None:
        x, y = _batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        self.learner.run(x, num_steps=4)
        self.learner.step(loss_fn=lambda out: F.cross_entropy(out, y), reward=_rewards(step), action=y)
        self.optimizer.step()

    def state(self) -> dict[str, Any]:
        return copy.deepcopy({"net": self.net.state_dict(), "opt": self.optimizer.state_dict(),
                              "learner": self.learner.state_dict()})

    def load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["opt"])
        self.learner.load_state_dict(state["learner"])

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.net.parameters()]


class Rate(Spiking):
    def __init__(self, modulator: str) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))
        self.learner = GHL(self.net, modulator=MODULATORS[modulator](), tau=0.5)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)

    def step(self, step: int) -> None:
        x, y = _batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.net(x)
        F.cross_entropy(out, y).backward()
        error = torch.softmax(out.detach(), 1) - F.one_hot(y, 3)
        value = out.detach().gather(1, y[:, None]).squeeze(1)  # the chosen output's activity predicts the reward
        self.learner.step(error=error, reward=_rewards(step), action=y, num_outputs=3,
                          **({"value": value} if getattr(self.learner.modulator, "value", "") == "readout" else {}))
        self.optimizer.step()


def _continued(make: Callable[[], Spiking], before: int = 3, after: int = 3) -> tuple[list, list]:
    straight = make()
    for step in range(before + after):
        straight.step(step)
    first = make()
    for step in range(before):
        first.step(step)
    saved = first.state()
    resumed = make()  # fresh objects: only the saved states carry over
    resumed.load(saved)
    for step in range(before, before + after):
        resumed.step(step)
    return straight.weights(), resumed.weights()


@pytest.mark.parametrize("modulator", list(MODULATORS))
def test_spiking_learner_resumed_mid_training_continues_bit_identically(modulator):
    straight, resumed = _continued(lambda: Spiking(modulator))
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


@pytest.mark.parametrize("modulator", list(MODULATORS))
def test_rate_plugin_resumed_mid_training_continues_bit_identically(modulator):
    straight, resumed = _continued(lambda: Rate(modulator))
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


@pytest.mark.faults
def test_reward_baseline_resumed_predicts_the_same_reward():
    """The pending mean reward of the last step decides the next baseline: without it a resumed run predicts
    another reward, and a reward between the two predictions flips the sign of every update."""
    straight = Spiking("RewardSign-baseline")
    for step in range(2):
        straight.step(step)
    resumed = Spiking("RewardSign-baseline")
    resumed.load(straight.state())
    straight.step(2)
    resumed.step(2)
    assert torch.equal(straight.learner.modulator.last_rpe, resumed.learner.modulator.last_rpe)


class HebbFFRun(Spiking):
    def __init__(self, modulator: str = "") -> None:
        torch.manual_seed(0)
        self.net = ForwardForwardMLP(in_features=8, hidden=(6,), num_classes=3).requires_grad_(False)
        self.learner = HebbFF(self.net.layers, lr=0.1, theta=0.5)
        self.optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)

    def step(self, step: int) -> None:
        x, y = _batch(step)
        self.learner.train_step(self.net, x, y, random_wrong_labels(y, 3, torch.Generator().manual_seed(step)))


class SoftHebbRun(Spiking):
    def __init__(self, modulator: str = "") -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
        self.learner = SoftHebbLearner(self.net, {"0": 0.7, "2": 1.3}, lr=0.05)
        self.optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)

    def step(self, step: int) -> None:
        self.net.train()
        self.net(_batch(step)[0])
        self.learner.step()


@pytest.mark.parametrize("make", [HebbFFRun, SoftHebbRun])
def test_gradient_free_learners_resumed_mid_training_continue_bit_identically(make):
    straight, resumed = _continued(make)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
