"""Shared machinery of the offline event-dataset readers: errors, the dataset base class, tonic transforms.

Each reader indexes the dataset's **own on-disk layout** under ``<root>/<ClassName>/`` -- the folder tonic's
``save_to`` argument creates -- and decodes samples with tonic's readers and event dtypes, so a sample is the same
``(structured events, label)`` pair tonic returns and every tonic transform applies unchanged.  No download is
attempted unless ``download=True`` (then tonic's own dataset class fetches and extracts the archive into the same
layout first).  Problems are never skipped silently: a missing folder, an empty split, an unexpected file or a
corrupt recording raises [`EventDataError`][] naming the offending path.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tonic
import torch
from torch.utils.data import Dataset

SensorSize = tuple[int, int, int]


class EventDataError(ValueError):
    """A data-set file or folder is missing, empty or corrupt; ``path`` names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str | None = None) -> None:
        if problem is None:  # one argument: a whole message (how DataLoader re-raises a worker's exception)
            self.path, self.problem = None, str(path)
            super().__init__(self.problem)
            return
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with both arguments, so the error crosses process boundaries (DataLoader workers) intact."""
        return (type(self), (self.path, self.problem) if self.path is not None else (self.problem,))


class MissingEventData(EventDataError, FileNotFoundError):
    """The expected folder or file does not exist (also a ``FileNotFoundError``)."""


class EventDataset(Dataset):
    """Base of the offline readers: ``self.data`` (one path or index per sample) and ``self.targets``.

    ``__getitem__`` returns ``(events, target)`` after tonic's conventions: ``transform`` is applied to the
    structured events, ``target_transform`` to the label, ``transforms`` to both.  Subclasses implement
    [`read_events`][] and set ``sensor_size``, ``dtype``, ``ordering`` and ``classes``.
    """

    sensor_size: SensorSize
    dtype: np.dtype
    ordering: tuple[str, ...]
    classes: Sequence[str] = ()
    folder: str = ""

    def __init__(self, root: str | os.PathLike[str], train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, transforms: Callable | None = None) -> None:
        self.root = Path(root).expanduser()
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        self.transforms = transforms
        self.data: list[Any] = []
        self.targets: list[int] = []

    @property
    def location(self) -> Path:
        """``<root>/<ClassName>``: where tonic's ``save_to=root`` puts this data set; ``root`` itself when it is
        that folder (a data set's own folder is accepted as the root too)."""
        name = self.folder or type(self).__name__
        if not (self.root / name).is_dir() and self.root.name == name and self.root.is_dir():
            return self.root
        return self.root / name

    def read_events(self, index: int) -> np.ndarray:
        """The structured event array of sample ``index`` (raises [`EventDataError`][] if corrupt)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        events = self.read_events(index)
        target: Any = self.targets[index]
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transforms is not None:
            events, target = self.transforms(events, target)
        return events, target

    def check_all(self) -> int:
        """Decode every sample once (raising on the first corrupt file); return the total number of events."""
        return int(sum(len(self.read_events(i)) for i in range(len(self))))

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} samples, sensor_size={self.sensor_size}, root={self.root})"


def require_dir(path: Path, hint: str) -> Path:
    """Return ``path`` if it is a directory, else raise [`MissingEventData`][] with ``hint``."""
    if not path.is_dir():
        raise MissingEventData(path, f"folder not found; {hint}")
    return path


def check_in_sensor(path: Path | str, events: np.ndarray, sensor_size: SensorSize) -> None:
    """Raise [`EventDataError`][] if any address lies outside ``sensor_size = (W, H, P)`` (vectorised)."""
    for name, size in zip(("x", "y"), sensor_size[:2]):
        if name in events.dtype.names and len(events):
            values = events[name]
            bad = (values < 0) | (values >= size)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise EventDataError(path, f"event {first} has {name}={int(values[first])} outside the sensor "
                                           f"(0..{size - 1}); the file is corrupt or not in this data set's format")


# ---------------------------------------------------------------------------------------------- transforms
def downsampled_size(sensor_size: SensorSize, spatial_factor: float | None) -> SensorSize:
    """Sensor size after ``tonic.transforms.Downsample(spatial_factor=f)``: ``(ceil(W f), ceil(H f), P)``.

    Addresses ``x`` map to ``floor(x f)``, so ``ceil(W f)`` is the exact number of output pixels."""
    if spatial_factor is None or spatial_factor == 1:
        return tuple(sensor_size)  # type: ignore[return-value]
    if not 0 < spatial_factor <= 1:
        raise ValueError(f"spatial_factor must lie in (0, 1], got {spatial_factor!r}")
    width, height, polarities = sensor_size
    return (int(np.ceil(width * spatial_factor)), int(np.ceil(height * spatial_factor)), polarities)


class ToFloatTensor:
    """``numpy frames -> float32 tensor``, optionally clipped to binary spikes ``min(count, 1)``."""

    def __init__(self, binary: bool = False) -> None:
        self.binary = bool(binary)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.asarray(frames)).float()
        return tensor.clamp_(max=1.0) if self.binary else tensor

    def __repr__(self) -> str:
        return f"ToFloatTensor(binary={self.binary})"


def frame_transform(sensor_size: SensorSize, n_time_bins: int | None = None, time_window: float | None = None,
                    denoise_time: float | None = None, spatial_factor: float | None = None,
                    binary: bool = False, to_tensor: bool = True) -> tonic.transforms.Compose:
    """tonic pipeline ``[Denoise] -> [Downsample] -> ToFrame -> [ToFloatTensor]``.

    * ``Denoise(filter_time)`` drops an event unless a neighbouring pixel fired within ``denoise_time`` µs;
    * ``Downsample(spatial_factor=f)`` maps ``x -> floor(f x)``, ``y -> floor(f y)`` (sensor ``ceil(W f)`` wide);
    * ``ToFrame`` sums events per ``(bin, polarity, pixel)``: exactly one of ``n_time_bins`` (fixed ``T``, every
      sample the same length) or ``time_window`` (µs per frame, ``T`` varies: batch with [`pad_collate`][]).
      Frames have shape ``(T, P, H, W)`` (``(T, P, W)`` for 1-D sensors such as SHD's ``(700, 1, 1)``).
      tonic's slicing: ``n_time_bins`` uses bins of ``floor((t_N - t_0) / T)`` µs from the first event and
      ``time_window`` drops an incomplete last window, so the last few µs of a recording (at least its final
      event) are not counted.
    """
    if (n_time_bins is None) == (time_window is None):
        raise ValueError("give exactly one of n_time_bins (fixed number of frames) or time_window (µs per frame)")
    if n_time_bins is not None and (isinstance(n_time_bins, bool) or int(n_time_bins) != n_time_bins
                                    or n_time_bins < 1):
        raise ValueError(f"n_time_bins must be an integer >= 1, got {n_time_bins!r}")
    if time_window is not None and not time_window > 0:
        raise ValueError(f"time_window must be > 0 µs, got {time_window!r}")
    steps: list[Callable] = []
    if denoise_time is not None:
        steps.append(tonic.transforms.Denoise(filter_time=denoise_time))
    size = downsampled_size(sensor_size, spatial_factor)
    if spatial_factor is not None and spatial_factor != 1:
        steps.append(tonic.transforms.Downsample(spatial_factor=spatial_factor))
    steps.append(tonic.transforms.ToFrame(sensor_size=size, n_time_bins=n_time_bins, time_window=time_window))
    if to_tensor:
        steps.append(ToFloatTensor(binary=binary))
    return tonic.transforms.Compose(steps)


def pad_collate(batch_first: bool = True) -> tonic.collation.PadTensors:
    """tonic's padding collation: pads every sample's time axis with zeros to the longest in the batch."""
    return tonic.collation.PadTensors(batch_first=batch_first)


def cached(dataset: Dataset, cache: str | None = None, cache_path: str | os.PathLike[str] | None = None,
           reset_cache: bool = False) -> Dataset:
    """Wrap ``dataset`` in tonic's cache: ``"memory"`` (``MemoryCachedDataset``), ``"disk"``
    (``DiskCachedDataset`` at ``cache_path``, HDF5 per sample) or ``None`` (unchanged).

    Put the transforms that should be cached on the dataset itself; a disk cache does not notice a changed
    transform, so encode the transform parameters in ``cache_path`` (or pass ``reset_cache=True``).
    """
    if cache is None or cache == "none":
        return dataset
    if cache == "memory":
        return tonic.MemoryCachedDataset(dataset)
    if cache == "disk":
        if cache_path is None:
            raise ValueError("cache='disk' needs a cache_path")
        return tonic.DiskCachedDataset(dataset, cache_path=str(cache_path), reset_cache=reset_cache)
    raise ValueError(f"cache must be None, 'memory' or 'disk', got {cache!r}")
