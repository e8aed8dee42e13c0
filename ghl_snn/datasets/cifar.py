"""CIFAR-10/100 (torchvision's official format or an ImageFolder tree) and the embedded 8×8 digits, as uint8 tensors.

Every loader returns an :class:`ImageData` holding ``uint8 [N, 3, 32, 32]`` images and ``int64`` labels, decoded once
and kept in memory; :class:`BatchStream` turns it into normalised float batches on the training device
(normalisation ``(x/255 - 0.5) / 0.5`` per channel, optional random-crop(4)+flip augmentation, vectorised).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ..experiments.common import resolve_data_root

DATA_ENV = "GHL_SNN_DATA"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
CROP_PADDING = 4  # BatchStream's augmentation: random crop with this zero padding, horizontal flip


@dataclass
class ImageData:
    """In-memory image classification split: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N]."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, count: int | None, seed: int = 0) -> ImageData:
        """A class-agnostic random subset of ``count`` samples (``None`` or ≥ N: everything)."""
        if count is None or count >= len(self):
            return self
        if count <= 0:
            raise ValueError(f"subset size must be > 0, got {count}")
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return ImageData(self.images[index], self.labels[index], self.classes)


def missing_data_message(name: str, root: Path | None) -> str:
    where = f"under {root.resolve()}" if root is not None else "(no --data-root given and GHL_SNN_DATA unset)"
    return (f"{name} data not found {where}. Expected either an ImageFolder tree <root>/train/<class>/*.jpg and "
            f"<root>/test/<class>/*.jpg (e.g. ../shared/data/cifar10-jpeg), or torchvision's official format "
            f"<root>/cifar-10-batches-py (CIFAR-10) / <root>/cifar-100-python (CIFAR-100). Remedies: pass "
            f"--data-root DIR (or set {DATA_ENV}) to such a folder, or run online with --download so torchvision "
            f"fetches the official archive.")


def is_image_folder(root: Path) -> bool:
    """True when ``root/train`` and ``root/test`` both hold class sub-folders."""
    return all((root / split).is_dir() and any(p.is_dir() for p in (root / split).iterdir())
               for split in ("train", "test"))


def load_image_folder(root: str | os.PathLike[str], train: bool, size: int = 32) -> ImageData:
    """Decode ``<root>/{train,test}/<class>/*`` once (Pillow, as ImageFolder does) into uint8 RGB ``[N, 3, size, size]``.

    Classes are the sorted folder names (ImageFolder's order).  Raises ``FileNotFoundError`` for a missing split
    folder and ``ValueError`` naming the file for an image that cannot be decoded.
    """
    split_dir = Path(root) / ("train" if train else "test")
    if not split_dir.is_dir():
        raise FileNotFoundError(missing_data_message("ImageFolder", Path(root)))
    folder = torchvision.datasets.DatasetFolder(str(split_dir), loader=str, extensions=IMAGE_SUFFIXES)
    images = torch.empty(len(folder.samples), 3, size, size, dtype=torch.uint8)
    for index, (path, _) in enumerate(tqdm(folder.samples, desc=f"decode {split_dir.name}", leave=False,
                                           mininterval=2.0)):
        try:
            with Image.open(path) as handle:
                image = torch.from_numpy(np.array(handle.convert("RGB"))).permute(2, 0, 1)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot decode image file {path}: {error}") from error
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        images[index] = image
    labels = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    return ImageData(images, labels, list(folder.classes))


