"""Learners: the objects that update weights (above the eligibility kernels of ``ghl_snn.rules`` and the
neuromodulators of ``ghl_snn.modulators``): the optimiser-like HebbFF learner, its Forward-Forward baseline and
SoftHebb's layer-wise trainer.
The GHL plug-in ([`ghl_snn.plasticity`][]) and the online spiking learner ([`ghl_snn.spiking.learner`][]) are the
other two."""
from .forward_forward import ForwardForward
from .hebbff import HebbFF, HebbFFLayerStats, LayerHealth, hebbff_health
from .softhebb import SoftHebbLearner, train_softhebb

__all__ = ["ForwardForward", "HebbFF", "HebbFFLayerStats", "LayerHealth", "hebbff_health", "SoftHebbLearner",
           "train_softhebb"]
