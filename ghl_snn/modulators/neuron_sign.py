"""NeuronSign: one sign per post-synaptic neuron, ``sign(delta_k)`` with ``delta_k = dL/dy_k`` (DESIGN.md §1).

``M_ik = sign(sum_{n, pos} delta_{n k pos})`` is broadcast to every synapse ``i`` of neuron (Linear unit or Conv2d
channel) ``k``.

Exactness: for a Linear layer and **one sample** with non-negative input (ReLU outputs, spike rates),
``dL/dw_ik = delta_k x_i``, so ``sign(dL/dw_ik) = sign(delta_k)`` wherever ``x_i > 0``: per-sample GHL *is* this
broadcast-per-neuron rule there (where ``x_i = 0`` GradSign gives 0 while NeuronSign keeps ``sign(delta_k)``).
For a batch (``sign`` of the batch-summed ``delta``), for Conv2d (summed over positions) or for signed inputs it
is an approximation of :class:`~ghl_snn.modulators.GradSign`.

In the rate plug-in ``GHL(model, modulator=NeuronSign())`` the ``delta`` is captured by a tensor hook on each
plastic layer's output after ``loss.backward()``; in the spiking :class:`~ghl_snn.spiking.ThreeFactor` learner it
comes from one backward pass through the rate surrogate at the end of the window (no backprop through time).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import LayerSignals, Modulator


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


class NeuronSign(Modulator):
    """``M_ik = sign(sum_n dL/dy_nk)``: a broadcast sign per post-synaptic neuron (see the module docstring)."""

    needs_weight_grad = False
    needs_output_grad = True

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        if layer.output_grad is None:
            raise RuntimeError(f"NeuronSign needs dL/dy of layer {layer.name!r} but none was captured: call "
                               "loss.backward() after a training-mode forward (rate plug-in) or give the spiking "
                               "learner a loss_fn")
        return per_neuron_sum(layer.output_grad.float(), layer.module).sign()
