"""RewardSign: the attention-gated reward credit of Q-AGREL turned into a per-synapse sign times ``|E|``.

Per synapse ``M_ik = sign(sum_n delta_nk x_ni)`` with ``delta_nk = -RPE_n tag_nk / N`` -- one reward-prediction
error per sample, the chosen output's attention tag and the synapse's own presynaptic trace, exactly as in
[`AttentionGatedReward`][ghl_snn.AttentionGatedReward] (which writes the credit itself and is this rule's control) --
and the update ``M ⊙ |E|`` ([`ghl_snn.modulators.credit`][]).  The sign gives every synapse whose credit is not
exactly zero a full step of size ``|E|``: the attention gating that lives in the *size* of the tag (large for
neurons that drive the chosen output strongly) is kept only where ``|E|`` happens to follow it.

The feedback pathway of the tag is ``feedback="forward"`` (default: the transposed forward weights, Q-AGREL),
``"learned"`` or ``"random"`` (a fixed random ``B``); see [`AttentionGatedReward`][ghl_snn.AttentionGatedReward].
It is an **approximation** of GHL: one scalar per sample and the identity of the chosen output, nothing else.

Usage (spiking learner)::

    out = learner.run(x, T, encoder)
    action = choose_actions(out, epsilon=0.05)
    learner.step(reward=(action == y).float(), action=action)
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .attention_gated import AttentionGatedReward
from .base import LayerSignals, Modulator

__all__ = ["RewardSign"]


class RewardSign(AttentionGatedReward):
    """Attention-gated reward credit, per-synapse sign, times ``|E|`` (see the module docstring).

    Examples:
        The same reward credit as AttentionGatedReward, with the sign rule times |E|.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, RewardSign, choose_actions
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, RewardSign())
        >>> out = learner.run(x, num_steps=5, encoder=BernoulliEncoder())
        >>> action = choose_actions(out, epsilon=0.05)
        >>> learner.step(reward=(action == y).float(), action=action)
        >>> bool((net[0].weight.grad.abs() <= 1).all())
        True
    """

    needs_eligibility = True

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return Modulator.update(self, layer, **context)
