"""Learners: optimiser-like trainers built on the eligibility rules of :mod:`ghl_snn.rules`."""
from .hebbff import HebbFF, HebbFFLayerStats, LayerHealth, hebbff_health

__all__ = ["HebbFF", "HebbFFLayerStats", "LayerHealth", "hebbff_health"]
