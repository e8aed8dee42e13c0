"""The method registry: a new modulator is one class plus one export in ``ghl_snn.modulators``, and every experiment
accepts its name (command line and learner) without an edit; the named rows build what they name."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ghl_snn import modulators
from ghl_snn.comparison import methods
from ghl_snn.experiments import cifar, events, imagenet, mnist_snn
from ghl_snn.models import MODELS
from ghl_snn.modulators.base import LayerSignals, Modulator
from ghl_snn.spiking.architectures import neuron_mlp


class SignOfInput(Modulator):
    """A toy third factor: the sign of the summed input, broadcast over the layer (no gradient needed)."""

    needs_weight_grad = False

    def sign(self, layer: LayerSignals, **context) -> Tensor:
        return torch.ones_like(layer.eligibility)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(modulators, "SignOfInput", SignOfInput, raising=False)
    monkeypatch.setattr(modulators, "__all__", [*modulators.__all__, "SignOfInput"])


def test_a_new_modulator_is_one_class_and_one_export(exported):
    assert "sign_of_input" in methods.modulator_classes()
    assert mnist_snn.parse_args(["--methods", "sign_of_input", "bptt"]).methods == ["sign_of_input", "bptt"]
    assert events.parse_args(["--preset", "nmnist-small", "--methods", "sign_of_input"]).methods == ["sign_of_input"]
    assert cifar.parse_args(["--methods", "sign_of_input"]).settings.methods == ("sign_of_input",)
    assert imagenet.parse_args(["--methods", "sign_of_input"]).settings[0].method == "sign_of_input"
    learner = mnist_snn.make_learner("sign_of_input", neuron_mlp(784, 8, 10, "if", 1.0), 1.0, 0)
    assert type(learner.modulator) is SignOfInput and list(learner.layers) == ["0", "2"]
    rule = cifar.build_rule("sign_of_input", MODELS["deephebb"](num_classes=10, width=0.0625))
    assert type(rule.modulator) is SignOfInput
    rule.remove()


def test_abstract_bases_and_wrappers_are_not_methods():
    names = methods.modulator_classes()
    assert "presynaptic_sign" not in names and "modulator" not in names  # abstract bases
    assert "unit_magnitude" not in names and "plain_readout" not in names  # wrappers need a base modulator
    assert names["feedback_alignment"] is modulators.FeedbackAlignment
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from ghl, sign"):
        methods.spec("nope")


def test_named_rows_build_what_they_name():
    net = neuron_mlp(784, 8, 10, "if", 1.0)
    readout = methods.build_learner("readout_sgd", net, spiking=True, readout=["2"])
    assert type(readout.modulator) is modulators.PlainGradient and list(readout.layers) == ["2"]
    assert not net[0].weight.requires_grad and net[2].weight.requires_grad  # the hidden layer frozen
    hybrid = methods.build_modulator("grad_sign_sgd_readout")
    assert type(hybrid) is modulators.PlainReadout and type(hybrid.base) is modulators.GradSign
    random = methods.build_modulator("agr_random", seed=3)
    assert type(random) is modulators.AttentionGatedReward and random.feedback == "random"
    assert methods.needs_reward("rstdp") and not methods.needs_reward("dfa")
    assert "hpca" in methods.method_names() and "hpca" not in methods.method_names(spiking=True)
    with pytest.raises(ValueError, match="needs the hpca rule"):
        methods.build_learner("hpca", neuron_mlp(784, 8, 10, "if", 1.0), spiking=True)
