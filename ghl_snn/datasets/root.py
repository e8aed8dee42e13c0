"""Where the data sets live: one convention for every loader, command-line program and test.

``--data-root DIR`` (or the environment variable ``GHL_SNN_DATA``) names the folder that *holds* the data sets,
each in its own sub-folder under its usual name::

    DIR/MNIST/raw/...                      torchvision's MNIST layout
    DIR/cifar10-jpeg/{train,test}/<class>/  an ImageFolder tree   (or DIR/cifar-10-batches-py/, torchvision's)
    DIR/NMNIST/{Train,Test}/<digit>/        tonic's layout

A data set's own folder is accepted as well (``--data-root DIR/cifar10-jpeg``).  [`locate`][] tries both and,
when neither matches, raises [`DataNotFound`][] -- one line naming the folder searched and every accepted
layout.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "GHL_SNN_DATA"


class DataNotFound(FileNotFoundError):
    """No accepted layout of a data set under the data root; the message names the root and the layouts."""


def resolve_data_root(data_root: str | os.PathLike[str] | None, env: str = DATA_ENV) -> Path | None:
    """``data_root`` if given, else the environment variable ``env`` (default ``GHL_SNN_DATA``), else None."""
    value = data_root if data_root is not None else os.environ.get(env)
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Layout:
    """One accepted on-disk layout of a data set: its folder name under the data root, a test that a folder holds
    it (cheap: looks at names only, decodes nothing) and a short description for error messages."""

    folder: str
    holds: Callable[[Path], bool]
    description: str


def locate(data_root: str | os.PathLike[str] | None, layouts: Sequence[Layout], name: str) -> tuple[Path, Layout]:
    """The folder of data set ``name`` and the layout found there.

    Tries ``<root>/<layout.folder>`` for every layout (``root`` = the folder holding the data sets), then ``root``
    itself (the data set's own folder).  Raises [`DataNotFound`][] in one line otherwise.
    """
    root = resolve_data_root(data_root)
    if root is None:
        raise DataNotFound(f"{name}: no data root; pass --data-root DIR or set {DATA_ENV} to the folder holding "
                           f"{' or '.join(layout.folder + '/' for layout in layouts)}")
    for layout in layouts:
        if _safe(layout.holds, root / layout.folder):
            return root / layout.folder, layout
    for layout in layouts:
        if _safe(layout.holds, root):
            return root, layout
    raise DataNotFound(missing_message(name, root, layouts))


def missing_message(name: str, root: Path, layouts: Sequence[Layout]) -> str:
    """One line: where was searched and the accepted layouts (folder holding the data sets, or the set's own)."""
    accepted = "; ".join(f"{root}/{layout.description}" for layout in layouts)
    return (f"{name} not found under {root}: expected the folder holding the data sets, with {accepted} "
            f"(or --data-root naming that data-set folder itself; set it with --data-root DIR or {DATA_ENV})")


def _safe(test: Callable[[Path], bool], path: Path) -> bool:
    try:
        return test(path)
    except OSError:  # unreadable folder: treat as absent, the error message names the root
        return False


def has_class_folders(path: Path, splits: Sequence[str]) -> bool:
    """True when every ``path/<split>`` exists and holds at least one sub-folder (an ImageFolder split)."""
    return all((path / split).is_dir() and any(p.is_dir() for p in (path / split).iterdir()) for split in splits)
