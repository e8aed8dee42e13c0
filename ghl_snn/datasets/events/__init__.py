"""Event-camera and audio-spike data sets through tonic, readable offline from their own on-disk layouts.

One data set per module, tonic style: [`NMNIST`][], [`DVSGesture`][], [`SHD`][]; shared errors,
frame transforms, padding collation and caching in ``.base``; locating a data set under the data root
and loading it as frames in ``.loaders``.  ``event_dataset`` builds one by name.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from .base import (EventDataError, EventDataset, MissingEventData, ToFloatTensor, cached, downsampled_size,
                   frame_transform, pad_collate)
from .dvs_gesture import DVSGesture
from .nmnist import NMNIST, encode_nmnist
from .shd import SHD, write_shd

DATASETS: dict[str, type[EventDataset]] = {"nmnist": NMNIST, "dvs-gesture": DVSGesture, "shd": SHD}


def event_dataset(name: str, root: str | os.PathLike[str], train: bool = True, transform: Callable | None = None,
                  download: bool = False, **kwargs: object) -> EventDataset:
    """``DATASETS[name](root, train, transform=..., download=..., **kwargs)`` with a clear error for unknown names."""
    if name not in DATASETS:
        raise ValueError(f"unknown event data set {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name](root, train=train, transform=transform, download=download, **kwargs)


from .loaders import event_loader, find_event_root  # noqa: E402 -- uses DATASETS above


__all__ = [
    "NMNIST", "DVSGesture", "SHD", "DATASETS", "event_dataset",
    "EventDataset", "EventDataError", "MissingEventData",
    "frame_transform", "downsampled_size", "ToFloatTensor", "pad_collate", "cached",
    "encode_nmnist", "write_shd", "find_event_root", "event_loader",
]
