"""Monitor spec for training loops, the alignment experiment's analysis, and smoke runs of both experiments."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn.diagnostics import AlignmentMonitor, CompetitionMonitor, make_monitors, parse_monitor_spec, \
    write_monitors
from ghl_snn.experiments import alignment as alignment_experiment
from ghl_snn.experiments import competition as competition_experiment


def test_monitor_spec_and_writing(tmp_path):
    assert parse_monitor_spec("alignment, competition,alignment") == ["alignment", "competition"]
    assert parse_monitor_spec(None) == parse_monitor_spec("none") == []
    with pytest.raises(ValueError, match="unknown monitor"):
        parse_monitor_spec("alignment,gradcam")
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitors = make_monitors("alignment,competition", model, optimizer, every=2)
    assert [type(m) for m in monitors] == [AlignmentMonitor, CompetitionMonitor]
    for _ in range(4):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(5, 4)), torch.randint(0, 2, (5,))).backward()
        optimizer.step()
    paths = write_monitors(monitors, tmp_path)
    assert sorted(p.name for p in paths) == ["alignment.csv", "alignment.png", "competition.csv", "competition.png"]
    assert len((tmp_path / "alignment.csv").read_text().strip().splitlines()) == 1 + 2 * 2  # steps 0, 2 x 2 layers


def test_zero_crossing_interpolates_in_log_weight_decay():
    # alignment = log10(γ) + 2 + 0.5 ... linear in log γ: crossing where log10 γ = -2.5 -> γ* = 10**-2.5
    rows = [{"weight_decay": g, "noise_std": 0.1, "a": math.log10(g) + 2.5} for g in (1e-4, 1e-3, 1e-2, 1e-1)]
    rows += [{"weight_decay": g, "noise_std": 0.2, "a": 1.0} for g in (1e-3, 1e-2)]  # never negative: no crossing
    crossings = alignment_experiment.zero_crossings(rows, "a")
    assert set(crossings) == {0.1}
    assert crossings[0.1] == pytest.approx(10 ** -2.5, rel=1e-9)


def test_sre_smoke_run(tmp_path):
    results = alignment_experiment.main([
        "--parts", "sre", "--out", str(tmp_path), "--sre-train", "512", "--sre-val", "128", "--sre-epochs", "1",
        "--batch-size", "64", "--sre-weight-decays", "0,0.1", "--sre-noises", "0,0.01", "--window", "5"])
    assert len(results["sre"]) == 4
    assert all(-1 <= r["L2/signal_alignment_mean"] <= 1 for r in results["sre"])
    for name in ("sre.csv", "sre_heatmap.png", "tables.md", "results.json", "config.json"):
        assert (tmp_path / name).is_file()
    with pytest.raises(SystemExit):
        alignment_experiment.parse_args(["--parts", "sce,foo"])


def test_sce_smoke_run_on_real_cifar(shared_data, tmp_path):
    results = alignment_experiment.main([
        "--parts", "sce", "--data-root", str(shared_data), "--out", str(tmp_path), "--sce-per-class", "13",
        "--sce-test-per-class", "5", "--sce-epochs", "2", "--batch-size", "32", "--sce-weight-decays", "0,0.1",
        "--window", "3"])
    assert [r["weight_decay"] for r in results["sce"]] == [0.0, 0.1]
    assert (tmp_path / "sce_alignment.png").is_file()


def test_competition_smoke_run_on_real_mnist(shared_data, tmp_path):
    results = competition_experiment.main([
        "--data-root", str(shared_data), "--out", str(tmp_path), "--widths", "8", "--train-subset", "320",
        "--probe-train", "300", "--probe-epochs", "1", "--dead-every", "1"])
    rows = {r["method"]: r for r in results["rows"]}
    assert set(rows) == {"random", "swta", "softhebb", "ghl", "bp"}
    assert 0 <= rows["softhebb"]["active_fraction"] <= 1 and rows["softhebb"]["steps"] == 10
    assert rows["random"]["dead_fraction"] == 1.0 and rows["random"]["test_gain_vs_random"] == 0.0
    assert all(0 <= r["probe_test_acc"] <= 1 for r in rows.values())
    assert 0 <= rows["swta"]["gini_end"] <= 1 and rows["ghl"]["steps"] == rows["bp"]["steps"] == 10
    # plain backprop moves the encoder, and not as GHL does (same init, head and batches)
    assert rows["bp"]["median_cos_to_init"] < 1.0
    assert rows["bp"]["median_cos_to_init"] != rows["ghl"]["median_cos_to_init"]
    assert (tmp_path / "receptive_fields_w8.png").is_file() and (tmp_path / "gini.png").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["widths"] == [8]
