"""GradSign: the GHL neuromodulator, ``M = sign(dL/dW)`` (GHL paper Eq. 5-6, Algorithm 1 lines 9-12)."""
from __future__ import annotations

from typing import Any

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
