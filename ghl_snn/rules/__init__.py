"""Eligibility terms E (factors 1 and 2 of the three-factor rule)."""
from .base import EligibilityRule, check_supported_layer, check_tau, normalize_eligibility
from .swta_oja import SWTAOja, swta_oja

__all__ = ["EligibilityRule", "SWTAOja", "swta_oja", "check_supported_layer", "check_tau", "normalize_eligibility"]
