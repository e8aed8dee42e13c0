"""HebbFF = (n/2) · (−∇ of the Forward-Forward softplus loss), checked against autograd (HebbFF Eq. 1-4).

With ReLU activations a = relu(W x̂ + b), mean goodness g = (1/n) Σ a² over the n units of the layer and the FF
loss L = Σ_pos softplus(θ − g_pos) + Σ_neg softplus(g_neg − θ) (inputs x̂ treated as constants):
    E_W = (n/2) · (−∂L/∂W),   E_b = (n/2) · (−∂L/∂b)   (constant n/2; the same for reduction="mean").
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from ghl_snn.models.mlp import ForwardForwardMLP
from ghl_snn.learners.hebbff import HebbFF
from ghl_snn.rules.hebbff import ff_softplus_loss, hebbff_eligibility, random_wrong_labels


def _layer_case(seed, n_pos, n_neg, n_in, n_out):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
    bias = torch.randn(n_out, generator=gen, dtype=torch.float64) * 0.1
    x_pos = F.normalize(torch.rand(n_pos, n_in, generator=gen, dtype=torch.float64), dim=1)
    x_neg = F.normalize(torch.rand(n_neg, n_in, generator=gen, dtype=torch.float64), dim=1)
    return weight, bias, x_pos, x_neg


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_pos=st.integers(1, 6), n_neg=st.integers(1, 6), n_in=st.integers(1, 7),
       n_out=st.integers(1, 9), theta=st.floats(0.0, 3.0), reduction=st.sampled_from(["sum", "mean"]))
def test_eligibility_is_n_over_2_times_negative_ff_gradient(seed, n_pos, n_neg, n_in, n_out, theta, reduction):
    weight, bias, x_pos, x_neg = _layer_case(seed, n_pos, n_neg, n_in, n_out)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    a_pos, a_neg = F.relu(F.linear(x_pos, weight, bias)), F.relu(F.linear(x_neg, weight, bias))
    loss = ff_softplus_loss(a_pos, a_neg, theta, reduction)
    grad_w, grad_b = torch.autograd.grad(loss, (weight, bias))
    eligibility = hebbff_eligibility(x_pos, a_pos.detach(), x_neg, a_neg.detach(), theta, reduction)
    constant = n_out / 2
    torch.testing.assert_close(eligibility.weight, -constant * grad_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(eligibility.bias, -constant * grad_b, rtol=1e-10, atol=1e-12)


def test_wrong_constant_is_detected():
    """Guard: the comparison above is sharp -- constant n (instead of n/2) fails."""
    weight, bias, x_pos, x_neg = _layer_case(1, 4, 4, 5, 6)
    weight.requires_grad_(True)
    a_pos, a_neg = F.relu(x_pos @ weight.t() + bias), F.relu(x_neg @ weight.t() + bias)
    (grad_w,) = torch.autograd.grad(ff_softplus_loss(a_pos, a_neg, 0.5), (weight,))
    eligibility = hebbff_eligibility(x_pos, a_pos.detach(), x_neg, a_neg.detach(), 0.5)
    assert eligibility.weight.abs().max() > 1e-3
    assert not torch.allclose(eligibility.weight, -6 * grad_w)


def test_network_step_equals_layerwise_sgd_on_ff_loss():
    """A HebbFF step with lr η on every layer == one SGD step on Σ_l L_l with per-layer lr η n_l / 2."""
    torch.manual_seed(0)
    hebb = ForwardForwardMLP(12, (9, 7, 5), num_classes=4, label_scale=0.7).double()
    ff = ForwardForwardMLP(12, (9, 7, 5), num_classes=4, label_scale=0.7).double()
    ff.load_state_dict(hebb.state_dict())
    x = torch.rand(16, 12, dtype=torch.float64)
    y = torch.randint(0, 4, (16,))
    y_neg = random_wrong_labels(y, 4, torch.Generator().manual_seed(3))
    lr, theta = 0.05, 0.02

    hebb.requires_grad_(False)
    HebbFF(hebb.layers, lr=lr, theta=theta, reduction="sum").step(hebb.trace(x, y), hebb.trace(x, y_neg))

    pos, neg = ff.trace(x, y), ff.trace(x, y_neg)
    loss = sum(ff_softplus_loss(ap, an, theta) for (_, ap), (_, an) in zip(pos, neg))
    groups = [{"params": list(layer.parameters()), "lr": lr * layer.out_features / 2} for layer in ff.layers]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    loss.backward()
    optimizer.step()

    torch.manual_seed(0)
    initial = ForwardForwardMLP(12, (9, 7, 5), num_classes=4, label_scale=0.7).double()
    for layer_init, layer_hebb, layer_ff in zip(initial.layers, hebb.layers, ff.layers):
        assert (layer_init.weight - layer_hebb.weight).abs().max() > 1e-6  # every layer moved in the one step
        torch.testing.assert_close(layer_hebb.weight, layer_ff.weight, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer_hebb.bias, layer_ff.bias, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ff_loss_value(reduction):
    a_pos = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    a_neg = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    theta = 1.0
    sp = lambda v: torch.log1p(torch.exp(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    pos = [sp(theta - 0.5), sp(theta - 2.0)]
    neg = [sp(5.0 - theta)]
    expected = (sum(pos) + sum(neg)) if reduction == "sum" else (sum(pos) / 2 + sum(neg) / 1)
    torch.testing.assert_close(ff_softplus_loss(a_pos, a_neg, theta, reduction), expected)
