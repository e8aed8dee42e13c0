"""The rate network of a spiking network and the rate/spiking eligibilities and updates to compare."""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..modulators.ablations import Ones
from .compare import compare
from ..modulators.base import Modulator
from ..plasticity import GHL
from ..selection import LayerSelector
from ..rules.base import Normalization
from ..spiking.encoders import BernoulliEncoder, check_num_steps
from ..spiking.learner import ThreeFactor
from ..spiking.traces import PreTrace, check_trace_decay
from ..spiking.network import SpikingNetwork
from ..spiking.neurons import SpikingNeuron

LossFn = Callable[[Tensor], Tensor]
EncoderFn = Callable[[Tensor], Tensor]


class RateNeuron(nn.Module):
    """Rate counterpart of a spiking neuron: ``forward(I) = neuron.rate(I)``, its f-I curve (IF: clipped ReLU
    ``clamp(I / theta, 0, 1)``; leaky neurons: the closed-form rate for a constant current, see
    [`ghl_snn.spiking.neurons`][])."""

    def __init__(self, neuron: SpikingNeuron) -> None:
        super().__init__()
        self.neuron = neuron

    def forward(self, current: Tensor) -> Tensor:
        return self.neuron.rate(current)

    def extra_repr(self) -> str:
        return repr(self.neuron.fi_curve)


def to_rate_network(network: SpikingNetwork) -> nn.Sequential:
    """``nn.Sequential`` with the **same** synapse modules (shared weights, same child names) and every neuron
    replaced by a [`RateNeuron`][].  Fed with input rates ``r`` it computes the rate limit of
    ``network.run(r, T, BernoulliEncoder())`` (exact for IF neurons as ``T -> inf``).  Two references are useful:
    the *true* rates ``r`` (the limit ``T -> inf``, which includes the Bernoulli sampling noise of the input in the
    comparison) and the *empirical* rates, the time-averaged input the spiking network actually received
    (``network.mean_input`` after a run): against the latter only the neurons' quantisation remains."""
    if not isinstance(network, SpikingNetwork):
        raise TypeError(f"to_rate_network needs a SpikingNetwork, got {type(network).__name__}")
    children = OrderedDict((name, RateNeuron(m) if isinstance(m, SpikingNeuron) else m)
                           for name, m in network.named_children())
    return nn.Sequential(children)


def rate_eligibility(trace: Tensor, num_steps: int, decay: float = 1.0) -> Tensor:
    """Map an accumulated trace ``e_T = sum_t lambda^(T-t) E_t`` to the rate scale: ``e_T / sum_{k<T} lambda^k``
    (``e_T / T`` for ``lambda = 1``)."""
    num_steps = check_num_steps(num_steps)
    decay = check_trace_decay(decay)
    weight_sum = float(num_steps) if decay == 1.0 else (1.0 - decay ** num_steps) / (1.0 - decay)
    return trace / weight_sum


def if_spike_count(current: Tensor, num_steps: int, threshold: float = 1.0) -> Tensor:
    """Closed-form spike count of the IF neuron (reset by subtraction, ``v_0 = 0``) for a constant current:
    ``clamp(floor(T I / theta), 0, T)``."""
    num_steps = check_num_steps(num_steps)
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    return torch.clamp(torch.floor(num_steps * current / threshold), 0, num_steps)


def rate_eligibilities(network: SpikingNetwork, rates: Tensor, tau: float = 1.0,
                       layers: LayerSelector = None) -> dict[str, Tensor]:
    """Unnormalised batch-mean SWTA-Oja ``E`` of every plastic synapse of the rate network for input rates."""
    rate_net = to_rate_network(network)
    rule = GHL(rate_net, tau=tau, layers=layers, normalize=None, modulator=Ones())
    try:
        rate_net.train()
        with torch.enable_grad():
            rate_net(rates)
        return {name: rule.eligibility(name) for name in rule.layers}
    finally:
        rule.remove()


