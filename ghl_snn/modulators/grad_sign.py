"""GradSign: the GHL neuromodulator, ``M = sign(dL/dW)`` (GHL paper Eq. 5-6, Algorithm 1 lines 9-12)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LayerSignals, Modulator, require_weight_grad


class GradSign(Modulator):
    """``M = sign(dL/dW)`` from back-propagation, so ``.grad = sign(dL/dW) ⊙ |E|``: exact GHL.

    ``sign(0) = 0``: a synapse whose gradient is exactly zero is left unchanged.
    """

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self).sign()

    def update_(self, layer: LayerSignals, grad: Tensor, scale: float = 1.0) -> Tensor | None:
        """``grad <- sign(grad) ⊙ |E| / scale`` in place (``sign(0) = 0``), three weight-sized passes; a subclass
        that changes ``sign`` or ``update`` gets the generic path."""
        if type(self).sign is not GradSign.sign or type(self).update is not Modulator.update:
            return None
        magnitude = layer.eligibility.abs_()
        if scale == 1.0:
            return grad.sign_().mul_(magnitude)
        return torch.addcmul(grad.new_zeros(()), grad.sign_(), magnitude, value=1.0 / scale, out=grad)
