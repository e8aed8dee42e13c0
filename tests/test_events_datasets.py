"""Offline event-data readers on tiny files written here in each data set's real on-disk format."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tonic
import torch
from torch.utils.data import DataLoader

from ghl_snn.datasets.events import (NMNIST, SHD, DVSGesture, EventDataError, MissingEventData, cached, encode_nmnist,
                                     event_dataset, frame_transform, pad_collate, write_shd)


def _binned(t: np.ndarray, bins: int) -> int:
    """Events tonic's ToFrame(n_time_bins=bins) counts: bins of floor((t_N - t_0) / bins) from the first event."""
    return int((t < t[0] + bins * ((t[-1] - t[0]) // bins)).sum())


# ---------------------------------------------------------------------------------------------- N-MNIST
def _write_bin(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _random_nmnist(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    t = np.sort(rng.integers(0, 300_000, n))
    return rng.integers(0, 34, n), rng.integers(0, 34, n), t, rng.integers(0, 2, n)


@pytest.fixture
def nmnist_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, digits in (("Train", (0, 3, 7)), ("Test", (1, 3))):
        for digit in digits:
            for index in range(2):
                _write_bin(tmp_path / "NMNIST" / split / str(digit) / f"{index:05d}.bin",
                           encode_nmnist(*_random_nmnist(rng, 50 + 10 * index)))
    return tmp_path


def test_nmnist_decodes_40_bit_records_by_hand(tmp_path: Path) -> None:
    # x=5, y=7, p=1, t=0x012345 µs;  x=33, y=0, p=0, t=0x7FFFFF (max 23-bit);  then an overflow marker (y=240)
    records = bytes([5, 7, 0x80 | 0x01, 0x23, 0x45,
                     33, 0, 0x7F, 0xFF, 0xFF,
                     0, 240, 0x00, 0x00, 0x00,
                     2, 3, 0x80, 0x00, 0x10])
    _write_bin(tmp_path / "NMNIST" / "Train" / "4" / "00009.bin", records)
    events, label = NMNIST(tmp_path, train=True)[0]
    assert label == 4
    assert events.dtype.names == ("x", "y", "t", "p")
    np.testing.assert_array_equal(events["x"], [5, 33, 2])
    np.testing.assert_array_equal(events["y"], [7, 0, 3])
    np.testing.assert_array_equal(events["p"], [1, 0, 1])
    # the overflow marker is dropped and adds 2^13 µs to every later timestamp (tonic's convention)
    np.testing.assert_array_equal(events["t"], [0x012345, 0x7FFFFF, 0x10 + 2**13])


def test_nmnist_index_labels_events_and_frames(nmnist_root: Path) -> None:
    train = NMNIST(nmnist_root, train=True)
    test = NMNIST(nmnist_root, train=False)
    assert len(train) == 6 and len(test) == 4
    assert train.targets == [0, 0, 3, 3, 7, 7] and test.targets == [1, 1, 3, 3]
    rng = np.random.default_rng(0)
    x, y, t, p = _random_nmnist(rng, 50)  # the first file written
    events, _ = train[0]
    np.testing.assert_array_equal(events["x"], x)
    np.testing.assert_array_equal(events["y"], y)
    np.testing.assert_array_equal(events["t"], t)
    np.testing.assert_array_equal(events["p"], p)
    framed = NMNIST(nmnist_root, train=True, transform=frame_transform(NMNIST.sensor_size, n_time_bins=5))
    frames, label = framed[1]
    assert label == 0
    assert frames.shape == (5, 2, 34, 34) and frames.dtype == torch.float32
    # tonic's n_time_bins: T bins of floor((t_N - t_0) / T) µs from the first event, each event in one
    # (bin, polarity, pixel); only the remainder at the very end (here the last event) falls outside
    t = train[1][0]["t"]
    covered = _binned(t, 5)
    assert len(t) - 2 <= covered < len(t)
    assert float(frames.sum()) == covered
    binary = NMNIST(nmnist_root, train=True,
                    transform=frame_transform(NMNIST.sensor_size, n_time_bins=1, spatial_factor=0.25, binary=True))
    small, _ = binary[1]
    assert small.shape == (1, 2, 9, 9) and set(small.unique().tolist()) <= {0.0, 1.0}


def test_time_window_frames_pad_to_the_longest(nmnist_root: Path) -> None:
    short = np.array([0, 10_000, 20_000]), np.array([0, 50_000, 250_000])
    root = nmnist_root / "windows"
    for index, t in enumerate(short):
        _write_bin(root / "NMNIST" / "Train" / "2" / f"{index}.bin",
                   encode_nmnist(np.ones(3), np.ones(3), t, np.zeros(3)))
    dataset = NMNIST(root, transform=frame_transform(NMNIST.sensor_size, time_window=10_000))
    lengths = [dataset[i][0].shape[0] for i in range(2)]
    assert lengths[0] < lengths[1]
    frames, labels = next(iter(DataLoader(dataset, batch_size=2, collate_fn=pad_collate())))
    assert frames.shape == (2, max(lengths), 2, 34, 34)
    assert labels.tolist() == [2, 2]
    assert float(frames[0, lengths[0]:].abs().sum()) == 0.0  # zero padding after the short recording


def test_denoise_drops_isolated_events(tmp_path: Path) -> None:
    # an isolated event, a neighbouring pair 100 µs apart, another isolated event
    _write_bin(tmp_path / "NMNIST" / "Train" / "1" / "0.bin",
               encode_nmnist([30, 10, 11, 20], [2, 10, 10, 20], [3000, 5000, 5100, 9000], [1, 1, 1, 0]))
    window = 1e6  # one frame holding the whole recording
    plain = NMNIST(tmp_path, transform=frame_transform(NMNIST.sensor_size, time_window=window))[0][0]
    denoised = NMNIST(tmp_path, transform=frame_transform(NMNIST.sensor_size, time_window=window,
                                                         denoise_time=1000))[0][0]
    assert plain.shape == denoised.shape == (1, 2, 34, 34)
    assert float(plain.sum()) == 4.0
    # only the second of the pair had a neighbour within 1000 µs (tonic keeps every event before t = filter_time,
    # hence nothing is placed there)
    assert float(denoised.sum()) == 1.0
    assert float(denoised[0, 1, 10, 11]) == 1.0


@pytest.mark.parametrize("problem", ["truncated", "empty-file", "empty-folder", "stray-file", "off-sensor"])
def test_nmnist_corrupt_layouts_name_the_file(tmp_path: Path, problem: str) -> None:
    good = encode_nmnist([1], [1], [5], [0])
    _write_bin(tmp_path / "NMNIST" / "Train" / "0" / "0.bin", good)
    bad = tmp_path / "NMNIST" / "Train" / "5" / "00042.bin"
    if problem == "truncated":
        _write_bin(bad, good + good[:3])
    elif problem == "empty-file":
        _write_bin(bad, b"")
    elif problem == "empty-folder":
        bad = bad.parent
        bad.mkdir(parents=True)
    elif problem == "stray-file":
        bad = _write_bin(bad.with_name("notes.txt"), b"hello")
    else:
        _write_bin(bad, encode_nmnist([40], [3], [10], [1]))
    if problem == "off-sensor":
        dataset = NMNIST(tmp_path)
        with pytest.raises(EventDataError, match="outside the sensor") as info:
            dataset[1]
    else:
        with pytest.raises(EventDataError) as info:
            NMNIST(tmp_path)
    assert info.value.path == bad
    assert str(bad) in str(info.value)


def test_nmnist_missing_split_is_a_clear_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(MissingEventData, match="NMNIST/Test") as info:
        NMNIST(tmp_path, train=False)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="unknown event data set"):
        event_dataset("cifar", tmp_path)


# ---------------------------------------------------------------------------------------------- DVS Gesture
def _gesture(rng: np.random.Generator, n: int, dtype: type = np.float64) -> np.ndarray:
    return np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
                     np.sort(rng.integers(0, 6000, n))], axis=1).astype(dtype)


@pytest.fixture
def gesture_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    base = tmp_path / "DVSGesture" / "ibmGestureTrain"
    for folder, labels in (("user01_fluorescent", (0, 10, 2)), ("user02_led", (5,))):
        (base / folder).mkdir(parents=True)
        for label in labels:
            np.save(base / folder / f"{label}.npy", _gesture(rng, 40 + label))
    return tmp_path


def test_dvs_gesture_reads_npy_layout(gesture_root: Path) -> None:
    dataset = DVSGesture(gesture_root, train=True)
    assert len(dataset) == 4
    assert dataset.targets == [0, 2, 10, 5]  # numeric file order inside each user folder
    assert dataset.users == [1, 1, 1, 2] and dataset.lighting == ["fluorescent"] * 3 + ["led"]
    raw = np.load(gesture_root / "DVSGesture" / "ibmGestureTrain" / "user01_fluorescent" / "2.npy")
    events, label = dataset[1]
    assert label == 2 and events.dtype == tonic.datasets.DVSGesture.dtype
    np.testing.assert_array_equal(events["x"], raw[:, 0])
    np.testing.assert_array_equal(events["y"], raw[:, 1])
    np.testing.assert_array_equal(events["p"], raw[:, 2].astype(bool))
    np.testing.assert_array_equal(events["t"], raw[:, 3] * 1000)  # ms -> µs
    framed = DVSGesture(gesture_root, transform=frame_transform(DVSGesture.sensor_size, n_time_bins=4,
                                                                spatial_factor=0.25))
    frames, _ = framed[3]
    assert frames.shape == (4, 2, 32, 32) and float(frames.sum()) == _binned(dataset[3][0]["t"], 4)
    assert float(frames.sum()) >= 40


@pytest.mark.parametrize("problem", ["shape", "garbage", "label", "empty-folder", "bad-folder"])
def test_dvs_gesture_errors_name_the_file(gesture_root: Path, problem: str) -> None:
    folder = gesture_root / "DVSGesture" / "ibmGestureTrain" / "user03_natural"
    folder.mkdir()
    bad = folder / "4.npy"
    if problem == "shape":
        np.save(bad, np.zeros((5, 3)))
    elif problem == "garbage":
        bad.write_bytes(b"\x93NUMPY not really")
    elif problem == "label":
        bad = folder / "11.npy"
        np.save(bad, _gesture(np.random.default_rng(0), 3))
    elif problem == "empty-folder":
        bad = folder
    else:
        folder.rmdir()
        bad = folder.with_name("somebody")
        bad.mkdir()
    if problem in ("shape", "garbage"):
        dataset = DVSGesture(gesture_root)
        with pytest.raises(EventDataError) as info:
            dataset[len(dataset) - 1]
    else:
        with pytest.raises(EventDataError) as info:
            DVSGesture(gesture_root)
    assert info.value.path == bad


# ---------------------------------------------------------------------------------------------- SHD
@pytest.fixture
def shd_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    times = [np.sort(rng.uniform(0, 0.9, n)) for n in (30, 7, 55)]
    units = [rng.integers(0, 700, len(t)) for t in times]
    write_shd(tmp_path / "SHD" / "shd_train.h5", times, units, [3, 19, 0])
    return tmp_path


def test_shd_reads_h5_layout(shd_root: Path) -> None:
    dataset = SHD(shd_root, train=True)
    assert len(dataset) == 3 and dataset.targets == [3, 19, 0] and len(dataset.classes) == 20
    with h5py.File(shd_root / "SHD" / "shd_train.h5", "r") as handle:
        times, units = handle["spikes/times"][2], handle["spikes/units"][2]
    events, label = dataset[2]
    assert label == 0 and events.dtype.names == ("t", "x", "p")
    np.testing.assert_array_equal(events["x"], units)
    np.testing.assert_array_equal(events["t"], (times.astype(np.float64) * 1e6).astype(int))
    assert (events["p"] == 1).all()
    framed = SHD(shd_root, transform=frame_transform(SHD.sensor_size, n_time_bins=20))
    frames, _ = framed[0]
    assert frames.shape == (20, 1, 700) and float(frames.sum()) == _binned(dataset[0][0]["t"], 20) >= 28


@pytest.mark.parametrize("problem", ["wrong-keys", "length-mismatch", "sample-mismatch", "not-hdf5", "missing"])
def test_shd_errors_name_the_file(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "SHD" / "shd_test.h5"
    path.parent.mkdir(parents=True)
    vlen = h5py.vlen_dtype(np.dtype("float32"))
    if problem == "not-hdf5":
        path.write_bytes(b"this is not an HDF5 file")
    elif problem != "missing":
        with h5py.File(path, "w") as handle:
            times = handle.create_dataset("spikes/times", (2,), dtype=vlen)
            units = handle.create_dataset("spikes/units", (2,), dtype=h5py.vlen_dtype(np.dtype("uint16")))
            times[0], times[1] = np.array([0.1, 0.2], np.float32), np.array([0.3], np.float32)
            units[0] = np.array([1, 2], np.uint16)
            units[1] = np.array([4, 5], np.uint16) if problem == "sample-mismatch" else np.array([4], np.uint16)
            handle.create_dataset("label" if problem == "wrong-keys" else "labels",
                                  data=np.array([1, 2] if problem != "length-mismatch" else [1, 2, 3]))
    if problem == "sample-mismatch":
        dataset = SHD(tmp_path, train=False)
        assert dataset[0][1] == 1
        with pytest.raises(EventDataError, match="sample 1") as info:
            dataset[1]
    else:
        expected = {"wrong-keys": "missing HDF5 datasets \\['labels'\\]", "length-mismatch": "different lengths",
                    "not-hdf5": "cannot open as HDF5", "missing": "not found"}[problem]
        with pytest.raises(EventDataError, match=expected) as info:
            SHD(tmp_path, train=False)
    assert info.value.path == path


# ---------------------------------------------------------------------------------------------- caching
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_dataset_returns_the_same_frames(nmnist_root: Path, tmp_path: Path, mode: str) -> None:
    dataset = NMNIST(nmnist_root, transform=frame_transform(NMNIST.sensor_size, n_time_bins=3, to_tensor=False))
    store = cached(dataset, mode, tmp_path / "cache")
    for index in (0, 4):
        first, label = store[index]
        again, _ = store[index]
        np.testing.assert_array_equal(np.asarray(first), dataset[index][0])
        np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
        assert int(label) == dataset.targets[index]
    if mode == "disk":
        assert len(list((tmp_path / "cache").glob("*.hdf5"))) == 2
    with pytest.raises(ValueError, match="cache_path"):
        cached(dataset, "disk")
    with pytest.raises(ValueError, match="exactly one"):
        frame_transform(NMNIST.sensor_size)


# ---------------------------------------------------------------------------------------------- real data
def test_nmnist_small_real_data(shared_data: Path) -> None:
    root = shared_data / "NMNIST-small"
    if not (root / "NMNIST").is_dir():
        pytest.skip(f"{root}/NMNIST not present")
    train, test = NMNIST(root, train=True), NMNIST(root, train=False)
    assert (len(train), len(test)) == (1000, 100)
    assert sorted(set(train.targets)) == list(range(10))
    events, label = test[0]
    assert len(events) > 1000 and events["x"].max() < 34 and events["y"].max() < 34
    assert np.all(np.diff(events["t"]) >= 0)


# ---------------------------------------------------------------------------------------------- online path
def test_download_true_delegates_to_tonic_then_reads_the_same_layout(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []

    def fake_tonic_nmnist(save_to: str, train: bool = True) -> None:
        # what tonic's download + extraction leaves behind: <save_to>/NMNIST/{Train,Test}/<digit>/<idx>.bin
        calls.append((save_to, train))
        _write_bin(Path(save_to) / "NMNIST" / ("Train" if train else "Test") / "6" / "00001.bin",
                   encode_nmnist([4], [5], [6], [1]))

    monkeypatch.setattr(tonic.datasets, "NMNIST", fake_tonic_nmnist)
    dataset = NMNIST(tmp_path, train=False, download=True)
    assert calls == [(str(tmp_path), False)]
    events, label = dataset[0]
    assert label == 6 and events["x"].tolist() == [4]
    with pytest.raises(MissingEventData):
        NMNIST(tmp_path, train=True)  # download=False never calls tonic
    assert len(calls) == 1


def test_shd_survives_pickling_for_dataloader_workers(shd_root: Path) -> None:
    import pickle
    dataset = SHD(shd_root)
    first = dataset[1][0]
    clone = pickle.loads(pickle.dumps(dataset))  # the open HDF5 handle is dropped and reopened lazily
    np.testing.assert_array_equal(clone[1][0], first)
    loader = DataLoader(SHD(shd_root, transform=frame_transform(SHD.sensor_size, n_time_bins=4)), batch_size=3,
                        num_workers=1, collate_fn=pad_collate())
    frames, labels = next(iter(loader))
    assert frames.shape == (3, 4, 1, 700) and labels.tolist() == [3, 19, 0]
