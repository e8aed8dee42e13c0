"""Activation functions of the papers' networks that torch does not ship."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Triangle(nn.Module):
    """DeepHebb's activation (Journé et al., ICLR 2023): ``Triangle(u)_j = max(0, u_j - mean_c u_c) ** power``.

    The mean is over channels (dim 1), so a unit fires only when it beats the layer's average response at that
    position; ``power`` (``p`` of the paper's RePU) is 1 by default.
    """

    def __init__(self, power: float = 1.0) -> None:
        super().__init__()
        self.power = float(power)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(x - x.mean(dim=1, keepdim=True))
        return out if self.power == 1.0 else out.pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power:g}"
