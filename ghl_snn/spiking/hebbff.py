"""Spiking HebbFF: a rate-coded spiking label-conditioned MLP trained by the HebbFF rule (HebbFF paper, Eq. 1-4).

The weights are those of a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP] (``layers``, ``num_classes``,
``label_scale``); every layer is followed by a spiking neuron (default [`IF`][ghl_snn.IF]).  At
every time step ``t`` of a presentation window of ``T`` steps::

    s_0,t  = encoder(x)                                   (Bernoulli spikes of the pixel intensities by default)
    u_l,t  = [s_{l−1},t ; label_scale · onehot(label)]    (layer input: spikes of the layer below and the label)
    s_l,t  = neuron_l(W_l u_l,t + b_l)

and each synapse keeps two traces, the window means ``x̄_l = mean_t u_l,t`` (pre-synaptic rates) and
``r_l = mean_t s_l,t`` (post-synaptic spike rates): memory ``O(N (in + out))``, independent of ``T``, no autograd. At
the end of the window the HebbFF rule is applied to the traces exactly as to a rate network's activity: goodness
``g = mean_k r_k²`` from the spike rates (Eq. 1), gates (Eq. 2), ``ΔW = η Σ_n c_n x̄_nᵀ`` (Eq. 3-4) with the per-sample
factor ``c = s σ(s (θ − g)) r`` of [`hebbff_coefficients`][ghl_snn.rules.hebbff.hebbff_coefficients] -- the same
[`HebbFF`][ghl_snn.HebbFF] learner that trains the rate network performs the update.

**Equivalence.**  The rate network *at the empirical rates* uses the same input traces and the neuron's rate
function: ``a_l = rate(W_l x̄_l + b_l)`` (IF: ``clamp(I / threshold, 0, 1)``).  For an IF neuron (reset by subtraction)
the spike count over the window is ``floor(Σ_t I_t / threshold)`` while the membrane stays within one threshold, so
``r_l = a_l + O(1/T)``: the spiking HebbFF update converges to the rate HebbFF update of
[`SpikingHebbFF.rate_traces`][ghl_snn.spiking.hebbff.SpikingHebbFF.rate_traces] as ``T`` grows ([`update_agreement`][]
measures it).  No input normalisation is applied between spiking layers (a spike train has no instantaneous norm);
``input_scale`` multiplies the input spikes of every layer by a constant instead, so the pre-activations stay in the
neurons' operating range.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..learners.hebbff import HebbFF, HebbFFLayerStats
from ..rules.hebbff import LayerTrace, Reduction, hebbff_eligibility
from .encoders import BernoulliEncoder, Encoder, check_num_steps
from .neurons import IF, SpikingNeuron


class LabelConditionedLayers(Protocol):
    layers: Sequence[nn.Linear]
    num_classes: int
    label_scale: float


class UpdateAgreement(NamedTuple):
    """Spiking vs rate HebbFF weight update of every layer: cosine similarity and relative L2 error."""

    cosine: list[float]
    relative_error: list[float]


class SpikingHebbFF:
    """Rate-coded spiking MLP trained online by HebbFF (see the module docstring).

    Args:
        model: the label-conditioned weights (e.g. a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP]).
        lr, theta, reduction, weight_decay: of the [`HebbFF`][ghl_snn.HebbFF] learner.
        neuron: factory of the neuron following each layer (default ``IF()``).
        encoder: input spike encoder (default Bernoulli spikes of the intensities).
        input_scale: constant factor on every layer's input spikes (not on the label code).
    """

    def __init__(self, model: LabelConditionedLayers, lr: float, theta: float, reduction: Reduction = "mean",
                 weight_decay: float = 0.0, neuron: Callable[[], SpikingNeuron] | None = None,
                 encoder: Encoder | Callable[[Tensor], Tensor] | None = None, input_scale: float = 1.0) -> None:
        self.model = model
        self.learner = HebbFF(model.layers, lr=lr, theta=theta, weight_decay=weight_decay, reduction=reduction)
        factory = neuron if neuron is not None else IF
        self.neurons = [factory() for _ in model.layers]
        for index, unit in enumerate(self.neurons):
            if not isinstance(unit, SpikingNeuron):
                raise TypeError(f"neuron factory must build SpikingNeuron modules, got {type(unit).__name__} "
                                f"for layer {index}")
        self.encoder = encoder if encoder is not None else BernoulliEncoder()
        self.input_scale = float(input_scale)
        if not self.input_scale > 0:
            raise ValueError(f"input_scale must be > 0, got {input_scale!r}")

    def _label_code(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        classes = int(self.model.num_classes)
        if labels.dim() != 1 or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes)):
            raise ValueError(f"labels must be a 1-d tensor of classes in [0, {classes})")
        return F.one_hot(labels, classes).to(dtype) * float(self.model.label_scale)

    @torch.no_grad()
    def run(self, x: Tensor, labels: Tensor, num_steps: int) -> list[LayerTrace]:
        """Present ``x`` with ``labels`` for ``num_steps`` steps; per layer ``(x̄_l, r_l)``: mean input (label part
        included) and mean output spike rate.  Memory independent of ``num_steps``."""
        num_steps = check_num_steps(num_steps)
        first = self.model.layers[0]
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] + int(self.model.num_classes) != first.in_features:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit the first layer "
                             f"({first.in_features} inputs = image + {self.model.num_classes} label units)")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must be shaped ({x.shape[0]},), got {tuple(labels.shape)}")
        dtype = first.weight.dtype
        code = self._label_code(labels, dtype)
        for unit in self.neurons:
            unit.reset()
        input_sums: list[Tensor | None] = [None] * len(self.neurons)
        spike_sums: list[Tensor | None] = [None] * len(self.neurons)
        for _ in range(num_steps):
            spikes = self.encoder(x).to(dtype)
            for index, (layer, unit) in enumerate(zip(self.model.layers, self.neurons)):
                inputs = spikes * self.input_scale
                current = F.linear(torch.cat([inputs, code], dim=1), layer.weight, layer.bias)
                spikes = unit(current)
                input_sums[index] = inputs.clone() if input_sums[index] is None else input_sums[index].add_(inputs)
                spike_sums[index] = spikes.clone() if spike_sums[index] is None else spike_sums[index].add_(spikes)
        return [(torch.cat([total_in / num_steps, code], dim=1), total_out / num_steps)
                for total_in, total_out in zip(input_sums, spike_sums)]

    @torch.no_grad()
    def rate_traces(self, traces: Sequence[LayerTrace]) -> list[LayerTrace]:
        """The rate network at the empirical input rates: ``(x̄_l, rate_l(W_l x̄_l + b_l))`` for every layer."""
        return [(inputs, unit.rate(F.linear(inputs, layer.weight, layer.bias)))
                for (inputs, _), layer, unit in zip(traces, self.model.layers, self.neurons)]

    @torch.no_grad()
    def step(self, x: Tensor, labels: Tensor, negative_labels: Tensor, num_steps: int) -> list[HebbFFLayerStats]:
        """One window of positive and one of negative samples, then the HebbFF update of every layer."""
        positive = self.run(x, labels, num_steps)
        negative = self.run(x, negative_labels, num_steps)
        return self.learner.step(positive, negative)

    @torch.no_grad()
    def label_goodness(self, x: Tensor, num_steps: int) -> Tensor:
        """Spike-rate goodness summed over layers for every candidate label, (B, C)."""
        batch, classes = x.shape[0], int(self.model.num_classes)
        labels = torch.arange(classes, device=x.device).repeat(batch)
        traces = self.run(x.reshape(batch, -1).repeat_interleave(classes, dim=0), labels, num_steps)
        return torch.stack([rate.pow(2).mean(dim=1) for _, rate in traces]).sum(dim=0).reshape(batch, classes)

    @torch.no_grad()
    def predict(self, x: Tensor, num_steps: int) -> Tensor:
        """Label with the highest spike-rate goodness summed over layers (B,)."""
        return self.label_goodness(x, num_steps).argmax(dim=1)


def update_agreement(positive: Sequence[LayerTrace], negative: Sequence[LayerTrace],
                     rate_positive: Sequence[LayerTrace], rate_negative: Sequence[LayerTrace], theta: float,
                     reduction: Reduction = "mean") -> UpdateAgreement:
    """Cosine and relative error ``‖E_spike − E_rate‖ / ‖E_rate‖`` of the HebbFF weight eligibility per layer."""
    cosines, errors = [], []
    for (xp, rp), (xn, rn), (xpr, ap), (xnr, an) in zip(positive, negative, rate_positive, rate_negative):
        spiking = hebbff_eligibility(xp, rp, xn, rn, theta, reduction).weight.flatten().double()
        rate = hebbff_eligibility(xpr, ap, xnr, an, theta, reduction).weight.flatten().double()
        cosines.append(float(F.cosine_similarity(spiking, rate, dim=0)))
        errors.append(float((spiking - rate).norm() / rate.norm().clamp_min(1e-30)))
    return UpdateAgreement(cosines, errors)
