"""Sum pooling, the pooling layer of the spiking convolutional networks (exportable to NIR as ``SumPool2d``)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SumPool2d(nn.Module):
    """Sum pooling ``y = k^2 * avg_pool2d(x, k, stride)`` (NIR ``SumPool2d``; unlike ``LPPool2d(1)`` its gradient
    is 1 everywhere, also where the window is silent)."""

    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride) * float(self.kernel_size ** 2)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
