"""Tensor kernels shared by the eligibility rules, the neuromodulators and the diagnostics: the weight-gradient
convolution of a ConvNd layer (the Hebbian term ``sum_n post x pre`` of a convolution, and ``dL/dW`` itself), and
the mean over data-parallel replicas and a layer's name without the wrappers of data parallelism or compilation."""
from .data_parallel import replica_count, replica_mean, unwrapped_name
from .weight_gradient import autotune, conv_input, conv_weight_gradient, layer_weight_gradient

__all__ = ["conv_weight_gradient", "layer_weight_gradient", "conv_input", "autotune", "replica_count",
           "replica_mean", "unwrapped_name"]
