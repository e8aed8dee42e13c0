"""Locate an event data set under the data root and load it as binary event frames.

[`find_event_root`][] returns the folder holding the data set's own folder (tonic's ``save_to``) from the data root
(``--data-root`` or ``$GHL_SNN_DATA``, see [`ghl_snn.datasets.root`][]); [`event_loader`][] bins every recording
into ``T`` frames (tonic ``ToFrame``, clipped to binary spikes), optionally draws a fixed random subset, caches the
frames and batches them with zero padding to the longest recording.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ..root import resolve_data_root
from . import DATASETS
from .base import MissingEventData, cached, frame_transform, pad_collate


def find_event_root(dataset: str, subdirs: Sequence[str], data_root: str | os.PathLike[str] | None) -> Path:
    """The folder holding ``dataset``'s own folder: ``<data root>/<subdir>`` for the first of ``subdirs`` that
    contains it, or the parent of the data root when the data root is that folder itself.

    Raises [`MissingEventData`][ghl_snn.datasets.events.base.MissingEventData] naming the expected layout."""
    root = resolve_data_root(data_root)
    folder = DATASETS[dataset].folder
    if root is None:
        raise MissingEventData(Path(folder), "no data root: pass --data-root DIR or set GHL_SNN_DATA (the folder "
                                             f"holding {' or '.join(s + '/' + folder for s in subdirs)})")
    for sub in subdirs:
        if (root / sub / folder).is_dir():
            return root / sub
    if root.name == folder and root.is_dir():  # the data set's own folder
        return root.parent
    expected = ", ".join(str(root / sub / folder) for sub in subdirs)
    raise MissingEventData(root, f"{dataset} data not found under {root}: expected the folder holding the "
                                 f"data sets, i.e. one of {expected}, or that {folder}/ folder itself (set it with "
                                 "--data-root DIR or GHL_SNN_DATA; never downloaded by this program, the loaders "
                                 "accept download=True)")


def event_loader(dataset: str, root: Path, train: bool, batch_size: int, seed: int, cache_dir: Path,
                 n_time_bins: int, subset: int | None = None, spatial_factor: float | None = None,
                 denoise_time: float | None = None, cache: str = "memory") -> DataLoader:
    """Batches ``(frames (N, T, ...), labels)`` of ``dataset`` binned into ``n_time_bins`` binary frames.

    ``subset``: a fixed random subset of that many recordings (drawn from ``seed``, another one for the test
    split); ``cache``: ``"none"``, ``"memory"`` or ``"disk"`` (under ``cache_dir``, one folder per split and
    binning); the training split is shuffled by a generator seeded with ``seed``, so the batch order is
    reproducible and its state can be checkpointed (``loader.generator``)."""
    transform = frame_transform(DATASETS[dataset].sensor_size, n_time_bins=n_time_bins, denoise_time=denoise_time,
                                spatial_factor=spatial_factor, binary=True)
    data = DATASETS[dataset](root, train=train, transform=transform)
    if subset is not None and subset < len(data):
        generator = torch.Generator().manual_seed(seed + (0 if train else 1))
        data = Subset(data, torch.randperm(len(data), generator=generator)[:subset].tolist())
    split = "train" if train else "test"
    data = cached(data, cache, cache_dir / f"{dataset}-{split}-T{n_time_bins}-s{spatial_factor}-d{denoise_time}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=train, collate_fn=pad_collate(), generator=generator)
