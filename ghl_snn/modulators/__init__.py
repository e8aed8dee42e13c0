"""Neuromodulators M (factor 3): broadcast signs combined with |E| by the plug-in and the spiking learner."""
from .ablations import Ones, SignOnly
from .base import LayerSignals, Modulator
from .feedback_sign import FeedbackSign
from .grad_sign import GradSign
from .neuron_sign import NeuronSign
from .reward_sign import RewardSign

__all__ = ["Modulator", "LayerSignals", "GradSign", "Ones", "SignOnly", "NeuronSign", "FeedbackSign", "RewardSign"]
