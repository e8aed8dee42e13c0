"""ghl_snn: three-factor plasticity (GHL, HebbFF) for PyTorch rate and spiking networks.

``ΔW = -η · M ⊙ |E|``: a synapse-local eligibility ``E`` (rules), a broadcast sign neuromodulator ``M``
(modulators), written into ``weight.grad`` so any ``torch.optim`` optimiser applies it ([`GHL`][] for rate
networks, [`ThreeFactor`][] for spiking networks, online).
"""
from .diagnostics import (AlignmentMonitor, CompetitionMonitor, ProbeResult, dead_fraction, dead_neurons,
                          extract_features, gini, gradient_agreement, hebbian_update, init_similarity, linear_probe,
                          make_monitors,
                          probe_against_random_init, random_init_copy, write_monitors)
from .equivalence import compare, rate_eligibilities, rate_updates, spiking_eligibilities, spiking_updates, \
    to_rate_network, update_equivalence
from .modulators import (FeedbackAlignment, FeedbackSign, GradSign, LayerSignals, Modulator, NeuronSign, Ones,
                         PlainGradient, PlainReadout, PresynapticSign, RewardSign, SignOnly, StepContext, UnitMagnitude,
                         choose_actions,
                         ScalarReward, AttentionGatedReward, boltzmann_actions,
                         presynaptic_credit)
from .plasticity import GHL
from .guards import UpdateGuard
from .selection import LayerSelector, PlasticityWarning, select_layers
from .export.nir import export_nir
from .learners import ForwardForward, HebbFF, SoftHebbLearner, train_softhebb
from .models import (DeepHebb, FastHebb, ForwardForwardMLP, ForwardForwardReadout, PlainCNN, ResNetCIFAR, Triangle,
                     VGGCIFAR)
from .rules import (STDP, EligibilityRule, HebbFFRule, HPCA, RewardSTDP, SoftHebb, SWTAOja, TimingRule, TripletSTDP,
                    ff_softplus_loss, hebbff_eligibility, normalize_eligibility, swta_oja)
from .spiking.hebbff import SpikingHebbFF
from .spiking import (IF, LIF, BernoulliEncoder, ConstantCurrent, EProp, FICurve, RecurrentLIF, SpikingNetwork,
                      ThreeFactor, as_neuron, rate_encode)

__version__ = "0.1.0"

__all__ = [
    # rate-form plug-in
    "GHL", "select_layers", "LayerSelector", "PlasticityWarning", "UpdateGuard",
    # eligibility rules
    "EligibilityRule", "SWTAOja", "swta_oja", "normalize_eligibility", "HebbFFRule", "hebbff_eligibility",
    "ff_softplus_loss", "SoftHebb", "HPCA", "TimingRule", "STDP", "TripletSTDP", "RewardSTDP",
    # learners beside the plug-in
    "HebbFF", "ForwardForward", "SoftHebbLearner", "train_softhebb",
    # networks of the papers' experiments
    "DeepHebb", "FastHebb", "PlainCNN", "VGGCIFAR", "ResNetCIFAR", "ForwardForwardMLP", "ForwardForwardReadout",
    "Triangle",
    # neuromodulators
    "Modulator", "LayerSignals", "StepContext", "GradSign", "Ones", "SignOnly", "NeuronSign", "FeedbackSign",
    "RewardSign", "FeedbackAlignment", "PlainGradient", "PlainReadout", "UnitMagnitude", "PresynapticSign",
    "presynaptic_credit", "choose_actions",
    "ScalarReward", "AttentionGatedReward", "boltzmann_actions",
    # spiking form
    "SpikingNetwork", "RecurrentLIF", "EProp", "ThreeFactor", "SpikingHebbFF", "IF", "LIF", "FICurve", "as_neuron",
    "BernoulliEncoder", "ConstantCurrent", "rate_encode",
    # equivalence layer
    "to_rate_network", "rate_eligibilities", "rate_updates", "spiking_eligibilities", "spiking_updates",
    "update_equivalence", "compare",
    # deployment
    "export_nir",
    # diagnostics
    "AlignmentMonitor", "CompetitionMonitor", "hebbian_update", "gradient_agreement", "gini", "dead_fraction",
    "dead_neurons",
    "init_similarity", "linear_probe", "probe_against_random_init", "extract_features", "random_init_copy",
    "ProbeResult", "make_monitors", "write_monitors",
]
