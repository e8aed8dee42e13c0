"""Spiking network builders: for event data a two-layer convolutional network for camera events and a one-hidden-
layer MLP for 1-D spike data (audio), both with a non-spiking read-out; for rate-coded inputs (images) a bias-free
one-hidden-layer MLP of any neuron model ([`neuron_mlp`][]).

The read-out's logit is the time-averaged current ``z = (1/T) sum_t W s_t`` of the last synapse (see
[`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run]).  Sum pooling keeps the convolutional graph
exportable to NIR ([`ghl_snn.export.nir`][]) and runnable by norse.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.pooling import SumPool2d
from .adapters import neuron_model
from .network import SpikingNetwork
from .neurons import LIF


def conv_network(in_shape: tuple[int, int, int], classes: int, channels: tuple[int, int] = (12, 32),
                 beta: float = 0.9, init_scale: float = 1.0, reset: str = "subtract") -> SpikingNetwork:
    """``conv5(C1) - LIF - sumpool2 - conv5(C2) - LIF - sumpool2 - flatten - fc(classes)`` (read-out current).

    Sum pooling (``avg_pool * 4``) keeps the graph exportable to NIR (``SumPool2d``) and runnable by norse."""
    polarities, height, width = in_shape
    c1, c2 = channels
    h, w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
    if h < 1 or w < 1:
        raise ValueError(f"input {in_shape} too small for two 5x5 convolutions with 2x2 pooling")
    net = SpikingNetwork(nn.Conv2d(polarities, c1, 5), LIF(beta=beta, reset=reset), SumPool2d(2),
                         nn.Conv2d(c1, c2, 5), LIF(beta=beta, reset=reset), SumPool2d(2),
                         nn.Flatten(), nn.Linear(c2 * h * w, classes))
    scale_spiking_synapses(net, init_scale)
    return net


def mlp_network(in_features: int, classes: int, hidden: int = 256, beta: float = 0.9,
                init_scale: float = 1.0, reset: str = "subtract") -> SpikingNetwork:
    """``flatten - fc(hidden) - LIF - fc(classes)`` (read-out current), for 1-D spike data such as SHD."""
    net = SpikingNetwork(nn.Flatten(), nn.Linear(in_features, hidden), LIF(beta=beta, reset=reset),
                         nn.Linear(hidden, classes))
    scale_spiking_synapses(net, init_scale)
    return net


def neuron_mlp(in_features: int, hidden: int, classes: int, neuron: str = "if", init_scale: float = 1.0,
               spiking_readout: bool = False) -> SpikingNetwork:
    """``fc(hidden) - neuron - fc(classes)``, bias-free, with the neuron model ``neuron`` (a name of
    [`neuron_models`][ghl_snn.spiking.adapters.neuron_models]); the hidden synapses are scaled by
    ``init_scale / gain`` (``gain``: the slope of the neuron's f-I curve), so that ``init_scale`` sets the hidden
    activity whatever the model.  ``spiking_readout`` adds a layer of the same neurons after the read-out synapses
    (the logit is then the output spike rate, as spike-timing rules need post-synaptic spikes)."""
    layers: list[nn.Module] = [nn.Linear(in_features, hidden, bias=False), neuron_model(neuron),
                               nn.Linear(hidden, classes, bias=False)]
    if spiking_readout:
        layers.append(neuron_model(neuron))
    net = SpikingNetwork(*layers)
    with torch.no_grad():
        net[0].weight.mul_(init_scale / net[1].gain)
    return net


def scale_spiking_synapses(net: SpikingNetwork, init_scale: float) -> None:
    """Multiply the weights of every synapse followed by a neuron by ``init_scale`` (sets the initial activity);
    the non-spiking read-out keeps its initial weights."""
    with torch.no_grad():
        for name, module in net.synapses().items():
            if net.neuron_after(name) is not None:
                module.weight.mul_(init_scale)
