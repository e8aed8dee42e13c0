"""The spiking MNIST rows through the comparison engine (``mnist_snn_compare``): per-layer learning rates tuned on
validation, every score named by its split, the hybrids' controls, stored trials reused."""
from __future__ import annotations

import json
import struct

import pytest
import torch

from ghl_snn.experiments import cli, mnist_snn_compare


def write_idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 96), ("t10k", 24)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 28, 28), generator=generator)
        images[torch.arange(n), labels * 2 + 3] = 255  # a learnable row per class
        write_idx(root / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", labels)
    return root


def test_hybrid_rows_tune_both_layers_on_validation_and_store_every_split(mnist_root, tmp_path):
    argv = ["--data-root", str(mnist_root), "--out", str(tmp_path), "--methods", "grad_sign_sgd_readout",
            "readout_sgd", "--listed-only", "--train-subset", "64", "--val-size", "32", "--test-subset", "24",
            "--epochs", "1", "--hidden", "16", "--steps", "3", "--batch-size", "16", "--sign-grid", "0.01",
            "0.1", "--grad-grid", "0.1", "1", "--device", "cpu", "--quiet"]
    mnist_snn_compare.main(argv)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [m["name"] for m in stored["methods"]] == ["grad_sign_sgd_readout", "readout_sgd"]
    hybrid = stored["chosen"]["grad_sign_sgd_readout"]
    assert set(hybrid["hparams"]) == {"lr_hidden", "lr_readout"}
    assert set(stored["chosen"]["readout_sgd"]["hparams"]) == {"lr_readout"}  # the frozen control: one rate
    for name in ("lr_hidden", "lr_readout"):
        assert hybrid["hparams"][name] in hybrid["values"][name]
        edge = hybrid["edges"][name]
        values = hybrid["values"][name]
        assert edge == ("lower" if hybrid["hparams"][name] == values[0] else
                        "upper" if hybrid["hparams"][name] == values[-1] else None)
    assert {(c["method"], c["control"]) for c in stored["comparisons"]} == {("grad_sign_sgd_readout", "readout_sgd")}
    for trial in stored["trials"]:
        assert {"train_acc", "val_acc", "test_acc"} <= set(trial["history"][-1])
    # the final test scores are the last epoch's test accuracy of the runs at the chosen values, seeds 0-2
    finals = [t for t in stored["trials"] if t["method"] == "readout_sgd"
              and t["hparams"] == stored["chosen"]["readout_sgd"]["hparams"]]
    assert sorted(t["seed"] for t in finals) == [0, 1, 2]
    assert stored["final"]["readout_sgd"]["test"] == [t["history"][-1]["test_acc"]
                                                      for t in sorted(finals, key=lambda t: t["seed"])]
    with pytest.raises(cli.CliError, match="--resume"):
        mnist_snn_compare.main(argv)
    before = len(stored["trials"])
    mnist_snn_compare.main(argv + ["--resume"])
    assert len(json.loads((tmp_path / "results.json").read_text())["trials"]) == before