def rate_updates(network: SpikingNetwork, rates: Tensor, loss_fn: LossFn, tau: float = 1.0,
                 modulator: Modulator | None = None, layers: LayerSelector = None,
                 normalize: Normalization = "max", **context: Any) -> dict[str, Tensor]:
    """The rate GHL update ``.grad = M ⊙ |E|`` (default ``M = GradSign``) of every plastic synapse, computed by
    the [`GHL`][ghl_snn.GHL] plug-in on the rate network of a copy of ``network`` (``network`` is untouched)."""
    rate_net = to_rate_network(copy.deepcopy(network))
    rule = GHL(rate_net, tau=tau, layers=layers, normalize=normalize, modulator=modulator)
    try:
        rate_net.train()
        rate_net.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss_fn(rate_net(rates)).backward()
        rule.step(**context)
        return {name: rule.layers[name].weight.grad.detach().clone() for name in rule.layers}
    finally:
        rule.remove()


def spiking_eligibilities(network: SpikingNetwork, rates: Tensor, num_steps: int, tau: float = 1.0,
                          encoder: EncoderFn | None = None, generator: torch.Generator | None = None,
                          pre_trace: PreTrace = "mean", trace_decay: float = 1.0,
                          layers: LayerSelector = None) -> dict[str, Tensor]:
    """Rate-comparable eligibility of every plastic synapse after ``num_steps`` steps of input ``encoder(rates)``
    (default Bernoulli rate coding with ``generator``): from the end-of-window traces, or -- with
    ``trace_decay < 1`` -- the decaying eligibility trace ``E_T / sum lambda^k``."""
    learner = ThreeFactor(network, modulator=Ones(), tau=tau, layers=layers, normalize=None,
                          trace_decay=trace_decay, pre_trace=pre_trace,
                          eligibility="window" if trace_decay == 1.0 else "step")
    try:
        learner.run(rates, num_steps, encoder if encoder is not None else BernoulliEncoder(generator=generator))
        return {name: learner.eligibility(name) for name in learner.layers}
    finally:
        learner.remove()


def spiking_updates(network: SpikingNetwork, rates: Tensor, num_steps: int, loss_fn: LossFn, tau: float = 1.0,
                    modulator: Modulator | None = None, encoder: EncoderFn | None = None,
                    generator: torch.Generator | None = None, layers: LayerSelector = None,
                    normalize: Normalization = "max", return_input_rates: bool = False,
                    **context: Any) -> dict[str, Tensor] | tuple[dict[str, Tensor], Tensor]:
    """The online spiking update ``.grad = M ⊙ |E|`` of [`ThreeFactor`][ghl_snn.ThreeFactor] (default
    ``M = GradSign`` of the rate surrogate) after ``num_steps`` steps, on a copy of ``network``.  With
    ``return_input_rates`` also the empirical input rates (time average of the encoded input)."""
    network = copy.deepcopy(network)
    network.zero_grad(set_to_none=True)
    learner = ThreeFactor(network, modulator=modulator, tau=tau, layers=layers, normalize=normalize)
    try:
        learner.run(rates, num_steps, encoder if encoder is not None else BernoulliEncoder(generator=generator))
        learner.step(loss_fn=loss_fn, **context)
        updates = {name: learner.layers[name].weight.grad.detach().clone() for name in learner.layers}
        return (updates, network.mean_input.clone()) if return_input_rates else updates
    finally:
        learner.remove()


def update_equivalence(network: SpikingNetwork, rates: Tensor, num_steps: int, loss_fn: LossFn, tau: float = 1.0,
                       modulator: Modulator | None = None, generator: torch.Generator | None = None,
                       layers: LayerSelector = None) -> dict[str, dict[str, dict[str, float]]]:
    """Compare the online spiking update after ``num_steps`` Bernoulli steps with the rate GHL update against both
    references: ``"true"`` (the rate network at the input rates ``rates``) and ``"empirical"`` (at the input rates
    the spiking network actually received).  Returns ``{layer: {"true": compare(...), "empirical": ...}}``."""
    spiking, empirical = spiking_updates(network, rates, num_steps, loss_fn, tau=tau, modulator=modulator,
                                         generator=generator, layers=layers, return_input_rates=True)
    references = {"true": rate_updates(network, rates, loss_fn, tau=tau, modulator=modulator, layers=layers),
                  "empirical": rate_updates(network, empirical, loss_fn, tau=tau, modulator=modulator,
                                            layers=layers)}
    return {name: {kind: compare(update, reference[name]) for kind, reference in references.items()}
            for name, update in spiking.items()}
