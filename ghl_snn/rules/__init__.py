"""Eligibility terms E (factors 1 and 2 of the three-factor rule)."""
from .base import EligibilityRule, check_supported_layer, check_tau, normalize_eligibility
from .hebbff import (HebbFFCoefficients, HebbFFEligibility, HebbFFRule, ff_softplus_loss, gates_saturated, goodness,
                     hebbff_coefficients, hebbff_eligibility, hebbff_gates, hebbff_phase_eligibility,
                     random_wrong_labels)
from .softhebb import HPCA, SoftHebb, hpca_conv2d, hpca_linear, softhebb_conv2d, softhebb_linear
from .reward_stdp import RewardSTDP
from .stdp import STDP
from .stochastic import batch_subset
from .swta_oja import SWTAOja, swta_oja
from .timing import TimingRule, TimingState
from .triplet import TripletSTDP
from ..ops.weight_gradient import conv_weight_gradient

__all__ = ["EligibilityRule", "SWTAOja", "swta_oja", "check_supported_layer", "check_tau", "normalize_eligibility",
           "HebbFF", "HebbFFRule", "HebbFFEligibility", "HebbFFCoefficients", "hebbff_coefficients",
           "hebbff_phase_eligibility", "hebbff_eligibility", "ff_softplus_loss", "goodness", "hebbff_gates",
           "random_wrong_labels", "gates_saturated", "SoftHebb", "HPCA", "softhebb_linear", "softhebb_conv2d",
           "hpca_linear", "hpca_conv2d", "batch_subset", "conv_weight_gradient", "TimingRule", "TimingState", "STDP",
           "TripletSTDP", "RewardSTDP"]


def __getattr__(name: str) -> object:
    """Names that moved out of the kernels, still importable from here for existing code (PEP 562, resolved lazily
    so this package never imports the learners above it): the optimiser-like ``HebbFF`` learner
    ([`ghl_snn.learners.hebbff`][]) and SoftHebb's trainer (see ``ghl_snn.rules.softhebb``)."""
    if name == "HebbFF":
        from ..learners.hebbff import HebbFF
        return HebbFF
    from . import softhebb

    if name in softhebb._MOVED:
        return getattr(softhebb, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
