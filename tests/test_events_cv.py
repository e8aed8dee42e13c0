"""k-fold event data (folds disjoint, every test recording once, validation never a test fold, tonic augmentation)
and the events_cv comparison on a tiny N-MNIST tree written here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tonic
import torch

from ghl_snn.datasets.events import NMNIST
from ghl_snn.datasets.events.folds import EventFolds
from ghl_snn.experiments import events_cv


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory, write_bar_nmnist) -> Path:
    """``<root>/NMNIST-small/NMNIST/{Train,Test}/<digit>/<i>.bin``: digit d lights a vertical bar at x = 3 d + 4."""
    return write_bar_nmnist(tmp_path_factory.mktemp("data"), spacing=3, train_per_digit=4, events=200)


def splits(root: Path) -> list[NMNIST]:
    return [NMNIST(root / "NMNIST-small", train=train) for train in (True, False)]


def test_folds_partition_the_recordings_and_test_each_once(tiny_root: Path) -> None:
    folds = EventFolds(splits(tiny_root), k=3, n_time_bins=4)
    assert len(folds.events) == 15
    tested = []
    for run in range(folds.k - 1):
        train, val, test = folds.split(run)
        sets = [set(train.tolist()), set(val.tolist()), set(test.tolist())]
        assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
        assert sets[0] | sets[1] | sets[2] == set(range(15))
        assert sets[1] == set(folds.folds[0].tolist())  # the validation fold is never a test fold
        tested += test.tolist()
    assert sorted(tested) == sorted(set(range(15)) - set(folds.folds[0].tolist()))
    with pytest.raises(ValueError, match="k must be >= 3"):
        EventFolds(splits(tiny_root), k=2)


def test_unaugmented_frames_are_tonics_toframe(tiny_root: Path) -> None:
    data = splits(tiny_root)
    folds = EventFolds(data, k=3, n_time_bins=4)
    reference = tonic.transforms.ToFrame(sensor_size=NMNIST.sensor_size, n_time_bins=4)(data[0].read_events(0))
    assert torch.equal(folds.frames[0].float(), torch.from_numpy(reference).float().clamp(max=1))
    batch, labels = folds.eval_batches(torch.tensor([0, 1]))[0]
    assert torch.equal(batch[0], folds.frames[0].float()) and labels.tolist() == folds.labels[:2].tolist()
    plain = EventFolds(data, k=3, n_time_bins=4)
    loader = plain.train_loader(torch.arange(15), batch_size=15, seed=0)
    frames, labels = next(iter(loader))
    for frame, label in zip(frames, labels):  # no augmentation: every training frame is a stored frame, same label
        match = [i for i, stored in enumerate(folds.frames) if torch.equal(frame, stored.float())]
        assert match and int(label) in folds.labels[match].tolist()


def test_training_augmentation_drops_and_moves_events(tiny_root: Path) -> None:
    np.random.seed(0)
    folds = EventFolds(splits(tiny_root), k=3, n_time_bins=4, drop=0.5, jitter=4.0)
    augmented = folds.train_transform(folds.events[0])
    assert augmented.shape == folds.frames[0].shape
    assert not torch.equal(augmented, folds.frames[0].float())
    counts = tonic.transforms.DropEvent(p=0.5)(folds.events[0])
    assert len(counts) < len(folds.events[0])


def test_events_cv_compares_through_the_engine(tiny_root: Path, tmp_path: Path,
                                               finished_comparison_is_reused) -> None:
    argv = ["--data-root", str(tiny_root), "--out", str(tmp_path), "--methods", "grad_sign", "--folds", "3",
            "--seeds", "3", "--epochs", "1", "--time-bins", "3", "--batch-size", "4", "--lrs", "0.01", "0.1",
            "--quiet"]
    results = events_cv.main(argv)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [m["name"] for m in stored["methods"]] == ["grad_sign", "readout_sign", "bptt", "chance"]
    assert {(c["method"], c["control"]) for c in stored["comparisons"]} >= {("grad_sign", "readout_sign"),
                                                                              ("grad_sign", "bptt")}
    for trial in stored["trials"]:
        for row in trial["history"]:
            assert {"train_acc", "val_acc", "test_acc"} <= set(row)
    assert stored["chosen"]["grad_sign"]["hparams"]["lr"] in stored["chosen"]["grad_sign"]["values"]["lr"]
    assert len(results["final"]["bptt"]["test"]) == 3
    finished_comparison_is_reused(events_cv.main, argv, tmp_path / "results.json")
