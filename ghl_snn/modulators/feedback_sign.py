"""FeedbackSign: direct feedback alignment as a broadcast per-neuron signal, turned into a per-synapse sign.

Each plastic layer receives, per sample, the output error ``e = dL/d(read-out)`` (e.g. ``softmax(z) - onehot(y)``)
through a **fixed random feedback matrix** ``B_l`` (one row per post-synaptic neuron -- every Linear unit, every
Conv2d channel at every position -- entries ``N(0, 1/C)``, drawn once from ``seed`` and the layer name, the name
in the unwrapped model, so that DDP and ``torch.compile`` wrappers do not change ``B``), gated by
the neuron's f-I slope ``f'(I_nk)`` at its mean current (the spiking learner supplies it as
``layer.post_slope``; the rate plug-in has none)::

    delta_nk = (e_n B_l^T)_k f'(I_nk)          (the output layer: delta = e itself)
    M_ik     = sign(sum_n delta_nk x_ni)       (Conv2d: the weight-gradient convolution of x and delta)

``delta`` is exactly direct feedback alignment's teaching signal (Nøkland 2016); the synapse combines it with its
own presynaptic trace ([`ghl_snn.modulators.credit`][]).  On a Linear layer applied to token sequences (inputs
``(N, T..., in)``), the sample's ``delta_n`` reaches every one of its tokens.  This is an **approximation** of GHL:
no weight transport and no backward pass at all (it works online in spiking networks), and its signs agree with
GradSign only to the extent that the forward weights align with ``B``.  What it needs physically: a feedback
pathway carrying the ``C``-dimensional output error to every neuron.

Pass the error as a keyword, ``rule.step(error=e)`` (rate plug-in); the spiking learner computes it from its
``loss_fn``.  The layers that receive ``e`` directly are those named in ``output_layers`` or flagged
``layer.is_output`` (the spiking learner flags its last synapse).

[`FeedbackAlignment`][] is the plain-DFA control: ``.grad = sum_n delta_nk x_ni`` (no sign, no ``|E|``).
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..ops.data_parallel import unwrapped_name
from .base import LayerSignals
from .credit import PresynapticSign, output_shape


class FeedbackSign(PresynapticSign):
    """Direct-feedback-alignment signal per neuron, per-synapse sign (see the module docstring).

    Examples:
        A spiking network learning online from the output error through fixed random feedback (no backward pass).

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, FeedbackSign
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, FeedbackSign(seed=0))
        >>> _ = learner.run(x, num_steps=5, encoder=BernoulliEncoder())
        >>> learner.step(loss_fn=lambda out: F.cross_entropy(out, y))   # the learner passes dL/d(read-out)
        >>> float(net[0].weight.grad.abs().max())
        1.0
    """

    needs_output_grad = False

    def __init__(self, seed: int = 0, output_layers: Iterable[str] = ()) -> None:
        self.seed = int(seed)
        self.output_layers = set(output_layers)
        self.matrices: dict[str, Tensor] = {}

    def feedback_matrix(self, name: str, neurons: int, outputs: int, device: torch.device | None = None) -> Tensor:
        """The fixed ``(neurons, outputs)`` feedback matrix ``B`` of layer ``name`` (created on first use; drawn
        from, and kept under, the layer's name without wrapper prefixes such as DDP's ``module.``); with ``device``
        it is moved there once and kept there (no host-to-device copy per update)."""
        name = unwrapped_name(name)
        matrix = self.matrices.get(name)
        if matrix is None or matrix.shape != (neurons, outputs):
            if matrix is not None:
                raise ValueError(f"feedback matrix of {name!r} has shape {tuple(matrix.shape)}, but the layer now "
                                 f"needs {(neurons, outputs)}")
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
            matrix = torch.randn(neurons, outputs, generator=generator) / outputs ** 0.5
            self.matrices[name] = matrix
        if device is not None and matrix.device != torch.device(device):
            matrix = self.matrices[name] = matrix.to(device)
        return matrix

    def is_output(self, layer: LayerSignals) -> bool:
        return (layer.name in self.output_layers or unwrapped_name(layer.name) in self.output_layers
                or layer.is_output)

    def output_error(self, layer: LayerSignals, error: Tensor | None = None, **context: Any) -> Tensor:
        """The ``(N, C)`` error that the feedback pathway carries (here: the ``error`` keyword)."""
        if error is None:
            raise RuntimeError("FeedbackSign needs the output error: pass the loss, e.g. "
                               "learner.step(loss_fn=lambda out: F.cross_entropy(out, target), readout=out) (the "
                               "spiking learner takes dL/d(read-out)), or the error itself, step(error=dL/d(output))")
        return error

    def neuron_signal(self, layer: LayerSignals, **context: Any) -> Tensor:
        error = self.output_error(layer, **context).detach().float()
        if error.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects the error as (N, outputs), got {tuple(error.shape)}")
        if layer.inputs is None:
            raise RuntimeError(f"{type(self).__name__} needs the input of layer {layer.name!r}")
        shape = output_shape(layer.module, layer.inputs)
        if self.is_output(layer):
            if (error.shape[1],) != shape:
                raise ValueError(f"output layer {layer.name!r} has output shape {shape} but the error has "
                                 f"{error.shape[1]} columns")
            return error
        matrix = self.feedback_matrix(layer.name, math.prod(shape), error.shape[1], error.device)
        delta = (error @ matrix.t()).view(error.shape[0], *shape)
        slope = layer.post_slope
        if slope is not None:
            if slope.shape != delta.shape:
                raise ValueError(f"post_slope of {layer.name!r} has shape {tuple(slope.shape)}, expected "
                                 f"{tuple(delta.shape)}")
            delta = delta * slope.float()
        return delta

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "matrices": {name: m.clone() for name, m in self.matrices.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"seed", "matrices"}
        if unknown:
            raise KeyError(f"{type(self).__name__} state has unknown keys {sorted(unknown)}")
        self.seed = int(state.get("seed", self.seed))
        self.matrices = {unwrapped_name(name): m.clone() for name, m in state.get("matrices", {}).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class FeedbackAlignment(FeedbackSign):
    """Plain direct feedback alignment (control): ``.grad = sum_n delta_nk x_ni``, no sign and no ``|E|``.

    With ``e = dL/d(output)`` of the batch loss (as the spiking learner computes it from ``loss_fn``; a mean
    reduction includes the ``1/N``) the output layer's update is exactly ``dL/dW`` and the hidden layers' the DFA
    estimate of it, on the same scale.

    Examples:
        Plain DFA, the control of FeedbackSign: ``sum_n delta_nk x_ni`` without sign or |E|.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, FeedbackAlignment
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, FeedbackAlignment(seed=0))
        >>> _ = learner.run(x, num_steps=5, encoder=BernoulliEncoder())
        >>> learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
        >>> net[0].weight.grad.shape
        torch.Size([16, 8])
    """

    needs_eligibility = False

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return self.credit(layer, **context)
