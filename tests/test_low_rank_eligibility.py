"""A Linear layer's SWTA-Oja eligibility kept as its factors (U, x, F) until ``step()`` and formed there one row block
at a time: the update equals GHL Eq. 4-6 computed from a float64 per-sample loop of the unexpanded bracket, over
several blocks and forwards, and the factors give way to E itself once they outgrow the weight."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ghl_snn.plasticity._fast_path as fast_path
from ghl_snn import GHL, SWTAOja

pytestmark = pytest.mark.usefixtures("one_thread")

TAU = 0.8


def reference_eligibility(inputs, weight, tau):
    """Mean over forwards of the batch-mean Eq. 4 in float64, one sample at a time, bracket not expanded:
    E_ki = mean_n u_nk (x_ni - y_nk w_ki) with y_n = W x_n, u_n = softmax(y_n / tau)."""
    weight = weight.double()
    total = torch.zeros_like(weight)
    for x in inputs:
        forward = torch.zeros_like(weight)
        for sample in x.double():
            y = weight @ sample
            u = torch.softmax(y / tau, dim=0)
            forward += u[:, None] * (sample[None, :] - y[:, None] * weight)
        total += forward / x.shape[0]
    return total / len(inputs)


def run(layer_sizes, batch, forwards, block_bytes, monkeypatch):
    """Forwards through an MLP (bias-free layers, so y = W x) with GHL, then the step; returns what the reference
    needs and whether each layer's E was still kept as factors before the step."""
    monkeypatch.setattr(fast_path, "BLOCK_BYTES", block_bytes)
    torch.manual_seed(0)
    layers = [nn.Linear(n_in, n_out, bias=False) for n_in, n_out in zip(layer_sizes, layer_sizes[1:])]
    model = nn.Sequential(*[m for layer in layers for m in (layer, nn.ReLU())][:-1])
    rule = GHL(model, rule=SWTAOja(tau=TAU))
    inputs = {name: [] for name in rule.layers}
    hooks = [layer.register_forward_hook(lambda m, a, o, name=name: inputs[name].append(a[0].detach().clone()))
             for name, layer in rule.layers.items()]
    loss = 0
    for _ in range(forwards):
        x = torch.randn(batch, layer_sizes[0])
        loss = loss + F.cross_entropy(model(x), torch.randint(0, layer_sizes[-1], (batch,)))
    loss.backward()
    for hook in hooks:
        hook.remove()
    factored = {name: isinstance(total, fast_path.LowRankEligibility)
                for name, total in rule._sums.items()}
    public = {name: rule.eligibility(name) for name in rule.layers}
    grads = {name: layer.weight.grad.clone() for name, layer in rule.layers.items()}
    weights = {name: layer.weight.detach().clone() for name, layer in rule.layers.items()}
    rule.step()
    updates = {name: layer.weight.grad for name, layer in rule.layers.items()}
    return inputs, weights, grads, public, updates, factored


@pytest.mark.parametrize("block_bytes", [2 << 20, 3 * 40 * 4])  # one block; blocks of 3 rows (the last shorter)
@pytest.mark.parametrize("forwards", [1, 2])
def test_factored_update_equals_float64_eq4_to_6(block_bytes, forwards, monkeypatch):
    inputs, weights, grads, public, updates, factored = run((40, 25, 30), 3, forwards, block_bytes, monkeypatch)
    assert all(factored.values())  # 3 samples x (40 + 25) and x (25 + 30) values are fewer than the weights
    for name in inputs:
        expected_e = reference_eligibility(inputs[name], weights[name], TAU)
        torch.testing.assert_close(public[name].double(), expected_e, rtol=1e-5, atol=1e-7)
        expected = grads[name].double().sign() * expected_e.abs() / expected_e.abs().max()
        torch.testing.assert_close(updates[name].double(), expected, rtol=1e-5, atol=1e-7)


def test_factors_outgrowing_the_weight_become_the_eligibility(monkeypatch):
    """8 -> 6: one forward of 3 samples keeps 3 x 14 = 42 <= 48 values, two would keep 84: the second forward turns
    the first one's factors into E and adds its own; the third adds to E."""
    inputs, weights, grads, public, updates, factored = run((8, 6, 5), 3, 3, 2 << 20, monkeypatch)
    assert not any(factored.values())
    for name in inputs:
        expected_e = reference_eligibility(inputs[name], weights[name], TAU)
        torch.testing.assert_close(public[name].double(), expected_e, rtol=1e-5, atol=1e-7)
        expected = grads[name].double().sign() * expected_e.abs() / expected_e.abs().max()
        torch.testing.assert_close(updates[name].double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_gradient_on_the_factored_path_writes_nothing(value, monkeypatch):
    monkeypatch.setattr(fast_path, "BLOCK_BYTES", 64)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4))
    rule = GHL(model)
    F.cross_entropy(model(torch.randn(2, 30)), torch.tensor([0, 3])).backward()
    assert isinstance(rule._sums["0"], fast_path.LowRankEligibility)
    model[0].weight.grad[7, 3] = value
    before = model[0].weight.grad.clone()
    with pytest.raises(FloatingPointError, match="'0'"):
        rule.step()
    assert torch.equal(model[0].weight.grad.nan_to_num(), before.nan_to_num())


def test_layers_that_cannot_use_factors_keep_computing_e_in_the_forward():
    """A subclass with its own formula, a float64 weight, a normalisation other than max / none, a large batch."""
    class Scaled(SWTAOja):
        def linear(self, x, y, weight, out=None):
            return 2 * super().linear(x, y, weight, out=out)

    cases = [(nn.Linear(30, 20), Scaled(), 2), (nn.Linear(30, 20).double(), SWTAOja(), 2),
             (nn.Linear(30, 20), SWTAOja(normalize="rms"), 2), (nn.Linear(30, 20), SWTAOja(), 30)]
    for layer, eligibility_rule, batch in cases:
        rule = GHL(layer, rule=eligibility_rule)
        layer(torch.randn(batch, 30, dtype=layer.weight.dtype)).sum().backward()
        assert isinstance(rule._sums[""], torch.Tensor), (eligibility_rule, batch)
        rule.step()
