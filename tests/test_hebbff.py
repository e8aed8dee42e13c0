"""HebbFF rule, FF MLP with label concatenation and the HebbFF/FF/BP experiment (HebbFF paper, Eq. 1-4)."""
import dataclasses
import json
import math
import struct
import warnings

import pytest
import torch
import torch.nn.functional as F

from ghl_snn.experiments import hebbff as experiment
from ghl_snn.experiments import hebbff_training as training
from ghl_snn.datasets.mnist import mnist_split
from ghl_snn.models.mlp import ForwardForwardMLP, backprop_mlp
from ghl_snn.learners.hebbff import HebbFF
from ghl_snn.rules.hebbff import goodness, hebbff_eligibility, random_wrong_labels


def reference_eligibility(x_pos, a_pos, x_neg, a_neg, theta):
    """float64 loops over samples, units and inputs: Eq. 1 (g), Eq. 2 (gates), Eq. 3-4 (ΔW/η, Δb/η)."""
    n_out, n_in = a_pos.shape[1], x_pos.shape[1]
    weight = [[0.0] * n_in for _ in range(n_out)]
    bias = [0.0] * n_out
    for xs, acts, sign in ((x_pos, a_pos, 1.0), (x_neg, a_neg, -1.0)):
        for x, a in zip(xs.tolist(), acts.tolist()):
            g = sum(v * v for v in a) / n_out
            gate = 1 / (1 + math.exp(-(theta - g))) if sign > 0 else 1 / (1 + math.exp(-(g - theta)))
            for k in range(n_out):
                bias[k] += sign * gate * a[k]
                for i in range(n_in):
                    weight[k][i] += sign * gate * a[k] * x[i]
    return torch.tensor(weight, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)


def _traces(seed=0, n_pos=5, n_neg=4, n_in=6, n_out=3):
    gen = torch.Generator().manual_seed(seed)
    x_pos = F.normalize(torch.rand(n_pos, n_in, generator=gen, dtype=torch.float64), dim=1)
    x_neg = F.normalize(torch.rand(n_neg, n_in, generator=gen, dtype=torch.float64), dim=1)
    w = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
    return x_pos, F.relu(x_pos @ w.t()), x_neg, F.relu(x_neg @ w.t())


