"""One HebbFF rule (HebbFF paper, Eq. 1-4) for every form: the eligibility rule, the GHL plug-in, the learner's
reference step and its fast fused step, and the chance-level diagnosis."""
import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, HebbFF as TopLevelHebbFF
from ghl_snn.experiments import hebbff as experiment
from ghl_snn.learners.hebbff import HebbFF, health_message, hebbff_health
from ghl_snn.datasets.mnist import VectorSplit
from ghl_snn.models.mlp import ForwardForwardMLP
from ghl_snn.modulators import Ones
import ghl_snn.rules
from ghl_snn.rules.hebbff import HebbFFRule, hebbff_coefficients, hebbff_eligibility, random_wrong_labels


def loop_phase_eligibility(x, a, theta, phase):
    """float64 loops: Σ_n s σ(s(θ − g_n)) a_nk x_ni / B (Eq. 1-3 for one phase, batch mean)."""
    n_out, n_in = a.shape[1], x.shape[1]
    out = [[0.0] * n_in for _ in range(n_out)]
    for xs, acts in zip(x.tolist(), a.tolist()):
        g = sum(v * v for v in acts) / n_out
        gate = 1 / (1 + math.exp(-phase * (theta - g)))
        for k in range(n_out):
            for i in range(n_in):
                out[k][i] += phase * gate * acts[k] * xs[i] / x.shape[0]
    return torch.tensor(out, dtype=torch.float64)


def test_public_names_are_one_learner():
    assert TopLevelHebbFF is HebbFF and not hasattr(ghl_snn.rules, "HebbFF")  # the learner lives above the rules


@pytest.mark.parametrize("phase", [1, -1])
def test_rule_matches_loop_reference_with_bias(phase):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    x = F.normalize(torch.rand(5, 6, dtype=torch.float64), dim=1)
    rule = HebbFFRule(theta=0.3)
    y = x @ layer.weight.detach().t()  # bias-free, as the plug-in passes it; the rule adds the bias back
    with rule.phase(phase):
        eligibility = rule(layer, x, y)
    assert rule.current_phase == 1  # restored after the block
    a = F.relu(layer(x)).detach()
    reference = loop_phase_eligibility(x, a, 0.3, phase)
    assert reference.abs().max() > 1e-3
    torch.testing.assert_close(eligibility.double(), reference, rtol=1e-6, atol=1e-7)
    # stacked phases (one ±1 per sample) == the two phases separately
    x2, a2 = torch.cat([x, x.flip(0)]), torch.cat([a, a.flip(0)])
    stacked = hebbff_coefficients(a2, 0.3, torch.tensor([1.0] * 5 + [-1.0] * 5, dtype=torch.float64), "mean")
    both = hebbff_eligibility(x, a, x.flip(0), a.flip(0), 0.3, "mean")
    torch.testing.assert_close(stacked.post.t() @ x2, both.weight, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="phase"):
        with rule.phase(0):
            pass
    with pytest.raises(TypeError, match="nn.Linear"):
        rule(nn.Conv2d(1, 1, 1), torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))


