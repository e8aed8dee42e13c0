"""NeuronSign: one sign per post-synaptic neuron, ``sign(delta_k)`` with ``delta_k = dL/dy_k`` (DESIGN.md §1).

``M_ik = sign(sum_{n, pos} delta_{n k pos})`` is broadcast to every synapse ``i`` of neuron (Linear unit or Conv2d
channel) ``k``.

Exactness: for a Linear layer and **one sample** with non-negative input (ReLU outputs, spike rates),
``dL/dw_ik = delta_k x_i``, so ``sign(dL/dw_ik) = sign(delta_k)`` wherever ``x_i > 0``: per-sample GHL *is* this
broadcast-per-neuron rule there (where ``x_i = 0`` GradSign gives 0 while NeuronSign keeps ``sign(delta_k)``).
For a batch (``sign`` of the batch-summed ``delta``), for Conv2d (summed over positions) or for signed inputs it
is an approximation of :class:`~ghl_snn.modulators.GradSign`.

Per-sample mode (``layer.extra["per_sample"]``, set by ``ThreeFactor(per_sample=True)``): the sign is taken per
sample, ``M_nik = sign(delta_nk)``, and applied to that sample's ``|E_n|`` -- exactly per-sample GHL wherever
``x_ni > 0`` for Linear layers with ``x >= 0``.  A batch-summed per-neuron sign carries almost no information about
*which* inputs drove the error (it is a bias signal), so per-sample mode is the one that learns.

In the rate plug-in ``GHL(model, modulator=NeuronSign())`` the ``delta`` is captured by a tensor hook on each
plastic layer's output after ``loss.backward()``; in the spiking :class:`~ghl_snn.spiking.ThreeFactor` learner it
comes from one backward pass through the rate surrogate at the end of the window (no backprop through time).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import LayerSignals, Modulator


def per_sample_per_neuron(values: Tensor, module: nn.Module) -> Tensor:
    """Sum a per-sample post-synaptic signal over positions only: ``(N, K, 1)`` for Linear ``(N, K)`` input,
    ``(N, K, 1, 1, 1)`` for Conv2d ``(N, K, H, W)``; broadcasts against per-sample eligibilities."""
    channels = module.weight.shape[0]
    if values.dim() < 2 or values.shape[1] != channels:
        raise ValueError(f"expected a per-sample (N, {channels}, ...) post-synaptic signal, got {tuple(values.shape)}")
    total = values.reshape(values.shape[0], channels, -1).sum(dim=2)
    return total.view(values.shape[0], channels, *([1] * (module.weight.dim() - 1)))


def per_neuron_sum(values: Tensor, module: nn.Module) -> Tensor:
    """Sum a per-sample post-synaptic signal over batch (and positions) to one value per output neuron, shaped
    to broadcast against the weight: ``(K, 1)`` for Linear, ``(K, 1, 1, 1)`` for Conv2d."""
    weight = module.weight
    channels = weight.shape[0]
    if isinstance(module, nn.Conv2d):
        if values.dim() != 4 or values.shape[1] != channels:
            raise ValueError(f"expected a (N, {channels}, H, W) post-synaptic signal, got {tuple(values.shape)}")
        total = values.sum(dim=(0, 2, 3))
    else:
        if values.shape[-1] != channels:
            raise ValueError(f"expected a (..., {channels}) post-synaptic signal, got {tuple(values.shape)}")
        total = values.reshape(-1, channels).sum(dim=0)
    return total.view(channels, *([1] * (weight.dim() - 1)))


def presynaptic_gate(layer: LayerSignals) -> Tensor | None:
    """``1[x_i > 0]`` from the layer's (non-negative) input activity, shaped to broadcast against the weight
    (``(1, in)``) or, in per-sample mode, against per-sample eligibilities (``(N, 1, in)``); ``None`` for Conv2d
    layers or when the input is unknown.  Purely synapse-local: a synapse whose pre-synaptic neuron was silent
    does not change."""
    inputs = layer.inputs
    if inputs is None or isinstance(layer.module, nn.Conv2d):
        return None
    inputs = inputs.reshape(-1, inputs.shape[-1])
    if layer.extra.get("per_sample"):
        return (inputs > 0).to(torch.float32)[:, None, :]
    return (inputs.sum(dim=0) > 0).to(torch.float32)[None, :]


class GatedNeuronSign(Modulator):
    """Base of the per-post-synaptic-neuron signs (:class:`NeuronSign`, ``FeedbackSign``).

    Subclasses implement ``_ungated_sign(layer, **context)``; this class multiplies it by the synapse-local gate
    ``1[x_i > 0]`` when ``presynaptic_gate`` is on, and builds ``M ⊙ |E|`` in place in per-sample mode.
    """

    def __init__(self, presynaptic_gate: bool = True) -> None:
        self.presynaptic_gate = bool(presynaptic_gate)

    @property
    def needs_inputs(self) -> bool:  # the gate reads the layer input
        return self.presynaptic_gate

    def _ungated_sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        raise NotImplementedError

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        sign = self._ungated_sign(layer, **context)
        gate = presynaptic_gate(layer) if self.presynaptic_gate else None
        return sign if gate is None else sign * gate.to(sign.device)

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        """``M ⊙ |E|``; in per-sample mode built in place on one copy of ``|E|`` (``M`` is the rank-one product
        of the per-neuron sign and the presynaptic gate, never materialised at full size)."""
        if not layer.extra.get("per_sample"):
            return super().update(layer, **context)
        out = layer.eligibility.abs().mul_(self._ungated_sign(layer, **context))
        gate = presynaptic_gate(layer) if self.presynaptic_gate else None
        return out if gate is None else out.mul_(gate.to(out.device))


class NeuronSign(GatedNeuronSign):
    """``M_ik = sign(sum_n dL/dy_nk)``: a broadcast sign per post-synaptic neuron (see the module docstring).

    ``presynaptic_gate=True`` (default) multiplies ``M`` by the synapse-local gate ``1[x_i > 0]`` (Linear
    layers): then, per sample and for ``x >= 0``, ``M_ik = sign(delta_k x_i) = sign(dL/dw_ik)`` *everywhere*,
    i.e. exactly per-sample GradSign.  Without it the synapses of silent inputs drift with ``|u_k y_k w_ik|``.
    """

    needs_weight_grad = False
    needs_output_grad = True

    def __repr__(self) -> str:
        return f"NeuronSign(presynaptic_gate={self.presynaptic_gate})"

    def _ungated_sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        if layer.output_grad is None:
            raise RuntimeError(f"NeuronSign needs dL/dy of layer {layer.name!r} but none was captured: call "
                               "loss.backward() after a training-mode forward (rate plug-in) or give the spiking "
                               "learner a loss_fn")
        if layer.extra.get("per_sample"):
            sign = per_sample_per_neuron(layer.output_grad.float(), layer.module).sign()
        else:
            sign = per_neuron_sum(layer.output_grad.float(), layer.module).sign()
        return sign
