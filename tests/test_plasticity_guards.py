"""The plug-in guards its own update: silent layers, non-finite signals, frozen weights, misuse and bad arguments."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, GradSign, Ones, PlasticityWarning


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))


def loss_of(model, x):
    return F.cross_entropy(model(x), torch.tensor([0, 1]))


class Branchy(nn.Module):
    """A model with a layer its forward does not always use."""

    def __init__(self):
        super().__init__()
        self.trunk, self.head, self.unused = nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.trunk(x).relu())


def test_silent_layer_warns_by_name_and_strict_raises():
    model = Branchy()
    rule = GHL(model)
    model(torch.randn(2, 4)).sum().backward()
    with pytest.warns(PlasticityWarning, match=r"recorded no training-mode forward.*'unused'"):
        rule.step()
    assert model.unused.weight.grad is None  # untouched, as warned
    assert model.head.weight.grad.abs().max() == pytest.approx(1.0, rel=1e-6)
    strict = GHL(model, strict=True)
    model(torch.randn(2, 4)).sum().backward()
    with pytest.raises(RuntimeError, match="'unused'"):
        strict.step()


def test_nan_input_raises_naming_the_layer_and_writes_nothing():
    model = net()
    rule = GHL(model)
    x = torch.randn(2, 2, 5, 5)
    x[0, 0, 1, 1] = float("nan")
    loss_of(model, x).backward()
    before = model[0].weight.grad.clone()
    with pytest.raises(FloatingPointError, match=r"non-finite eligibility.*'0'"):
        rule.step()
    torch.testing.assert_close(model[0].weight.grad, before, equal_nan=True)  # not overwritten by the rule
    model(torch.randn(2, 2, 5, 5))  # the failed step forgot its records: the next one starts clean
    assert rule.recorded() == ["0", "3"]


def test_non_finite_modulator_signal_is_named():
    model = net()
    rule = GHL(model)
    loss_of(model, torch.randn(2, 2, 5, 5)).backward()
    model[3].weight.grad[0, 0] = float("inf") * 0  # NaN in dL/dW: the GradSign signal
    with pytest.raises(FloatingPointError, match=r"modulator signal of GradSign.*'3'"):
        rule.step()


def test_skip_mode_warns_and_leaves_only_that_weight_without_update():
    model = net()
    rule = GHL(model, nonfinite="skip")
    weights = [p.detach().clone() for p in model.parameters()]
    loss_of(model, torch.randn(2, 2, 5, 5)).backward()
    model[3].weight.grad[1, 2] = float("nan")
    with pytest.warns(PlasticityWarning, match=r"non-finite .*'3'.*skipped"):
        rule.step()
    assert model[3].weight.grad is None
    assert model[0].weight.grad.abs().max() == pytest.approx(1.0, rel=1e-6)  # max-normalised (to one rounding)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.equal(model[3].weight, weights[2])  # the optimiser left the skipped weight alone
    assert not torch.equal(model[0].weight, weights[0])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_frozen_weights_are_never_made_plastic():
    model = net()
    model[0].weight.requires_grad_(False)
    with pytest.warns(PlasticityWarning, match=r"'0' \(Conv2d\): frozen weight"):
        rule = GHL(model)
    assert list(rule.layers) == ["3"]
    with pytest.raises(TypeError, match=r"'0' \(Conv2d\): frozen weight"):
        GHL(model, layers=["0", "3"])
    # frozen after construction: step() leaves it alone, with a warning
    model = net()
    rule = GHL(model, modulator=Ones())
    model[0].weight.requires_grad_(False)
    loss_of(model, torch.randn(2, 2, 5, 5)).backward()
    with pytest.warns(PlasticityWarning, match=r"'0' is frozen"):
        rule.step()
    assert model[0].weight.grad is None and model[3].weight.grad is not None


def test_step_after_remove_says_so():
    model = net()
    rule = GHL(model)
    rule.remove()
    loss_of(model, torch.randn(2, 2, 5, 5)).backward()
    with pytest.raises(RuntimeError, match="after remove"):
        rule.step()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(tau="abc"), TypeError, r"tau \(the softmax temperature\) must be a number.*'abc'"),
    (dict(tau={"0": "x"}), TypeError, r"tau\['0'\]"),
    (dict(tau=lambda name, module: None), TypeError, r"tau\('0', \.\.\.\)"),
    (dict(tau=float("nan")), ValueError, "tau must be a finite number"),
    (dict(modulator="grad_sign"), TypeError, "modulator must be a ghl_snn Modulator"),
    (dict(rule=GradSign()), TypeError, "rule must be an EligibilityRule"),
    (dict(layers=3), TypeError, "layers must be None, a type"),
    (dict(strict="yes"), TypeError, "strict must be True or False"),
    (dict(nonfinite="ignore"), ValueError, "nonfinite must be 'raise' or 'skip'"),
])
def test_wrong_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        GHL(net(), **kwargs)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        GHL(lambda x: x)


def test_attention_sub_projection_cannot_be_selected_alone():
    mha = nn.MultiheadAttention(4, 2)
    model = nn.Sequential(mha)
    with pytest.raises(TypeError, match=r"'0.out_proj'.*called functionally by the attention layer '0'"):
        GHL(model, layers=["0.out_proj"])
    assert set(GHL(model, layers=mha).synapses) == {"0.in_proj_weight", "0.out_proj.weight"}
    with pytest.raises(KeyError, match=r"weights: \['0.in_proj_weight', '0.out_proj.weight'\]"):
        GHL(model).eligibility("0.out_proj")


def test_non_finite_eligibility_on_the_in_place_path_writes_nothing():
    """dL/dW finite, E infinite: caught before the in-place GradSign product; it raises and leaves dL/dW as it was."""
    from ghl_snn.rules.swta_oja import SWTAOja

    class InfiniteRule(SWTAOja):
        def linear(self, x, y, weight):
            return torch.full_like(weight, float("inf"), dtype=torch.float32)

    model = nn.Sequential(nn.Linear(4, 3))
    rule = GHL(model, rule=InfiniteRule(normalize=None))
    F.cross_entropy(model(torch.randn(5, 4)), torch.tensor([0, 1, 2, 0, 1])).backward()
    before = model[0].weight.grad.clone()
    assert torch.isfinite(before).all()
    with pytest.raises(FloatingPointError, match="non-finite eligibility"):
        rule.step()
    assert torch.equal(model[0].weight.grad, before)
