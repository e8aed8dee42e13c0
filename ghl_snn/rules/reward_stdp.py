"""Reward-modulated STDP with an eligibility trace (MSTDPET: Florian 2007, Neural Comput. 19:1468, Eqs. 11-13;
Izhikevich 2007, Cereb. Cortex 17:2443, Eqs. 1-2).

The pair-STDP increment ``e_t`` of [`STDP`][ghl_snn.rules.stdp.STDP] does not change the weight itself: it feeds a
decaying per-synapse eligibility trace (Florian's ``z``, Izhikevich's ``c``)::

    E_t = lambda E_{t-1} + e_t,      lambda = exp(-1 / tau_e)

and the reward (dopamine, a third factor delivered later) turns the trace into a weight change, ``dW = eta r E``.
A reward arriving ``k`` steps after a pair still sees that pair with weight ``lambda^k``.  In the spiking learner
the modulator reads ``E_T`` when the window ends: a signed scalar reward with
[`ScalarReward`][ghl_snn.modulators.scalar_reward.ScalarReward] (Florian's rule, ``W <- W + eta (r - b) E_T``), or
any other modulator (the sign of [`RewardSign`][ghl_snn.RewardSign]'s credit times ``|E|``).
"""
from __future__ import annotations

from torch import Tensor

from .base import Normalization
from .stdp import STDP, Interaction
from .timing import TimingState, check_time_constant, decay_of


class RewardSTDP(STDP):
    """Pair-STDP eligibility kept in a trace decaying with ``tau_e`` steps (see the module docstring)."""

    def __init__(self, tau_e: float = 25.0, a_plus: float = 1.0, a_minus: float = 1.0, tau_plus: float = 20.0,
                 tau_minus: float = 20.0, interaction: Interaction = "all", normalize: Normalization = None) -> None:
        super().__init__(a_plus, a_minus, tau_plus, tau_minus, interaction, normalize)
        self.tau_e = check_time_constant(tau_e, "tau_e")
        self.eligibility_decay = decay_of(self.tau_e)

    def increment(self, state: TimingState, pre: Tensor, post: Tensor) -> Tensor:
        return self.pair_increment(state, pre, post)

    def extra_repr(self) -> str:
        return f"tau_e={self.tau_e:g}, " + super().extra_repr()
