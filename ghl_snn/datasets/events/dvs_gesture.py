"""IBM DVS Gesture read from tonic's preprocessed layout
``<root>/DVSGesture/ibmGesture{Train,Test}/userNN_<lighting>/<label>.npy``.

Each ``.npy`` holds one gesture as a 2-D array with columns ``(x, y, p, t)``, ``t`` in milliseconds; the file
name is the class index (0..10).  Decoding follows tonic's ``DVSGesture.__getitem__``: ``t`` is scaled to µs and
the array converted with ``numpy.lib.recfunctions.unstructured_to_structured`` into tonic's
``DVSGesture.dtype``; sensor ``(128, 128, 2)``.  ``download=True`` lets ``tonic.datasets.DVSGesture`` fetch the
archives into the same layout first.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np
import numpy.lib.recfunctions as rfn
import tonic

from .base import EventDataError, EventDataset, check_in_sensor, require_dir

USER_FOLDER = re.compile(r"^user(\d+)_(.+)$")


class DVSGesture(EventDataset):
    """DVS Gesture (offline reader of tonic's layout; see the module docstring).

    Attributes ``users`` and ``lighting`` give each sample's subject number and lighting condition.  Unexpected
    folders or files, labels outside 0..10 and unreadable or mis-shaped arrays raise [`EventDataError`][].
    """

    sensor_size = tonic.datasets.DVSGesture.sensor_size
    dtype = tonic.datasets.DVSGesture.dtype
    ordering = dtype.names
    classes = tonic.datasets.DVSGesture.classes
    folder = "DVSGesture"

    def __init__(self, root: str | os.PathLike[str], train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, transforms: Callable | None = None,
                 download: bool = False) -> None:
        super().__init__(root, train, transform, target_transform, transforms)
        split = "ibmGestureTrain" if self.train else "ibmGestureTest"
        if download:
            tonic.datasets.DVSGesture(str(self.root), train=self.train)
        hint = (f"expected tonic's layout {self.root}/DVSGesture/{split}/userNN_<lighting>/<label>.npy (pass the "
                "folder holding DVSGesture/, or DVSGesture/ itself, as root; online, download=True fetches it)")
        split_dir = require_dir(self.location / split, hint)
        self.users: list[int] = []
        self.lighting: list[str] = []
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            match = USER_FOLDER.match(entry.name)
            if not entry.is_dir() or match is None:
                raise EventDataError(entry, "unexpected entry in a DVS Gesture split: expected userNN_<lighting>/")
            files = sorted((f for f in entry.iterdir() if not f.name.startswith(".")),
                           key=lambda f: (len(f.stem), f.stem))
            if not files:
                raise EventDataError(entry, "empty DVS Gesture recording folder")
            for file in files:
                if file.suffix != ".npy" or not file.stem.isdigit() or not file.is_file():
                    raise EventDataError(file, "unexpected file in a DVS Gesture folder (expected <label>.npy)")
                label = int(file.stem)
                if label >= len(self.classes):
                    raise EventDataError(file, f"label {label} outside 0..{len(self.classes) - 1}")
                self.data.append(file)
                self.targets.append(label)
                self.users.append(int(match.group(1)))
                self.lighting.append(match.group(2))
        if not self.data:
            raise EventDataError(split_dir, f"no userNN_<lighting> folders with .npy recordings; {hint}")

    def read_events(self, index: int) -> np.ndarray:
        file = self.data[index]
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise EventDataError(file, f"cannot load the DVS Gesture recording ({error})") from error
        if array.ndim != 2 or array.shape[1] != 4 or array.dtype.names is not None:
            raise EventDataError(file, f"expected an (events, 4) array with columns x, y, p, t[ms], got shape "
                                       f"{array.shape} and dtype {array.dtype}")
        if not np.issubdtype(array.dtype, np.number):
            raise EventDataError(file, f"non-numeric event array (dtype {array.dtype})")
        array = array.astype(np.float64 if np.issubdtype(array.dtype, np.floating) else np.int64, copy=True)
        array[:, 3] *= 1000  # ms -> µs, as tonic does
        events = rfn.unstructured_to_structured(array, self.dtype)
        check_in_sensor(file, events, self.sensor_size)
        return events
