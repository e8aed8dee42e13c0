"""ghl_snn: three-factor plasticity (GHL, HebbFF) for PyTorch rate and spiking networks.

``ΔW = -η · M ⊙ |E|``: a synapse-local eligibility ``E`` (rules), a broadcast sign neuromodulator ``M``
(modulators), written into ``weight.grad`` so any ``torch.optim`` optimiser applies it (:class:`GHL`).
"""
from .modulators import GradSign, LayerSignals, Modulator, Ones, SignOnly
from .plasticity import GHL, select_layers
from .rules import EligibilityRule, SWTAOja, normalize_eligibility, swta_oja

__version__ = "0.1.0"

__all__ = [
    "GHL", "select_layers",
    "EligibilityRule", "SWTAOja", "swta_oja", "normalize_eligibility",
    "Modulator", "LayerSignals", "GradSign", "Ones", "SignOnly",
]
