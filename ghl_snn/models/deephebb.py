"""DeepHebb (Journé et al., ICLR 2023) as used by the GHL paper (Table 1): three wide conv blocks + linear head.

[BN2d → conv 3→96 k5 p2 → ReLU → MaxPool(4,2,1)] → [BN2d → conv 96→384 k3 p1 → ReLU → MaxPool(4,2,1)] →
[BN2d → conv 384→1536 k3 p1 → ReLU → AvgPool(2,2)] → Flatten (1536·4·4 = 24576) → Dropout(0.5) → Linear.
BatchNorm without affine parameters, convolutions without bias, Kaiming-normal (fan_in, ReLU) initialisation.
Only the three convolutions are GHL-plastic, with temperatures tau = 1, 1/0.65, 1/0.25.
"""
from __future__ import annotations

from torch import Tensor, nn

BASE_CHANNELS = (96, 384, 1536)
PLASTIC_TAUS = (1.0, 1.0 / 0.65, 1.0 / 0.25)


def scaled_width(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (``width`` = 1.0 is the paper's network)."""
    if not width > 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return max(1, round(channels * width))


class DeepHebb(nn.Module):
    """The DeepHebb CNN for 32×32 RGB input; ``width`` scales every conv's channel count."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = (scaled_width(c, width) for c in BASE_CHANNELS)
        self.features = nn.Sequential(
            nn.BatchNorm2d(in_channels, affine=False),
            nn.Conv2d(in_channels, c1, 5, padding=2, bias=False), nn.ReLU(), nn.MaxPool2d(4, 2, 1),
            nn.BatchNorm2d(c1, affine=False),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(4, 2, 1),
            nn.BatchNorm2d(c2, affine=False),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2, 2),
        )
        self.head_features = c3 * 4 * 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(self.head_features, num_classes))
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    @property
    def plastic_taus(self) -> dict[str, float]:
        """Qualified names of the GHL-plastic convolutions -> softmax temperature (paper's values)."""
        convs = [name for name, m in self.named_modules() if isinstance(m, nn.Conv2d)]
        return dict(zip(convs, PLASTIC_TAUS))

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))
