"""Spiking form of three-factor learning: neurons (built-in IF/LIF, snntorch and norse adapters), encoders,
a time-stepped network and the online [`ThreeFactor`][] learner (see [Architecture][architecture-three-factors])."""
from .encoders import BernoulliEncoder, ConstantCurrent, Encoder, check_num_steps, rate_encode
from .learner import SynapseTrace, ThreeFactor, update_trace
from .network import SpikingNetwork
from .neurons import IF, LIF, FICurve, NeuronAdapter, SpikingNeuron, as_neuron, spike_fn

__all__ = [
    "IF", "LIF", "FICurve", "SpikingNeuron", "NeuronAdapter", "as_neuron", "spike_fn",
    "Encoder", "BernoulliEncoder", "ConstantCurrent", "rate_encode", "check_num_steps",
    "SpikingNetwork", "ThreeFactor", "SynapseTrace", "update_trace",
]
