"""Shared machinery of the diagnostics monitors: layer selection, optimizer hooks and weight snapshots.

A monitor observes one *update* per optimiser step.  It brackets the step with ``UpdateObserver.pre_step``
(read ``.grad`` -- which by then holds whatever the learning rule wrote, e.g. ``M ⊙ |E|`` after ``GHL.step()`` --
and snapshot the weights) and ``UpdateObserver.post_step`` (the full update ``ΔW = W_after - W_before``,
including weight decay, momentum, Adam scaling, clipping, ...).  With an optimizer both are called automatically
by ``torch.optim`` step hooks; learners that change weights without an optimizer call them by hand (or use
``UpdateObserver.observe`` as a context manager).
"""
from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..selection import LayerSelector, select_layers


def check_every(every: int) -> int:
    """Validate a recording period (an int >= 1)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (record every k-th optimiser step), got {every!r}")
    return every


class UpdateObserver:
    """Base class: hooks on an optional optimizer, per-step weight snapshots of the selected layers.

    Subclasses implement ``_on_pre_step`` and ``_on_post_step``; both are only called on recorded steps
    (``step % every == 0``).  ``step`` counts completed updates, starting at 0.  Subclasses keep their per-step
    rows in ``self.records`` with the fields of ``COLUMNS``, written by ``to_csv``.
    """

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 layers: LayerSelector = None, every: int = 1) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        self.model = model
        self.every = check_every(every)
        self.layers: dict[str, nn.Module] = select_layers(model, layers)
        self.step = 0
        self._before: dict[str, Tensor] = {}
        self._in_step = False
        self._handles: list[Any] = []
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(lambda *_: self.pre_step()))
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self.post_step()))

    @property
    def recording(self) -> bool:
        """Whether the current step (the one whose forward / update is under way) is recorded."""
        return self.step % self.every == 0

    @torch.no_grad()
    def pre_step(self) -> None:
        """Call right before the weights change: reads ``.grad`` and snapshots the weights of recorded steps."""
        if self._in_step:
            raise RuntimeError(f"{type(self).__name__}.pre_step() called twice without post_step() in between")
        self._in_step = True
        if self.recording:
            self._before = {name: module.weight.detach().clone() for name, module in self.layers.items()}
            self._on_pre_step()

    @torch.no_grad()
    def post_step(self) -> None:
        """Call right after the weights changed: computes ``ΔW`` and records the step, then advances ``step``."""
        if not self._in_step:
            raise RuntimeError(f"{type(self).__name__}.post_step() called without a preceding pre_step()")
        self._in_step = False
        try:
            if self.recording:
                updates = {name: module.weight.detach() - self._before[name] for name, module in self.layers.items()}
                self._on_post_step(updates)
        finally:
            self._before = {}
            self._after_step()
            self.step += 1

    @contextlib.contextmanager
    def observe(self) -> Iterator[None]:
        """``with monitor.observe(): <change the weights>`` -- for learners without a torch optimizer."""
        self.pre_step()
        try:
            yield
        finally:
            self.post_step()

    def _on_pre_step(self) -> None:  # pragma: no cover - overridden
        pass

    def _on_post_step(self, updates: dict[str, Tensor]) -> None:  # pragma: no cover - overridden
        pass

    def _after_step(self) -> None:
        pass

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``self.records`` (one row per layer per recorded step, fields ``COLUMNS``) as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.COLUMNS))
            writer.writeheader()
            writer.writerows(self.records)
        return path

    def remove(self) -> None:
        """Detach every hook (forward and optimizer); recorded data are kept."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> UpdateObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def flat_cosine(a: Tensor, b: Tensor, eps: float = 0.0) -> float:
    """Cosine similarity ``<a, b> / (|a| |b|)`` of two tensors seen as flat vectors (Frobenius inner product).

    Returns ``nan`` when either tensor is zero (the direction is undefined).  Raises ``ValueError`` on a shape
    mismatch.
    """
    if a.shape != b.shape:
        raise ValueError(f"cosine needs tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    denominator = a64.norm() * b64.norm()
    if denominator <= eps:
        return float("nan")
    return float((a64 @ b64) / denominator)


def row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-output-neuron cosine: rows ``a[k].flatten()`` vs ``b[k].flatten()`` (float64; ``nan`` for zero rows)."""
    if a.shape != b.shape:
        raise ValueError(f"cosine needs tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.detach().reshape(a.shape[0], -1).double(), b.detach().reshape(b.shape[0], -1).double()
    denominator = a64.norm(dim=1) * b64.norm(dim=1)
    dot = (a64 * b64).sum(dim=1)
    return torch.where(denominator > 0, dot / torch.where(denominator > 0, denominator, 1.0),
                       torch.full_like(dot, float("nan")))