@pytest.mark.parametrize("theta", [0.0, 0.3, 2.0])
def test_eligibility_matches_loop_reference(theta):
    x_pos, a_pos, x_neg, a_neg = _traces()
    ref_w, ref_b = reference_eligibility(x_pos, a_pos, x_neg, a_neg, theta)
    out = hebbff_eligibility(x_pos, a_pos, x_neg, a_neg, theta)
    assert ref_w.abs().max() > 1e-3
    torch.testing.assert_close(out.weight, ref_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.bias, ref_b, rtol=1e-12, atol=1e-12)
    mean = hebbff_eligibility(x_pos[:4], a_pos[:4], x_neg, a_neg, theta, reduction="mean")
    ref_pos, _ = reference_eligibility(x_pos[:4], a_pos[:4], x_neg[:0], a_neg[:0], theta)
    ref_neg, _ = reference_eligibility(x_pos[:0], a_pos[:0], x_neg, a_neg, theta)
    torch.testing.assert_close(mean.weight, ref_pos / 4 + ref_neg / 4, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(goodness(a_pos), (a_pos ** 2).sum(1) / 3)


def test_step_updates_every_layer_in_place_with_weight_decay():
    torch.manual_seed(0)
    model = ForwardForwardMLP(10, (8, 6, 4), num_classes=3).double().requires_grad_(False)
    before = [(layer.weight.clone(), layer.bias.clone()) for layer in model.layers]
    x, y = torch.rand(7, 10, dtype=torch.float64), torch.randint(0, 3, (7,))
    y_neg = random_wrong_labels(y, 3)
    pos, neg = model.trace(x, y), model.trace(x, y_neg)
    rule = HebbFF(model.layers, lr=0.1, theta=0.05, weight_decay=0.01, reduction="sum")
    rule.step(pos, neg)
    for (w0, b0), layer, (xp, ap), (xn, an) in zip(before, model.layers, pos, neg):
        e = hebbff_eligibility(xp, ap, xn, an, 0.05)
        torch.testing.assert_close(layer.weight, (1 - 0.1 * 0.01) * w0 + 0.1 * e.weight)
        torch.testing.assert_close(layer.bias, (1 - 0.1 * 0.01) * b0 + 0.1 * e.bias)
        assert (layer.weight - w0).abs().max() > 1e-6
    assert rule.steps == 1


def test_state_dict_round_trip():
    rule = HebbFF([torch.nn.Linear(3, 2)], lr=0.2, theta=0.4, weight_decay=0.1, reduction="mean")
    rule.steps = 5
    other = HebbFF([torch.nn.Linear(3, 2)], lr=1.0, theta=0.0)
    other.load_state_dict(rule.state_dict())
    assert other.state_dict() == rule.state_dict()
    assert other.state_dict()["steps"] == 5 and other.theta == 0.4


def test_training_builds_no_autograd_graph():
    """The experiment's HebbFF epoch: no activation, parameter or grad ever requires / holds a gradient."""
    config = experiment.RunConfig(preset="deep-mnist", method="hebbff", lr=0.05, theta=0.05, epochs=1,
                                  batch_size=16, progress=False, device="cpu")
    model, rule = training.build(config, torch.device("cpu"))
    saved = []

    def pack(tensor):  # called whenever autograd saves a tensor for a backward pass
        saved.append(tensor.shape)
        return tensor

    x, y = torch.rand(48, 784), torch.randint(0, 10, (48,))
    before = model.layers[0].weight.clone()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        training.train_epoch(config, model, rule, x, y, torch.Generator().manual_seed(0), torch.device("cpu"))
        model.layers[0].weight.detach().clone().requires_grad_(True).pow(2).sum()  # control: this one saves
    assert len(saved) == 1
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert rule.steps == 3 and not torch.equal(before, model.layers[0].weight)


def test_negative_labels_never_true_and_cover_all_wrong_classes():
    y = torch.arange(10).repeat(2000)
    y_neg = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert not (y_neg == y).any()
    counts = torch.zeros(10, 10)
    counts.index_put_((y, y_neg), torch.ones(len(y)), accumulate=True)
    off_diagonal = counts[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 150 and off_diagonal.max() < 300  # ~222 each: uniform over the 9 wrong labels
    with pytest.raises(ValueError, match="labels must lie"):
        random_wrong_labels(torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match="at least 2"):
        random_wrong_labels(torch.tensor([0]), 1)


def test_saturating_theta_warns_once_and_good_theta_is_silent():
    torch.manual_seed(0)
    model = ForwardForwardMLP(10, (8,), num_classes=3).requires_grad_(False)
    x, y = torch.rand(6, 10), torch.randint(0, 3, (6,))
    y_neg = random_wrong_labels(y, 3)
    with pytest.warns(RuntimeWarning, match="saturated"):
        rule = HebbFF(model.layers, lr=1e-3, theta=50.0)
        rule.step(model.trace(x, y), model.trace(x, y_neg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule.step(model.trace(x, y), model.trace(x, y_neg))  # warned once already
        HebbFF(model.layers, lr=1e-3, theta=0.01).step(model.trace(x, y), model.trace(x, y_neg))


def test_ff_saturating_theta_warns():
    config = experiment.RunConfig(preset="wide-mnist", method="ff", lr=0.1, theta=40.0, epochs=1, batch_size=16,
                                  progress=False, device="cpu", hidden=(8,))
    model, learner = training.build(config, torch.device("cpu"))
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    with pytest.warns(RuntimeWarning, match="FF: every goodness gate of layer 0 is saturated"):
        training.train_epoch(config, model, learner, x, y, torch.Generator().manual_seed(0), torch.device("cpu"))
    good = experiment.RunConfig(**{**dataclasses.asdict(config), "theta": 0.5})  # initial goodness ~0.5
    model, learner = training.build(good, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training.train_epoch(good, model, learner, x, y, torch.Generator().manual_seed(0), torch.device("cpu"))


def test_bad_inputs_raise_clear_errors():
    x_pos, a_pos, x_neg, a_neg = _traces()
    with pytest.raises(ValueError, match="rows"):
        hebbff_eligibility(x_pos[:3], a_pos, x_neg, a_neg, 0.1)
    with pytest.raises(ValueError, match="different layer sizes"):
        hebbff_eligibility(x_pos, a_pos, x_neg[:, :5], a_neg, 0.1)
    with pytest.raises(ValueError, match="batch"):
        hebbff_eligibility(x_pos[0], a_pos, x_neg, a_neg, 0.1)
    with pytest.raises(ValueError, match="finite"):
        hebbff_eligibility(x_pos, a_pos, x_neg, a_neg, float("nan"))
    with pytest.raises(ValueError, match="reduction"):
        hebbff_eligibility(x_pos, a_pos, x_neg, a_neg, 0.1, reduction="max")
    layer = torch.nn.Linear(6, 3).double()
    rule = HebbFF([layer], lr=0.1, theta=0.1)
    with pytest.raises(ValueError, match="one"):
        rule.step([(x_pos, a_pos)] * 2, [(x_neg, a_neg)])
    with pytest.raises(ValueError, match="is 6->3"):
        rule.step([(x_pos, a_pos[:, :2])], [(x_neg, a_neg[:, :2])])
    with pytest.raises(TypeError, match="nn.Linear"):
        HebbFF([torch.nn.Conv2d(1, 1, 1)], lr=0.1, theta=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        HebbFF([layer], lr=0.0, theta=0.1)
    with pytest.raises(FloatingPointError, match="non-finite"):
        rule.step([(x_pos, a_pos * float("nan"))], [(x_neg, a_neg)])
    model = ForwardForwardMLP(6, (4,), num_classes=3)
    with pytest.raises(ValueError, match="expects inputs"):
        model.trace(torch.rand(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        model.trace(torch.rand(2, 6), torch.tensor([0, 3]))


def test_label_concatenation_and_vectorised_prediction():
    torch.manual_seed(0)
    model = ForwardForwardMLP(5, (6, 4), num_classes=3, label_scale=2.0).double()
    x = torch.rand(4, 5, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    inputs, _ = model.trace(x, labels)[1]
    assert inputs.shape == (4, 6 + 3)
    torch.testing.assert_close(inputs[:, :6].norm(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(inputs[:, 6:], 2.0 * F.one_hot(labels, 3).double())
    looped = torch.stack([model(x, torch.full((4,), c)).sum(1) for c in range(3)], dim=1)
    torch.testing.assert_close(model.label_goodness(x), looped)
    assert torch.equal(model.predict(x), looped.argmax(1))


def test_ff_and_bp_nan_loss_raise():
    for method, lr in (("ff", 1e30), ("bp", 1e30)):
        config = experiment.RunConfig(preset="wide-mnist", method=method, lr=lr, theta=0.05, epochs=1,
                                      batch_size=32, progress=False, device="cpu")
        model, learner = training.build(config, torch.device("cpu"))
        x, y = torch.rand(96, 784), torch.randint(0, 10, (96,))
        with pytest.raises(FloatingPointError, match="loss became"):
            training.train_epoch(config, model, learner, x, y, torch.Generator().manual_seed(0),
                                   torch.device("cpu"))
    assert isinstance(backprop_mlp(784, (4,), 10)[-1], torch.nn.Linear)


def _write_idx(path, array, magic):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.numpy().astype("uint8").tobytes())


def _fake_mnist(root, n_train=100, n_test=30):
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = (torch.rand(n, 28, 28, generator=gen) * 60).to(torch.uint8)
        for k in range(n):  # class-dependent bright rows: learnable
            images[k, 2 * int(labels[k]):2 * int(labels[k]) + 3] = 255
        _write_idx(root / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", images, 0x803)
        _write_idx(root / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", labels, 0x801)


def test_command_runs_all_methods_and_writes_one_table(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "data")
    monkeypatch.delenv("GHL_SNN_DATA", raising=False)
    out = tmp_path / "out"
    experiment.main(["--preset", "wide-mnist", "--methods", "hebbff", "ff", "bp", "--epochs", "1",
                     "--batch-size", "20", "--data-root", str(tmp_path / "data"), "--out", str(out),
                     "--lr-grid", "0.01", "0.03", "--theta-grid", "0.05", "--no-isolate", "--quiet",
                     "--hidden", "32", "16"])
    summary = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["hebbff", "ff", "bp"]
    for result in summary["results"]:
        assert 0.0 <= result["test_acc"] <= 1.0 and result["train_time_s"] > 0
        tried = {trial["lr"] for trial in result["grid"]}
        assert {0.01, 0.03} <= tried and result["lr"] in tried  # the grid, extended past an edge where needed
        assert (out / "wide-mnist" / result["method"] / "metrics.csv").exists()
    table = (out / "results.md").read_text()
    assert table.count("| wide-mnist |") == 3 and "peak_mib" in table
    with pytest.raises(FileNotFoundError, match="FashionMNIST"):  # the Python entry point raises
        experiment.main(["--preset", "wide-fashionmnist", "--methods", "bp", "--data-root", str(tmp_path / "data"),
                         "--out", str(out), "--quiet"])


def test_isolated_final_run(tmp_path):
    """The final run in a fresh process (clean RSS baseline) writes results the parent can read."""
    _fake_mnist(tmp_path / "data", n_train=50, n_test=10)
    results = experiment.run(experiment.parse_args([
        "--preset", "deep-mnist", "--methods", "hebbff", "--epochs", "1", "--batch-size", "20", "--lr", "0.05",
        "--theta", "0.05", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quiet",
        "--hidden", "16"]))
    assert results[0]["grid"] == [] and results[0]["peak_rss_mib"] > 0 and results[0]["train_samples"] == 40


def test_hebbff_learns_real_mnist(shared_data):
    """Fifty fast HebbFF steps with the experiment's defaults (standardised pixels, label scale, the middle of the
    lr / θ grids) lift real MNIST far above chance."""
    config = experiment.RunConfig(preset="deep-mnist", method="hebbff", lr=1.0, theta=0.5, epochs=1)
    split = mnist_split(str(shared_data), "MNIST", 0.2, seed=0, standardize=config.standardize)
    torch.manual_seed(0)
    model = ForwardForwardMLP(784, (256,), num_classes=10, label_scale=config.label_scale).requires_grad_(False)
    rule = HebbFF(model.layers, lr=experiment.DEFAULT_LR_GRID["hebbff"][1], theta=experiment.DEFAULT_THETA_GRID[1])
    gen = torch.Generator().manual_seed(0)
    for start in range(0, 6400, 128):
        x, y = split.train_x[start:start + 128], split.train_y[start:start + 128]
        rule.train_step(model, x, y, random_wrong_labels(y, 10, gen))
    accuracy = (model.predict(split.val_x[:1000]) == split.val_y[:1000]).float().mean().item()
    assert accuracy > 0.4, accuracy  # chance is 0.1


def test_resume_continues_bit_identically(tmp_path):
    _fake_mnist(tmp_path / "data", n_train=60, n_test=10)
    common = ["--preset", "deep-mnist", "--methods", "hebbff", "ff", "--batch-size", "16", "--lr-grid", "0.05",
              "--theta", "0.05", "--data-root", str(tmp_path / "data"), "--no-isolate", "--quiet",
              "--hidden", "12", "8"]
    experiment.main(common + ["--epochs", "3", "--out", str(tmp_path / "straight")])
    experiment.main(common + ["--epochs", "1", "--out", str(tmp_path / "resumed")])
    experiment.main(common + ["--epochs", "3", "--out", str(tmp_path / "resumed"), "--resume"])
    for method in ("hebbff", "ff"):
        straight = torch.load(tmp_path / "straight/deep-mnist" / method / "checkpoint.pt", weights_only=False)
        resumed = torch.load(tmp_path / "resumed/deep-mnist" / method / "checkpoint.pt", weights_only=False)
        assert straight["epoch"] == resumed["epoch"] == 3
        for key, value in straight["model"].items():
            assert torch.equal(value, resumed["model"][key]), key
        assert not torch.equal(straight["model"]["layers.0.weight"], torch.zeros(12, 794))
        assert [r["val_acc"] for r in straight["rows"]] == [r["val_acc"] for r in resumed["rows"]]
        assert (tmp_path / "resumed/deep-mnist" / method / "curves.png").stat().st_size > 0


def test_rule_collects_linear_layers_of_a_model():
    model = ForwardForwardMLP(6, (5, 4), num_classes=3)
    rule = HebbFF(model, lr=0.1, theta=0.1)
    assert rule.linear_layers == list(model.layers) and list(rule.layers) == ["0", "1"]


def test_readout_control_trains_only_the_softmax_layer():
    config = experiment.RunConfig(preset="wide-mnist", method="readout", lr=0.05, theta=None, epochs=1,
                                  batch_size=16, progress=False, device="cpu", hidden=(12, 8))
    model, optimizer = training.build(config, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.rand(48, 784), torch.randint(0, 10, (48,))
    training.train_epoch(config, model, optimizer, x, y, torch.Generator().manual_seed(0), torch.device("cpu"))
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert changed == [False] * (len(changed) - 2) + [True, True]  # only the read-out's weight and bias moved
    assert 0.0 <= training.evaluate("readout", model, x, y, torch.device("cpu")) <= 1.0


def test_finished_run_is_skipped_and_force_retrains(tmp_path, capsys):
    """A finished run with the same settings is not retrained (no grid search either); changed settings are
    refused with one clear error; ``--force`` trains again from scratch."""
    from ghl_snn.comparison.runner import RunExists

    _fake_mnist(tmp_path / "data", n_train=60, n_test=10)
    common = ["--preset", "deep-mnist", "--methods", "ff", "--batch-size", "16", "--lr-grid", "0.05", "0.1",
              "--theta", "0.05", "--data-root", str(tmp_path / "data"), "--no-isolate", "--quiet",
              "--hidden", "12", "8", "--epochs", "2", "--out", str(tmp_path / "out")]
    checkpoint = tmp_path / "out/deep-mnist/ff/checkpoint.pt"
    first = experiment.run(experiment.parse_args(common))[0]
    stamp = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    again = experiment.run(experiment.parse_args(common))[0]
    assert checkpoint.stat().st_mtime_ns == stamp  # nothing retrained, checkpoint untouched
    captured = capsys.readouterr()
    assert "not retrained" in captured.out + captured.err and "grid deep-mnist" not in captured.err
    assert again["test_acc"] == first["test_acc"] and again["lr"] == first["lr"]
    assert again["grid"] == first["grid"] and len(first["grid"]) >= 2
    with pytest.raises(RunExists, match=r"other settings \(batch_size: 16 -> 8\)"):
        experiment.run(experiment.parse_args([*common, "--batch-size", "8"]))
    with pytest.raises(RunExists, match="unfinished run .*--resume"):  # 2 of 3 epochs done
        experiment.run(experiment.parse_args([*common, "--epochs", "3"]))
    assert checkpoint.stat().st_mtime_ns == stamp
    forced = experiment.run(experiment.parse_args([*common, "--epochs", "3", "--force"]))[0]
    assert checkpoint.stat().st_mtime_ns != stamp
    state = torch.load(checkpoint, weights_only=False)
    assert state["epoch"] == 3 and [r["epoch"] for r in state["rows"]] == [1, 2, 3]
    assert forced["epochs"] == 3 and len(forced["grid"]) >= 2  # the grid was searched again
