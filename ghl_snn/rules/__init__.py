"""Eligibility terms E (factors 1 and 2 of the three-factor rule)."""
from .base import EligibilityRule, check_supported_layer, check_tau, normalize_eligibility
from .hebbff import (HebbFF, HebbFFEligibility, ff_softplus_loss, gates_saturated, goodness, hebbff_eligibility,
                     hebbff_gates, random_wrong_labels)
from .softhebb import HPCA, SoftHebb, SoftHebbLearner, Triangle, train_softhebb
from .stochastic import batch_subset
from .swta_oja import SWTAOja, swta_oja

__all__ = ["EligibilityRule", "SWTAOja", "swta_oja", "check_supported_layer", "check_tau", "normalize_eligibility",
           "HebbFF", "HebbFFEligibility", "hebbff_eligibility", "ff_softplus_loss", "goodness", "hebbff_gates",
           "random_wrong_labels", "gates_saturated", "SoftHebb", "HPCA", "Triangle", "SoftHebbLearner", "train_softhebb",
           "batch_subset"]
