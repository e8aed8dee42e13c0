"""The row-wise MNIST experiment's pieces on synthetic data: the network's read-out, every method's run record
(split-named scores, time per batch), learning on a separable task, and the CLI's checks."""
from __future__ import annotations

import argparse

import pytest
import torch

from ghl_snn.experiments import recurrent


def args(**overrides) -> argparse.Namespace:
    values = dict(hidden=24, beta=0.9, loss_steps=4, epochs=3, batch_size=16, device="cpu")
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


@pytest.mark.parametrize("method", ["eprop_symmetric", "eprop_random", "feedback_sign", "bptt", "reservoir"])
def test_every_method_learns_a_separable_sequence_task(method: str) -> None:
    data = {"train": synthetic(128, 0), "val": synthetic(64, 1), "test": synthetic(64, 2)}
    record = recurrent.make_run(args(epochs=4), data)(method, {"lr": 5e-3}, 0)
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert set(history[-1]) == {"epoch", "train_acc", "val_acc", "test_acc"}
    assert history[-1]["test_acc"] >= 0.8, history
    assert record["seconds_per_batch"] > 0


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
