"""Eligibility terms E (factors 1 and 2 of the three-factor rule)."""
from .base import EligibilityRule, check_supported_layer, check_tau, normalize_eligibility
from .hebbff import (HebbFFCoefficients, HebbFFEligibility, HebbFFRule, ff_softplus_loss, gates_saturated, goodness,
                     hebbff_coefficients, hebbff_eligibility, hebbff_gates, hebbff_phase_eligibility,
                     random_wrong_labels)
from .softhebb import HPCA, SoftHebb, SoftHebbLearner, Triangle, train_softhebb
from .swta_oja import SWTAOja, swta_oja

__all__ = ["EligibilityRule", "SWTAOja", "swta_oja", "check_supported_layer", "check_tau", "normalize_eligibility",
           "HebbFF", "HebbFFRule", "HebbFFEligibility", "HebbFFCoefficients", "hebbff_coefficients",
           "hebbff_phase_eligibility", "hebbff_eligibility", "ff_softplus_loss", "goodness", "hebbff_gates",
           "random_wrong_labels", "gates_saturated", "SoftHebb", "HPCA", "Triangle", "SoftHebbLearner", "train_softhebb"]


def __getattr__(name: str) -> object:
    # The optimiser-like HebbFF learner moved to ghl_snn.learners; importable from here for existing code
    # (resolved lazily, so this package never imports the learners above it).
    if name == "HebbFF":
        from ..learners.hebbff import HebbFF
        return HebbFF
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
