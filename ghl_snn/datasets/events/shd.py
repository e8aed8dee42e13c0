"""Spiking Heidelberg Digits read from the original HDF5 files ``<root>/SHD/shd_{train,test}.h5``.

Layout (Cramer et al. 2020, and what ``tonic.datasets.SHD`` reads): ``spikes/times`` (variable-length float
arrays, seconds), ``spikes/units`` (variable-length integer arrays, cochlear channel 0..699) and ``labels``
(one int per sample, 20 classes); optional ``extra/keys`` (class names) and ``extra/speaker``.  Decoding follows
tonic's ``HSD.__getitem__``: ``tonic.io.make_structured_array(times * 1e6, units, 1, dtype=HSD.dtype)`` -- events
``(t [µs], x = channel, p = 1)`` on the sensor ``(700, 1, 1)``.  ``download=True`` lets ``tonic.datasets.SHD``
fetch and unzip the file first.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tonic

from .base import EventDataError, EventDataset, MissingEventData

REQUIRED_KEYS = ("spikes/times", "spikes/units", "labels")
NUM_CLASSES = 20


class SHD(EventDataset):
    """Spiking Heidelberg Digits (offline reader of the original ``.h5``; see the module docstring).

    The file is validated when the dataset is built (readable HDF5, the three required datasets, equal lengths,
    labels in 0..19) and each sample when it is read (equal ``times``/``units`` lengths, channels 0..699); any
    problem raises [`EventDataError`][] naming the file (and the sample).  The HDF5 handle is opened lazily
    and re-opened in every DataLoader worker process.
    """

    sensor_size = tonic.datasets.SHD.sensor_size
    dtype = tonic.datasets.SHD.dtype
    ordering = dtype.names
    folder = "SHD"

    def __init__(self, root: str | os.PathLike[str], train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, transforms: Callable | None = None,
                 download: bool = False) -> None:
        super().__init__(root, train, transform, target_transform, transforms)
        if download:
            tonic.datasets.SHD(str(self.root), train=self.train)
        self.file = self.location / ("shd_train.h5" if self.train else "shd_test.h5")
        if not self.file.is_file():
            raise MissingEventData(self.file, f"SHD file not found; expected {self.root}/SHD/shd_{{train,test}}.h5 "
                                              "(pass the folder holding SHD/, or SHD/ itself, as root; online, "
                                              "download=True fetches it)")
        try:
            with h5py.File(self.file, "r") as handle:
                missing = [key for key in REQUIRED_KEYS if key not in handle]
                if missing:
                    present: list[str] = []
                    handle.visit(present.append)
                    raise EventDataError(self.file, f"not an SHD file: missing HDF5 datasets {missing} (found "
                                                    f"{sorted(present)}; required {list(REQUIRED_KEYS)})")
                lengths = {key: len(handle[key]) for key in REQUIRED_KEYS}
                if len(set(lengths.values())) != 1:
                    raise EventDataError(self.file, f"SHD datasets have different lengths {lengths}")
                labels = np.asarray(handle["labels"][()]).astype(np.int64)
                self.classes = ([k.decode() if isinstance(k, bytes) else str(k) for k in handle["extra/keys"][()]]
                                if "extra/keys" in handle else [str(i) for i in range(NUM_CLASSES)])
                self.speaker = np.asarray(handle["extra/speaker"][()]) if "extra/speaker" in handle else None
        except OSError as error:
            raise EventDataError(self.file, f"cannot open as HDF5 ({error})") from error
        if len(labels) == 0:
            raise EventDataError(self.file, "SHD file holds no samples")
        bad = (labels < 0) | (labels >= NUM_CLASSES)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise EventDataError(self.file, f"sample {first} has label {int(labels[first])} outside "
                                            f"0..{NUM_CLASSES - 1}")
        self.data = list(range(len(labels)))
        self.targets = labels.tolist()
        self._handle: h5py.File | None = None
        self._pid: int | None = None

    def _open(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            self._handle = h5py.File(self.file, "r")
            self._pid = os.getpid()
        return self._handle

    def read_events(self, index: int) -> np.ndarray:
        try:
            handle = self._open()
            times = np.asarray(handle["spikes/times"][index], dtype=np.float64)
            units = np.asarray(handle["spikes/units"][index])
        except (OSError, KeyError, ValueError) as error:
            raise EventDataError(self.file, f"cannot read sample {index} ({error})") from error
        if times.shape != units.shape or times.ndim != 1:
            raise EventDataError(self.file, f"sample {index}: spikes/times has shape {times.shape} but spikes/units "
                                            f"has shape {units.shape}")
        if len(units) and (units.min() < 0 or units.max() >= self.sensor_size[0]):
            raise EventDataError(self.file, f"sample {index}: channel outside 0..{self.sensor_size[0] - 1}")
        return tonic.io.make_structured_array(times * 1e6, units, 1, dtype=self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None  # h5py handles cannot be pickled (DataLoader workers)
        return state

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None


def write_shd(path: str | os.PathLike[str], times: list[np.ndarray], units: list[np.ndarray],
              labels: list[int] | np.ndarray) -> Path:
    """Write an SHD-format ``.h5`` (variable-length ``spikes/times`` float and ``spikes/units`` uint16,
    ``labels`` uint16, ``extra/keys``); used by the tests and for small custom spike data sets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        time_type = h5py.vlen_dtype(np.dtype("float16"))
        unit_type = h5py.vlen_dtype(np.dtype("uint16"))
        times_ds = handle.create_dataset("spikes/times", (len(times),), dtype=time_type)
        units_ds = handle.create_dataset("spikes/units", (len(units),), dtype=unit_type)
        for i, (t, u) in enumerate(zip(times, units)):
            times_ds[i] = np.asarray(t, dtype=np.float16)
            units_ds[i] = np.asarray(u, dtype=np.uint16)
        handle.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        handle.create_dataset("extra/keys", data=np.array([f"digit-{i}".encode() for i in range(NUM_CLASSES)]))
    return path
