"""N-MNIST read from tonic's on-disk layout ``<root>/NMNIST/{Train,Test}/<digit>/<mnist-index>.bin``.

File format (Orchard et al. 2015): 5 bytes = 40 bits per event, ``byte0 = x``, ``byte1 = y``, bit 7 of ``byte2``
the polarity ``p``, the other 23 bits of ``bytes 2..4`` the timestamp in µs, big-endian:
``t = (byte2 & 0x7F) << 16 | byte3 << 8 | byte4``.  A record with ``y == 240`` is a time-overflow marker that adds
``2^13`` µs to every later timestamp (tonic's convention).  Decoding is ``tonic.io.read_mnist_file`` with
tonic's ``NMNIST.dtype``; sensor ``(34, 34, 2)``.

``tonic.datasets.NMNIST`` itself refuses a partial folder (its existence check wants the zip and >= 10,000 files)
and then downloads; [`NMNIST`][] here indexes the folders directly, so it also reads subsets such as
``NMNIST-small``.  ``download=True`` lets tonic fetch and extract the archive into the same layout first.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tonic
from tonic.datasets.nmnist import stabilize as tonic_stabilize

from .base import EventDataError, EventDataset, check_in_sensor, require_dir

RECORD_BYTES = 5
OVERFLOW_Y = 240


def encode_nmnist(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> bytes:
    """Inverse of the reader: pack events into N-MNIST 40-bit records (``t < 2^23`` µs; used by the tests).

    ``record = [x, y, (p << 7) | (t >> 16) & 0x7F, (t >> 8) & 0xFF, t & 0xFF]`` (vectorised)."""
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    if (t < 0).any() or (t >= 2**23).any():
        raise ValueError("N-MNIST timestamps must lie in [0, 2^23) µs")
    records = np.stack([x, y, (p.astype(bool) << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    return records.astype(np.uint8).tobytes()


class NMNIST(EventDataset):
    """N-MNIST (offline reader of tonic's layout; see the module docstring).

    Args:
        root: the folder holding ``NMNIST/`` (tonic's ``save_to``).
        train: ``Train`` or ``Test`` split.
        first_saccade_only: keep events with ``t < 100 ms`` (tonic's option).
        stabilize: remove the saccade ego-motion with tonic's ``stabilize``.
        transform: applied to the event array, as in tonic.
        target_transform: applied to the label, as in tonic.
        transforms: applied to ``(events, label)`` together, as in tonic.
        download: let ``tonic.datasets.NMNIST`` download and extract the split first (online use).

    Every ``.bin`` file is checked on indexing (size a positive multiple of 5 bytes) and on reading (addresses on
    the 34 x 34 sensor); any other problem raises [`EventDataError`][] naming the path.
    """

    sensor_size = tonic.datasets.NMNIST.sensor_size
    dtype = tonic.datasets.NMNIST.dtype
    ordering = dtype.names
    classes = tonic.datasets.NMNIST.classes
    folder = "NMNIST"

    def __init__(self, root: str | os.PathLike[str], train: bool = True, first_saccade_only: bool = False,
                 stabilize: bool = False, transform: Callable | None = None,
                 target_transform: Callable | None = None, transforms: Callable | None = None,
                 download: bool = False) -> None:
        super().__init__(root, train, transform, target_transform, transforms)
        self.first_saccade_only = bool(first_saccade_only)
        self.stabilize = bool(stabilize)
        split = "Train" if self.train else "Test"
        if download:
            tonic.datasets.NMNIST(str(self.root), train=self.train)
        hint = (f"expected tonic's layout {self.root}/NMNIST/{split}/<digit>/<index>.bin (pass the folder holding "
                "NMNIST/, or NMNIST/ itself, as root; online, download=True fetches it)")
        split_dir = require_dir(self.location / split, hint)
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir() or not (entry.name.isdigit() and 0 <= int(entry.name) <= 9):
                raise EventDataError(entry, "unexpected entry in an N-MNIST split: only digit folders 0..9 belong "
                                            "here")
            files = sorted(f for f in entry.iterdir() if not f.name.startswith("."))
            if not files:
                raise EventDataError(entry, "empty N-MNIST digit folder (incomplete extraction?)")
            for file in files:
                self._check_file(file)
                self.data.append(file)
                self.targets.append(int(entry.name))
        if not self.data:
            raise EventDataError(split_dir, f"no digit folders with .bin recordings; {hint}")

    @staticmethod
    def _check_file(file: Path) -> None:
        if file.suffix != ".bin" or not file.is_file():
            raise EventDataError(file, "unexpected file in an N-MNIST digit folder (expected <index>.bin)")
        size = file.stat().st_size
        if size == 0:
            raise EventDataError(file, "empty N-MNIST recording (0 bytes)")
        if size % RECORD_BYTES:
            raise EventDataError(file, f"truncated N-MNIST recording: {size} bytes is not a multiple of the "
                                       f"{RECORD_BYTES}-byte (40-bit) event record")

    def read_events(self, index: int) -> np.ndarray:
        file = self.data[index]
        try:
            self._check_file(file)  # the file may have changed since indexing
            events = tonic.io.read_mnist_file(str(file), dtype=self.dtype)
        except OSError as error:
            raise EventDataError(file, f"cannot read N-MNIST recording ({error})") from error
        check_in_sensor(file, events, self.sensor_size)
        if self.first_saccade_only:
            events = events[events["t"] < 100_000]
        if self.stabilize:
            events = tonic_stabilize(events)
        return events
