"""CIFAR ResNets exactly as He et al., "Deep residual learning for image recognition", CVPR 2016, Sec. 4.2.

Depth ``6n + 2`` (ResNet-20/32/44/56/110/1202 for ``n`` = 3/5/7/9/18/200):

    conv 3x3, 16 -> BN -> ReLU
    stage 1: n basic blocks, 16 channels, 32x32
    stage 2: n basic blocks, 32 channels, 16x16 (first block stride 2)
    stage 3: n basic blocks, 64 channels,  8x8  (first block stride 2)
    global average pool -> Linear(64, classes)

A basic block is ``out = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))``.  Shortcuts follow option A of
the paper: identity, and where the shape changes, ``x[:, :, ::2, ::2]`` zero-padded with ``C/2`` extra channels on
each side -- parameter free, so the parameter counts are the paper's (0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M).
Convolutions have no bias (BatchNorm follows), Kaiming-normal (fan_in, ReLU) initialisation (He et al. 2015).

GHL (paper Tables 2, 4): every Conv2d -- the stem and both convolutions of every residual block -- is plastic,
``plastic_taus`` maps their qualified names to ``tau = 1``.  What stays on plain backprop and why:

* the classifier ``fc``: its units are the classes; a soft-winner-take-all competition among class units is driven
  by the current prediction, not the label, so the readout is trained by backprop as in every network of the paper;
* BatchNorm affine parameters and all biases: they are not synapses (no pre/post pair), so no Hebbian term exists;
* the option-A shortcuts have no weights at all.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

#: depth -> number of basic blocks per stage (He et al. 2016, Table 6)
DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
STAGE_CHANNELS = (16, 32, 64)


class ShortcutA(nn.Module):
    """Option-A shortcut: stride-``s`` subsampling and zero-padding of the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels or (out_channels - in_channels) % 2:
            raise ValueError(f"option-A shortcut needs out_channels >= in_channels with an even difference, got "
                             f"{in_channels} -> {out_channels}")
        self.stride, self.pad = stride, (out_channels - in_channels) // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad, self.pad))
        return x


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus an option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = (ShortcutA(in_channels, out_channels, stride)
                                    if stride != 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """He et al. (2016) CIFAR ResNet of depth ``6n + 2`` for 32x32 RGB input.

    Args:
        depth: 20, 32, 44, 56, 110 or 1202 (any ``6n + 2`` is accepted).
        num_classes: classifier outputs.
        width: multiplier of the 16/32/64 stage widths (1.0 = the paper's; rounded to even channel counts so that
            the option-A padding stays symmetric).
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, 1202), got {depth}")
        if not width > 0:
            raise ValueError(f"width multiplier must be > 0, got {width}")
        blocks = (depth - 2) // 6
        channels = [max(2, 2 * round(c * width / 2)) for c in STAGE_CHANNELS]
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        stages, current = [], channels[0]
        for index, out_channels in enumerate(channels):
            layers = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(current, out_channels, stride))
                current = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(current, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    @property
    def plastic_taus(self) -> dict[str, float]:
        """Every Conv2d (stem and residual blocks) -> tau = 1; the classifier ``fc`` stays on backprop."""
        return {name: 1.0 for name, m in self.named_modules() if isinstance(m, nn.Conv2d)}

    def forward(self, images: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(images)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean(dim=(2, 3)))


def _factory(depth: int):
    def build(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> ResNetCIFAR:
        return ResNetCIFAR(depth, num_classes, width, in_channels)
    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2016, option-A shortcuts)."
    return build


resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202 = (_factory(d) for d in DEPTHS)
