"""CIFAR-10/100 (torchvision's official format or an ImageFolder tree) and the embedded 8×8 digits, as uint8 tensors.

Every loader returns an [`ImageData`][] holding ``uint8 [N, 3, 32, 32]`` images and ``int64`` labels, decoded once
and kept in memory; [`BatchStream`][] turns it into normalised float batches on the training device
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

from .root import DATA_ENV, DataNotFound, Layout, has_class_folders, locate, missing_message, resolve_data_root
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
        index = subset_index(len(self), count, seed)
        if index is None:
            return self
        return ImageData(self.images[index], self.labels[index], self.classes)


def split_validation(data: ImageData, fraction: float, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Stratified, seeded split of ``data`` into (train, validation) with ``fraction`` of every class held out.

    Per class ``c`` with ``n_c`` images, ``round(fraction * n_c)`` images (at least 1) chosen by a permutation
    seeded by ``seed`` go to the validation part; the two parts are disjoint and together are ``data``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.labels), generator=generator)
    labels = data.labels[order]
    held: list[Tensor] = []
    kept: list[Tensor] = []
    for label in torch.unique(labels):
        members = order[labels == label]
        count = min(max(1, round(fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
        held.append(members[:count])
        kept.append(members[count:])
    val_index = torch.sort(torch.cat(held)).values
    train_index = torch.sort(torch.cat(kept)).values
    if len(val_index) == 0 or len(train_index) == 0:
        raise ValueError(f"validation fraction {fraction} of {len(data.labels)} images leaves an empty part")
    return (ImageData(data.images[train_index], data.labels[train_index], data.classes),
            ImageData(data.images[val_index], data.labels[val_index], data.classes))


def _is_split_tree(path: Path) -> bool:
    return has_class_folders(path, ("train", "test"))


#: accepted layouts per CIFAR variant, under the folder holding the data sets (or the variant's folder itself)
CIFAR_LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "cifar10": (
        Layout("cifar10-jpeg", _is_split_tree, "cifar10-jpeg/{train,test}/<class>/*.jpg (an ImageFolder tree)"),
        Layout("cifar-10-batches-py", lambda p: (p / "data_batch_1").is_file() and (p / "test_batch").is_file(),
               "cifar-10-batches-py/ (torchvision's official format)")),
    "cifar100": (
        Layout("cifar100-jpeg", _is_split_tree, "cifar100-jpeg/{train,test}/<class>/*.jpg (an ImageFolder tree)"),
        Layout("cifar-100-python", lambda p: (p / "train").is_file() and (p / "test").is_file(),
               "cifar-100-python/ (torchvision's official format)")),
}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
#: how to get the data when online (the training CLI has the option; the studies built on it read the same folder)
DOWNLOAD_HINT = "online, python -m ghl_snn.experiments.cifar --download lets torchvision fetch the archive"


def missing_data_message(name: str, root: Path | None) -> str:
    """One line naming where ``name`` was searched and every accepted layout, with the remedies."""
    layouts = CIFAR_LAYOUTS.get(name, CIFAR_LAYOUTS["cifar10"])
    if root is None:
        return (f"{name}: no data root; pass --data-root DIR or set {DATA_ENV} to the folder holding "
                f"{' or '.join(layout.folder + '/' for layout in layouts)} ({DOWNLOAD_HINT})")
    return missing_message(name, root, layouts) + f"; {DOWNLOAD_HINT}"


def is_image_folder(root: Path) -> bool:
    """True when ``root/train`` and ``root/test`` both hold class sub-folders."""
    return _is_split_tree(root)


@dataclass(frozen=True)
class DataSource:
    """Where a CIFAR variant was found, read without decoding: folder, layout, class names, size of one image."""

    path: Path
    layout: Layout
    classes: tuple[str, ...]
    image_size: tuple[int, int] | None  # (height, width) of the first training image; None if unknown

    @property
    def image_folder(self) -> bool:
        return self.layout.holds is _is_split_tree


def find_cifar(name: str, data_root: str | os.PathLike[str] | None) -> DataSource:
    """Locate CIFAR-10 (``name="cifar10"``) or CIFAR-100 under the data root and describe it, decoding nothing.

    Accepted: ``<root>/cifar10-jpeg`` (an ImageFolder tree) or ``<root>/cifar-10-batches-py`` (torchvision), the
    same for ``cifar100-jpeg`` / ``cifar-100-python``, or ``root`` being one of these folders itself.  Raises
    [`DataNotFound`][ghl_snn.datasets.root.DataNotFound] naming both layouts.
    """
    if name not in CIFAR_LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected 'cifar10' or 'cifar100'")
    root = resolve_data_root(data_root)
    if root is None:
        raise DataNotFound(missing_data_message(name, None))
    try:
        path, layout = locate(root, CIFAR_LAYOUTS[name], name)
    except DataNotFound:
        raise DataNotFound(missing_data_message(name, root)) from None
    if layout.holds is not _is_split_tree:
        return DataSource(path, layout, tuple(str(i) for i in range(CIFAR_CLASSES[name])), (32, 32))
    classes = tuple(sorted(p.name for p in (path / "train").iterdir() if p.is_dir()))
    size = None
    for folder in sorted((path / "train").iterdir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if files:
            try:
                with Image.open(files[0]) as handle:  # reads the header only
                    size = (handle.height, handle.width)
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot read image file {files[0]}: {error}") from error
            break
    return DataSource(path, layout, classes, size)


def check_cifar(source: DataSource, name: str, image_size: int = 32) -> None:
    """``ValueError`` (one line) when the data found does not fit the preset: class count or image size."""
    expected = CIFAR_CLASSES[name]
    if len(source.classes) != expected:
        raise ValueError(f"{source.path} holds {len(source.classes)} classes but the preset's data set {name} has "
                         f"{expected}: choose a {name} folder or a preset for this data")
    if source.image_size is not None and source.image_size != (image_size, image_size):
        height, width = source.image_size
        raise ValueError(f"{source.path} holds {height}x{width} images but the preset expects "
                         f"{image_size}x{image_size} ({name})")


def subset_index(total: int, count: int | None, seed: int) -> Tensor | None:
    """The indices [`ImageData.subset`][ghl_snn.datasets.cifar.ImageData.subset] keeps (``None``: everything), so a
    subset can be decoded alone."""
    if count is None or count >= total:
        return None
    if count <= 0:
        raise ValueError(f"subset size must be > 0, got {count}")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]


def balanced_index(labels: Tensor, classes: int, per_class: int, seed: int) -> Tensor:
    """A class-balanced subset: for each class ``0 .. classes - 1`` in turn, ``per_class`` of its indices (all when it
    has fewer) in the order of one random permutation drawn from a generator seeded with ``seed``."""
    if per_class <= 0:
        raise ValueError(f"per_class must be > 0, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(classes):  # one permutation per class, drawn in class order from the same generator
        index = torch.nonzero(labels == label).flatten()
        chosen.append(index[torch.randperm(index.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen)


def load_image_folder(root: str | os.PathLike[str], train: bool, size: int = 32, subset: int | None = None,
                      seed: int = 0, per_class: int | None = None) -> ImageData:
    """Decode ``<root>/{train,test}/<class>/*`` (Pillow, as ImageFolder does) into uint8 RGB ``[N, 3, size, size]``.

    Classes are the sorted folder names (ImageFolder's order).  ``subset``: decode only the ``subset`` images that
    [`ImageData.subset`][ghl_snn.datasets.cifar.ImageData.subset] with ``seed`` would keep (same images, same order);
    ``per_class``: decode only the class-balanced subset [`balanced_index`][] draws with ``seed`` (not both).
    Raises ``FileNotFoundError`` for a missing split folder and ``ValueError`` naming the file for an image that cannot
    be decoded.
    """
    split_dir = Path(root) / ("train" if train else "test")
    if not split_dir.is_dir():
        raise DataNotFound(missing_message("ImageFolder", Path(root), CIFAR_LAYOUTS["cifar10"][:1]))
    folder = torchvision.datasets.DatasetFolder(str(split_dir), loader=str, extensions=IMAGE_SUFFIXES)
    samples = folder.samples
    if per_class is not None and subset is not None:
        raise ValueError("pass subset or per_class, not both")
    index = subset_index(len(samples), subset, seed) if per_class is None else \
        balanced_index(torch.tensor(folder.targets), len(folder.classes), per_class, seed)
    if index is not None:
        samples = [samples[i] for i in index.tolist()]
    images = torch.empty(len(samples), 3, size, size, dtype=torch.uint8)
    for slot, (path, _) in enumerate(tqdm(samples, desc=f"decode {split_dir.name}", leave=False, mininterval=2.0)):
        try:
            with Image.open(path) as handle:
                image = torch.from_numpy(np.array(handle.convert("RGB"))).permute(2, 0, 1)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot decode image file {path}: {error}") from error
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        images[slot] = image
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageData(images, labels, list(folder.classes))


def load_cifar(name: str, data_root: str | os.PathLike[str] | None, train: bool, download: bool = False,
               subset: int | None = None, seed: int = 0) -> ImageData:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 from an ImageFolder tree or torchvision's official format.

    The data root (``data_root`` or ``GHL_SNN_DATA``) is the folder holding the data sets or the data set's own folder
    ([`find_cifar`][]).  ``subset``/``seed``: keep (and decode) only the images
    [`ImageData.subset`][ghl_snn.datasets.cifar.ImageData.subset] would keep.  Never falls back to another data set:
    when nothing is found (and ``download`` is off or fails) [`DataNotFound`][ghl_snn.datasets.root.DataNotFound] names
    the expected layouts and remedies.
    """
    dataset_class = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}.get(name)
    if dataset_class is None:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected 'cifar10' or 'cifar100'")
    root = resolve_data_root(data_root)
    try:
        source = find_cifar(name, root)
    except DataNotFound:
        if not download:
            raise
        source = None
    if source is not None and source.image_folder:
        return load_image_folder(source.path, train, subset=subset, seed=seed)
    # torchvision's format: its root is the folder holding cifar-10-batches-py / cifar-100-python
    target = source.path.parent if source is not None else (root if root is not None else Path("data"))
    try:
        dataset = dataset_class(root=str(target), train=train, download=download)
    except (RuntimeError, OSError) as error:  # torchvision: "Dataset not found or corrupted" / network errors
        raise DataNotFound(missing_data_message(name, target) + f" ({error})") from error
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    data = ImageData(images, torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes))
    return data.subset(subset, seed=seed)


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


def standardized_vectors(images: Tensor, mean: Tensor | None = None, std: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """uint8 ``[N, C, H, W]`` -> float32 ``[N, C * H * W]`` standardised per channel, ``(x / 255 - mean_c) / std_c``,
    with the given (training) statistics or those of ``images``; returns ``(vectors, mean, std)``."""
    x = images.float() / 255.0
    if mean is None or std is None:
        mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
    return ((x - mean) / std).flatten(1), mean, std


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
    """Mini-batches of an [`ImageData`][] as normalised float tensors on ``device``.

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
            draws = [(torch.randint(0, 2 * CROP_PADDING + 1, (2, size), generator=generator),
                      torch.rand(size, generator=generator) < 0.5)
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
