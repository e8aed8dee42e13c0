"""Per-neuron signals that meet the synapse's own presynaptic trace: the per-synapse sign of the accumulated product.

A broadcast modulator delivers one number ``delta_nk`` per post-synaptic neuron ``k`` (Linear unit, or ConvNd
channel at each position) and sample ``n``.  Each synapse ``(k, i)`` combines it with what it sees locally, its
presynaptic trace ``x_ni``, accumulates the product over the samples (and positions) of the update and takes the
sign::

    C_ik = sum_n delta_nk x_ni                         (Linear)
    C    = layer_weight_gradient(conv, x, delta)       (Conv1d/2d/3d: the layer's weight-gradient convolution)
    M    = sign(C),   update = M ⊙ |E|

Summing ``delta`` over samples *before* it meets ``x`` (one sign per neuron) or taking one sign per sample throws
away which inputs caused the error; the accumulated product keeps it.  With ``delta = dL/dy`` the product is
exactly ``dL/dW`` (per-synapse GHL, [`NeuronSign`][ghl_snn.NeuronSign]); with ``delta`` a random projection
of the output error it is direct feedback alignment ([`FeedbackSign`][ghl_snn.FeedbackSign]).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ops.data_parallel import replica_mean
from ..ops.weight_gradient import layer_weight_gradient
from .base import LayerSignals, Modulator


def presynaptic_credit(delta: Tensor, inputs: Tensor, module: nn.Module) -> Tensor:
    """``sum_n delta_nk x_ni`` shaped like ``module.weight``; for a Conv1d / Conv2d / Conv3d layer the sum also runs
    over output positions, in the layer's own geometry (stride, dilation, groups, ``padding="same"``, padding
    modes), as [`layer_weight_gradient`][ghl_snn.ops.weight_gradient.layer_weight_gradient].

    ``delta``: per-sample post-synaptic signal shaped like the layer output (``(..., K)`` for Linear,
    ``(N, K, *S')`` for a convolution); ``inputs``: the layer input (presynaptic traces) of the same samples.
    With ``delta = dL/dy`` the result is ``dL/dW``.

    A Linear layer applied to token sequences (``inputs`` ``(N, T..., in)``, a transformer's MLP) may receive one
    signal per sample, ``delta`` ``(N, K)`` (a broadcast error such as [`FeedbackSign`][ghl_snn.FeedbackSign]'s):
    every token of sample ``n`` then receives ``delta_n``, and ``C_ik = sum_n delta_nk sum_t x_nti``.
    """
    weight = module.weight
    delta = delta.detach().to(torch.float32)
    inputs = inputs.detach().to(torch.float32)
    if isinstance(module, nn.modules.conv._ConvNd):
        dims = len(module.kernel_size)
        if (delta.dim() != dims + 2 or delta.shape[1] != weight.shape[0] or inputs.dim() != dims + 2
                or inputs.shape[0] != delta.shape[0] or inputs.shape[1] != module.in_channels):
            raise ValueError(f"{type(module).__name__} credit needs delta (N, {weight.shape[0]}, *S') and inputs "
                             f"(N, {module.in_channels}, *S) with {dims} spatial dims, got {tuple(delta.shape)} and "
                             f"{tuple(inputs.shape)}")
        return layer_weight_gradient(module, inputs, delta)
    if delta.dim() == 2 and inputs.dim() > 2 and inputs.shape[0] == delta.shape[0]:
        inputs = inputs.sum(dim=tuple(range(1, inputs.dim() - 1)))  # one signal per sample meets all its tokens
    delta = delta.reshape(-1, delta.shape[-1])
    inputs = inputs.reshape(-1, inputs.shape[-1])
    if delta.shape != (inputs.shape[0], weight.shape[0]) or inputs.shape[1] != weight.shape[1]:
        raise ValueError(f"Linear credit needs delta (N, {weight.shape[0]}) and inputs (N, {weight.shape[1]}) (or "
                         f"inputs (N, T..., {weight.shape[1]}) with one delta row per sample), got "
                         f"{tuple(delta.shape)} and {tuple(inputs.shape)}")
    return delta.t() @ inputs


def output_shape(module: nn.Module, inputs: Tensor) -> tuple[int, ...]:
    """Per-sample output shape of a Linear / ConvNd layer for the given input batch (no forward pass)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = inputs.shape[2:]
        if module.padding == "same":
            return (module.out_channels, *spatial)
        padding = (0,) * len(spatial) if module.padding == "valid" else module.padding
        sizes = [(size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1 for size, pad, dil, kernel, stride in
                 zip(spatial, padding, module.dilation, module.kernel_size, module.stride)]
        return (module.out_channels, *sizes)
    return (module.weight.shape[0],)


class PresynapticSign(Modulator):
    """Base of the per-neuron modulators: ``M = sign(sum_n delta_nk x_ni)``, update ``M ⊙ |E|``.

    Subclasses implement [`neuron_signal`][].  Needs the layer input (``needs_inputs``): the spiking learner
    passes the per-sample presynaptic traces, the rate plug-in the captured inputs.
    """

    needs_weight_grad = False
    needs_inputs = True

    def neuron_signal(self, layer: LayerSignals, **context: Any) -> Tensor:
        """Per-sample, per-neuron signal ``delta`` shaped like the layer output (descent convention:
        ``delta > 0`` means the neuron's output should decrease)."""
        raise NotImplementedError

    def credit(self, layer: LayerSignals, **context: Any) -> Tensor:
        """The accumulated per-synapse product ``sum_n delta_nk x_ni`` (shaped like the weight); under data
        parallelism (``torch.distributed`` initialised with several processes) averaged over the replicas, as DDP
        averages gradients, so that every replica takes the sign of the whole batch's credit and applies the same
        update."""
        if layer.inputs is None:
            raise RuntimeError(f"{type(self).__name__} needs the input of layer {layer.name!r} (its presynaptic "
                               "activity), but none was captured")
        return replica_mean(presynaptic_credit(self.neuron_signal(layer, **context), layer.inputs, layer.module))

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return self.credit(layer, **context).sign()

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        """``sign(C) ⊙ |E|``, the sign taken in place on the freshly computed credit ``C``."""
        if type(self).sign is not PresynapticSign.sign or type(self).credit is not PresynapticSign.credit:
            return super().update(layer, **context)  # a subclass's own sign or credit may not be a fresh tensor
        return self.credit(layer, **context).sign_().mul_(layer.eligibility.abs())
