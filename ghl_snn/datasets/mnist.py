"""MNIST (and FashionMNIST) through torchvision, decoded once into memory as uint8 tensors."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from .root import resolve_data_root

LAYOUT_HINT = ("expected torchvision's layout <root>/{name}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte "
               "(pass --data-root or set GHL_SNN_DATA; online, torchvision downloads it with download=True)")


def load_mnist(data_root: str | os.PathLike[str] | None, train: bool = True, name: str = "MNIST",
               download: bool = False) -> tuple[Tensor, Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of MNIST or FashionMNIST (``name="FashionMNIST"``).

    Raises ``FileNotFoundError`` naming the expected layout when the files are missing and ``download`` is off.
    """
    root = resolve_data_root(data_root)
    if root is None:
        raise FileNotFoundError(f"no data root for {name}: " + LAYOUT_HINT.format(name=name))
    dataset_class = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}[name]
    try:
        dataset = dataset_class(root=str(root), train=train, download=download)
    except RuntimeError as error:
        raise FileNotFoundError(f"{name} not found under {Path(root).resolve()}: " + LAYOUT_HINT.format(name=name)
                                ) from error
    return dataset.data.clone(), dataset.targets.clone().long()


def mnist_vectors(images: Tensor) -> Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 784] in [0, 1]."""
    return images.reshape(images.shape[0], -1).to(torch.float32) / 255.0
