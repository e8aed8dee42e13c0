"""The weight-sized buffers the spiking learner reuses from window to window (internal).

A presentation window's forward pass allocates nothing weight-sized; its update would: ``E``, the credit
``C = delta^T x_bar`` of a per-neuron modulator, ``|E|`` and the ``.grad`` they are written into.
[`UpdateBuffers`][] keeps them per layer, so that
[`ThreeFactor.step`][ghl_snn.spiking.learner.ThreeFactor.step] allocates no weight-sized tensor (a fresh one is
filled through page faults whenever the allocator has returned its memory; measured side by side, the step of a
784-256-10 window took 1.65 instead of 1.70 ms):

* ``E`` of the learner's own SWTA-Oja rule on a Linear layer;
* the update ``M ⊙ |E|`` of the per-neuron modulators whose sign is ``sign(C)``
  ([`PresynapticSign`][ghl_snn.modulators.credit.PresynapticSign] and the subclasses that keep its ``sign``,
  ``credit`` and ``update``, e.g. FeedbackSign and NeuronSign, chosen by exact method identity) on a Linear layer:
  ``out <- sign(delta^T x_bar) ⊙ |E|`` with the same arithmetic as ``modulator.update`` (equal to it exactly);
  every other modulator's update comes from ``modulator.update`` itself;
* the write ``weight.grad <- update``: the buffer becomes ``.grad`` (no copy) when ``.grad`` is unset, as
  autograd's accumulation takes over a gradient nobody else holds.

A buffer is reused only while nothing but this object (and the weight's ``.grad``) refers to it: a gradient the
caller kept from an earlier window (``g = w.grad``, a view of it) is never overwritten -- the next window then gets
a new buffer.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

from ..guards import UpdateGuard
from ..modulators.base import LayerSignals, Modulator
from ..modulators.credit import PresynapticSign
from ..ops.data_parallel import replica_mean


def _signs_credit(modulator: Modulator) -> bool:
    """Whether ``modulator.update`` is PresynapticSign's ``sign(C) ⊙ |E|`` with its own credit."""
    kind = type(modulator)
    return (isinstance(modulator, PresynapticSign) and kind.update is PresynapticSign.update
            and kind.sign is PresynapticSign.sign and kind.credit is PresynapticSign.credit)


class UpdateBuffers:
    """Per-layer update and ``|E|`` buffers of one spiking learner (see the module docstring)."""

    def __init__(self) -> None:
        self._eligibilities: dict[str, Tensor] = {}
        self._updates: dict[str, Tensor] = {}
        self._magnitudes: dict[str, Tensor] = {}

    def eligibility(self, name: str, weight: Tensor) -> Tensor:
        """The buffer (default dtype), shaped like ``weight``, that layer ``name``'s ``E`` is written into."""
        return self._free(self._eligibilities, name, weight, dtype=torch.get_default_dtype())

    @staticmethod
    def _free(buffers: dict[str, Tensor], name: str, like: Tensor, grad: Tensor | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
        """``buffers[name]`` if it fits ``like`` and nobody else holds it (``grad`` may: then it is that
        ``.grad``), else a new buffer kept under ``name``."""
        buffer = buffers.get(name)
        if buffer is not None and buffer.shape == like.shape and buffer.device == like.device and buffer.dtype == dtype:
            # references: the dict, ``buffer`` and getrefcount's argument; when it is the weight's .grad, that
            # attribute and ``grad``: any other is the caller's
            if sys.getrefcount(buffer) <= (5 if grad is buffer else 3):
                return buffer
        buffer = buffers[name] = torch.empty(like.shape, dtype=dtype, device=like.device)
        return buffer

    def update(self, modulator: Modulator, signals: LayerSignals, **context: Any) -> Tensor:
        """``modulator.update(signals, **context)``, computed into this layer's buffer where the modulator's
        update is PresynapticSign's on a Linear layer with a batch of 2-D inputs."""
        module, inputs = signals.module, signals.inputs
        if not (_signs_credit(modulator) and type(module) is nn.Linear and inputs is not None and inputs.dim() == 2
                and inputs.shape[1] == module.in_features and signals.eligibility.dtype == torch.float32):
            return modulator.update(signals, **context)
        delta = modulator.neuron_signal(signals, **context).detach()  # type: ignore[attr-defined]
        if delta.shape != (inputs.shape[0], module.out_features):
            return modulator.update(signals, **context)  # its own error message
        weight = module.weight
        out = self._free(self._updates, signals.name, weight, weight.grad)
        torch.mm(delta.t().float(), inputs.detach().float(), out=out)  # C = delta^T x_bar (credit.py)
        replica_mean(out)
        magnitude = self._free(self._magnitudes, signals.name, weight)
        return out.sign_().mul_(torch.abs(signals.eligibility, out=magnitude))

    def write(self, name: str, weight: nn.Parameter | Tensor, update: Tensor) -> None:
        """``weight.grad <- update`` (checked before): this layer's buffer becomes ``.grad`` when ``.grad`` is
        unset; otherwise the update is copied into ``.grad`` (in ``weight``'s dtype)."""
        if update is self._updates.get(name) and update.dtype == weight.dtype and update.shape == weight.shape:
            if weight.grad is None:
                weight.grad = update
                return
            if weight.grad is update:
                return
        UpdateGuard.write(weight, update)
