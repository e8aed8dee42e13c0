"""FeedbackSign: the sign of a fixed random projection of the output error (direct feedback alignment).

For the output layer ``delta = e``, the error ``e = dL/d(output)`` itself (e.g. ``softmax(z) - onehot(y)``); for
every other plastic layer ``delta = (e B_l^T) ⊙ g`` with a fixed random matrix ``B_l`` (``K_l x C``, entries
``N(0, 1/C)``, drawn once from ``seed`` and the layer name) and ``g`` the optional post-synaptic gate (``1`` where
the neuron's rate function has non-zero slope; the spiking learner supplies it in ``layer.extra["post_gate"]``,
the rate plug-in has none).  The modulator is one sign per post-synaptic neuron,
``M_ik = sign(sum_{n, pos} delta_{n k pos})``, broadcast to all its synapses.

This is an **approximation** of GHL: no weight transport and no backward pass at all, so it works online in
spiking networks; its signs agree with GradSign only to the extent that the forward weights align with ``B``.
Pass the error as a keyword: ``rule.step(error=e)`` (rate plug-in) -- the spiking learner computes it from its
``loss_fn``.  Which layers receive ``e`` directly: those named in ``output_layers`` or flagged
``layer.extra["is_output"]`` (the spiking learner flags its last synapse).  With ``layer.extra["per_sample"]``
(``ThreeFactor(per_sample=True)``) the sign is taken per sample, ``M_nik = sign(delta_nk)``.  As for
:class:`~ghl_snn.modulators.neuron_sign.NeuronSign`, ``presynaptic_gate=True`` (default) leaves the synapses of
silent inputs (``x_i = 0``, Linear layers) unchanged.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .base import LayerSignals
from .neuron_sign import GatedNeuronSign, per_neuron_sum, per_sample_per_neuron


class FeedbackSign(GatedNeuronSign):
    """Direct-feedback-alignment sign per post-synaptic neuron (see the module docstring)."""

    needs_weight_grad = False
    needs_output_grad = False

    def __init__(self, seed: int = 0, output_layers: Iterable[str] = (), presynaptic_gate: bool = True) -> None:
        super().__init__(presynaptic_gate)
        self.seed = int(seed)
        self.output_layers = set(output_layers)
        self.matrices: dict[str, Tensor] = {}

    def feedback_matrix(self, name: str, neurons: int, outputs: int) -> Tensor:
        """The fixed ``(neurons, outputs)`` feedback matrix ``B`` of layer ``name`` (created on first use)."""
        matrix = self.matrices.get(name)
        if matrix is None or matrix.shape != (neurons, outputs):
            if matrix is not None:
                raise ValueError(f"feedback matrix of {name!r} has shape {tuple(matrix.shape)}, but the layer now "
                                 f"needs {(neurons, outputs)}")
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
            matrix = torch.randn(neurons, outputs, generator=generator) / outputs ** 0.5
            self.matrices[name] = matrix
        return matrix

    def is_output(self, layer: LayerSignals) -> bool:
        return layer.name in self.output_layers or bool(layer.extra.get("is_output", False))

    def _ungated_sign(self, layer: LayerSignals, error: Tensor | None = None, **context: Any) -> Tensor:
        if error is None:
            raise RuntimeError("FeedbackSign needs the output error: call step(error=dL/d(output)) "
                               "(e.g. softmax(logits) - onehot(target)) or give the spiking learner a loss_fn")
        error = error.detach().float()
        if error.dim() != 2:
            raise ValueError(f"FeedbackSign expects the error as (N, outputs), got {tuple(error.shape)}")
        neurons = layer.module.weight.shape[0]
        if self.is_output(layer):
            if error.shape[1] != neurons:
                raise ValueError(f"output layer {layer.name!r} has {neurons} units but the error has "
                                 f"{error.shape[1]} columns")
            delta = error
        else:
            matrix = self.feedback_matrix(layer.name, neurons, error.shape[1]).to(error.device)
            delta = error @ matrix.t()
        gate = layer.extra.get("post_gate")
        if gate is not None:
            gate = gate.float()
            if gate.shape[0] != delta.shape[0] or gate.shape[1] != neurons:
                raise ValueError(f"post_gate of {layer.name!r} has shape {tuple(gate.shape)}, expected "
                                 f"({delta.shape[0]}, {neurons}, ...)")
            delta = delta * gate.reshape(gate.shape[0], neurons, -1).sum(dim=2)
        if layer.extra.get("per_sample"):
            sign = per_sample_per_neuron(delta, layer.module).sign()
        else:
            if layer.module.weight.dim() == 4:
                delta = delta[:, :, None, None]
            sign = per_neuron_sum(delta, layer.module).sign()
        return sign

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "matrices": {name: m.clone() for name, m in self.matrices.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"seed", "matrices"}
        if unknown:
            raise KeyError(f"FeedbackSign state has unknown keys {sorted(unknown)}")
        self.seed = int(state.get("seed", self.seed))
        self.matrices = {name: m.clone() for name, m in state.get("matrices", {}).items()}

    def __repr__(self) -> str:
        return f"FeedbackSign(seed={self.seed})"
