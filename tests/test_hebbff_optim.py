"""HebbFF with any torch optimiser: ``mode="grad"`` writes −ΔW/η of the fused step into ``.grad``."""
import copy
import json

import torch.nn.functional as F

import pytest
import torch

from ghl_snn import ForwardForwardMLP, HebbFF
from ghl_snn.models.goodness import best_layer_range
from ghl_snn.rules.hebbff import random_wrong_labels

from test_hebbff import reference_eligibility


def _model_and_batch(seed=0, hidden=(7, 5, 4), classes=3, batch=6):
    torch.manual_seed(seed)
    model = ForwardForwardMLP(9, hidden, num_classes=classes, label_scale=1.5).double().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 9, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (batch,), generator=gen)
    return model, x, y, random_wrong_labels(y, classes, gen)


@pytest.mark.parametrize("entry", ["train_step", "step"])
@pytest.mark.parametrize("reduction, weight_decay", [("mean", 0.0), ("sum", 0.05)])
def test_grad_is_fused_update_over_lr(entry, reduction, weight_decay):
    """``.grad`` equals (fused step's update) / (−lr), and both equal the float64 loop reference of Eq. 3-4."""
    lr, theta = 0.3, 0.4
    model, x, y, y_neg = _model_and_batch()
    fused, grads = model, copy.deepcopy(model)
    positive, negative = model.trace(x, y), model.trace(x, y_neg)  # the traces both learners see
    before = [(layer.weight.clone(), layer.bias.clone()) for layer in model.layers]
    learners = [HebbFF(fused.layers, lr=lr, theta=theta, weight_decay=weight_decay, reduction=reduction),
                HebbFF(grads.layers, theta=theta, weight_decay=weight_decay, reduction=reduction, mode="grad")]
    for learner, net in zip(learners, (fused, grads)):
        if entry == "train_step":
            learner.train_step(net, x, y, y_neg)
        else:
            learner.step(net.trace(x, y), net.trace(x, y_neg))
    for (w0, b0), after, written, (xp, ap), (xn, an) in zip(before, fused.layers, grads.layers, positive, negative):
        assert torch.equal(written.weight, w0) and torch.equal(written.bias, b0)  # grad mode writes no weight
        update_w, update_b = after.weight - w0, after.bias - b0
        assert update_w.abs().max() > 1e-4
        torch.testing.assert_close(written.weight.grad, -update_w / lr, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(written.bias.grad, -update_b / lr, rtol=1e-9, atol=1e-12)
        ref_w, ref_b = reference_eligibility(xp, ap, xn, an, theta)  # loops over samples, units, inputs
        if reduction == "mean":
            ref_w, ref_b = ref_w / x.shape[0], ref_b / x.shape[0]  # equal phase sizes
        torch.testing.assert_close(written.weight.grad, weight_decay * w0 - ref_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(written.bias.grad, weight_decay * b0 - ref_b, rtol=1e-9, atol=1e-12)


def test_sgd_reproduces_fused_step_and_other_optimisers_are_one_line():
    model, x, y, y_neg = _model_and_batch(seed=1)
    fused, with_sgd, with_adam, with_momentum = (copy.deepcopy(model) for _ in range(4))
    fused_learner = HebbFF(fused.layers, lr=0.2, theta=0.5)
    sgd = torch.optim.SGD(with_sgd.parameters(), lr=0.2)
    adam = torch.optim.Adam(with_adam.parameters(), lr=1e-3)
    momentum = torch.optim.SGD(with_momentum.parameters(), lr=0.2, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(momentum, step_size=1, gamma=0.5)
    learners = [HebbFF(net.layers, theta=0.5, mode="grad") for net in (with_sgd, with_adam, with_momentum)]
    start = [p.clone() for p in model.parameters()]
    grads = []
    for step in range(3):
        fused_learner.train_step(fused, x, y, y_neg)
        for learner, net, optimizer in zip(learners, (with_sgd, with_adam, with_momentum), (sgd, adam, momentum)):
            optimizer.zero_grad()
            learner.train_step(net, x, y, y_neg)
            if step == 0 and optimizer is adam:
                grads = [p.grad.clone() for p in net.parameters()]
            optimizer.step()
        schedule.step()
    for a, b in zip(fused.parameters(), with_sgd.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Adam's first step moves every weight with a non-zero .grad by lr against its sign (bias-corrected m / sqrt(v))
    adam_once = copy.deepcopy(model)
    first = torch.optim.Adam(adam_once.parameters(), lr=1e-3)
    HebbFF(adam_once.layers, theta=0.5, mode="grad").train_step(adam_once, x, y, y_neg)
    first.step()
    for p0, p1, g in zip(start, adam_once.parameters(), grads):
        moving = g.abs() > 1e-6
        assert moving.any()
        torch.testing.assert_close((p1 - p0)[moving], -1e-3 * g[moving].sign(), rtol=1e-4, atol=1e-9)
    assert momentum.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 ** 3)
    assert not torch.equal(with_momentum.layers[0].weight, with_sgd.layers[0].weight)


def test_grad_mode_errors_and_state():
    layer = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="needs a learning rate"):
        HebbFF([layer], theta=0.5)
    with pytest.raises(ValueError, match="mode must be"):
        HebbFF([layer], lr=0.1, theta=0.5, mode="adam")
    learner = HebbFF([layer], theta=0.5, mode="grad")
    assert learner.state_dict()["mode"] == "grad" and "mode='grad'" in repr(learner)
    other = HebbFF([layer], lr=0.1, theta=0.5)
    other.load_state_dict(learner.state_dict())
    assert other.mode == "grad"


# ---------------------------------------------------------------------------------------------- the experiment
from ghl_snn.experiments import hebbff as experiment  # noqa: E402
from ghl_snn.experiments import hebbff_training as training  # noqa: E402


def _config(method, **overrides):
    settings = dict(preset="deep-mnist", method=method, lr=0.01, theta=0.5, epochs=1, batch_size=12,
                    progress=False, device="cpu", hidden=(10, 8, 6))
    return experiment.RunConfig(**{**settings, **overrides})


def _loop_prediction(model, x, layers=(0, 2)):
    """Reference: every candidate label through model.trace, goodness summed over layers first..last."""
    first, last = layers
    scores = torch.stack([torch.stack([a.pow(2).mean(1) for _, a in model.trace(x, torch.full((x.shape[0],), c))
                                       ][first:last + 1]).sum(0) for c in range(model.num_classes)], dim=1)
    return scores.argmax(1)


@pytest.mark.parametrize("method, layers", [("hebbff", (0, 2)), ("hebbff-adam", (1, 2)), ("ff", (0, 0)),
                                            ("ff-sgd", (1, 1))])
def test_train_acc_is_goodness_prediction_before_the_update(method, layers):
    torch.manual_seed(0)
    config = _config(method, goodness_layers=layers, train_acc_rows=12)
    model, learner = training.build(config, torch.device("cpu"))
    x, y = torch.rand(12, 784), torch.arange(12) % 10
    expected = (_loop_prediction(copy.deepcopy(model), x, layers) == y).float().mean().item()
    before = model.layers[0].weight.clone()
    trainer = training.make_trainer(config, model, learner, torch.Generator().manual_seed(0))
    row = trainer.train_epoch([(x, y)], 0)
    assert row["train_acc"] == pytest.approx(expected) and not torch.equal(before, model.layers[0].weight)
    # half the rows scored: the accuracy of those rows only
    torch.manual_seed(0)
    half = _config(method, goodness_layers=layers, train_acc_rows=6)
    model, learner = training.build(half, torch.device("cpu"))
    expected = (_loop_prediction(copy.deepcopy(model), x[:6], layers) == y[:6]).float().mean().item()
    row = training.make_trainer(half, model, learner, torch.Generator().manual_seed(0)).train_epoch([(x, y)], 0)
    assert row["train_acc"] == pytest.approx(expected)


def test_hebbff_adam_run_applies_adam_to_the_hebbff_grad():
    torch.manual_seed(0)
    config = _config("hebbff-adam", lr=1e-3)
    model, learner = training.build(config, torch.device("cpu"))
    assert learner.mode == "grad"
    start = copy.deepcopy(model)
    x, y = torch.rand(12, 784), torch.arange(12) % 10
    generator = torch.Generator().manual_seed(0)
    trainer = training.make_trainer(config, model, learner, generator)
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    trainer.train_epoch([(x, y)], 0)
    # reference: the same wrong labels, the HebbFF .grad, one Adam step of lr 1e-3 = -lr sign(grad)
    y_neg = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    HebbFF(start.layers, theta=0.5, mode="grad").train_step(start, x, y, y_neg)
    for p0, p1 in zip(start.parameters(), model.parameters()):
        moving = p0.grad.abs() > 1e-4  # Adam's eps (1e-8) is negligible there
        assert moving.any()
        torch.testing.assert_close(p1[moving], (p0 - 1e-3 * p0.grad.sign())[moving], rtol=1e-4, atol=1e-7)


def test_readout_control_is_hebbffs_initial_network_frozen():
    torch.manual_seed(0)
    hebbff_model, _ = training.build(_config("hebbff"), torch.device("cpu"))
    torch.manual_seed(0)
    config = _config("readout", theta=None, lr=0.05)
    control, optimizer = training.build(config, torch.device("cpu"))
    for a, b in zip(hebbff_model.parameters(), control.network.parameters()):
        assert torch.equal(a, b)  # the same initialised network as HebbFF's
    x, y = torch.rand(24, 784), torch.arange(24) % 10
    # reference features: neutral label s/C in every class, each layer's activity normalised, concatenated
    h, parts = x, []
    for layer in hebbff_model.layers:
        neutral = torch.full((24, 10), config.label_scale / 10)
        h = F.relu(layer(torch.cat([F.normalize(h, dim=1, eps=1e-8), neutral], dim=1)))
        parts.append(F.normalize(h, dim=1, eps=1e-8))
    torch.testing.assert_close(control.features(x), torch.cat(parts, 1), rtol=1e-5, atol=1e-6)
    frozen = [p.clone() for p in control.network.parameters()]
    training.train_epoch(config, control, optimizer, x, y, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(frozen, control.network.parameters()))
    assert control.readout.weight.grad is not None and control.readout.weight.shape == (10, 24)


def test_best_layer_range_scores_every_range_and_prefers_longer_on_ties():
    gen = torch.Generator().manual_seed(0)
    per_layer = torch.rand(40, 4, 3, generator=gen)
    labels = torch.randint(0, 4, (40,), generator=gen)
    accuracy = {(f, l): (per_layer[:, :, f:l + 1].sum(2).argmax(1) == labels).float().mean().item()
                for f in range(3) for l in range(f, 3)}
    best = max(accuracy.values())
    expected = min((r for r, a in accuracy.items() if a == best), key=lambda r: (r[0] - r[1], r[0]))
    assert best_layer_range(per_layer, labels) == expected
    tied = torch.zeros(5, 4, 3)
    tied[:, 1, :] = 1.0  # every range predicts class 1
    assert best_layer_range(tied, torch.ones(5, dtype=torch.long)) == (0, 2)
    only_last = torch.rand(30, 4, 3, generator=gen)
    truth = torch.randint(0, 4, (30,), generator=gen)
    only_last[torch.arange(30), truth, 2] += 10.0   # layer 2 alone is perfect, the others noise
    only_last[:, :, :2] *= 100.0
    assert best_layer_range(only_last, truth) == (2, 2)
    with pytest.raises(ValueError, match="goodness_layers"):
        training.build(_config("hebbff", goodness_layers=(2, 1)), torch.device("cpu"))


def test_selection_extends_the_grid_past_an_edge(monkeypatch):
    """A score peaked at lr = 0.27, θ = 0.5: the grid {0.01, 0.03} x {0.5, 1} is extended upwards by its own ratio
    (x3) until the best lr is interior; θ's best (0.5) is on the lower edge and is extended downwards.  Every
    candidate is trained on both tuning seeds, each with its own split."""
    import math

    seen = []

    def fake_fit(config, split, run_dir=None, test=True):
        seen.append((config.seed, split))
        return {"val_acc": 1.0 - (math.log(config.lr / 0.27)) ** 2 - (math.log(config.theta / 0.5)) ** 2}

    monkeypatch.setattr(experiment, "fit", fake_fit)
    config = _config("hebbff")
    lr, theta, trials, edges = experiment.select_hyperparameters(config, lambda seed: f"split{seed}", [0.01, 0.03],
                                                                 [0.5, 1.0], 1, None, seeds=(3, 4))
    assert lr == pytest.approx(0.27) and theta == 0.5 and edges == []
    assert set(seen) == {(3, "split3"), (4, "split4")} and len(seen) == len(trials) == 2 * len(
        {(t["lr"], t["theta"]) for t in trials})
    tried_lr = sorted({t["lr"] for t in trials})
    assert tried_lr == pytest.approx([0.01, 0.03, 0.09, 0.27, 0.81])
    assert sorted({t["theta"] for t in trials}) == pytest.approx([0.25, 0.5, 1.0])
    # the mean over the seeds decides: lr 0.01 is best on seed 0 alone, 0.03 on the mean
    per_seed = {0.01: (0.9, 0.1), 0.03: (0.6, 0.6), 0.09: (0.2, 0.2)}  # lr -> val acc on seeds 0, 1
    monkeypatch.setattr(experiment, "fit", lambda config, split, run_dir=None, test=True: {
        "val_acc": per_seed.get(round(config.lr, 10), (0.0, 0.0))[config.seed]})
    lr, _, _, edges = experiment.select_hyperparameters(config, lambda seed: None, [0.01, 0.03, 0.09], [0.5], 1, None)
    assert lr == pytest.approx(0.03) and edges == []
    # capped: a peak far beyond the grid stays on the (extended) edge and is reported as such
    monkeypatch.setattr(experiment, "fit", lambda config, split, run_dir=None, test=True: {"val_acc": config.lr})
    lr, _, trials, edges = experiment.select_hyperparameters(config, lambda seed: None, [0.01, 0.03], [0.5], 1, None,
                                                             max_extend=2)
    assert lr == pytest.approx(0.27) and edges == ["lr"] and len({t["lr"] for t in trials}) == 4
    # FF with plain SGD needs rates ~ η n/2 in the thousands: no bound of the grid gets in the way
    lr, _, _, edges = experiment.select_hyperparameters(config, lambda seed: None, [300.0, 1000.0, 3000.0], [0.5], 1,
                                                        None, max_extend=1)
    assert lr == pytest.approx(3000.0 * 10 ** 0.5) and edges == ["lr"]  # one step of the grid ratio sqrt(10)
    with pytest.raises(ValueError, match="theta candidates"):
        experiment.select_hyperparameters(config, lambda seed: None, [0.01, 0.03], [0.0, 0.5], 1, None)


def test_tables_over_seeds_give_mean_sd_and_paired_intervals(tmp_path):
    from ghl_snn.experiments import hebbff_tables

    accuracy = {"hebbff": [0.70, 0.72, 0.74], "ff-sgd": [0.69, 0.70, 0.71], "readout": [0.50, 0.52, 0.48]}
    folders = []
    for seed in range(3):
        for method, values in accuracy.items():
            run = tmp_path / f"seed{seed}" / "deep-fashionmnist" / method
            run.mkdir(parents=True)
            result = {"preset": "deep-fashionmnist", "method": method, "test_acc": values[seed], "val_acc": 0.5,
                      "lr": 0.1, "theta": None if method == "readout" else 0.5, "epochs": 2, "train_time_s": 10.0,
                      "peak_mib": 20.0}
            (run / "results.json").write_text(json.dumps(result))
        folders.append(tmp_path / f"seed{seed}")
    text = hebbff_tables.tables(folders)
    assert "| HebbFF (SGD, fused step) | 3 | 72.00 ± 2.00 | 70.0 / 72.0 / 74.0 |" in text
    # hebbff - ff-sgd per seed: +1, +2, +3 points: mean 2, sd 1, half-width t(0.975, 2) * 1 / sqrt(3) = 2.484
    assert "| hebbff − ff-sgd | +2.00 | [-0.48, +4.48] | no | 3 |" in text
    # hebbff - readout: +20, +20, +26: mean 22, sd 3.464, half 8.606 -> [13.39, 30.61], real
    assert "| hebbff − readout | +22.00 | [+13.39, +30.61] | yes | 3 |" in text
    assert "control: chance | | 10.00" in text.replace("|  |", "| |")
    # the same runs as one command with --seeds 3 writes them (<method>/seed<k>/, each run's seed recorded): the
    # same table, runs paired by seed whatever order the folder lists them in
    for seed in (2, 0, 1):
        for method, values in accuracy.items():
            source = json.loads((tmp_path / f"seed{seed}" / "deep-fashionmnist" / method / "results.json").read_text())
            run = tmp_path / "seeds" / "deep-fashionmnist" / method / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps({**source, "seed": seed}))
    assert hebbff_tables.tables([tmp_path / "seeds"]) == text
    with pytest.raises(ValueError, match="seed given twice"):
        hebbff_tables.tables([tmp_path / "seeds", tmp_path / "seeds"])
    with pytest.raises(ValueError, match="no run"):
        hebbff_tables.tables([tmp_path / "missing"])


def test_table_records_carry_each_runs_validation_curve(tmp_path):
    from ghl_snn.experiments import hebbff_tables

    for method in ("hebbff", "readout"):
        run = tmp_path / "seed0" / "deep-mnist" / method
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"preset": "deep-mnist", "method": method, "seed": 0,
                                                      "test_acc": 0.8, "val_acc": 0.79}))
    (tmp_path / "seed0" / "deep-mnist" / "hebbff" / "metrics.csv").write_text(
        "epoch,train_seconds,train_stat,train_acc,val_acc,val_loss\n1,2.0,0.6,0.5,0.71,\n2,2.0,0.7,0.6,0.79,\n")
    records = {r["method"]: r for r in hebbff_tables.records([tmp_path / "seed0"])}
    assert records["hebbff"]["val_acc_per_epoch"] == [0.71, 0.79]  # one value per epoch, in epoch order
    assert records["readout"]["val_acc_per_epoch"] is None  # no metrics.csv beside its results


