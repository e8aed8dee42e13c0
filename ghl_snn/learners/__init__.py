"""Learners: the objects that update weights (above the eligibility kernels of :mod:`ghl_snn.rules` and the
neuromodulators of :mod:`ghl_snn.modulators`)."""
from .softhebb import SoftHebbLearner, train_softhebb

__all__ = ["SoftHebbLearner", "train_softhebb"]
