"""Neuromodulators M (factor 3): broadcast signals combined with |E| by the plug-in and the spiking learner."""
from .actions import boltzmann_actions, choose_actions
from .ablations import Ones, PlainGradient, PlainReadout, SignOnly, UnitMagnitude
from .attention_gated import AttentionGatedReward
from .base import LayerSignals, Modulator, StepContext
from .credit import PresynapticSign, presynaptic_credit
from .feedback_sign import FeedbackAlignment, FeedbackSign
from .grad_sign import GradSign
from .neuron_sign import NeuronSign
from .reward_sign import RewardSign
from .scalar_reward import ScalarReward

__all__ = ["Modulator", "LayerSignals", "StepContext", "GradSign", "Ones", "SignOnly", "PlainGradient", "PlainReadout",
           "UnitMagnitude",
           "PresynapticSign", "presynaptic_credit", "NeuronSign", "FeedbackSign", "FeedbackAlignment", "RewardSign",
           "AttentionGatedReward", "choose_actions", "boltzmann_actions", "ScalarReward"]