def test_tables_mark_a_value_chosen_on_a_grid_edge(tmp_path):
    from ghl_snn.experiments import hebbff_tables

    for method, edges in (("hebbff", ["theta"]), ("ff-sgd", [])):
        run = tmp_path / "seed0" / "wide-mnist" / method
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({
            "preset": "wide-mnist", "method": method, "seed": 0, "test_acc": 0.8, "val_acc": 0.79, "lr": 1.0,
            "theta": 0.03125, "epochs": 2, "train_time_s": 1.0, "peak_mib": 1.0, "grid_edges": edges}))
    text = hebbff_tables.tables([tmp_path / "seed0"])
    hebbff_row, ff_row = (next(line for line in text.splitlines() if line.startswith(f"| {label} "))
                          for label in (hebbff_tables.LABELS["hebbff"], hebbff_tables.LABELS["ff-sgd"]))
    assert "| 1 | 0.03125 (edge) |" in hebbff_row  # θ on the edge, lr interior
    assert "| 1 | 0.03125 |" in ff_row and "edge" not in ff_row
    records = {r["method"]: r["grid_edges"] for r in hebbff_tables.records([tmp_path / "seed0"])}
    assert records == {"hebbff": ["theta"], "ff-sgd": []}  # kept in the compact records


def test_chosen_from_reuses_another_runs_lr_and_theta(tmp_path):
    from test_hebbff import _fake_mnist

    _fake_mnist(tmp_path / "data", n_train=60, n_test=10)
    common = ["--preset", "wide-mnist", "--methods", "hebbff", "bp", "--epochs", "1", "--batch-size", "16",
              "--data-root", str(tmp_path / "data"), "--no-isolate", "--quiet", "--hidden", "8"]
    first = experiment.run(experiment.parse_args(common + ["--lr-grid", "0.01", "0.1", "--theta-grid", "0.5",
                                                           "--out", str(tmp_path / "seed0")]))
    again = experiment.run(experiment.parse_args(common + ["--seed", "1", "--chosen-from", str(tmp_path / "seed0"),
                                                           "--out", str(tmp_path / "seed1")]))
    for a, b in zip(first, again):
        assert (a["method"], a["lr"], a["theta"]) == (b["method"], b["lr"], b["theta"])
        assert len(a["grid"]) >= 2 and b["grid"] == []  # no search the second time
        assert b["grid_edges"] == a["grid_edges"]  # a value chosen on an edge stays marked where it is reused
    assert any(a["grid_edges"] for a in first), [a["grid_edges"] for a in first]  # so the line above can fail
    other = experiment.run(experiment.parse_args(common[:1] + ["deep-mnist"] + common[2:] + [
        "--chosen-from", str(tmp_path / "seed0"), "--chosen-preset", "wide-mnist", "--out", str(tmp_path / "deep")]))
    assert [(r["preset"], r["lr"]) for r in other] == [("deep-mnist", a["lr"]) for a in first]
    with pytest.raises(ValueError, match="chosen-from: .* holds no finished hebbff run of deep-mnist"):
        experiment.run(experiment.parse_args(common[:1] + ["deep-mnist"] + common[2:] + [
            "--chosen-from", str(tmp_path / "seed0"), "--out", str(tmp_path / "seed2")]))


def test_chosen_from_reads_a_several_seeds_folder(tmp_path):
    """``--chosen-from`` on the ``--out`` of a ``--seeds N`` command takes its first seed's values."""
    for seed, lr in ((10, 9.0), (1, 0.3), (2, 0.7)):
        run = tmp_path / "deep-mnist" / "hebbff" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"lr": lr, "theta": 0.5}))
    assert experiment.chosen_values(tmp_path, "deep-mnist", "hebbff") == {"lr": 0.3, "theta": 0.5, "edges": []}
    with pytest.raises(ValueError, match="holds no finished ff run"):
        experiment.chosen_values(tmp_path, "deep-mnist", "ff")
