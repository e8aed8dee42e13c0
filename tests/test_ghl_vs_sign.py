"""The GHL-vs-sign study driver: equal-effort line search, step-size monitor, summary."""
import csv
import json
import math

import pytest
import torch
from torch import nn

from ghl_snn.diagnostics import StepSizeMonitor, gradient_agreement
from ghl_snn.experiments import ghl_vs_sign as study


def run_search(objective, start, trials):
    tried = {}
    for _ in range(trials):
        lr = study.next_learning_rate(tried, start)
        assert all(not math.isclose(lr, old) for old in tried), "a trial was repeated"
        tried[lr] = objective(lr)
    return tried


@pytest.mark.parametrize("optimum", [1e-3, 0.01, 0.3])
def test_line_search_moves_towards_the_optimum(optimum):
    tried = run_search(lambda lr: -abs(math.log(lr / optimum)), 0.01, 5)
    assert list(tried)[:3] == pytest.approx([0.01, 0.03, 0.01 / 3])
    best = max(tried, key=tried.get)
    # the best tried rate is within a factor sqrt(3) of the optimum, or as close as 5 trials of x3 can get
    reachable = min(abs(math.log(lr / optimum)) for lr in (0.01 * 3 ** k for k in range(-2, 3)))
    assert abs(math.log(best / optimum)) <= max(reachable, math.log(3) / 2) + 1e-9


def test_every_variant_gets_the_same_number_of_trials():
    for name, variant in study.VARIANTS.items():
        calls = []
        rows = study.sweep_trials(variant, 5, lambda conv, head: calls.append((conv, head)) or -len(calls))
        assert len(rows) == len(calls) == 5, name
        if variant.tune_conv:  # four convolution rates at the default head rate, then head x3 at the best one
            assert [r["head_lr"] for r in rows[:4]] == [variant.head_lr] * 4
            assert rows[4] == {"conv_lr": rows[0]["conv_lr"], "head_lr": 3 * variant.head_lr, "val_acc": -5}
        else:
            assert {r["conv_lr"] for r in rows} == {0.0} and len({r["head_lr"] for r in rows}) == 5
    assert study.best_trial([{"val_acc": 0.2, "i": 0}, {"val_acc": 0.5, "i": 1}, {"val_acc": 0.5, "i": 2}])["i"] == 1


def test_step_size_monitor_matches_a_hand_computed_sgd_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1, "weight_decay": 0.5},
                                 {"params": model[2].parameters(), "lr": 0.02}])
    monitor = StepSizeMonitor(model, optimizer, layers=["0", "2"])
    model(torch.randn(5, 4)).pow(2).sum().backward()
    grads = {name: model[int(name)].weight.grad.clone().double() for name in ("0", "2")}
    weights = {name: model[int(name)].weight.detach().clone().double() for name in ("0", "2")}
    optimizer.step()
    rows = {r["layer"]: r for r in monitor.records}
    for name, lr, decay in (("0", 0.1, 0.5), ("2", 0.02, 0.0)):
        g, w = grads[name], weights[name]
        assert rows[name]["lr"] == lr
        assert rows[name]["mean_abs_signal"] == pytest.approx(float(sum(abs(v) for v in g.flatten()) / g.numel()))
        assert rows[name]["signal_step"] == pytest.approx(lr * rows[name]["mean_abs_signal"])
        expected_update = (lr * (g + decay * w)).abs().mean()
        assert rows[name]["mean_abs_update"] == pytest.approx(float(expected_update), rel=1e-5)
        assert rows[name]["mean_abs_weight"] == pytest.approx(float(w.abs().mean()))


def write_run(folder, accs, signal_step):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"final_test_acc": accs[-1], "best_test_acc": max(accs)}))
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "test_acc"])
        writer.writerows([e + 1, a] for e, a in enumerate(accs))
    with (folder / "stepsize.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=StepSizeMonitor.COLUMNS)
        writer.writeheader()
        writer.writerow({"step": 0, "layer": "c1", "lr": 0.1, "mean_abs_signal": signal_step * 10,
                         "signal_step": signal_step, "mean_abs_update": signal_step, "mean_abs_weight": 1.0})


def test_report_summarises_seeds(tmp_path):
    write_run(tmp_path / "horizon" / "sign" / "seed0", [0.30, 0.50], 1e-3)
    write_run(tmp_path / "horizon" / "sign" / "seed1", [0.40, 0.60], 3e-3)
    (tmp_path / "sweep" / "sign").mkdir(parents=True)
    (tmp_path / "sweep" / "sign" / "trials.json").write_text(json.dumps(
        {"trials": [{"conv_lr": 0.01, "head_lr": 0.005, "val_acc": 0.4}],
         "best": {"conv_lr": 0.01, "head_lr": 0.005, "val_acc": 0.4}}))
    text = study.report(tmp_path, study.Protocol(), ["sign", "bp"])
    assert "| sign | 2 | 55.00 ± 7.07 | 55.00 ± 7.07 | 35.0 ± 7.1 | 55.0 ± 7.1 |" in text
    assert "| sign | c1 | 20.000 ± 14.142 |" in text  # lr·mean|G| in units of 1e-4
    summary = json.loads((tmp_path / "horizon-summary.json").read_text())
    assert summary["variants"]["sign"]["final_test_acc"] == [0.5, 0.6]
    assert (tmp_path / "horizon-accuracy.png").is_file()


def test_gradient_agreement_matches_closed_forms():
    from ghl_snn.rules import swta_oja

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4))
    images, labels = torch.randn(6, 2, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    got = gradient_agreement(model, [(images, labels)], {"0": 0.7})["0"]
    conv = model[0]
    weight = conv.weight.detach().clone().requires_grad_(True)
    hidden = nn.functional.conv2d(images, weight, padding=1)
    loss = nn.functional.cross_entropy(model[3](model[2](model[1](hidden))), labels)
    (g,) = torch.autograd.grad(loss, weight)
    g = g.double().flatten()
    e = swta_oja(images, hidden.detach(), conv.weight, 0.7, padding=1).double().abs()
    e_flat = e.flatten()
    assert got["cos_sign"] == pytest.approx(float(g.abs().sum() / (math.sqrt(g.numel()) * g.norm())), rel=1e-6)
    assert got["cos_ghl"] == pytest.approx(float((g.abs() * e_flat).sum() / (g.norm() * e_flat.norm())), rel=1e-6)
    channel = (e / e.reshape(3, -1).amax(1).view(3, 1, 1, 1)).flatten()
    assert got["cos_channel"] == pytest.approx(float((g.abs() * channel).sum() / (g.norm() * channel.norm())),
                                               rel=1e-6)
    assert got["mean_over_max"] == pytest.approx(float(e_flat.mean() / e_flat.max()), rel=1e-6)
    a, b = e_flat - e_flat.mean(), g.abs() - g.abs().mean()
    assert got["corr_abs"] == pytest.approx(float((a * b).sum() / (a.norm() * b.norm())), rel=1e-6)
    assert conv.weight.grad is None  # the probe leaves no gradient behind
