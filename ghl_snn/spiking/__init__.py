"""Spiking form of three-factor learning: neurons (built-in IF/LIF, snntorch and norse adapters), encoders,
a time-stepped network and the online [`ThreeFactor`][] learner (see [Architecture][architecture-three-factors])."""
from .architectures import conv_network, mlp_network, neuron_mlp
from .compiled import CompiledStep
from .eprop import EProp
from .encoders import BernoulliEncoder, ConstantCurrent, Encoder, FrameSequence, RateCoded, check_num_steps,\
    present, rate_encode
from .learner import ThreeFactor
from .traces import SynapseTrace, update_trace
from .network import SpikingNetwork
from .recurrent import RecurrentLIF
from .adapters import NeuronAdapter, NorseNeuron, SnnTorchNeuron, as_neuron, neuron_model, neuron_models
from .neurons import IF, LIF, FICurve, SpikingNeuron, spike_fn
from .synapses import EventLinear, event_current

__all__ = [
    "IF", "LIF", "FICurve", "SpikingNeuron", "NeuronAdapter", "SnnTorchNeuron", "NorseNeuron", "as_neuron", "spike_fn",
    "neuron_model", "neuron_models",
    "Encoder", "BernoulliEncoder", "ConstantCurrent", "rate_encode", "check_num_steps",
    "FrameSequence", "RateCoded", "present", "conv_network", "mlp_network", "neuron_mlp",
    "SpikingNetwork", "RecurrentLIF", "EProp", "ThreeFactor", "SynapseTrace", "update_trace",
    "event_current", "EventLinear", "CompiledStep",
]
