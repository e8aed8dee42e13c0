"""The spiking MNIST rows through the comparison engine (``mnist_snn_compare``): per-layer learning rates tuned on
validation, every score named by its split, the hybrids' controls, stored trials reused."""
from __future__ import annotations

import json
import struct

import pytest
import torch

from ghl_snn.experiments import mnist_snn_compare


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


def test_hybrid_rows_tune_both_layers_on_validation_and_store_every_split(mnist_root, tmp_path,
                                                                        finished_comparison_is_reused):
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
    finished_comparison_is_reused(mnist_snn_compare.main, argv, tmp_path / "results.json")


def test_cifar_rows_tune_on_validation_with_the_frozen_readout_control_and_chance(tmp_path, tiny_cifar_root):
    """``cifar_compare``: the read-out-only control tunes its head's rate with the convolutions frozen (they end
    where they started), every other row its convolutions' rate; chance joins as the control's control."""
    from ghl_snn.experiments import cifar_compare

    out = tmp_path / "out"
    cifar_compare.main(["--data-root", str(tiny_cifar_root), "--out", str(out), "--methods", "sign", "--pool", "50",
                        "--val-fraction", "0.2", "--test-subset", "20", "--epochs", "1", "--width", "0.0625",
                        "--device", "cpu", "--quiet"])
    stored = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in stored["methods"]] == ["sign", "readout", "bp", "chance"]
    assert set(stored["chosen"]["readout"]["hparams"]) == {"head_lr"}
    assert set(stored["chosen"]["sign"]["hparams"]) == {"conv_lr"}
    assert {(c["method"], c["control"]) for c in stored["comparisons"]} == {
        ("sign", "readout"), ("sign", "bp"), ("bp", "readout"), ("readout", "chance")}
    for trial in stored["trials"]:
        assert {"train_acc", "val_acc", "test_acc"} <= set(trial["history"][-1])
    # the control's convolutions stay at their initialisation: a rerun of its run leaves them equal to a fresh net
    import torch

    from ghl_snn.models import MODELS
    seen = {}
    original = cifar_compare.Trainer.train_epoch

    def spy(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        seen["weights"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return result
    cifar_compare.Trainer.train_epoch = spy
    try:
        run = cifar_compare.make_run({"device": "cpu", "data_root": str(tiny_cifar_root), "pool": 50,
                                      "val_fraction": 0.2,
                                      "test_subset": 20, "epochs": 1, "width": 0.0625, "quiet": True})
        run("readout", {"head_lr": 0.05}, 0)
    finally:
        cifar_compare.Trainer.train_epoch = original
    torch.manual_seed(0)
    fresh = MODELS["deephebb"](num_classes=10, width=0.0625)
    plastic = set(fresh.plastic_taus)
    changed = [n for n, p in fresh.named_parameters() if not torch.equal(p, seen["weights"][n])]
    assert changed and all(not any(n.startswith(layer + ".") for layer in plastic) for n in changed)


@pytest.mark.parametrize("name", ["mnist_snn_compare", "cifar_compare"])
def test_driver_command_lines_document_every_option_and_refuse_a_wrong_data_root(name, tmp_path, capsys):
    import importlib

    module = importlib.import_module(f"ghl_snn.experiments.{name}")
    undocumented = [action.option_strings for action in module.build_parser()._actions
                    if action.option_strings and not (action.help and action.help.strip())]
    assert not undocumented
    (tmp_path / "empty").mkdir()
    assert module.cli_main(["--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(tmp_path / "empty") in lines[0] and "not found" in lines[0]
    assert module.cli_main(["--epochs", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_cifar_tune_head_searches_the_heads_rate_after_the_convolutions(tmp_path, tiny_cifar_root):
    """``--tune-head``: the head's rate (the method's default x {1/3, 1, 3}) is searched at the best convolution
    rate, after the convolutions' line at the default head rate; both rates are chosen on validation."""
    from ghl_snn.experiments import cifar_compare

    out = tmp_path / "out"
    cifar_compare.main(["--data-root", str(tiny_cifar_root), "--out", str(out), "--methods", "sign", "--listed-only",
                        "--tune-head", "--pool", "50", "--test-subset", "20", "--epochs", "1", "--width", "0.0625",
                        "--seeds", "2", "--device", "cpu", "--quiet"])
    stored = json.loads((out / "results.json").read_text())
    chosen = stored["chosen"]["sign"]
    assert set(chosen["hparams"]) == {"conv_lr", "head_lr"}
    tuning = [t for t in stored["trials"] if t["phase"] == "tune"]
    default_head = 5e-3
    conv_line = [t["hparams"]["conv_lr"] for t in tuning[:6]]  # 3 convolution rates x 2 seeds, head at its default
    assert sorted(set(conv_line)) == pytest.approx([0.01 / 3, 0.01, 0.03])
    assert all(t["hparams"]["head_lr"] == pytest.approx(default_head) for t in tuning[:6])
    head_values = {round(t["hparams"]["head_lr"], 10) for t in tuning}
    assert {round(default_head * f, 10) for f in (1 / 3, 1, 3)} <= head_values
    # every score of the choice is the mean over the two tuning seeds of the last epoch's validation accuracy
    at_choice = [t["history"][-1]["val_acc"] for t in tuning if t["hparams"] == chosen["hparams"]]
    assert len(at_choice) == 2 and chosen["val_acc"] == pytest.approx(sum(at_choice) / 2)


def test_reward_rows_tune_both_layers_and_learn_from_the_reward_alone(mnist_root, tmp_path, monkeypatch):
    """The reward rows are not default rows; listed, a reward row tunes its hidden and read-out rates on validation
    and is compared with its read-out-only control, and its learner receives the reward of a chosen action only."""
    from ghl_snn.comparison import spiking

    parser_default = mnist_snn_compare.build_parser().parse_args([]).methods
    assert not set(mnist_snn_compare.REWARD_ROWS) & set(parser_default)
    seen = []
    original = spiking.SpikingTrainer._apply_update

    def spy(self, loss):
        step = self.learner.step

        def record(*args, **kwargs):
            seen.append(sorted(kwargs))
            return step(*args, **kwargs)
        self.learner.step = record
        try:
            return original(self, loss)
        finally:
            self.learner.step = step
    monkeypatch.setattr(spiking.SpikingTrainer, "_apply_update", spy)
    mnist_snn_compare.main(["--data-root", str(mnist_root), "--out", str(tmp_path), "--methods", "agr", "agr_readout",
                            "--listed-only", "--train-subset", "64", "--val-size", "32", "--test-subset", "24",
                            "--epochs", "1", "--hidden", "16", "--steps", "3", "--batch-size", "16", "--grad-grid",
                            "0.1", "1", "--device", "cpu", "--quiet"])
    stored = json.loads((tmp_path / "results.json").read_text())
    assert set(stored["chosen"]["agr"]["hparams"]) == {"lr_hidden", "lr_readout"}
    assert set(stored["chosen"]["agr_readout"]["hparams"]) == {"lr_readout"}
    assert {(c["method"], c["control"]) for c in stored["comparisons"]} == {("agr", "agr_readout")}
    assert seen and all(keys == ["action", "reward"] for keys in seen)  # no label reaches the learner
