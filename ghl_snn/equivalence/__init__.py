"""Spiking <-> rate equivalence (DESIGN.md §2): rate network of a spiking network, trace -> rate E, metrics.

* :func:`to_rate_network`: the same synapses (shared modules, same weights) with every neuron replaced by its rate
  function ``clamp(gain I / theta, 0, 1)`` -- exactly the clipped ReLU for the IF neuron (within ``1/T``), an
  approximation for leaky neurons;
* :func:`rate_eligibility`: accumulated trace ``e_T`` -> rate-comparable ``E = e_T / sum_{k<T} lambda^k``;
* :func:`rate_eligibilities` / :func:`rate_updates`: the rate network's SWTA-Oja ``E`` and its GHL update
  (``M ⊙ |E|`` through the :class:`~ghl_snn.GHL` plug-in) for input rates ``r``;
* :func:`spiking_eligibilities` / :func:`spiking_updates`: the same quantities from the online
  :class:`~ghl_snn.spiking.ThreeFactor` learner after ``T`` steps of rate-coded input;
* :func:`update_equivalence`: the spiking update against the rate update at the true and at the empirical input
  rates (the latter leaves only the neurons' quantisation);
* :func:`compare`: cosine similarity, relative error and sign agreement of two tensors.
"""
from .compare import compare, cosine_similarity, relative_error, sign_agreement
from .rate import (RateNeuron, if_spike_count, rate_eligibilities, rate_eligibility, rate_updates,
                   spiking_eligibilities, spiking_updates, to_rate_network, update_equivalence)

__all__ = [
    "RateNeuron", "to_rate_network", "rate_eligibility", "if_spike_count",
    "rate_eligibilities", "rate_updates", "spiking_eligibilities", "spiking_updates", "update_equivalence",
    "compare", "cosine_similarity", "relative_error", "sign_agreement",
]
