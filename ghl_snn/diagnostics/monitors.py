"""``--monitor alignment,competition`` for any training loop: build monitors from a spec, write them at the end.

Both monitors attach through ``torch.optim`` step hooks, so a loop that calls ``optimizer.step()`` needs no other
change::

    monitors = make_monitors(args.monitor, model, optimizer, every=args.monitor_every)
    ...train...
    write_monitors(monitors, out_dir)     # alignment.csv/.png, competition.csv/.png
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ..selection import LayerSelector
from .alignment import AlignmentMonitor
from .competition import CompetitionMonitor
from .stepsize import StepSizeMonitor

MONITORS = {"alignment": AlignmentMonitor, "competition": CompetitionMonitor, "stepsize": StepSizeMonitor}

Monitor = AlignmentMonitor | CompetitionMonitor


def parse_monitor_spec(spec: str | Iterable[str] | None) -> list[str]:
    """``"alignment,competition"`` (or a list, or None / "" / "none") -> validated names, in order, no repeats."""
    if spec is None:
        return []
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in MONITORS]
    if unknown:
        raise ValueError(f"unknown monitor(s) {unknown}; choose from {sorted(MONITORS)}")
    return list(dict.fromkeys(names))


def make_monitors(spec: str | Iterable[str] | None, model: nn.Module, optimizer: torch.optim.Optimizer,
                  layers: LayerSelector = None, every: int = 1) -> list[Monitor]:
    """One hooked monitor per name in ``spec`` on ``model`` / ``optimizer`` (see the module docstring)."""
    return [MONITORS[name](model, optimizer, layers=layers, every=every) for name in parse_monitor_spec(spec)]


def write_monitors(monitors: Iterable[Monitor], run_dir: str | os.PathLike[str]) -> list[Path]:
    """Detach the monitors' hooks and write each one's CSV and plot into ``run_dir``; returns the paths."""
    paths: list[Path] = []
    for monitor in monitors:
        monitor.remove()
        paths += monitor.write(run_dir)
    return paths
