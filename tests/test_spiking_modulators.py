"""NeuronSign, FeedbackSign and RewardSign: references by autograd / float64 loops, plug-in and spiking use."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, GradSign, LayerSignals, swta_oja
from ghl_snn.modulators.feedback_sign import FeedbackSign
from ghl_snn.modulators.neuron_sign import NeuronSign
from ghl_snn.modulators.reward_sign import RewardSign


def signals(module, eligibility, **kwargs):
    return LayerSignals(name=kwargs.pop("name", "layer"), module=module, eligibility=eligibility, **kwargs)


def test_neuron_sign_conv_in_rate_plugin_matches_autograd_delta():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x, target = torch.rand(4, 2, 4, 4), torch.tensor([0, 1, 1, 0])
    hidden = model[0](x)
    (delta,) = torch.autograd.grad(F.cross_entropy(model[3](F.relu(hidden).flatten(1)), target), [hidden])
    pre = hidden.detach() - model[0].bias.detach().view(1, -1, 1, 1)
    eligibility = swta_oja(x, pre, model[0].weight, padding=1, normalize="max")
    model.zero_grad()
    rule = GHL(model, modulator=NeuronSign(), layers=["0"])
    F.cross_entropy(model(x), target).backward()
    rule.step()
    expected = delta.sum(dim=(0, 2, 3)).sign().view(3, 1, 1, 1) * eligibility.abs()
    torch.testing.assert_close(model[0].weight.grad, expected)


def test_neuron_sign_linear_batch_with_presynaptic_gate():
    torch.manual_seed(1)
    layer = nn.Linear(5, 3, bias=False)
    x = torch.rand(4, 5)
    x[:, 1] = 0.0
    delta = torch.randn(4, 3)
    eligibility = torch.randn(3, 5)
    gated = NeuronSign().sign(signals(layer, eligibility, output_grad=delta, inputs=x))
    plain = NeuronSign(presynaptic_gate=False).sign(signals(layer, eligibility, output_grad=delta, inputs=x))
    per_neuron = delta.sum(0).sign()[:, None]
    torch.testing.assert_close(plain, per_neuron)
    expected = per_neuron.expand(3, 5).clone()
    expected[:, 1] = 0
    torch.testing.assert_close(gated.expand(3, 5), expected)
    with pytest.raises(RuntimeError, match="dL/dy"):
        NeuronSign().sign(signals(layer, eligibility))


def test_neuron_sign_per_sample_gated_equals_per_sample_grad_sign():
    """Per-sample mode with x >= 0: M_nik = sign(delta_nk) 1[x_ni > 0] = sign(dL_n/dw_ik) everywhere."""
    torch.manual_seed(2)
    layer = nn.Linear(6, 4, bias=False)
    x = torch.rand(5, 6) * (torch.rand(5, 6) > 0.4)
    target = torch.randint(0, 4, (5,))
    per_sample_grads = []
    for n in range(5):
        (g,) = torch.autograd.grad(F.cross_entropy(layer(x[n:n + 1]), target[n:n + 1]), [layer.weight])
        per_sample_grads.append(g)
    y = layer(x)
    (delta,) = torch.autograd.grad(F.cross_entropy(y, target, reduction="sum"), [y])
    m = NeuronSign().sign(signals(layer, torch.ones(5, 4, 6), output_grad=delta, inputs=x,
                                  extra={"per_sample": True}))
    assert m.shape == (5, 4, 6)
    assert torch.equal(m, torch.stack(per_sample_grads).sign())


def test_feedback_sign_against_float64_loop():
    torch.manual_seed(3)
    hidden, output = nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False)
    error = torch.randn(4, 3)
    gate = (torch.rand(4, 5) > 0.3).float()
    inputs = torch.rand(4, 6)
    modulator = FeedbackSign(seed=7, output_layers=["out"], presynaptic_gate=False)
    m_hidden = modulator.sign(signals(hidden, torch.ones(5, 6), name="hid", extra={"post_gate": gate}),
                              error=error)
    B = modulator.matrices["hid"].double()
    assert B.shape == (5, 3)
    for k in range(5):
        total = sum(sum(float(error[n, c]) * float(B[k, c]) for c in range(3)) * float(gate[n, k]) for n in range(4))
        assert m_hidden[k, 0].item() == (total > 0) - (total < 0)
    m_out = modulator.sign(signals(output, torch.ones(3, 5), name="out", inputs=torch.rand(4, 5)), error=error)
    torch.testing.assert_close(m_out, error.sum(0).sign()[:, None])
    # same seed and name -> same matrix; other name -> other matrix; state round trip
    again = FeedbackSign(seed=7)
    again.sign(signals(hidden, torch.ones(5, 6), name="hid", inputs=inputs), error=error)
    assert torch.equal(again.matrices["hid"], modulator.matrices["hid"])
    assert not torch.equal(FeedbackSign(seed=7).feedback_matrix("other", 5, 3), modulator.matrices["hid"])
    restored = FeedbackSign(seed=0)
    restored.load_state_dict(modulator.state_dict())
    assert torch.equal(restored.matrices["hid"], modulator.matrices["hid"]) and restored.seed == 7
    with pytest.raises(RuntimeError, match="error"):
        modulator.sign(signals(hidden, torch.ones(5, 6), name="hid"))
    with pytest.raises(ValueError, match="units"):
        modulator.sign(signals(hidden, torch.ones(5, 6), name="out"), error=error)


def test_feedback_sign_in_rate_plugin_needs_no_backward():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, target = torch.rand(8, 6), torch.randint(0, 3, (8,))
    rule = GHL(model, modulator=FeedbackSign(output_layers=["2"]))
    logits = model(x)
    error = torch.softmax(logits.detach(), 1) - F.one_hot(target, 3).float()
    rule.step(error=error)  # no loss.backward() at all
    assert model[0].weight.grad is not None and model[2].weight.grad is not None
    rows = model[2].weight.grad.sign()
    expected = error.sum(0).sign()[:, None].expand_as(rows)
    nonzero = rows != 0
    assert torch.equal(rows[nonzero], expected[nonzero])


def test_reward_sign_polarity_and_baseline():
    layer = nn.Linear(3, 2, bias=False)
    eligibility = torch.tensor([[0.5, -1.0, 0.0], [0.2, 0.3, -0.4]])
    modulator = RewardSign(momentum=0.5, baseline=0.0)
    update = modulator.update(signals(layer, eligibility, name="a"), reward=1.0)
    torch.testing.assert_close(update, -eligibility)  # better than expected: Hebbian, W <- W + eta E
    assert modulator.baseline == 0.0  # committed lazily
    update = modulator.update(signals(layer, eligibility, name="a"), reward=torch.tensor([0.0, 0.2]))
    assert modulator.baseline == pytest.approx(0.5)
    torch.testing.assert_close(update, eligibility)  # 0.1 < 0.5: anti-Hebbian
    modulator.commit()
    assert modulator.baseline == pytest.approx(0.3)
    per_sample = modulator.sign(signals(layer, eligibility.expand(2, 2, 3), name="a", extra={"per_sample": True}),
                                reward=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(per_sample[0], -eligibility.sign())
    torch.testing.assert_close(per_sample[1], eligibility.sign())
    state = modulator.state_dict()
    other = RewardSign()
    other.load_state_dict(state)
    assert other.baseline == modulator.baseline
    with pytest.raises(RuntimeError, match="reward"):
        modulator.sign(signals(layer, eligibility))
    with pytest.raises(ValueError, match="momentum"):
        RewardSign(momentum=0.0)


def test_grad_sign_still_default_and_exact_in_plugin():
    torch.manual_seed(5)
    layer = nn.Linear(4, 3, bias=False)
    x = torch.rand(6, 4)
    rule = GHL(layer, modulator=GradSign())
    layer(x).pow(2).sum().backward()
    grad = layer.weight.grad.clone()
    rule.step()
    expected = grad.sign() * swta_oja(x, x @ layer.weight.detach().t(), layer.weight, normalize="max").abs()
    torch.testing.assert_close(layer.weight.grad, expected)
