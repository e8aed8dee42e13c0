"""Neuromodulators M (factor 3): broadcast signs combined with |E| by the plug-in."""
from .ablations import Ones, SignOnly
from .base import LayerSignals, Modulator
from .grad_sign import GradSign

__all__ = ["Modulator", "LayerSignals", "GradSign", "Ones", "SignOnly"]
