"""The recurrent experiment's pieces on synthetic data: the network's read-out, every method's run record
(split-named scores, time per batch), learning on a separable task, the leaky read-out, the N-MNIST event-frame
sequences on a tiny N-MNIST tree, and the CLI's checks."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from ghl_snn.experiments import recurrent


def args(**overrides) -> argparse.Namespace:
    values = dict(hidden=24, beta=0.9, loss_steps=4, epochs=3, batch_size=16, device="cpu", adaptation=0.0, rho=0.95,
                  readout_decay=0.0, lr_schedule="constant",
                  rate_cost=0.0, rate_target=0.02)
    values.update(overrides)
    return argparse.Namespace(**values)


def synthetic(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by which half of the rows is bright."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (count,), generator=generator)
    images = torch.rand(count, 28, 28, generator=generator) * 60
    images[labels == 0, :14] += 150
    images[labels == 1, 14:] += 150
    return recurrent.row_sequences(images.clamp(max=255).to(torch.uint8)), labels


@pytest.mark.parametrize("method", ["eprop_symmetric", "eprop_random", "bptt", "reservoir"])
def test_every_method_learns_a_separable_sequence_task(method: str) -> None:
    data = {"train": synthetic(128, 0), "val": synthetic(64, 1), "test": synthetic(64, 2)}
    record = recurrent.make_run(args(epochs=4), data)(method, {"lr": 5e-3}, 0)
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert set(history[-1]) == {"epoch", "train_acc", "val_acc", "test_acc"}
    assert history[-1]["test_acc"] >= 0.8, history
    assert record["seconds_per_batch"] > 0


def test_cosine_schedule_follows_its_formula_and_reaches_zero_after_the_last_batch() -> None:
    net = recurrent.recurrent_network(6, 0.9, seed=0)
    optimizer, scheduler = recurrent.make_optimizer(net, 0.01, "cosine", 7)
    seen = []
    for _ in range(7):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01 * (1 + np.cos(np.pi * k / 7)) / 2 for k in range(7)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert abs(optimizer.param_groups[0]["lr"]) < 1e-15  # after the last batch
    constant, none = recurrent.make_optimizer(net, 0.01, "constant", 7)
    assert none is None and constant.param_groups[0]["lr"] == 0.01
    with pytest.raises(ValueError, match="schedule"):
        recurrent.make_optimizer(net, 0.01, "linear", 7)


def test_a_cosine_run_learns_the_separable_task() -> None:
    data = {"train": synthetic(128, 0), "val": synthetic(64, 1), "test": synthetic(64, 2)}
    record = recurrent.make_run(args(epochs=4, lr_schedule="cosine"), data)("eprop_symmetric", {"lr": 1e-2}, 0)
    assert record["history"][-1]["test_acc"] >= 0.8, record["history"]


def test_rate_regulariser_reaches_bptt_and_the_eprop_rows_only() -> None:
    spikes = [torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])]
    # rates (3/4, 1/4) against 0.25: (2 / 2) (0.5^2 + 0) = 0.25
    assert float(recurrent.rate_penalty(spikes, 2.0, 0.25)) == pytest.approx(0.25)
    net = recurrent.recurrent_network(6, 0.9, seed=0)
    for method, cost in [("eprop_symmetric", 2.0), ("eprop_random", 2.0), ("feedback_sign", 0.0),
                         ("reservoir", 2.0)]:
        assert recurrent.make_learner(method, net, 4, 0, 0.0, 2.0, 0.1).rate_cost == cost
    rows, labels = synthetic(64, 0)
    rates = {}
    for cost in (0.0, 50.0):  # BPTT descends the penalty: a large cost toward silence lowers the firing rate
        net = recurrent.recurrent_network(24, 0.9, seed=0)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(15):
            recurrent.train_step("bptt", net, None, optimizer, rows, labels, 4, 0.0, cost, 0.0)
        spikes: list[torch.Tensor] = []
        with torch.no_grad():
            recurrent.readout_steps(net, rows, 4, spikes=spikes)
        rates[cost] = float(torch.stack(spikes).mean())
    assert rates[0.0] > 0.02 and rates[50.0] < 0.5 * rates[0.0], rates


def test_leaky_readout_steps_filter_the_readout() -> None:
    net = recurrent.recurrent_network(12, 0.9, seed=0)
    rows = synthetic(5, 0)[0][:6]
    with torch.no_grad():
        plain = recurrent.readout_steps(net, rows, 6)
        leaky = recurrent.readout_steps(net, rows, 3, readout_decay=0.5)
    expected = 0.0
    for t in range(6):
        expected = 0.5 * expected + plain[t]
        if t >= 3:
            torch.testing.assert_close(leaky[t - 3], expected)


def test_event_frames_become_pooled_step_inputs() -> None:
    frames = (torch.rand(3, 5, 2, 34, 34) < 0.3).to(torch.uint8)
    sequences = recurrent.event_frame_sequences(frames, 2)
    assert sequences.shape == (5, 3, 2 * 17 * 17)
    expected = frames[1, 4].float().reshape(2, 17, 2, 17, 2).mean((2, 4)).flatten()
    torch.testing.assert_close(sequences[4, 1], expected)
    assert torch.equal(recurrent.event_frame_sequences(frames, 1)[2, 0], frames[0, 2].float().flatten())


@pytest.fixture(scope="module")
def tiny_nmnist(tmp_path_factory: pytest.TempPathFactory, write_bar_nmnist) -> Path:
    """15 recordings of ``<root>/NMNIST-small/NMNIST/{Train,Test}/<digit>/<i>.bin``; digit d: a bar at x = 8 d + 4."""
    return write_bar_nmnist(tmp_path_factory.mktemp("data"), spacing=8, train_per_digit=4, events=300)


def test_nmnist_folds_give_disjoint_runs_of_event_sequences(tiny_nmnist: Path) -> None:
    settings = argparse.Namespace(data_root=str(tiny_nmnist), dataset="nmnist-small", time_bins=6, pool=2)
    splits_of = recurrent.load_data(settings)
    val_sets = []
    for seed in (0, 1, 2):
        splits = splits_of(seed)
        assert all(x.shape[0] == 6 and x.shape[2] == 2 * 17 * 17 for x, _ in splits.values())
        assert sum(y.shape[0] for _, y in splits.values()) == 15
        assert splits["train"][0].sum() > 0
        val_sets.append(splits["val"][1])
    assert torch.equal(val_sets[0], val_sets[1])  # one validation fold; the test fold moves with the run
    assert not torch.equal(splits_of(0)["test"][0], splits_of(1)["test"][0])
    run = recurrent.make_run(args(epochs=1, batch_size=4, readout_decay=0.8, loss_steps=0), splits_of)
    record = run("eprop_random", {"lr": 1e-2}, 1)
    assert set(record["history"][0]) == {"epoch", "train_acc", "val_acc", "test_acc"}


def test_feedback_sign_writes_hidden_updates_and_a_full_record() -> None:
    """FeedbackSign's one window-level sign per weight makes its accuracy on this small task erratic from seed to
    seed (as in the recorded experiment, where it trails e-prop), so its run is checked for what it writes: a record
    per epoch with every split, and updates of the input and recurrent weights."""
    data = {"train": synthetic(64, 0), "val": synthetic(32, 1), "test": synthetic(32, 2)}
    record = recurrent.make_run(args(epochs=2), data)("feedback_sign", {"lr": 5e-3}, 0)
    assert [set(row) for row in record["history"]] == [{"epoch", "train_acc", "val_acc", "test_acc"}] * 2
    net = recurrent.recurrent_network(24, 0.9, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner = recurrent.make_learner("feedback_sign", net, 4, 0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    rows, labels = data["train"]
    loss = recurrent.train_step("feedback_sign", net, learner, optimizer, rows, labels, 4)
    assert torch.isfinite(torch.tensor(loss))
    for name in ("0.weight", "1.recurrent.weight", "2.weight"):
        assert not torch.equal(before[name], net.state_dict()[name]), name


def test_reservoir_changes_only_the_readout() -> None:
    data = {"train": synthetic(32, 0), "val": synthetic(16, 1), "test": synthetic(16, 2)}
    net = recurrent.recurrent_network(24, 0.9, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner = recurrent.make_learner("reservoir", net, 4, 0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    rows, labels = data["train"]
    recurrent.train_step("reservoir", net, learner, optimizer, rows, labels, 4)
    after = net.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"])
    assert torch.equal(before["1.recurrent.weight"], after["1.recurrent.weight"])
    assert not torch.equal(before["2.weight"], after["2.weight"])


def test_chance_is_the_majority_class() -> None:
    data = {"train": synthetic(40, 0), "val": synthetic(20, 1), "test": synthetic(20, 2)}
    record = recurrent.make_run(args(), data)("chance", {}, 0)
    majority = int(torch.bincount(data["train"][1]).argmax())
    assert record["history"][0]["test_acc"] == float((data["test"][1] == majority).float().mean())


def test_cli_rejects_unknown_methods_and_bad_beta(capsys) -> None:
    assert recurrent.cli_main(["--methods", "eprop_symmetric,sgd"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert recurrent.cli_main(["--beta", "1.5"]) == 2
    assert "--beta" in capsys.readouterr().err
