"""Eligibility terms E (factors 1 and 2 of the three-factor rule): pure functions of a synapse's input ``x``, its
bias-free pre-activation ``y = W x`` and its weight ``W``."""
from .base import EligibilityRule, check_tau, normalize_eligibility
from .hebbff import (HebbFFCoefficients, HebbFFEligibility, HebbFFRule, ff_softplus_loss, gates_saturated, goodness,
                     hebbff_coefficients, hebbff_eligibility, hebbff_gates, random_wrong_labels)
from .softhebb import HPCA, SoftHebb, hpca_conv2d, hpca_linear, softhebb_conv2d, softhebb_linear
from .reward_stdp import RewardSTDP
from .stdp import STDP
from .stochastic import batch_subset
from .swta_oja import SWTAOja, swta_oja
from .timing import TimingRule, TimingState
from .triplet import TripletSTDP

__all__ = ["EligibilityRule", "SWTAOja", "swta_oja", "check_tau", "normalize_eligibility",
           "HebbFFRule", "HebbFFEligibility", "HebbFFCoefficients", "hebbff_coefficients",
           "hebbff_eligibility", "ff_softplus_loss", "goodness", "hebbff_gates",
           "random_wrong_labels", "gates_saturated", "SoftHebb", "HPCA", "softhebb_linear", "softhebb_conv2d",
           "hpca_linear", "hpca_conv2d", "batch_subset", "TimingRule", "TimingState", "STDP",
           "TripletSTDP", "RewardSTDP"]
