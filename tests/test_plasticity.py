"""The GHL plug-in: Eq. 6 by hand, layer selection, hooks, errors, state."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, Ones, PlasticityWarning, SignOnly, SWTAOja, swta_oja
from ghl_snn.models import DeepHebb


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def train_step(model, rule, optimizer, x, target):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    if rule is not None:
        rule.step()
    optimizer.step()


def test_sgd_step_equals_eq6_by_hand():
    model = small_net()
    x, target = torch.randn(6, 2, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    reference = copy.deepcopy(model)
    rule = GHL(model, tau=0.8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_step(model, rule, optimizer, x, target)

    # by hand: backprop gradients of the untouched copy, eligibility from its activations
    conv, linear = reference[0], reference[3]
    hidden = conv(x)
    loss = F.cross_entropy(linear(F.relu(hidden).flatten(1)), target)
    loss.backward()
    pre_conv = hidden.detach() - conv.bias.detach().view(1, -1, 1, 1)
    e_conv = swta_oja(x, pre_conv, conv.weight, tau=0.8, padding=1, normalize="max")
    flat = F.relu(hidden).flatten(1).detach()
    e_lin = swta_oja(flat, flat @ linear.weight.detach().t(), linear.weight, tau=0.8, normalize="max")
    expected_conv = conv.weight - 0.1 * conv.weight.grad.sign() * e_conv.abs()
    expected_lin = linear.weight - 0.1 * linear.weight.grad.sign() * e_lin.abs()
    torch.testing.assert_close(model[0].weight, expected_conv)
    torch.testing.assert_close(model[3].weight, expected_lin)
    # biases are not plastic: plain SGD on their back-propagated gradient
    torch.testing.assert_close(model[0].bias, conv.bias - 0.1 * conv.bias.grad)
    torch.testing.assert_close(model[3].bias, linear.bias - 0.1 * linear.bias.grad)


def test_step_magnitude_is_local_and_sign_is_global():
    model = small_net()
    rule = GHL(model, layers=[ "3"])
    out = model(torch.randn(4, 2, 5, 5))
    out.sum().backward()
    backprop_sign = model[3].weight.grad.sign().clone()
    rule.step()
    grad = model[3].weight.grad
    assert torch.equal(grad.sign()[grad != 0], backprop_sign[grad != 0])
    assert grad.abs().max() == pytest.approx(1.0)  # max-normalised |E|


def test_zero_gradient_leaves_weight_unchanged():
    torch.manual_seed(1)
    layer = nn.Linear(4, 3, bias=False)
    rule = GHL(layer)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    before = layer.weight.detach().clone()
    x = torch.rand(5, 4)
    x[:, 2] = 0.0  # input 2 silent -> dL/dw_k2 = 0 exactly
    optimizer.zero_grad()
    layer(x).pow(2).sum().backward()
    rule.step()
    optimizer.step()
    assert torch.equal(layer.weight[:, 2], before[:, 2])
    assert not torch.equal(layer.weight[:, 0], before[:, 0])


def test_selection_by_type_name_and_predicate():
    model = DeepHebb(width=0.05)
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(GHL(model, layers=nn.Conv2d).layers) == convs
    assert set(GHL(model).layers) == convs | {"classifier.2"}
    assert set(GHL(model, layers=["features.1", "features.9"]).layers) == {"features.1", "features.9"}
    assert set(GHL(model, layers="classifier.2").layers) == {"classifier.2"}
    picked = GHL(model, layers=lambda name, m: isinstance(m, nn.Conv2d) and m.in_channels == 3)
    assert set(picked.layers) == {"features.1"}
    with pytest.raises(KeyError, match="no module named"):
        GHL(model, layers=["features.404"])
    with pytest.raises(ValueError, match="matched no module"):
        GHL(model, layers=nn.LSTM)


def test_per_layer_tau_mapping():
    model = DeepHebb(width=0.05)
    rule = GHL(model, tau=model.plastic_taus, layers=nn.Conv2d)
    assert rule.taus == pytest.approx({"features.1": 1.0, "features.5": 1 / 0.65, "features.9": 4.0})
    with pytest.raises(KeyError, match="not plastic"):
        GHL(model, tau={"classifier.2": 2.0}, layers=nn.Conv2d)


@pytest.mark.parametrize("layer", [nn.ConvTranspose2d(2, 2, 3), nn.LSTM(3, 4), nn.Embedding(5, 3)])
def test_unsupported_layers_are_rejected_when_named_and_skipped_by_default(layer):
    model = nn.Sequential(layer, nn.Linear(3, 2))
    with pytest.raises(TypeError, match="unsupported layer '0'"):
        GHL(model, layers=["0"])
    with pytest.raises(TypeError, match="unsupported layer '0'"):
        GHL(model, layers=layer)
    with pytest.warns(PlasticityWarning, match=rf"skipping 1 layer.*'0' \({type(layer).__name__}\)"):
        rule = GHL(model)
    assert list(rule.layers) == ["1"]


def test_selection_by_module_objects():
    model = DeepHebb(width=0.05)
    first, last = model.features[1], model.classifier[2]
    assert list(GHL(model, layers=first).layers) == ["features.1"]
    assert list(GHL(model, layers=[first, "classifier.2"]).layers) == ["features.1", "classifier.2"]
    assert list(GHL(model, layers=(m for m in (last, first))).layers) == ["classifier.2", "features.1"]
    with pytest.raises(KeyError, match="not part of"):
        GHL(model, layers=[nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="layers= items must be"):
        GHL(model, layers=[3])


def test_bad_tau_is_rejected():
    with pytest.raises(ValueError, match="tau"):
        GHL(small_net(), tau=0.0)
    with pytest.raises(ValueError, match="tau"):
        GHL(small_net(), tau={"0": -1.0, "3": 1.0})


def test_step_before_forward_and_before_backward():
    model = small_net()
    rule = GHL(model)
    with pytest.raises(RuntimeError, match="before any training-mode forward"):
        rule.step()
    model(torch.randn(2, 2, 5, 5))
    with pytest.raises(RuntimeError, match=r"loss.backward\(\)"):
        rule.step()


def test_no_grad_and_eval_forwards_record_nothing():
    model = small_net()
    rule = GHL(model)
    with torch.no_grad():
        model(torch.randn(2, 2, 5, 5))
    model.eval()
    model(torch.randn(2, 2, 5, 5))
    with pytest.raises(RuntimeError, match="before any training-mode forward"):
        rule.step()


def test_remove_leaves_model_untouched():
    model = small_net()
    x = torch.randn(3, 2, 5, 5)
    expected = model(x).detach()
    with GHL(model) as rule:
        model(x)
        assert all(total is not None for total in rule._sums.values())
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    torch.testing.assert_close(model(x), expected)
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    reference = copy.deepcopy(model)
    reference.zero_grad()
    reference(x).sum().backward()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(plain[name], param.grad)


def test_inplace_activation_after_layer_is_handled():
    torch.manual_seed(4)
    inplace = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    safe = copy.deepcopy(inplace)
    safe[1] = nn.ReLU()
    x = torch.randn(6, 4)
    grads = []
    for model in (inplace, safe):
        rule = GHL(model, layers=["0"])
        model(x).sum().backward()
        rule.step()
        grads.append(model[0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_ablation_modulators():
    model = small_net()
    x = torch.randn(4, 2, 5, 5)
    rule = GHL(model, modulator=Ones(), layers=["3"])
    model(x)  # no backward needed for the local-only rule
    rule.step()
    hebbian = model[3].weight.grad.clone()
    flat = F.relu(model[0](x)).flatten(1).detach()
    e_lin = swta_oja(flat, flat @ model[3].weight.detach().t(), model[3].weight, normalize="max")
    torch.testing.assert_close(hebbian, -e_lin)
    rule.remove()

    model.zero_grad()
    rule = GHL(model, modulator=SignOnly(), layers=["3"])
    model(x).sum().backward()
    expected = model[3].weight.grad.sign().clone()
    rule.step()
    assert torch.equal(model[3].weight.grad, expected)


def test_gradient_accumulation_averages_eligibility():
    torch.manual_seed(5)
    layer = nn.Linear(3, 4, bias=False)
    rule = GHL(layer, normalize=None, modulator=Ones())
    first, second = torch.rand(2, 3), torch.rand(2, 3)
    layer(first)
    layer(second)
    rule.step()
    whole = torch.cat([first, second])
    expected = swta_oja(whole, whole @ layer.weight.detach().t(), layer.weight)
    torch.testing.assert_close(layer.weight.grad, -expected)


def test_state_dict_round_trip():
    model = DeepHebb(width=0.05)
    rule = GHL(model, tau=model.plastic_taus, layers=nn.Conv2d)
    state = rule.state_dict()
    other = GHL(model, tau=1.0, layers=nn.Conv2d)
    other.load_state_dict(state)
    assert other.taus == rule.taus
    with pytest.raises(KeyError):
        GHL(model, layers=["features.1"]).load_state_dict(state)


def test_bf16_autocast_update_matches_fp32():
    torch.manual_seed(6)
    model = small_net()
    twin = copy.deepcopy(model)
    x, target = torch.randn(8, 2, 5, 5), torch.randint(0, 3, (8,))
    updates = []
    for net, autocast in ((model, False), (twin, True)):
        rule = GHL(net, layers=["0"])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(x), target)
        loss.backward()
        rule.step()
        updates.append(net[0].weight.grad.float())
    fp32, bf16 = updates
    agree = (fp32.sign() == bf16.sign()).float().mean()
    assert agree > 0.9
    assert (fp32 - bf16).abs().max() < 0.1


def test_sign_only_skips_the_eligibility_computation():
    class Exploding(SWTAOja):
        def linear(self, x, y, weight):
            raise AssertionError("SignOnly must not compute E")

    torch.manual_seed(7)
    layer = nn.Linear(3, 2)
    rule = GHL(layer, modulator=SignOnly(), rule=Exploding())
    layer(torch.randn(4, 3)).sum().backward()
    expected = layer.weight.grad.sign().clone()
    rule.step()
    assert torch.equal(layer.weight.grad, expected)


def test_layer_selection_has_one_home():
    """Learners and monitors import layer selection from ghl_snn.selection; the plug-in does not re-export it."""
    import pathlib
    import re

    import ghl_snn
    import ghl_snn.plasticity
    import ghl_snn.selection
    assert ghl_snn.selection.select_layers is ghl_snn.select_layers
    assert ghl_snn.plasticity.__all__ == ["GHL"] and not hasattr(ghl_snn.plasticity, "LayerSelector")
    package = pathlib.Path(ghl_snn.__file__).parent
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if re.search(r"from \S*plasticity import [^\n]*(select_layers|LayerSelector)", path.read_text())]
    assert offenders == []
