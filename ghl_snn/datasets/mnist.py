"""MNIST and Fashion-MNIST through torchvision, decoded once into memory as uint8 tensors.

Both read torchvision's standard layout under the data root: ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``
holding ``{train,t10k}-images-idx3-ubyte`` and ``{train,t10k}-labels-idx1-ubyte``.  Before torchvision decodes them
every idx file is checked ([`check_idx_file`][]): an empty, truncated or foreign file gives one ``ValueError``
line naming the file and the problem instead of a reshape error deep inside torchvision.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from .root import Layout, locate, resolve_data_root

LAYOUT_HINT = ("expected torchvision's layout <root>/{name}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte "
               "(pass --data-root or set GHL_SNN_DATA; online, torchvision downloads it with download=True)")


#: torchvision dataset class per preset name
DATASETS = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}
IDX_UBYTE = 0x08


def check_idx_file(path: str | os.PathLike[str], ndim: int) -> tuple[int, ...]:
    """Return the dimensions of the uint8 idx file ``path`` with ``ndim`` dimensions, or raise ``ValueError``.

    idx layout: 2 zero bytes, the type byte (0x08: unsigned byte), the number of dimensions, the dimensions as
    big-endian uint32, then ``prod(dims)`` data bytes.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), expected an idx file")
    header = 4 + 4 * ndim
    with open(path, "rb") as handle:
        head = handle.read(header)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != IDX_UBYTE or head[3] != ndim:
        raise ValueError(f"{path}: not a {ndim}-d uint8 idx file (first bytes {head[:4].hex() or 'missing'}, "
                         f"expected 0000{IDX_UBYTE:02x}{ndim:02x})")
    if len(head) < header:
        raise ValueError(f"{path}: truncated header ({size} bytes, the {ndim}-d header alone needs {header})")
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = header + math.prod(dims)
    if size != expected:
        problem = "truncated" if size < expected else "has trailing bytes"
        raise ValueError(f"{path}: {problem}: dimensions {dims} need {expected} bytes, the file has {size}")
    return dims


def check_split_files(raw: Path, train: bool) -> None:
    """Check the image and label idx files of one split under ``raw`` (if present) and that their counts agree."""
    prefix = "train" if train else "t10k"
    images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    if not (images.is_file() and labels.is_file()):
        return  # torchvision reports missing files (turned into the layout hint below)
    image_dims, label_dims = check_idx_file(images, 3), check_idx_file(labels, 1)
    if image_dims[0] != label_dims[0]:
        raise ValueError(f"{images} holds {image_dims[0]} images but {labels} holds {label_dims[0]} labels")


def mnist_layout(name: str = "MNIST") -> Layout:
    """torchvision's layout of MNIST / FashionMNIST: ``<name>/raw/`` holding the four idx files (names only)."""
    files = [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    return Layout(name, lambda p: p.name == name and all((p / "raw" / f).is_file() for f in files),
                  f"{name}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte (torchvision's layout)")


def locate_mnist(data_root: str | os.PathLike[str] | None, name: str = "MNIST") -> Path:
    """The folder *holding* ``<name>/raw/`` (what [`load_mnist`][ghl_snn.datasets.mnist.load_mnist] and torchvision
    take as root), from the data root or the data set's own folder;
    [`DataNotFound`][ghl_snn.datasets.root.DataNotFound] in one line naming the folder searched and the layout
    otherwise.  Looks at file names only (nothing decoded)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return locate(data_root, [mnist_layout(name)], name)[0].parent


def load_mnist(data_root: str | os.PathLike[str] | None, train: bool = True, name: str = "MNIST",
               download: bool = False) -> tuple[Tensor, Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of MNIST or FashionMNIST (``name="FashionMNIST"``).

    Raises ``FileNotFoundError`` naming the expected layout when the files are missing and ``download`` is off, and
    ``ValueError`` naming the file when an idx file is empty, truncated or not an idx file.
    """
    root = resolve_data_root(data_root)
    if root is None:
        raise FileNotFoundError(f"no data root for {name}: " + LAYOUT_HINT.format(name=name))
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    dataset_class = DATASETS[name]
    check_split_files(Path(root) / name / "raw", train)
    try:
        dataset = dataset_class(root=str(root), train=train, download=download)
    except RuntimeError as error:
        raise FileNotFoundError(f"{name} not found under {Path(root).resolve()}: " + LAYOUT_HINT.format(name=name)
                                ) from error
    return dataset.data.clone(), dataset.targets.clone().long()


def mnist_vectors(images: Tensor) -> Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 784] in [0, 1]."""
    return images.reshape(images.shape[0], -1).to(torch.float32) / 255.0


#: floor of the per-pixel standard deviation used by ``standardize`` (a pixel that is constant on the training
#: split, e.g. a border pixel, stays 0 instead of dividing by 0)
STD_FLOOR = 1e-3


@dataclass
class VectorSplit:
    """Flattened images (``float32 [N, 784]``) and labels of a training / validation / test split."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor


def mnist_split(data_root: str | os.PathLike[str] | None, name: str = "MNIST", val_fraction: float = 0.2,
                seed: int = 0, standardize: bool = False) -> VectorSplit:
    """Flattened [0, 1] images of MNIST / FashionMNIST; a seeded ``val_fraction`` of the training set held out for
    validation (the same ``seed``, the same split).

    ``standardize``: every pixel shifted and scaled by the mean and standard deviation (floored at
    ``STD_FLOOR``) of that pixel over the training part of the split -- never the validation or test images --
    and the same transform applied to validation and test ("flattened and normalized", HebbFF paper, Sec. 4)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    images, labels = load_mnist(data_root, train=True, name=name)
    test_images, test_labels = load_mnist(data_root, train=False, name=name)
    x, test_x = mnist_vectors(images), mnist_vectors(test_images)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * x.shape[0]))
    val, train = order[:n_val], order[n_val:]
    if standardize:
        mean, std = x[train].mean(dim=0), x[train].std(dim=0).clamp_min(STD_FLOOR)
        x, test_x = (x - mean) / std, (test_x - mean) / std
    return VectorSplit(x[train], labels[train], x[val], labels[val], test_x, test_labels)
