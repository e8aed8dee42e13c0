"""Step sizes of any learner's update: how far each plastic layer moves per optimiser step.

Used to compare learners at equal tuning (for example GHL's ``M ⊙ |E|`` against sign-only): the same learning rate
gives very different steps when ``|E|`` is normalised by its maximum.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..selection import LayerSelector
from ._observer import UpdateObserver


class StepSizeMonitor(UpdateObserver):
    """Step sizes of the selected layers on every ``every``-th optimiser step.

    Per layer: ``mean_abs_signal = mean|G|`` (``G = .grad`` right before ``optimizer.step()``: ``M ⊙ |E|`` for GHL,
    ``sign`` for sign-only, ``dL/dW`` for backprop), ``signal_step = lr · mean|G|`` (the step of the learning signal
    alone, without weight decay or momentum), ``mean_abs_update = mean|ΔW|`` (the full update) and
    ``mean_abs_weight = mean|W|`` before the step.
    """

    COLUMNS = ("step", "layer", "lr", "mean_abs_signal", "signal_step", "mean_abs_update", "mean_abs_weight")

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 layers: LayerSelector = None, every: int = 1) -> None:
        super().__init__(model, optimizer, layers, every)
        self.optimizer = optimizer
        self.records: list[dict[str, Any]] = []
        self._pending: dict[str, dict[str, float]] = {}

    def _learning_rate(self, weight: Tensor) -> float:
        if self.optimizer is None:
            return math.nan
        for group in self.optimizer.param_groups:
            if any(p is weight for p in group["params"]):
                return float(group["lr"])
        return math.nan

    def _on_pre_step(self) -> None:
        self._pending = {}
        for name, module in self.layers.items():
            grad = module.weight.grad
            lr = self._learning_rate(module.weight)
            signal = float(grad.detach().abs().double().mean()) if grad is not None else math.nan
            self._pending[name] = {"lr": lr, "mean_abs_signal": signal, "signal_step": lr * signal,
                                   "mean_abs_weight": float(module.weight.detach().abs().double().mean())}

    def _on_post_step(self, updates: dict[str, Tensor]) -> None:
        for name, update in updates.items():
            self.records.append({"step": self.step, "layer": name, **self._pending.get(name, {}),
                                 "mean_abs_update": float(update.abs().double().mean())})

    def write(self, run_dir: str | Path) -> list[Path]:
        """Write ``stepsize.csv`` into ``run_dir``."""
        return [self.to_csv(Path(run_dir) / "stepsize.csv")]