def load_cifar(name: str, data_root: str | os.PathLike[str] | None, train: bool, download: bool = False) -> ImageData:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 from an ImageFolder tree or torchvision's official format.

    The root comes from ``data_root`` or ``GHL_SNN_DATA``.  Never falls back to another data set: when nothing is
    found (and ``download`` is off or fails) a ``FileNotFoundError`` names the expected layouts and remedies.
    """
    dataset_class = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}.get(name)
    if dataset_class is None:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected 'cifar10' or 'cifar100'")
    root = resolve_data_root(data_root)
    if root is not None and is_image_folder(root):
        return load_image_folder(root, train)
    if root is None and not download:
        raise FileNotFoundError(missing_data_message(name, None))
    target = root if root is not None else Path("data")
    try:
        dataset = dataset_class(root=str(target), train=train, download=download)
    except (RuntimeError, OSError) as error:  # torchvision: "Dataset not found or corrupted" / network errors
        raise FileNotFoundError(missing_data_message(name, target) + f" ({error})") from error
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes))


def load_digits_as_cifar(train: bool, seed: int = 0, test_fraction: float = 0.2) -> ImageData:
    """scikit-learn's embedded 8×8 digits (1,797 images, no download), upsampled to 32×32 RGB uint8.

    A fixed, seeded split: ``test_fraction`` of the samples form the test set.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] / 16.0
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(labels) * test_fraction))
    index = order[n_test:] if train else order[:n_test]
    return ImageData(images[index].contiguous(), labels[index], [str(d) for d in range(10)])


def normalize_images(images: Tensor) -> Tensor:
    """uint8 -> float32 in [-1, 1]: ``(x / 255 - 0.5) / 0.5`` per channel."""
    return images.float().div_(127.5).sub_(1.0)


def random_crop_flip(images: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Per-sample random crop (zero padding ``padding``) and horizontal flip, vectorised over the batch."""
    n = images.shape[0]
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return crop_flip(images, shifts.to(images.device), flip.to(images.device), padding)


def crop_flip(images: Tensor, shifts: Tensor, flip: Tensor, padding: int = 4) -> Tensor:
    """Crop each image of the zero-padded batch at ``shifts`` ``(2, N)`` (row, column offsets in
    ``[0, 2 * padding]``) and mirror those with ``flip`` ``(N,)``; everything stays on the images' device."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (shifts[0][:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (shifts[1][:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    cropped = padded[batch, channels, rows, cols]
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


class BatchStream:
    """Mini-batches of an :class:`ImageData` as normalised float tensors on ``device``.

    The order (and augmentation) of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees exactly the
    batches of an uninterrupted one.  The uint8 images and the labels are copied to ``device`` once (on first use),
    and each epoch's order and augmentation draws once per epoch: a training step makes no host-to-device copy.
    """

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, shuffle: bool = False,
                 augment: bool = False, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be > 0, got {batch_size}")
        self.data, self.batch_size, self.device = data, batch_size, torch.device(device)
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self._on_device: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        full, rest = divmod(len(self.data), self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def _device_data(self) -> tuple[Tensor, Tensor]:
        if self._on_device is None:
            self._on_device = (self.data.images.to(self.device), self.data.labels.to(self.device))
        return self._on_device

    def epoch(self, epoch: int):
        """Yield ``(images, labels)`` for one epoch."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.data), generator=generator) if self.shuffle else torch.arange(len(self.data))
        starts = [start for start in range(0, len(order), self.batch_size)
                  if not (self.drop_last and len(order) - start < self.batch_size)]
        sizes = [min(self.batch_size, len(order) - start) for start in starts]
        if self.augment:  # the same draws, in the same order, as one random_crop_flip call per batch
            draws = [(torch.randint(0, 2 * CROP_PADDING + 1, (2, size), generator=generator), torch.rand(size, generator=generator) < 0.5)
                     for size in sizes]
            shifts = torch.cat([d[0] for d in draws], dim=1).to(self.device)
            flips = torch.cat([d[1] for d in draws]).to(self.device)
        images, labels = self._device_data()
        order = order.to(self.device)
        for start, size in zip(starts, sizes):
            index = order[start:start + size]
            batch = images[index]
            if self.augment:
                batch = crop_flip(batch, shifts[:, start:start + size], flips[start:start + size], CROP_PADDING)
            yield normalize_images(batch), labels[index]
