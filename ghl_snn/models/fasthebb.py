"""FastHebb (Lagani et al., 2024) as used by the GHL paper (Table 1): four convs, a 4096-unit layer, a classifier.

conv 3→96 k5 → ReLU → MaxPool2 → BN; conv 96→128 k3 → ReLU → BN; conv 128→192 k3 → ReLU → MaxPool2 → BN;
conv 192→256 k3 → ReLU → BN (BN without affine parameters, no padding) → Flatten (256·3·3 = 2304) →
Linear 4096 → ReLU → BatchNorm1d → Dropout(0.5) → Linear.  Only the convolutions are GHL-plastic, tau = 1.
"""
from __future__ import annotations

from torch import Tensor, nn

from .deephebb import scaled_width

BASE_CHANNELS = (96, 128, 192, 256)
BASE_HIDDEN = 4096


class FastHebb(nn.Module):
    """The FastHebb CNN for 32×32 RGB input; ``width`` scales every conv and the hidden Linear layer."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3, c4 = (scaled_width(c, width) for c in BASE_CHANNELS)
        hidden = scaled_width(BASE_HIDDEN, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(c1, affine=False),
            nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.BatchNorm2d(c2, affine=False),
            nn.Conv2d(c2, c3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(c3, affine=False),
            nn.Conv2d(c3, c4, 3), nn.ReLU(), nn.BatchNorm2d(c4, affine=False),
        )
        self.head_features = c4 * 3 * 3
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(self.head_features, hidden), nn.ReLU(), nn.BatchNorm1d(hidden), nn.Dropout(0.5),
            nn.Linear(hidden, num_classes))

    @property
    def plastic_taus(self) -> dict[str, float]:
        """Qualified names of the GHL-plastic convolutions -> softmax temperature (1 everywhere)."""
        return {name: 1.0 for name, m in self.named_modules() if isinstance(m, nn.Conv2d)}

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))
