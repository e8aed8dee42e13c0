"""NeuronSign: the per-synapse sign of ``sum_n delta_nk x_ni`` with ``delta = dL/dy`` (the neuron's error signal).

Each post-synaptic neuron ``k`` receives one number per sample, ``delta_nk = dL/dy_nk`` (the back-propagated
error at its pre-activation; in the spiking learner from one backward pass through the rate surrogate at the end of
the window, no BPTT), and each synapse multiplies it with its own presynaptic trace ``x_ni`` and accumulates over
the samples ([`ghl_snn.modulators.credit`][])::

    M_ik = sign(sum_n delta_nk x_ni)        (Conv2d: sign(conv2d_weight(x, W.shape, delta)))

Exactness: ``sum_n delta_nk x_ni`` *is* ``dL/dw_ik`` of a layer applied once (Linear, or Conv2d summed over
positions), so NeuronSign gives exactly GradSign's ``M`` -- GHL (GHL paper Eq. 5-6) -- computed from a per-neuron
signal and a synapse-local trace instead of a weight-sized gradient.  What it needs physically: a per-neuron error
signal obtained by back-propagation through the rate network (weight transport).  In the rate plug-in
``GHL(model, modulator=NeuronSign())`` the ``delta`` is captured by a tensor hook on each plastic layer's output
after ``loss.backward()`` and the layer input by the forward hook.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import LayerSignals
from .credit import PresynapticSign


class NeuronSign(PresynapticSign):
    """``M_ik = sign(sum_n dL/dy_nk x_ni)`` (see the module docstring).

    Examples:
        The per-neuron error ``dL/dy`` meets each synapse's input trace; equals GradSign's sign.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL, NeuronSign
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> rule = GHL(model, layers=["0"], modulator=NeuronSign())
        >>> F.cross_entropy(model(x), y).backward()
        >>> rule.step()
        >>> model[0].weight.grad.shape
        torch.Size([16, 8])
    """

    needs_output_grad = True

    def neuron_signal(self, layer: LayerSignals, **context: Any) -> Tensor:
        if layer.output_grad is None:
            raise RuntimeError(f"NeuronSign needs dL/dy of layer {layer.name!r} but none was captured: call "
                               "loss.backward() after a training-mode forward (rate plug-in) or give the spiking "
                               "learner a loss_fn")
        return layer.output_grad
