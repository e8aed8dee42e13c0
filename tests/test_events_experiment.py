"""The events experiment on a tiny N-MNIST tree written here (in-process, one short epoch per method)."""
from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from torch import nn

from ghl_snn.experiments import events
from ghl_snn.export.nir import export_nir
from ghl_snn.spiking import LIF, SpikingNetwork
from ghl_snn.spiking.encoders import FrameSequence, present


@pytest.fixture(scope="module")
def tiny_nmnist(tmp_path_factory: pytest.TempPathFactory, write_bar_nmnist) -> Path:
    """``<root>/NMNIST-small/NMNIST/{Train,Test}/<digit>/<i>.bin``: digit d lights a vertical bar at x = 3 d."""
    return write_bar_nmnist(tmp_path_factory.mktemp("data"), spacing=3, train_per_digit=3, events=300)


def test_frame_sequence_replays_frames_step_by_step() -> None:
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Flatten(), nn.Linear(8, 4), LIF(beta=0.5), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.mul_(4)
    frames = (torch.rand(3, 5, 8) < 0.5).float()
    out = present(net, frames)
    net.reset()
    manual = torch.stack([net(frames[:, t]) for t in range(5)]).mean(0)
    torch.testing.assert_close(out, manual)
    sequence = FrameSequence(frames)
    for t in range(5):
        assert torch.equal(sequence(frames[:, 0]), frames[:, t])
    with pytest.raises(IndexError, match="5 frames"):
        sequence(frames[:, 0])


def test_conv_network_shapes_for_every_camera_preset() -> None:
    for name in ("nmnist-small", "nmnist", "dvs-gesture"):
        preset = events.PRESETS[name]
        net = events.build_network(preset, beta=0.9, init_scale=1.0)
        shape = events.input_shape(preset)
        assert net(torch.zeros(2, *shape)).shape == (2, 10 if "nmnist" in name else 11)
    shd = events.PRESETS["shd"]
    assert events.input_shape(shd) == (700,)
    assert events.build_network(shd, 0.9, 1.0)(torch.zeros(2, 700)).shape == (2, 20)


