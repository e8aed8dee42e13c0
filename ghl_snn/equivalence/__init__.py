"""Spiking <-> rate equivalence: rate network of a spiking network, trace -> rate E, metrics.

The rate and the spiking form share one rule and one modulator (see [Architecture][architecture-three-factors]);
this package states when their eligibilities and updates coincide.

* [`to_rate_network`][]: the same synapses (shared modules, same weights) with every neuron replaced by its rate
  function ``clamp(gain I / theta, 0, 1)`` -- exactly the clipped ReLU for the IF neuron (within ``1/T``), an
  approximation for leaky neurons;
* [`rate_eligibility`][]: accumulated trace ``e_T`` -> rate-comparable ``E = e_T / sum_{k<T} lambda^k``;
* [`rate_eligibilities`][] / [`rate_updates`][]: the rate network's SWTA-Oja ``E`` and its GHL update
  (``M ⊙ |E|`` through the [`GHL`][ghl_snn.GHL] plug-in) for input rates ``r``;
* [`spiking_eligibilities`][] / [`spiking_updates`][]: the same quantities from the online
  [`ThreeFactor`][ghl_snn.ThreeFactor] learner after ``T`` steps of rate-coded input;
* [`update_equivalence`][]: the spiking update against the rate update at the true and at the empirical input
  rates (the latter leaves only the neurons' quantisation);
* [`compare`][]: cosine similarity, relative error and sign agreement of two tensors.
"""
from .compare import compare, cosine_similarity, relative_error, sign_agreement
from .rate import (RateNeuron, if_spike_count, rate_eligibilities, rate_eligibility, rate_updates,
                   spiking_eligibilities, spiking_updates, to_rate_network, update_equivalence)

__all__ = [
    "RateNeuron", "to_rate_network", "rate_eligibility", "if_spike_count",
    "rate_eligibilities", "rate_updates", "spiking_eligibilities", "spiking_updates", "update_equivalence",
    "compare", "cosine_similarity", "relative_error", "sign_agreement",
]
