"""k-fold cross-validation over every recording of a small event data set, with tonic augmentation.

[`EventFolds`][ghl_snn.datasets.events.folds.EventFolds] pools a data set's training and test recordings, decodes
each once (optionally through tonic's ``Denoise``), and splits them into ``k`` folds of a fixed random permutation.
Fold ``val_fold`` is the validation fold of every run; each of the other folds is the test fold of one run, trained
on the remaining folds ([`EventFolds.split`][ghl_snn.datasets.events.folds.EventFolds.split]), so that every
non-validation recording is tested exactly once over the ``k - 1`` runs and model selection never sees a test
recording.

Training recordings are augmented anew at every access by tonic's ``DropEvent`` (each event dropped with
probability ``drop``) and ``SpatialJitter`` (Gaussian noise of variance ``jitter`` pixels² on each address, clipped
to the sensor), then binned by ``ToFrame`` into ``T`` frames clipped to binary spikes; validation and test
recordings are binned once without augmentation.  tonic's transforms draw from NumPy's global generator, so a seeded
run is reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tonic
import torch
from torch.utils.data import DataLoader, Dataset

from .base import EventDataset, ToFloatTensor


class AugmentedFrames(Dataset):
    """``(frames (T, P, H, W), label)`` of stored event arrays, each passed through ``transform`` when read."""

    def __init__(self, events: Sequence[np.ndarray], labels: Sequence[int], transform: tonic.transforms.Compose
                 ) -> None:
        if len(events) != len(labels):
            raise ValueError(f"{len(events)} recordings but {len(labels)} labels")
        self.events, self.labels, self.transform = list(events), [int(y) for y in labels], transform

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.events[index]), self.labels[index]


class EventFolds:
    """Every recording of ``splits`` (e.g. a data set's train and test split) in ``k`` folds (see the module
    docstring).  ``denoise_time``: tonic ``Denoise(filter_time)`` in µs applied once at loading (``None``: off)."""

    def __init__(self, splits: Sequence[EventDataset], k: int = 5, n_time_bins: int = 10, seed: int = 0,
                 denoise_time: float | None = None, drop: float = 0.0, jitter: float = 0.0,
                 val_fold: int = 0) -> None:
        if k < 3:
            raise ValueError(f"k must be >= 3 (one validation fold, at least two test folds), got {k}")
        if not 0 <= val_fold < k:
            raise ValueError(f"val_fold must lie in 0..{k - 1}, got {val_fold}")
        if not 0 <= drop < 1 or jitter < 0:
            raise ValueError(f"drop must lie in [0, 1) and jitter be >= 0, got drop={drop}, jitter={jitter}")
        sensor = {tuple(split.sensor_size) for split in splits}
        if len(sensor) != 1:
            raise ValueError(f"the splits have different sensor sizes {sorted(sensor)}")
        self.sensor_size = tuple(sensor.pop())
        denoise = tonic.transforms.Denoise(filter_time=denoise_time) if denoise_time is not None else None
        self.events = [denoise(split.read_events(i)) if denoise else split.read_events(i)
                       for split in splits for i in range(len(split))]
        self.labels = torch.tensor([int(y) for split in splits for y in split.targets])
        if len(self.events) < k:
            raise ValueError(f"{len(self.events)} recordings cannot fill {k} folds")
        order = torch.randperm(len(self.events), generator=torch.Generator().manual_seed(seed))
        self.folds = [fold.sort().values for fold in torch.tensor_split(order, k)]
        self.k, self.val_fold, self.n_time_bins = k, val_fold, n_time_bins
        to_frame = [tonic.transforms.ToFrame(sensor_size=self.sensor_size, n_time_bins=n_time_bins),
                    ToFloatTensor(binary=True)]
        augment: list = []
        if drop > 0:
            augment.append(tonic.transforms.DropEvent(p=drop))
        if jitter > 0:
            augment.append(tonic.transforms.SpatialJitter(sensor_size=self.sensor_size, var_x=jitter, var_y=jitter,
                                                          clip_outliers=True))
        self.train_transform = tonic.transforms.Compose(augment + to_frame)
        plain = tonic.transforms.Compose(to_frame)
        self.frames = torch.stack([plain(events) for events in self.events]).to(torch.uint8)  # unaugmented, once

    @property
    def test_folds(self) -> list[int]:
        """The folds that serve as test folds, in order (every fold but the validation fold)."""
        return [f for f in range(self.k) if f != self.val_fold]

    def split(self, run: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(train, val, test)`` recording indices of run ``run``: test fold ``test_folds[run % (k - 1)]``,
        the validation fold, and the remaining ``k - 2`` folds for training."""
        test = self.test_folds[run % len(self.test_folds)]
        train = torch.cat([self.folds[f] for f in range(self.k) if f not in (test, self.val_fold)]).sort().values
        return train, self.folds[self.val_fold], self.folds[test]

    def train_loader(self, indices: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
        """Shuffled, augmented training batches ``(frames (N, T, P, H, W), labels)``; the order is drawn from a
        generator seeded with ``seed`` (``loader.generator``)."""
        data = AugmentedFrames([self.events[i] for i in indices.tolist()], self.labels[indices].tolist(),
                               self.train_transform)
        return DataLoader(data, batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed))

    def eval_batches(self, indices: torch.Tensor, batch_size: int = 100) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Unaugmented batches ``(frames, labels)`` of ``indices`` (float frames, in index order)."""
        return [(self.frames[chunk].float(), self.labels[chunk]) for chunk in torch.split(indices, batch_size)]