@pytest.mark.parametrize("method", events.DEFAULT_METHODS)
def test_each_method_trains_and_reports(tiny_nmnist: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "run"
    rows = events.main(["--preset", "nmnist-small", "--data-root", str(tiny_nmnist), "--out", str(out),
                        "--methods", method, "--epochs", "1", "--batch-size", "3", "--feedback-batch-size", "3",
                        "--time-bins", "3", "--export-nir", "--quiet"]
                       + (["--reset", "zero"] if method == "bptt" else []) + ["--no-isolate"])
    row = rows[0]
    assert (out / "curves.png").stat().st_size > 0
    assert row["method"] == method and row["train_samples"] == 9 and row["test_samples"] == 3
    assert 0.0 <= row["test_acc"] <= 1.0 and np.isfinite(row["train_loss"])
    assert row["train_time_s"] > 0 and row["peak_mem_mib"] >= 0
    results = json.loads((out / "results.json").read_text())
    assert results[0]["method"] == method
    assert method in (out / "results.md").read_text()
    assert (out / "metrics.csv").read_text().count("\n") == 2
    checkpoint = torch.load(out / method / "checkpoint.pt", weights_only=False)
    torch.manual_seed(0)
    initial = events.build_network(events.PRESETS["nmnist-small"], 0.9, 2.0)
    # training moved the read-out (and, unless only the read-out is plastic, the first conv) from the seeded init
    assert not torch.equal(checkpoint["model"]["7.weight"], initial[7].weight)
    conv_trained = not torch.equal(checkpoint["model"]["0.weight"], initial[0].weight)
    assert conv_trained == (method != "readout_feedback_sign")
    if method == "bptt":  # trained with --reset zero: the NIR export is exact, so strict mode accepts it
        net = events.build_network(events.PRESETS["nmnist-small"], 0.9, 2.0, reset="zero")
        net.load_state_dict(checkpoint["model"])
        assert export_nir(net, (2, 34, 34), strict=True).nodes["lif_1"].v_reset.shape == (12, 30, 30)
        check = row["nir_check"]  # norse's import of the folded graph predicts exactly like the trained network
        assert check["samples"] == 3 and check["same_prediction"] == 1.0 and check["max_abs_readout_diff"] < 1e-4
        assert (out / method / "model_folded.nir").is_file()
    else:
        assert row["nir_check"] == {}
    graph = nir.read(out / method / "model.nir")
    np.testing.assert_array_equal(graph.nodes["conv2d_0"].weight, checkpoint["model"]["0.weight"].numpy())


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="nmnist data not found"):  # the Python entry point raises
        events.main(["--preset", "nmnist-small", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert events.cli_main(["--preset", "dvs-gesture", "--data-root", str(tmp_path), "--out",
                            str(tmp_path / "o")]) == 2  # the command line: one line, exit code 2
    assert "dvs-gesture data not found" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("preset", ["shd", "dvs-gesture"])
def test_shd_and_dvs_gesture_presets_run_on_tiny_files(tmp_path: Path, preset: str) -> None:
    from ghl_snn.datasets.events import write_shd
    rng = np.random.default_rng(3)
    if preset == "shd":
        for split in ("train", "test"):
            times = [np.sort(rng.uniform(0, 0.5, 40)) for _ in range(4)]
            write_shd(tmp_path / "SHD" / f"shd_{split}.h5", times, [rng.integers(0, 700, 40) for _ in times],
                      [0, 5, 19, 5])
    else:
        for split in ("Train", "Test"):
            folder = tmp_path / "DVSGesture" / f"ibmGesture{split}" / "user01_led"
            folder.mkdir(parents=True)
            for label in (0, 10):
                np.save(folder / f"{label}.npy", np.stack([rng.integers(0, 128, 60), rng.integers(0, 128, 60),
                                                           rng.integers(0, 2, 60), np.arange(60) * 10], 1))
    rows = events.main(["--preset", preset, "--data-root", str(tmp_path), "--out", str(tmp_path / "run"),
                        "--methods", "grad_sign", "--epochs", "1", "--batch-size", "2", "--time-bins", "2",
                        "--cache-dir", str(tmp_path / "cache"), "--quiet", "--no-isolate"])
    assert rows[0]["train_samples"] == (4 if preset == "shd" else 2)
    assert 0.0 <= rows[0]["test_acc"] <= 1.0 and np.isfinite(rows[0]["train_loss"])


def test_resume_continues_bit_identically(tiny_nmnist: Path, tmp_path: Path) -> None:
    common = ["--preset", "nmnist-small", "--data-root", str(tiny_nmnist), "--methods", "grad_sign",
              "--batch-size", "3", "--time-bins", "2", "--quiet"]
    events.main(common + ["--out", str(tmp_path / "straight"), "--epochs", "2", "--no-isolate"])
    events.main(common + ["--out", str(tmp_path / "split"), "--epochs", "1", "--no-isolate"])
    rows = events.main(common + ["--out", str(tmp_path / "split"), "--epochs", "2", "--resume", "--no-isolate"])
    straight = torch.load(tmp_path / "straight" / "grad_sign" / "checkpoint.pt", weights_only=False)
    split = torch.load(tmp_path / "split" / "grad_sign" / "checkpoint.pt", weights_only=False)
    assert split["epoch"] == 2 and len(rows[0]["metrics"]) == 2
    for key, value in straight["model"].items():
        assert torch.equal(split["model"][key], value), key
    for key in ("train_loss", "test_acc", "hidden_rate"):  # the runner's per-epoch rows in the checkpoint
        assert [m[key] for m in split["history"]] == [m[key] for m in straight["history"]], key
    started = events.main(common + ["--out", str(tmp_path / "none"), "--epochs", "1", "--resume", "--no-isolate"])
    assert len(started[0]["metrics"]) == 1  # --resume starts a method that has no checkpoint


def test_finished_method_is_skipped_changed_settings_refused_and_force_retrains(tiny_nmnist: Path,
                                                                                tmp_path: Path) -> None:
    from ghl_snn.comparison.runner import RunExists
    common = ["--preset", "nmnist-small", "--data-root", str(tiny_nmnist), "--methods", "grad_sign",
              "--batch-size", "3", "--time-bins", "2", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    checkpoint = tmp_path / "grad_sign" / "checkpoint.pt"
    first = events.main(common + ["--no-isolate"])
    stamp = checkpoint.stat().st_mtime_ns
    again = events.main(common + ["--no-isolate"])  # same settings: not retrained, same row
    assert checkpoint.stat().st_mtime_ns == stamp
    assert again[0]["metrics"] == first[0]["metrics"]
    with pytest.raises(RunExists, match="lr_grad"):  # another configuration is never overwritten by surprise
        events.main(common + ["--lr-grad", "0.5", "--no-isolate"])
    forced = events.main(common + ["--lr-grad", "0.5", "--force", "--no-isolate"])
    assert checkpoint.stat().st_mtime_ns != stamp
    assert forced[0]["metrics"][0]["train_loss"] != first[0]["metrics"][0]["train_loss"]


def test_non_finite_loss_stops_the_method(tiny_nmnist: Path, tmp_path: Path) -> None:
    from ghl_snn.comparison.runner import TrainingDiverged
    with pytest.raises(TrainingDiverged, match="non-finite|loss became|exploded"):
        events.main(["--preset", "nmnist-small", "--data-root", str(tiny_nmnist), "--methods", "bptt",
                     "--batch-size", "3", "--time-bins", "2", "--epochs", "2", "--quiet", "--out", str(tmp_path),
                     "--lr-bptt", "1e30", "--no-isolate"])
