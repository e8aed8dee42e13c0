"""Gini (appendix A closed form and a float64 double-loop reference), dead neurons, CompetitionMonitor, probes."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ghl_snn import GHL, Ones
from ghl_snn.diagnostics import (CompetitionMonitor, dead_fraction, dead_neurons, extract_features, gini,
                                 init_similarity, linear_probe, probe_against_random_init, random_init_copy)


def loop_gini(values):
    """Σ_{i,j} |x_i - x_j| / (2 n² x̄) by a plain double loop in float64."""
    n = len(values)
    mean = sum(values) / n
    return sum(abs(a - b) for a in values for b in values) / (2 * n * n * mean)


@pytest.mark.parametrize("n,zeros", [(10, 0), (10, 3), (7, 6), (100, 25), (2048, 1900)])
@pytest.mark.parametrize("c", [1e-3, 1.0, 42.0])
def test_gini_closed_form_fraction_p_at_zero(n, zeros, c):
    values = torch.tensor([0.0] * zeros + [c] * (n - zeros))
    values = values[torch.randperm(n)]
    assert gini(values) == pytest.approx(zeros / n, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=40))
def test_gini_matches_double_loop_reference(values):
    if sum(values) == 0:
        assert math.isnan(gini(values))
        return
    assert gini(values) == pytest.approx(loop_gini(values), rel=1e-9, abs=1e-12)


def test_gini_properties_and_errors():
    assert gini([5.0, 5.0, 5.0]) == 0.0
    assert gini([0.0, 0.0, 0.0, 1.0]) == pytest.approx(0.75)  # one winner among n: 1 - 1/n
    assert gini(torch.tensor([1.0, 2.0, 3.0]) * 7) == pytest.approx(gini([1.0, 2.0, 3.0]))  # scale invariant
    for bad, message in (([], "empty"), ([1.0, -1.0], "non-negative"), ([1.0, float("inf")], "finite"),
                         (torch.ones(2, 2), "1-d")):
        with pytest.raises(ValueError, match=message):
            gini(bad)


def test_dead_neuron_statistic():
    torch.manual_seed(0)
    w0 = torch.randn(5, 50)
    w = w0.clone()
    w[1] *= 3.0                                     # only rescaled: still its random init -> dead
    w[2] = torch.randn(50)                          # an unrelated direction -> live
    direction = torch.randn(50)
    direction -= (direction @ w0[3]) / (w0[3] @ w0[3]) * w0[3]  # orthogonal to w0[3]
    direction *= w0[3].norm() / direction.norm()
    w[3] = 0.95 * w0[3] + math.sqrt(1 - 0.95 ** 2) * direction  # cos(w, w0) = 0.95 exactly
    w[4] = -w0[4]                                    # flipped -> live
    rho = init_similarity(w0, w)
    for k in range(5):
        a, b = w[k].double(), w0[k].double()
        assert float(rho[k]) == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-12)
    assert float(rho[3]) == pytest.approx(0.95, abs=1e-6)
    assert dead_neurons(w0, w, threshold=0.9).tolist() == [True, True, False, True, False]
    assert dead_neurons(w0, w, threshold=0.96).tolist() == [True, True, False, False, False]
    assert dead_fraction(w0, w, 0.9) == pytest.approx(3 / 5)
    zero = torch.zeros(2, 3)
    assert init_similarity(zero, zero).tolist() == [1.0, 1.0]  # unchanged zero rows are dead
    conv0 = torch.randn(4, 2, 3, 3)
    assert dead_fraction(conv0, conv0 * 2, 0.9) == 1.0
    with pytest.raises(ValueError, match="shape"):
        dead_fraction(w0, w[:3])
    with pytest.raises(ValueError, match="threshold"):
        dead_neurons(w0, w, threshold=1.5)


def test_monitor_running_average_gini_against_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = CompetitionMonitor(model, optimizer)
    w_init = model[0].weight.detach().clone()
    steps = []
    for t in range(5):
        grad = torch.zeros(8, 6)
        grad[: t + 1] = torch.randn(t + 1, 6)       # only the first t+1 neurons move at step t
        model[0].weight.grad = grad
        steps.append([float(-0.1 * grad[k].double().norm()) * -1 for k in range(8)])
        optimizer.step()
        average = [sum(s[k] for s in steps) / len(steps) for k in range(8)]
        assert monitor.records[-1]["gini"] == pytest.approx(loop_gini(average), rel=1e-6)
        assert monitor.records[-1]["gini_step"] == pytest.approx(loop_gini(steps[-1]), rel=1e-6)
    assert monitor.records[0]["gini"] == pytest.approx(7 / 8)   # one neuron of 8 updated: G = 1 - 1/n
    assert monitor.summary()["0"]["gini_start"] == pytest.approx(7 / 8)
    assert monitor.summary()["0"]["dead_fraction"] == dead_fraction(w_init, model[0].weight)
    assert monitor.dead_fraction("0", threshold=1.0) >= 3 / 8   # neurons 5..7 never moved


def test_monitor_ema_and_errors(tmp_path):
    model = nn.Linear(3, 4)
    monitor = CompetitionMonitor(model, average="ema", decay=0.5)
    for t in range(3):
        with monitor.observe():
            with torch.no_grad():
                model.weight[0] += 1.0 + t      # step sizes of neuron 0: sqrt(3)*(1, 2, 3)
    ema = 0.0
    for t in range(3):
        ema = 0.5 * ema + 0.5 * math.sqrt(3) * (1 + t)
    assert float(monitor.average_step_sizes("")[0]) == pytest.approx(ema / (1 - 0.5 ** 3))
    assert monitor.gini("") == pytest.approx(3 / 4)
    assert math.isnan(CompetitionMonitor(nn.Linear(3, 4)).gini(""))  # no update yet
    csv_path, png_path = monitor.write(tmp_path)
    assert len(csv_path.read_text().strip().splitlines()) == 4 and png_path.stat().st_size > 1000
    with pytest.raises(ValueError, match="average"):
        CompetitionMonitor(model, average="median")
    with pytest.raises(ValueError, match="decay"):
        CompetitionMonitor(model, average="ema", decay=1.0)
    with pytest.raises(KeyError, match="unknown layer"):
        monitor.dead_fraction("head")


def test_monitor_with_ghl_local_only_rule():
    """SWTA-Oja via the GHL plug-in updates every neuron a little: Gini recorded, finite and in [0, 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16, bias=False), nn.ReLU())
    rule = GHL(model, layers=["0"], modulator=Ones(), tau=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = CompetitionMonitor(model, optimizer, every=2)
    for _ in range(6):
        model(torch.rand(8, 10))
        rule.step()
        optimizer.step()
    assert [r["step"] for r in monitor.records] == [0, 2, 4]
    assert all(0.0 <= r["gini"] < 1.0 for r in monitor.records)


def test_linear_probe_separable_and_random_labels():
    torch.manual_seed(0)
    centres = torch.randn(3, 20) * 4
    labels = torch.randint(0, 3, (600,))
    features = centres[labels] + torch.randn(600, 20)
    result = linear_probe(features[:400], labels[:400], features[400:], labels[400:], epochs=5,
                          lr=0.05, batch_size=32)
    assert result.final_accuracy > 0.97 and result.best_accuracy >= result.final_accuracy
    assert len(result.history) == 5
    noise = torch.randn(600, 20)
    chance = linear_probe(noise[:400], labels[:400], noise[400:], labels[400:], epochs=5, lr=0.05,
                          batch_size=32)
    assert chance.final_accuracy < 0.5
    with pytest.raises(ValueError, match="one entry per feature row"):
        linear_probe(features, labels[:10], features, labels)
    with pytest.raises(TypeError, match="integer"):
        linear_probe(features, labels.float(), features, labels)
    with pytest.raises(ValueError, match="width"):
        linear_probe(features, labels, features[:, :5], labels)


def test_probe_against_random_init_and_random_copy():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(20, 128), nn.ReLU())
    initial = copy.deepcopy(encoder)
    x = torch.randn(300, 20)
    y = (x[:, 0] > 0).long()
    with torch.no_grad():
        encoder[0].weight.zero_()                    # "training" destroyed every feature
    result = probe_against_random_init(encoder, initial, x[:200], y[:200], x[200:], y[200:], epochs=5,
                                       lr=0.05, batch_size=32)
    assert result["random_init"] > 0.8 and result["trained"] <= 0.7
    assert result["gain"] == pytest.approx(result["trained"] - result["random_init"])
    fresh = random_init_copy(encoder, seed=3)
    assert not torch.equal(fresh[0].weight, encoder[0].weight)
    torch.testing.assert_close(fresh[0].weight, random_init_copy(encoder, seed=3)[0].weight)
    encoder.train()
    assert extract_features(encoder, x).shape == (300, 128) and encoder.training
