"""Action selection for the reward modulators: which output a network *chooses* to report, with exploration.

A reward rule learns from the reward of the chosen output only (see
[`AttentionGatedReward`][ghl_snn.AttentionGatedReward]); how it chooses decides what it can learn:

* [`choose_actions`][] -- epsilon-greedy: the argmax, or with probability ``epsilon`` a uniformly random output,
  ``P(a) = (1 - epsilon) [a = argmax] + epsilon / C``;
* [`boltzmann_actions`][] -- softmax (Boltzmann) exploration: ``P(a) = exp(Q_a / temperature) / sum_b exp(Q_b /
  temperature)`` (Sutton & Barto 2018, Sec. 13.1; Q-AGREL uses it, Pozzi et al. 2020).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _check_readout(readout: Tensor) -> None:
    if readout.dim() != 2 or readout.shape[1] == 0:
        raise ValueError(f"action selection needs the read-out as (N, outputs), got {tuple(readout.shape)}")


def choose_actions(readout: Tensor, epsilon: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Epsilon-greedy choice of one output per sample: the argmax, or with probability ``epsilon`` a uniformly
    random output (exploration)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")
    _check_readout(readout)
    greedy = readout.argmax(dim=1)
    if epsilon == 0.0:
        return greedy
    device = readout.device
    draw_device = generator.device if generator is not None else device
    explore = torch.rand(readout.shape[0], generator=generator, device=draw_device)
    random = torch.randint(readout.shape[1], (readout.shape[0],), generator=generator, device=draw_device)
    return torch.where(explore.to(device) < epsilon, random.to(device), greedy)


def boltzmann_actions(readout: Tensor, temperature: float = 0.1,
                      generator: torch.Generator | None = None) -> Tensor:
    """Softmax (Boltzmann) choice of one output per sample: output ``a`` with probability
    ``softmax(readout / temperature)_a``; ``temperature -> 0`` approaches the greedy choice."""
    temperature = float(temperature)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    _check_readout(readout)
    probabilities = torch.softmax(readout.detach().float() / temperature, dim=1)
    if generator is not None:
        probabilities = probabilities.to(generator.device)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1).to(readout.device)