def test_rule_in_the_ghl_plugin_performs_the_learners_weight_update():
    """GHL(rule=HebbFFRule, modulator=Ones) + SGD(lr 2η) == the HebbFF learner's weight update (η, batch mean)."""
    torch.manual_seed(0)
    plug = ForwardForwardMLP(10, (8, 6), num_classes=3, label_scale=0.7).double()
    learn = ForwardForwardMLP(10, (8, 6), num_classes=3, label_scale=0.7).double().requires_grad_(False)
    learn.load_state_dict(plug.state_dict())
    x, y = torch.rand(7, 10, dtype=torch.float64), torch.randint(0, 3, (7,))
    y_neg = random_wrong_labels(y, 3, torch.Generator().manual_seed(1))
    lr, theta = 0.3, 0.4

    HebbFF(learn.layers, lr=lr, theta=theta).step(learn.trace(x, y), learn.trace(x, y_neg))

    rule = HebbFFRule(theta)
    ghl = GHL(plug, rule=rule, modulator=Ones())
    optimizer = torch.optim.SGD(ghl.parameters(), lr=2 * lr)
    with rule.phase(+1):
        plug.trace(x, y)
    with rule.phase(-1):
        plug.trace(x, y_neg)
    ghl.step()
    before = [layer.weight.detach().clone() for layer in plug.layers]
    optimizer.step()
    for old, layer_plug, layer_learn in zip(before, plug.layers, learn.layers):
        assert (layer_plug.weight - old).abs().max() > 1e-4
        # the plug-in computes E in float32 (its hooks run under autocast-safe float32)
        torch.testing.assert_close(layer_plug.weight.detach() - old, layer_learn.weight - old, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("reduction,weight_decay", [("mean", 0.0), ("sum", 0.01)])
def test_fast_train_step_equals_trace_step(reduction, weight_decay):
    torch.manual_seed(0)
    slow = ForwardForwardMLP(10, (8, 6, 4), num_classes=3, label_scale=0.7).double().requires_grad_(False)
    fast = ForwardForwardMLP(10, (8, 6, 4), num_classes=3, label_scale=0.7).double().requires_grad_(False)
    fast.load_state_dict(slow.state_dict())
    initial = {k: v.clone() for k, v in slow.state_dict().items()}
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.rand(9, 10, dtype=torch.float64, generator=gen), torch.randint(0, 3, (9,), generator=gen)
        y_neg = random_wrong_labels(y, 3, gen)
        s_stats = HebbFF(slow.layers, lr=0.5, theta=0.3, weight_decay=weight_decay, reduction=reduction).step(
            slow.trace(x, y), slow.trace(x, y_neg))
        f_stats = HebbFF(fast.layers, lr=0.5, theta=0.3, weight_decay=weight_decay,
                         reduction=reduction).train_step(fast, x, y, y_neg)
        for s, f in zip(s_stats, f_stats):
            torch.testing.assert_close(torch.stack(list(s)), torch.stack(list(f)), rtol=1e-10, atol=1e-12)
    for key, value in slow.state_dict().items():
        assert (value - initial[key]).abs().max() > 1e-4, key
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="layers"):
        HebbFF(slow.layers, lr=0.1, theta=0.1).train_step(fast, x, y, y_neg)


def test_health_names_dead_saturated_and_not_separating():
    torch.manual_seed(0)
    model = ForwardForwardMLP(10, (8, 6), num_classes=3)
    x, y = torch.rand(32, 10), torch.randint(0, 3, (32,))
    y_neg = random_wrong_labels(y, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.layers[0].bias.fill_(-100.0)  # every unit of layer 0 dead
        report = hebbff_health(model.trace(x, y), model.trace(x, y_neg), theta=0.5)
        assert report[0].dead == 1.0 and report[1].dead < 0.5
        message = health_message(report, 0.5)
        assert "layer 0: 100% dead units" in message
        model.layers[0].bias.zero_()
        saturated = health_message(hebbff_health(model.trace(x, y), model.trace(x, y_neg), theta=60.0), 60.0)
        assert "gates saturated" in saturated and "dead" not in saturated
        # an untrained network: goodness does not tell true from wrong labels
        assert "not separating" in health_message(hebbff_health(model.trace(x, y), model.trace(x, y_neg), 0.5), 0.5)


def _prototype_data(n, gen, prototypes):
    """Ten sparse binary prototypes (stroke-like), each pixel kept with p = 0.7, plus sparse noise; in [0, 1]."""
    labels = torch.arange(n) % 10
    noise = torch.rand(n, 784, generator=gen) * (torch.rand(n, 784, generator=gen) < 0.1)
    keep = torch.rand(n, 784, generator=gen) < 0.7
    return (prototypes[labels] * keep + noise).clamp(0, 1), labels


def test_default_hebbff_learns_and_a_broken_run_warns_with_its_cause():
    """The experiment's defaults learn a small problem far above chance in a few steps; a learning rate far too
    small leaves the run at chance and the warning names why (goodness not separating)."""
    gen = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(10, 784, generator=gen) < 0.15).float()
    train_x, train_y = _prototype_data(1200, gen, prototypes)
    val_x, val_y = _prototype_data(300, gen, prototypes)
    split = VectorSplit(train_x, train_y, val_x, val_y, val_x, val_y)
    lr, theta = experiment.DEFAULT_LR_GRID["hebbff"][-1], experiment.DEFAULT_THETA_GRID[0]
    config = experiment.RunConfig(preset="deep-mnist", method="hebbff", lr=lr, theta=theta, epochs=3,
                                  hidden=(64, 32), progress=False, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = experiment.fit(config, split)
    assert result["test_acc"] > 0.6, result
    broken = experiment.RunConfig(**{**dataclasses.asdict(config), "lr": 1e-7, "epochs": 1})
    with pytest.warns(RuntimeWarning, match="at chance .*not separating"):
        result = experiment.fit(broken, split)
    assert result["test_acc"] < 0.2
