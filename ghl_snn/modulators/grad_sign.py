"""GradSign: the GHL neuromodulator, ``M = sign(dL/dW)`` (GHL paper Eq. 5-6, Algorithm 1 lines 9-12)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LayerSignals, Modulator, require_weight_grad


class GradSign(Modulator):
    """``M = sign(dL/dW)`` from back-propagation, so ``.grad = sign(dL/dW) ⊙ |E|``: exact GHL.

    ``sign(0) = 0``: a synapse whose gradient is exactly zero is left unchanged.

    Examples:
        Exact GHL: the sign of each weight's loss gradient times its eligibility.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL, GradSign
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> rule = GHL(model, layers=["0"], modulator=GradSign())
        >>> F.cross_entropy(model(x), y).backward()
        >>> rule.step()                                         # grad <- sign(dL/dW) * |E| / max|E|
        >>> float(model[0].weight.grad.abs().max())
        1.0
    """

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self).sign()

    def in_place(self) -> bool:
        """True unless a subclass changes ``sign`` or ``update`` (it then gets the generic path)."""
        return self._sign_and_update_of(GradSign)

    def update_(self, layer: LayerSignals, grad: Tensor, scale: float = 1.0) -> Tensor:
        """``grad <- sign(grad) ⊙ |E| / scale`` in place (``sign(0) = 0``; ``layer.eligibility`` holds ``|E|``):
        two weight-sized passes."""
        magnitude = layer.eligibility
        if scale == 1.0:
            return grad.sign_().mul_(magnitude)
        return torch.addcmul(_zero(grad), grad.sign_(), magnitude, value=1.0 / scale, out=grad)


_ZEROS: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _zero(like: Tensor) -> Tensor:
    """A 0-d zero of ``like``'s dtype and device (the ``input`` of ``addcmul``), made once per dtype and device."""
    key = (like.dtype, like.device)
    zero = _ZEROS.get(key)
    if zero is None:
        zero = _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return zero
