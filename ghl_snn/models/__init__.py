"""Network architectures of the papers' experiments."""
from .activations import Triangle
from .deephebb import DeepHebb
from .fasthebb import FastHebb
from .pooling import SumPool2d
from .goodness import best_layer_range, check_layer_range, goodness_scores, layer_accuracies
from .mlp import MLP_PRESETS, ForwardForwardMLP, ForwardForwardReadout, backprop_mlp
from .resnet_cifar import ResNetCIFAR, resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202
from .vgg import PlainCNN, VGGCIFAR, fig2_models, vgg14, vgg16

MODELS = {"deephebb": DeepHebb, "fasthebb": FastHebb,
          "vgg16": vgg16, "vgg14": vgg14,
          "resnet20": resnet20, "resnet32": resnet32, "resnet44": resnet44, "resnet56": resnet56,
          "resnet110": resnet110, "resnet1202": resnet1202,
          **fig2_models()}

__all__ = ["DeepHebb", "FastHebb", "MODELS", "ResNetCIFAR", "VGGCIFAR", "PlainCNN", "vgg16", "vgg14", "resnet20",
           "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202", "ForwardForwardMLP", "ForwardForwardReadout",
           "backprop_mlp", "best_layer_range", "check_layer_range", "goodness_scores", "layer_accuracies",
           "MLP_PRESETS", "Triangle", "SumPool2d"]
