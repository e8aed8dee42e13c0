"""Write your own neuromodulator: a reward with a running baseline, used online in a spiking network.

A per-neuron modulator (:class:`~ghl_snn.modulators.PresynapticSign`) only says what each post-synaptic neuron
hears, one number ``delta_nk`` per sample; every synapse multiplies it with its own presynaptic trace ``x_ni``,
sums over the batch and takes the sign, ``M_ik = sign(sum_n delta_nk x_ni)``, and the learner writes ``M ⊙ |E|``
into ``weight.grad`` (the optimiser descends, ``W <- W - lr * grad``).  This one is a dopamine-like third factor,
a **reward-prediction error** ``δ_n = r_n - r̄`` against a running baseline ``r̄``, heard only by the output neuron
that won the sample (its "tag")::

    delta_nk = -δ_n · 1[k = argmax_k' z_nk']

so a rewarded winner strengthens the synapses from its active inputs and a punished one weakens them.  The
baseline ``r̄ <- r̄ + α (mean(r) - r̄)`` is updated after each step by :meth:`RewardBaseline.observe`.

The library ships the full version, :class:`~ghl_snn.modulators.reward_sign.RewardSign` (exploration, hidden layers
through attention-gated feedback); this file shows how little a new one takes.  Task: 4 classes of noisy
input-rate patterns (synthetic, made here), 24 -> 48 IF -> 4 read-out, Bernoulli rate coding, plastic read-out,
reward ``r_n = 1`` when the read-out's argmax is right, else ``0``.  No backprop at all.

    python examples/03_custom_modulator.py [--batches 150] [--steps 8]
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor, nn

from ghl_snn import LayerSignals, PresynapticSign
from ghl_snn.spiking import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor


class RewardBaseline(PresynapticSign):
    """Reward-prediction error ``r - r̄`` heard by the winning output neuron of each sample."""

    def __init__(self, momentum: float = 0.05) -> None:
        self.momentum = momentum
        self.baseline = 0.0

    def neuron_signal(self, layer: LayerSignals, reward: Tensor | None = None, **context: Any) -> Tensor:
        if reward is None:
            raise RuntimeError("RewardBaseline needs step(reward=...)")
        readout = self.step_context.readout                     # the learner passes its read-out (N, outputs)
        winners = torch.nn.functional.one_hot(readout.argmax(1), readout.shape[1]).float()
        error = torch.as_tensor(reward, dtype=torch.float32) - self.baseline      # reward-prediction error
        return -error[:, None] * winners                        # descent convention: > 0 means "decrease"

    def observe(self, reward: Tensor) -> None:
        """Move the baseline towards the batch's mean reward (call once per update)."""
        self.baseline += self.momentum * (float(torch.as_tensor(reward, dtype=torch.float32).mean()) - self.baseline)

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = float(state["baseline"])
        self.momentum = float(state["momentum"])


def make_task(num_classes: int, inputs: int, generator: torch.Generator) -> Tensor:
    """Class prototypes: input rates in [0.05, 0.95], each class with its own set of strongly active inputs."""
    prototypes = torch.full((num_classes, inputs), 0.05)
    for c in range(num_classes):
        active = torch.randperm(inputs, generator=generator)[: inputs // 3]
        prototypes[c, active] = 0.95
    return prototypes


def sample(prototypes: Tensor, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    labels = torch.randint(prototypes.shape[0], (batch_size,), generator=generator)
    noise = 0.1 * torch.randn(batch_size, prototypes.shape[1], generator=generator)
    return (prototypes[labels] + noise).clamp(0.0, 1.0), labels


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=150, help="presentation windows (one update each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="time steps T per window")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    prototypes = make_task(4, 24, generator)
    test_x, test_y = sample(prototypes, 400, generator)

    net = SpikingNetwork(nn.Linear(24, 48, bias=False), IF(), nn.Linear(48, 4, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(2.0)                     # enough drive for the hidden IF neurons to spike
    modulator = RewardBaseline(momentum=0.05)
    # plastic: the read-out synapses; the hidden layer stays a fixed random spiking expansion.  A low softmax
    # temperature makes the competition sharp, so the reward mostly credits the winning output neuron.
    learner = ThreeFactor(net, modulator=modulator, tau=0.05, layers=["2"])
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    encoder = BernoulliEncoder(generator=generator)

    def accuracy() -> float:
        with torch.no_grad():
            out = net.run(test_x, args.steps, encoder, record=False)
        return (out.argmax(1) == test_y).float().mean().item()

    initial = accuracy()
    rewards: list[float] = []
    for batch in range(args.batches):
        x, y = sample(prototypes, args.batch_size, generator)
        optimizer.zero_grad(set_to_none=True)
        out = learner.run(x, args.steps, encoder)   # online traces, memory flat in T
        reward = (out.argmax(1) == y).float()
        learner.step(reward=reward)                 # weight.grad <- M ⊙ |E| with our modulator
        optimizer.step()
        modulator.observe(reward)
        rewards.append(reward.mean().item())
        if (batch + 1) % 50 == 0:
            print(f"window {batch + 1}: mean reward {sum(rewards[-50:]) / 50:.3f}  baseline {modulator.baseline:.3f}")
    final = accuracy()
    print(f"test accuracy {initial:.3f} -> {final:.3f} (chance 0.250)")
    assert final > 0.5 and final > initial + 0.1, f"reward learning did not beat chance clearly: {final:.3f}"
    return {"initial_accuracy": initial, "final_accuracy": final, "baseline": modulator.baseline}


if __name__ == "__main__":
    main()
