"""ImageNet networks of the GHL paper's Table 3: torchvision's VGG-16, ResNet-18 and ResNet-50, and the DeepHebb /
FastHebb CNNs with an adaptive pool so they accept ImageNet-sized input.

The torchvision architectures are used unchanged as a dependency (subclasses that only add ``plastic_taus`` and
turn in-place ReLUs off): VGG-16 (Simonyan & Zisserman 2015, configuration D, no BatchNorm: 138M parameters),
ResNet-18 (11.7M) and ResNet-50 (25.6M) of He et al. 2016.  In-place ReLUs are disabled because GHL reads each
plastic layer's output after the forward pass; an in-place activation would overwrite it and force a recomputation.

GHL applies to every Conv2d and hidden Linear: the stem, every convolution of the residual blocks (including the
1x1 projection convolutions of the downsampling shortcuts, ``layerX.0.downsample.0``) and VGG's two 4096-unit
layers; ``tau = 1``.  Plain backprop keeps: the final classifier (``fc`` / ``classifier.6``) -- its units are the
classes, and a soft winner-take-all among them would follow the prediction instead of the label -- and all
BatchNorm parameters and biases, which are not synapses (no pre/post-synaptic pair).
"""
from __future__ import annotations

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vgg import cfgs, make_layers

from .deephebb import DeepHebb, scaled_width
from .fasthebb import FastHebb


def _no_inplace(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False


def _all_but_classifier(model: nn.Module) -> dict[str, float]:
    """Every Conv2d / Linear except the last Linear (the classifier) -> tau = 1."""
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    last_linear = [name for name in names if isinstance(model.get_submodule(name), nn.Linear)][-1]
    return {name: 1.0 for name in names if name != last_linear}


class ImageNetResNet(torchvision.models.ResNet):
    """torchvision ResNet with ``plastic_taus`` (every conv incl. downsampling projections; ``fc`` stays BP)."""

    @property
    def plastic_taus(self) -> dict[str, float]:
        return _all_but_classifier(self)


class ImageNetVGG(torchvision.models.VGG):
    """torchvision VGG with ``plastic_taus`` (13 convs + 2 hidden FC layers; ``classifier.6`` stays BP)."""

    @property
    def plastic_taus(self) -> dict[str, float]:
        return _all_but_classifier(self)


def resnet18(num_classes: int = 1000, width: float = 1.0) -> ImageNetResNet:
    """torchvision ResNet-18 (He et al. 2016); ``width`` must be 1 (kept for a uniform constructor signature)."""
    if width != 1.0:
        raise ValueError("the torchvision ResNets have a fixed width; use width=1.0")
    model = ImageNetResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    _no_inplace(model)
    return model


def resnet50(num_classes: int = 1000, width: float = 1.0) -> ImageNetResNet:
    """torchvision ResNet-50 (He et al. 2016, bottleneck blocks); ``width`` must be 1."""
    if width != 1.0:
        raise ValueError("the torchvision ResNets have a fixed width; use width=1.0")
    model = ImageNetResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
    _no_inplace(model)
    return model


def vgg16(num_classes: int = 1000, width: float = 1.0) -> ImageNetVGG:
    """torchvision VGG-16 (configuration D, no BatchNorm); ``width`` < 1 scales every conv (for smoke tests)."""
    config = [c if c == "M" else scaled_width(int(c), width) for c in cfgs["D"]]
    model = ImageNetVGG(make_layers(config), num_classes=num_classes)
    if width != 1.0:  # the classifier's input follows the last conv width; the 4096-unit layers scale too
        hidden = scaled_width(4096, width)
        features = config[-2] * 7 * 7
        model.classifier = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(hidden, num_classes))
    _no_inplace(model)
    return model


class PooledHebbNet(nn.Module):
    """DeepHebb / FastHebb for any input size: ``classifier(adaptive_avg_pool(features(x), grid))``.

    At 32x32 input the pool is the identity and the network is exactly the CIFAR one; at 224x224 (ImageNet) the
    feature map is averaged down to the classifier's ``grid x grid`` input (4 for DeepHebb, 3 for FastHebb).
    """

    def __init__(self, net: DeepHebb | FastHebb, grid: int) -> None:
        super().__init__()
        self.features, self.classifier, self.grid = net.features, net.classifier, grid
        self._taus = net.plastic_taus

    @property
    def plastic_taus(self) -> dict[str, float]:
        """The inner network's plastic convolutions (names and temperatures unchanged)."""
        return dict(self._taus)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(images), self.grid))


def deephebb(num_classes: int = 1000, width: float = 1.0) -> PooledHebbNet:
    """DeepHebb (3 convs 96/384/1536 + linear) with a 4x4 adaptive pool before the classifier."""
    return PooledHebbNet(DeepHebb(num_classes=num_classes, width=width), grid=4)


def fasthebb(num_classes: int = 1000, width: float = 1.0) -> PooledHebbNet:
    """FastHebb (4 convs + 4096-unit layer + linear) with a 3x3 adaptive pool before the head."""
    return PooledHebbNet(FastHebb(num_classes=num_classes, width=width), grid=3)


IMAGENET_MODELS = {"deephebb": deephebb, "fasthebb": fasthebb, "vgg16": vgg16, "resnet18": resnet18,
                   "resnet50": resnet50}
