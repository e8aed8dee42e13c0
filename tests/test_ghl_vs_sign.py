"""The GHL-vs-sign study: monitored runs at a comparison's chosen rates, step-size monitor, summary, probe."""
import csv
import json
import math

import pytest
import torch
from torch import nn

from ghl_snn.diagnostics import StepSizeMonitor, gradient_agreement
from ghl_snn.experiments import ghl_vs_sign as study


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


def write_run(folder, signal_step):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"final_val_acc": 0.5}))
    with (folder / "stepsize.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=StepSizeMonitor.COLUMNS)
        writer.writeheader()
        writer.writerow({"step": 0, "layer": "c1", "lr": 0.1, "mean_abs_signal": signal_step * 10,
                         "signal_step": signal_step, "mean_abs_update": signal_step, "mean_abs_weight": 1.0})


def test_report_summarises_seeds(tmp_path):
    write_run(tmp_path / "monitor" / "sign" / "seed0", 1e-3)
    write_run(tmp_path / "monitor" / "sign" / "seed1", 3e-3)
    text = study.report(tmp_path, ["sign", "bp"])
    assert "| sign | c1 | 20.000 ± 14.142 |" in text  # lr·mean|G| in units of 1e-4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["variants"]["sign"]["seeds"] == 2 and "bp" not in summary["variants"]
    assert summary["variants"]["sign"]["step_sizes"]["c1"]["signal_step"] == pytest.approx(2e-3)
    assert (tmp_path / "stepsize.png").is_file()


def test_monitored_runs_take_the_comparisons_chosen_rates_and_horizon(tmp_path, tiny_cifar_root, capsys):
    """The study reads a finished ``cifar_compare`` comparison: every monitored run trains the row's recipe
    (``ghl-mean``: E / mean|E|) at its chosen rate for the comparison's epochs, evaluates the validation split
    only, and records step sizes, alignment and its final network for the probe."""
    from ghl_snn.experiments import cifar_compare

    comparison = tmp_path / "engine"
    common = ["--data-root", str(tiny_cifar_root), "--device", "cpu", "--quiet"]
    cifar_compare.main([*common, "--out", str(comparison), "--methods", "ghl-mean", "--listed-only", "--pool", "50",
                        "--test-subset", "20", "--epochs", "1", "--width", "0.0625", "--seeds", "2"])
    chosen = json.loads((comparison / "results.json").read_text())["chosen"]["ghl-mean"]["hparams"]
    out = tmp_path / "study"
    study.main([*common, "--comparison", str(comparison), "--out", str(out), "--methods", "ghl-mean",
                "--monitor-every", "1"])
    run = out / "monitor" / "ghl-mean" / "seed0"
    config = json.loads((run / "config.json").read_text())
    assert config["chosen"] == chosen and '"normalize": "mean"' in json.dumps(config)
    results = json.loads((run / "results.json").read_text())
    assert "final_val_acc" in results and not any("test" in key for key in results)
    with (run / "stepsize.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert float(first["lr"]) == pytest.approx(chosen["conv_lr"])  # step 0 of the cosine schedule: the chosen rate
    assert (run / "alignment.csv").is_file() and (out / "summary.md").is_file()
    text = study.main([*common, "--comparison", str(comparison), "--out", str(out), "--methods", "ghl-mean",
                       "--phase", "probe"])
    assert "init (1)" in text and "ghl-mean (1)" in text
    capsys.readouterr()
    # a horizon other than the comparison's, a row it lacks, or no comparison at all: one line each
    for argv, message in ((["--epochs", "3"], "chosen at 1 epochs"), (["--methods", "sign"], "has no row ['sign']"),
                          (["--comparison", str(tmp_path / "none")], "results.json is missing")):
        assert study.cli_main([*common, "--comparison", str(comparison), "--out", str(out), *argv]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], lines


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
