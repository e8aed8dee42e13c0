"""Plain convolutional stacks: CIFAR VGG-16 / VGG-14 (GHL paper Tables 2, 4) and the Fig. 2 depth/width sweep net.

**VGG-16 for CIFAR** (Simonyan & Zisserman 2015, configuration D, with BatchNorm): thirteen 3x3 convolutions
``64,64,M,128,128,M,256x3,M,512x3,M,512x3,M`` (conv -> BN -> ReLU, ``M`` = 2x2 max-pool) turn a 32x32 image into a
512-vector, followed by three fully connected layers ``512 -> 4096 -> 4096 -> classes`` (ReLU, dropout 0.5):
33.6M parameters for 10 classes (paper Table 4: 33.63M).  **VGG-14** drops the last two FC layers
(``512 -> classes`` directly): 14.7M parameters (paper: 14.71M).

GHL: every Conv2d and every hidden Linear (the two 4096-unit layers of VGG-16) is plastic (``plastic_taus``,
tau = 1).  The last Linear -- the classifier -- stays on backprop: its units are the classes, and a soft
winner-take-all among them would follow the network's own prediction rather than the label.  BatchNorm
parameters and biases have no pre/post-synaptic pair and keep their back-propagated gradients.

**PlainCNN** (Fig. 2): DeepHebb-style blocks ``[BN(no affine) -> conv -> activation -> pool]`` whose channel count
starts at 96 and is multiplied by ``growth`` (1, 2 or 4) at each block; ``depth`` is the number of convolutions.
Growth 4 at depth 3 is exactly DeepHebb (96, 384, 1536).  The activation is ReLU or DeepHebb's Triangle
([`ghl_snn.models.activations.Triangle`][]).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .activations import Triangle
from .deephebb import PLASTIC_TAUS as DEEPHEBB_TAUS
from .deephebb import scaled_width

VGG16_FEATURES: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                         512, 512, 512, "M")
VGG_HIDDEN = 4096


def vgg_features(config: Sequence[int | str], width: float = 1.0, in_channels: int = 3) -> tuple[nn.Sequential, int]:
    """``conv3x3 -> BN -> ReLU`` per integer, 2x2 max-pool per ``"M"``; returns (layers, output channels)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = scaled_width(int(item), width)
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(*layers), channels


class VGGCIFAR(nn.Module):
    """VGG-16 (``fc_layers=3``) or VGG-14 (``fc_layers=1``) for 32x32 RGB input; see the module docstring."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, fc_layers: int = 3, in_channels: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if fc_layers not in (1, 3):
            raise ValueError(f"fc_layers must be 3 (VGG-16) or 1 (VGG-14), got {fc_layers}")
        self.features, channels = vgg_features(VGG16_FEATURES, width, in_channels)
        head: list[nn.Module] = [nn.Flatten()]
        if fc_layers == 3:
            hidden = scaled_width(VGG_HIDDEN, width)
            head += [nn.Linear(channels, hidden), nn.ReLU(), nn.Dropout(dropout),
                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
            channels = hidden
        head.append(nn.Linear(channels, num_classes))
        self.classifier = nn.Sequential(*head)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def plastic_taus(self) -> dict[str, float]:
        """Every Conv2d and hidden Linear -> tau = 1 (the final classifier Linear stays on backprop)."""
        layers = [name for name, m in self.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return {name: 1.0 for name in layers[:-1]}

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


def vgg16(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> VGGCIFAR:
    """CIFAR VGG-16: 13 convolutions + 3 FC layers (33.6M parameters)."""
    return VGGCIFAR(num_classes, width, fc_layers=3, in_channels=in_channels)


def vgg14(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> VGGCIFAR:
    """CIFAR VGG-14: VGG-16 without the last two FC layers (14.7M parameters)."""
    return VGGCIFAR(num_classes, width, fc_layers=1, in_channels=in_channels)


ACTIVATIONS = ("relu", "triangle")


class PlainCNN(nn.Module):
    """Fig. 2's sweep network: ``depth`` DeepHebb-style conv blocks with channels ``96 * growth**l``.

    Block ``l`` (0-based): ``BN2d(affine=False) -> conv (5x5 for l = 0, else 3x3, same padding, no bias) ->
    activation -> pool``, the pool halving the 32x32 map (``MaxPool(4, 2, 1)``; ``AvgPool(2, 2)`` for the last
    block) while it is larger than 4x4.  Head: Flatten -> Dropout(0.5) -> Linear (backprop).  The convolutions are
    GHL/SoftHebb-plastic with DeepHebb's temperatures ``1, 1/0.65, 1/0.25`` (then ``1/0.25`` for deeper blocks).
    """

    def __init__(self, num_classes: int = 10, width: float = 1.0, depth: int = 3, growth: int = 4,
                 activation: str = "triangle", in_channels: int = 3, base_channels: int = 96,
                 image_size: int = 32) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.depth, self.growth, self.activation = depth, growth, activation
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for block in range(depth):
            out = scaled_width(base_channels * growth ** block, width)
            kernel = 5 if block == 0 else 3
            layers += [nn.BatchNorm2d(channels, affine=False),
                       nn.Conv2d(channels, out, kernel, padding=kernel // 2, bias=False),
                       Triangle() if activation == "triangle" else nn.ReLU()]
            if size > 4:
                layers.append(nn.AvgPool2d(2, 2) if block == depth - 1 else nn.MaxPool2d(4, 2, 1))
                size //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head_features = channels * size * size
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(self.head_features, num_classes))
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    @property
    def plastic_taus(self) -> dict[str, float]:
        """The convolutions -> DeepHebb's temperatures (the classifier stays on backprop)."""
        convs = [name for name, m in self.named_modules() if isinstance(m, nn.Conv2d)]
        taus = list(DEEPHEBB_TAUS) + [DEEPHEBB_TAUS[-1]] * max(0, len(convs) - len(DEEPHEBB_TAUS))
        return dict(zip(convs, taus))

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


#: Fig. 2 grid: depths (number of conv layers) x channel growth factors x activations
FIG2_DEPTHS = (1, 2, 3, 4)
FIG2_GROWTHS = (1, 2, 4)


def fig2_models() -> dict[str, Callable[..., PlainCNN]]:
    """``plain-d{depth}-x{growth}-{activation}`` -> constructor ``(num_classes, width) -> PlainCNN``."""
    from functools import partial

    return {f"plain-d{d}-x{g}-{a}": partial(PlainCNN, depth=d, growth=g, activation=a)
            for d in FIG2_DEPTHS for g in FIG2_GROWTHS for a in ACTIVATIONS}
