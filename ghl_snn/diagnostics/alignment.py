"""Hebbian alignment of any learner's weight updates (Koplow, Poggio & Ziyin 2025, "Emergence of Hebbian dynamics
in regularized non-local learners").

For a layer ``h_b = W h_a`` (paper Eq. 1; ``h_a`` the layer input, ``h_b`` its pre-activation *without bias*) the
Hebbian update is ``h_b h_aᵀ`` (Eq. 2 with ``s = +1``).  The monitor aggregates it over the batch exactly as the
paper's learning signal is aggregated (Eq. 10: ``E_x[h_b h_aᵀ]``; for Conv2d additionally summed over positions,
i.e. the weight-gradient convolution with ``h_b`` in place of the output gradient)::

    H = (1/N) Σ_n h_b(x_n) h_a(x_n)ᵀ

and records, per plastic layer and per recorded optimiser step, two cosines (Frobenius inner products of the
flattened matrices)::

    signal_alignment = cos(-G, H)     G = weight.grad right before optimizer.step()       (the paper's "Hebbian
                                        alignment of the gradient update", Eq. 7 / 10; for SGD -G = -∇_W ℓ, for the
                                        GHL plug-in -G = -M ⊙ |E|, for any rule whatever it wrote into .grad)
    update_alignment = cos(ΔW, H)     ΔW = W_after - W_before                             (the "full weight
                                        update", Eq. 4 / 8, incl. weight decay, momentum, Adam scaling, clipping)

plus ``decay_alignment = cos(-W, H)`` (the direction of an L2 weight-decay step; by Eq. 11-12
``Tr[W E[h_a h_bᵀ]] = E‖h_b‖² >= 0``, so it is never positive), the norms, and the fraction of output neurons whose own
row ``-G_k`` is Hebbian (``cos(-G_k, H_k) > 0``, paper Section 5).  Stationary-state values are averages over a window
of steps ([`AlignmentMonitor.summary`][ghl_snn.diagnostics.alignment.AlignmentMonitor.summary]), as in the paper's "mean
± SD, window=200".

Cost per recorded step: one extra weight-gradient-sized matmul (or convolution) per layer in the forward hook and a
few dot products; with ``every=k`` nothing at all is computed on the other steps.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..ops.weight_gradient import layer_weight_gradient
from ..rules.base import bias_free
from ..selection import LayerSelector
from ._observer import UpdateObserver, flat_cosine, row_cosine

ALIGNMENT_COLUMNS = ("step", "layer", "signal_alignment", "update_alignment", "decay_alignment",
                     "hebbian_neuron_fraction", "signal_norm", "update_norm", "hebbian_norm", "samples")


def hebbian_update(module: nn.Module, inputs: Tensor, preactivation: Tensor) -> Tensor:
    """Batch-summed Hebbian update ``Σ_n h_b h_aᵀ`` shaped like ``module.weight`` (paper Eq. 2, ``s = +1``).

    ``inputs`` is the layer input ``h_a`` and ``preactivation`` the bias-free ``h_b = W h_a``.  Linear: any leading
    dimensions are flattened into samples, ``H = h_bᵀ h_a``.  Conv2d (any groups, padding and padding mode): summed
    over output positions, the layer's weight-gradient convolution
    ([`layer_weight_gradient`][ghl_snn.ops.weight_gradient.layer_weight_gradient]).  Computed in float32 (float64 if
    the inputs are float64).
    """
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    x, y = inputs.detach().to(dtype), preactivation.detach().to(dtype)
    if isinstance(module, nn.Conv2d):
        if x.dim() != 4 or y.dim() != 4:
            raise ValueError(f"Conv2d Hebbian update needs 4-d input and output, got {tuple(x.shape)}, "
                             f"{tuple(y.shape)}")
        return layer_weight_gradient(module, x, y)
    if isinstance(module, nn.Linear):
        if x.shape[-1] != module.in_features or y.shape[-1] != module.out_features:
            raise ValueError(f"Linear({module.in_features}, {module.out_features}) got input {tuple(x.shape)} and "
                             f"output {tuple(y.shape)}")
        return y.reshape(-1, y.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
    raise TypeError(f"Hebbian update is defined for nn.Linear and nn.Conv2d, got {type(module).__name__}")


def _sample_count(module: nn.Module, inputs: Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        return int(inputs.shape[0])
    return int(inputs.numel() // inputs.shape[-1])


class AlignmentMonitor(UpdateObserver):
    """Records the Hebbian alignment of the learning signal and of the full update (formulas: module docstring).

    Args:
        model: any ``nn.Module``; forward hooks go on the selected layers.
        optimizer: when given, its step pre-/post-hooks call ``pre_step`` / ``post_step`` automatically
            (``.grad`` is read inside ``optimizer.step()``, i.e. *after* ``GHL.step()`` or any rule that writes
            ``.grad``).  Without one, bracket each weight change by ``with monitor.observe(): ...``.
        layers: as in [`ghl_snn.select_layers`][ghl_snn.select_layers] (default every ``nn.Linear`` and ``nn.Conv2d``).
        every: record every ``every``-th update only (the forward hook does no work on the other steps).
        require_grad: record forwards only when autograd is enabled (default), like the GHL plug-in; set False
            for learners that run their forward under ``torch.no_grad()``.  Forwards in ``eval()`` mode are never
            recorded.  Every recorded forward between two updates is accumulated, so for a time-stepped spiking
            network ``H`` is the Hebbian update summed over the presentation window, divided by the number of
            (sample, time step) rows.

    Rows of ``records`` hold the columns of ``ALIGNMENT_COLUMNS``; a value is ``nan`` when undefined (no
    ``.grad``, a zero update, or no recorded forward through that layer during the step).
    """

    COLUMNS = ALIGNMENT_COLUMNS

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 layers: LayerSelector = None, every: int = 1, require_grad: bool = True) -> None:
        super().__init__(model, optimizer, layers, every)
        self.require_grad = require_grad
        self.records: list[dict[str, Any]] = []
        self._hebb: dict[str, Tensor] = {}
        self._samples: dict[str, int] = {}
        self._pending: dict[str, dict[str, float]] = {}
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not module.training or not self.recording or self._in_step:
                return
            if self.require_grad and not torch.is_grad_enabled():
                return
            with torch.no_grad():
                hebb = hebbian_update(module, args[0], bias_free(module, output))
            if name in self._hebb:
                self._hebb[name] += hebb
            else:
                self._hebb[name] = hebb
            self._samples[name] = self._samples.get(name, 0) + _sample_count(module, args[0])

        return hook

    def hebbian(self, name: str) -> Tensor | None:
        """The batch-mean Hebbian update ``H`` of layer ``name`` accumulated since the last update (or None)."""
        if name not in self._hebb:
            return None
        return self._hebb[name] / self._samples[name]

    def _on_pre_step(self) -> None:
        self._pending = {}
        for name, module in self.layers.items():
            hebb = self.hebbian(name)
            grad = module.weight.grad
            row: dict[str, float] = {"samples": float(self._samples.get(name, 0))}
            row["hebbian_norm"] = float(hebb.norm()) if hebb is not None else math.nan
            row["signal_norm"] = float(grad.norm()) if grad is not None else math.nan
            if hebb is not None and grad is not None:
                signal = -grad.detach().to(hebb.dtype)
                row["signal_alignment"] = flat_cosine(signal, hebb)
                per_neuron = row_cosine(signal, hebb)
                valid = ~torch.isnan(per_neuron)
                row["hebbian_neuron_fraction"] = (float((per_neuron[valid] > 0).double().mean())
                                                  if bool(valid.any()) else math.nan)
            else:
                row["signal_alignment"] = row["hebbian_neuron_fraction"] = math.nan
            row["decay_alignment"] = (flat_cosine(-module.weight.detach().to(hebb.dtype), hebb)
                                      if hebb is not None else math.nan)
            self._pending[name] = row

    def _on_post_step(self, updates: dict[str, Tensor]) -> None:
        for name, update in updates.items():
            hebb = self.hebbian(name)
            row = {"step": self.step, "layer": name, **self._pending.get(name, {})}
            row["update_norm"] = float(update.norm())
            row["update_alignment"] = flat_cosine(update.to(hebb.dtype), hebb) if hebb is not None else math.nan
            self.records.append({column: row.get(column, math.nan) for column in ALIGNMENT_COLUMNS})

    def _after_step(self) -> None:
        self._hebb.clear()
        self._samples.clear()
        self._pending = {}

    # ------------------------------------------------------------------ outputs
    def series(self, layer: str, column: str = "signal_alignment") -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one column for one layer."""
        if layer not in self.layers:
            raise KeyError(f"unknown layer {layer!r}; monitored layers: {list(self.layers)}")
        if column not in ALIGNMENT_COLUMNS[2:]:
            raise KeyError(f"unknown column {column!r}; choose from {ALIGNMENT_COLUMNS[2:]}")
        rows = [r for r in self.records if r["layer"] == layer]
        return [r["step"] for r in rows], [r[column] for r in rows]

    def summary(self, last: int | None = None,
                columns: Sequence[str] = ("signal_alignment", "update_alignment")) -> dict[str, dict[str, float]]:
        """Per layer: mean and standard deviation of ``columns`` over the last ``last`` recorded steps (all if
        None), ignoring ``nan``; keys ``<column>_mean`` / ``<column>_std`` / ``n``."""
        if last is not None and last < 1:
            raise ValueError(f"last must be >= 1 or None, got {last}")
        out: dict[str, dict[str, float]] = {}
        for layer in self.layers:
            rows = [r for r in self.records if r["layer"] == layer]
            rows = rows[-last:] if last is not None else rows
            stats: dict[str, float] = {"n": float(len(rows))}
            for column in columns:
                values = torch.tensor([r[column] for r in rows], dtype=torch.float64)
                values = values[~torch.isnan(values)]
                stats[f"{column}_mean"] = float(values.mean()) if values.numel() else math.nan
                stats[f"{column}_std"] = float(values.std(correction=0)) if values.numel() else math.nan
            out[layer] = stats
        return out

    def plot(self, path: str | os.PathLike[str], smooth: int = 1) -> Path:
        """Signal and full-update alignment vs step, one line per layer (moving average over ``smooth`` records)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
        for axis, column, title in zip(axes, ("signal_alignment", "update_alignment"),
                                       ("learning signal  cos(-G, H)", "full update  cos(ΔW, H)")):
            for layer in self.layers:
                steps, values = self.series(layer, column)
                axis.plot(steps, _moving_average(values, smooth), label=layer or "<model>", lw=1)
            axis.axhline(0.0, color="k", lw=0.5)
            axis.set_title(title)
            axis.set_xlabel("step")
        axes[0].set_ylabel("Hebbian alignment")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def write(self, run_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``alignment.csv`` and ``alignment.png`` into ``run_dir`` (for ``--monitor alignment``)."""
        run_dir = Path(run_dir)
        return [self.to_csv(run_dir / "alignment.csv"),
                self.plot(run_dir / "alignment.png", smooth=max(1, len(self.records) // (50 * len(self.layers))))]


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    if window <= 1:
        return list(values)
    out, acc = [], []
    for value in values:
        acc.append(value)
        if len(acc) > window:
            acc.pop(0)
        finite = [v for v in acc if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out
