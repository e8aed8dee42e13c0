"""Spiking HebbFF (HebbFF paper, Eq. 1-4 on spike rates) and its equivalence with the rate HebbFF update."""
import math

import pytest
import torch

from ghl_snn.models.mlp import ForwardForwardMLP
from ghl_snn.rules.hebbff import hebbff_eligibility, random_wrong_labels
from ghl_snn.spiking.encoders import BernoulliEncoder, ConstantCurrent
from ghl_snn.spiking.hebbff import SpikingHebbFF, update_agreement


def _small_case():
    torch.manual_seed(0)
    model = ForwardForwardMLP(20, (16, 12), num_classes=4, init_gain=None).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.normal_(0.0, 0.3)
            layer.bias.fill_(0.1)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 20, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (8,), generator=gen)
    return model, x, y, random_wrong_labels(y, 4, gen)


def test_spiking_update_converges_to_rate_update_at_the_empirical_rates():
    """cos(E_spike, E_rate) ≥ 0.99 at T = 1000 in every layer, and the error falls as T grows."""
    model, x, y, y_neg = _small_case()
    theta = 0.2
    errors = []
    for steps in (10, 100, 1000):
        spiking = SpikingHebbFF(model, lr=0.1, theta=theta, input_scale=0.5,
                                encoder=BernoulliEncoder(generator=torch.Generator().manual_seed(steps)))
        positive, negative = spiking.run(x, y, steps), spiking.run(x, y_neg, steps)
        rates = [r for _, r in positive]
        assert all(0.05 < float(r.mean()) < 0.95 for r in rates)  # neurons in their operating range
        agreement = update_agreement(positive, negative, spiking.rate_traces(positive),
                                     spiking.rate_traces(negative), theta)
        errors.append(max(agreement.relative_error))
        if steps == 1000:
            assert min(agreement.cosine) >= 0.99, agreement
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[0] > 0.05 and errors[2] < 0.03, errors  # the comparison is not trivially exact at small T


def test_if_spike_rates_match_the_closed_form_count():
    """Deterministic input: the first layer's IF count is min(T, floor(T I / threshold)) for I > 0 (else 0)."""
    model, x, y, _ = _small_case()
    steps = 37
    spiking = SpikingHebbFF(model, lr=0.1, theta=0.2, input_scale=0.5, encoder=ConstantCurrent())
    (inputs, rates), *_ = spiking.run(x, y, steps)
    current = (inputs @ model.layers[0].weight.detach().t() + model.layers[0].bias.detach()).tolist()
    expected = [[min(steps, max(0, math.floor(steps * i + 1e-9))) / steps for i in row] for row in current]
    torch.testing.assert_close(rates, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(inputs[:, 20:], torch.nn.functional.one_hot(y, 4).double())


def test_spiking_step_is_the_hebbff_rule_on_the_spike_traces():
    model, x, y, y_neg = _small_case()
    before = [layer.weight.detach().clone() for layer in model.layers]
    spiking = SpikingHebbFF(model, lr=0.1, theta=0.2, input_scale=0.5,
                            encoder=BernoulliEncoder(generator=torch.Generator().manual_seed(5)))
    positive, negative = spiking.run(x, y, 50), spiking.run(x, y_neg, 50)
    with torch.no_grad():
        for layer, weight in zip(model.layers, before):
            layer.weight.copy_(weight)
    spiking.encoder = BernoulliEncoder(generator=torch.Generator().manual_seed(5))
    spiking.step(x, y, y_neg, 50)  # same spikes: same generator seed, same weights during both windows
    for layer, weight, (xp, rp), (xn, rn) in zip(model.layers, before, positive, negative):
        expected = weight + 0.1 * hebbff_eligibility(xp, rp, xn, rn, 0.2, "mean").weight
        assert (layer.weight - weight).abs().max() > 1e-5
        torch.testing.assert_close(layer.weight.detach(), expected, rtol=1e-10, atol=1e-12)


def test_spiking_hebbff_learns_a_small_problem():
    gen = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(10, 784, generator=gen) < 0.15).float()

    def data(n):
        labels = torch.arange(n) % 10
        noise = torch.rand(n, 784, generator=gen) * (torch.rand(n, 784, generator=gen) < 0.1)
        keep = torch.rand(n, 784, generator=gen) < 0.7
        return (prototypes[labels] * keep + noise).clamp(0, 1), labels

    train_x, train_y = data(1000)
    val_x, val_y = data(200)
    torch.manual_seed(0)
    model = ForwardForwardMLP(784, (64,), num_classes=10, init_gain=0.5)
    spiking = SpikingHebbFF(model, lr=3.0, theta=0.2, input_scale=0.1,
                            encoder=BernoulliEncoder(generator=torch.Generator().manual_seed(1)))
    chance = float((spiking.predict(val_x, 10) == val_y).float().mean())
    for _ in range(2):
        for start in range(0, 1000, 100):
            labels = train_y[start:start + 100]
            spiking.step(train_x[start:start + 100], labels, random_wrong_labels(labels, 10, gen), 10)
    accuracy = float((spiking.predict(val_x, 10) == val_y).float().mean())
    assert chance < 0.25 and accuracy > 0.5, (chance, accuracy)


def test_bad_inputs():
    model, x, y, _ = _small_case()
    spiking = SpikingHebbFF(model, lr=0.1, theta=0.2)
    with pytest.raises(ValueError, match="does not fit"):
        spiking.run(x[:, :5], y, 5)
    with pytest.raises(ValueError, match="labels"):
        spiking.run(x, y[:3], 5)
    with pytest.raises(ValueError, match="num_steps|steps"):
        spiking.run(x, y, 0)
    with pytest.raises(ValueError, match="input_scale"):
        SpikingHebbFF(model, lr=0.1, theta=0.2, input_scale=0.0)
    with pytest.raises(TypeError, match="SpikingNeuron"):
        SpikingHebbFF(model, lr=0.1, theta=0.2, neuron=torch.nn.ReLU)


def test_equivalence_experiment_rows_and_figure(tmp_path):
    from ghl_snn.experiments import hebbff_equivalence

    summary = hebbff_equivalence.main(["--steps", "10", "300", "--seeds", "1", "--out", str(tmp_path)])
    by_layer = {}
    for row in summary:
        assert row["network"] == "hebbff"
        by_layer.setdefault(row["layer"], []).append(row)
    assert len(by_layer) == 2
    for rows in by_layer.values():
        short, long = sorted(rows, key=lambda r: r["T"])
        assert long["E rel. error"] < short["E rel. error"] and long["E cosine"] > 0.99
    assert (tmp_path / "equivalence.png").stat().st_size > 0 and (tmp_path / "results.md").exists()
