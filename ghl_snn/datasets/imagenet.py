"""ImageNet (ILSVRC 2012) as torchvision ``ImageFolder`` train/val splits with the standard transforms and loaders.

Layout (the usual one after extracting the archives and sorting val into class folders)::

    <root>/train/<wnid>/*.JPEG
    <root>/val/<wnid>/*.JPEG

Transforms (the torchvision reference recipe): train ``RandomResizedCrop(S) -> RandomHorizontalFlip ->
ToTensor -> Normalize(ImageNet mean/std)``; val ``Resize(S * 256 / 224) -> CenterCrop(S) -> ToTensor -> Normalize``
with ``S = image_size`` (224).  The loaders always use a ``DistributedSampler`` (with one replica when not
distributed), so the order of epoch ``e`` depends only on ``(seed, e)`` and a resumed run sees the same batches;
worker augmentation seeds come from a per-epoch generator too.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms

from .root import DATA_ENV, DataNotFound, Layout, has_class_folders, locate, missing_message, resolve_data_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")


IMAGENET_LAYOUTS = (Layout("imagenet", lambda p: has_class_folders(p, SPLITS),
                           "imagenet/{train,val}/<class>/*.JPEG (an ImageFolder tree, the same class folders in both "
                           "splits)"),)


def missing_imagenet_message(root: Path | None) -> str:
    """One line naming where ImageNet was searched and the accepted layouts."""
    if root is None:
        return f"ImageNet: no data root; pass --data-root DIR or set {DATA_ENV} to the folder holding imagenet/"
    return missing_message("ImageNet", root, IMAGENET_LAYOUTS)


def check_imagenet_root(data_root: str | os.PathLike[str] | None) -> Path:
    """The ImageNet folder: ``<root>/imagenet`` or ``root`` itself, each with ``{train,val}/<class>/`` splits;
    [`DataNotFound`][ghl_snn.datasets.root.DataNotFound] naming the layouts otherwise."""
    root = resolve_data_root(data_root)
    try:
        return locate(root, IMAGENET_LAYOUTS, "ImageNet")[0]
    except DataNotFound:
        raise DataNotFound(missing_imagenet_message(root)) from None


def imagenet_transforms(image_size: int = 224) -> tuple[transforms.Compose, transforms.Compose]:
    """(train, val) transforms of the torchvision reference recipe at ``image_size``."""
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                transforms.ToTensor(), normalize])
    val = transforms.Compose([transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                              transforms.ToTensor(), normalize])
    return train, val


@dataclass
class EpochLoader:
    """A DataLoader whose ``epoch(e)`` re-seeds the sampler and the worker seeds from ``(seed, e)``."""

    loader: DataLoader
    sampler: DistributedSampler
    seed: int

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        self.loader.generator.manual_seed(self.seed * 100_003 + epoch)
        return iter(self.loader)


def imagenet_loaders(data_root: str | os.PathLike[str] | None, batch_size: int, workers: int = 8,
                     image_size: int = 224, seed: int = 0, rank: int = 0, world_size: int = 1,
                     pin_memory: bool = False) -> tuple[EpochLoader, EpochLoader, list[str]]:
    """Train and val loaders over ``ImageFolder`` splits; ``batch_size`` is per process.

    Train: shuffled, ``drop_last`` (equal shards for DDP); val: in order, sharded over the processes (the
    ``DistributedSampler`` pads the last shard with repeats when the split does not divide evenly).
    """
    root = check_imagenet_root(data_root)
    train_tf, val_tf = imagenet_transforms(image_size)
    train_set = datasets.ImageFolder(str(root / "train"), train_tf)
    val_set = datasets.ImageFolder(str(root / "val"), val_tf)
    if train_set.classes != val_set.classes:
        raise ValueError(f"train and val class folders differ under {root}: {len(train_set.classes)} vs "
                         f"{len(val_set.classes)} classes")
    loaders = []
    for dataset, train in ((train_set, True), (val_set, False)):
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                     drop_last=train)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            pin_memory=pin_memory, drop_last=train, persistent_workers=False,
                            generator=torch.Generator().manual_seed(seed))
        loaders.append(EpochLoader(loader, sampler, seed))
    return loaders[0], loaders[1], list(train_set.classes)
