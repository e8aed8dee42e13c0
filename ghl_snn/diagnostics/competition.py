"""Competition dynamics of a plastic layer (Liuson, "Learning dynamics in competitive Hebbian learning").

Per output neuron ``k`` of a layer, the update magnitude of one optimiser step is ``s_k(t) = ‖ΔW_k(t)‖₂`` (the
L2 norm of the neuron's row of the full weight update ``ΔW = W_after - W_before``; for Conv2d the whole filter).
The paper logs the Gini coefficient of the *running average* of these step sizes ("we want to see whether these
imbalanced updates average out over the course of training"), so the monitor keeps

    a_k(t) = (1/t) Σ_{τ <= t} s_k(τ)                     (``average="mean"``, the paper's running average), or
    a_k(t) = β a_k(t-1) + (1-β) s_k(t)                   (``average="ema"``, bias-corrected, ``β = decay``)

and reports ``gini(a(t))`` with the paper's appendix formula ([`gini`][]).

Dead neurons.  The paper calls a neuron dead when its weights "cannot meaningfully be distinguished from random
noise", i.e. from its random initialisation.  Operationally ([`init_similarity`][], [`dead_neurons`][]):

    ρ_k = cos(w_k(T), w_k(0)) = <w_k(T), w_k(0)> / (‖w_k(T)‖ ‖w_k(0)‖)          dead  <=>  ρ_k >= threshold

a direction statistic, so a neuron that was only rescaled (e.g. by Oja's ``-y² w`` term or unit-norm
renormalisation) still counts as dead, while a neuron that learnt a feature decorrelated from its random start
(ρ ≈ 0 in high dimension) is live.  A neuron whose weights did not change at all is dead whatever its norm.
The default threshold 0.9 (about 26°) is a convention: ``dead_fraction`` is reported with the threshold used.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..selection import LayerSelector
from ._observer import UpdateObserver, check_every, row_cosine

COMPETITION_COLUMNS = ("step", "layer", "gini", "gini_step", "dead_fraction", "mean_step_size")


def gini(values: Tensor | list[float]) -> float:
    """Gini coefficient of non-negative values (the competitive-Hebbian paper's appendix A)::

        G = Σ_{i,j=1..n} |x_i - x_j| / (2 n² x̄),      x̄ = (1/n) Σ_i x_i

    Computed in O(n log n) and float64 through the sorted form ``Σ_{i,j}|x_i - x_j| = 2 Σ_i (2i - n - 1) x_(i)``
    (``x_(1) <= ... <= x_(n)``).  ``G ∈ [0, 1 - 1/n]``: 0 when all values are equal; a fraction ``p`` at zero and the
    rest equal gives exactly ``G = p`` (appendix A's closed form).

    Note: the appendix first writes the denominator as ``n² x̄`` and then, in its worked case, as ``2 n² x̄``; only
    the latter gives ``G = p`` and the stated range [0, 1], so that is the one implemented.

    Returns ``nan`` when all values are zero (0/0: no update at all).  Raises ``ValueError`` for an empty input,
    non-finite or negative values, and tensors with more than one dimension.
    """
    if isinstance(values, Tensor):
        x = values.detach().to(torch.float64).cpu()
    else:
        x = torch.as_tensor(values, dtype=torch.float64)
    if x.dim() != 1:
        raise ValueError(f"gini expects a 1-d tensor of per-neuron values, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("gini of an empty set is undefined")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("gini expects finite values")
    if bool((x < 0).any()):
        raise ValueError(f"gini expects non-negative values (update magnitudes), got minimum {float(x.min())}")
    total = float(x.sum())
    if total == 0.0:
        return math.nan
    n = x.numel()
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * ranks - n - 1) * torch.sort(x).values).sum() / (n * total))


def _rows(weight: Tensor) -> Tensor:
    return weight.detach().reshape(weight.shape[0], -1)


def init_similarity(initial: Tensor, current: Tensor) -> Tensor:
    """Per-neuron ``ρ_k = cos(w_k(T), w_k(0))`` (float64, shape ``[out]``; rows = output neurons).

    ``ρ_k = 1`` for a row that did not change at all (also when it is zero); ``nan`` only when exactly one of the
    two rows is zero.
    """
    if initial.shape != current.shape:
        raise ValueError(f"initial and current weights differ in shape: {tuple(initial.shape)} vs "
                         f"{tuple(current.shape)}")
    if initial.dim() < 2:
        raise ValueError(f"expected a weight with one row per output neuron (>= 2-d), got {tuple(initial.shape)}")
    rho = row_cosine(_rows(current), _rows(initial))
    unchanged = (_rows(current).double() - _rows(initial).double()).abs().amax(dim=1) == 0
    return torch.where(unchanged, torch.ones_like(rho), rho)


def dead_neurons(initial: Tensor, current: Tensor, threshold: float = 0.9) -> Tensor:
    """Boolean mask of dead neurons: ``ρ_k >= threshold`` (see the module docstring; ``nan`` counts as live)."""
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold is a cosine and must lie in [-1, 1], got {threshold}")
    return init_similarity(initial, current) >= threshold


def dead_fraction(initial: Tensor, current: Tensor, threshold: float = 0.9) -> float:
    """Fraction of dead neurons, ``(1/n) Σ_k [ρ_k >= threshold]``."""
    return float(dead_neurons(initial, current, threshold).double().mean())


class CompetitionMonitor(UpdateObserver):
    """Per-neuron running average of update magnitudes, its Gini coefficient and the dead fraction over training.

    Args:
        model: the network whose layers are watched.
        optimizer: with an optimizer the hooks are automatic; otherwise bracket weight changes by
            ``with monitor.observe(): ...``.
        layers: which layers, as for [`AlignmentMonitor`][ghl_snn.AlignmentMonitor].
        every: record every ``every``-th step; the running average is over the observed steps only.
        average: ``"mean"`` (cumulative mean over all observed steps, the paper) or ``"ema"``.
        decay: EMA factor ``β`` for ``average="ema"``.
        threshold: cosine threshold of [`dead_neurons`][].
        dead_every: compute the dead fraction on every ``dead_every``-th recorded step only (it costs one cosine
            per neuron over the whole weight); other records hold ``nan``.

    The initial weights are copied at construction: build the monitor before training starts.
    """

    COLUMNS = COMPETITION_COLUMNS

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 layers: LayerSelector = None, every: int = 1, average: Literal["mean", "ema"] = "mean",
                 decay: float = 0.99, threshold: float = 0.9, dead_every: int = 1) -> None:
        super().__init__(model, optimizer, layers, every)
        self.dead_every = check_every(dead_every)
        if average not in ("mean", "ema"):
            raise ValueError(f"average must be 'mean' or 'ema', got {average!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine and must lie in [-1, 1], got {threshold}")
        self.average, self.decay, self.threshold = average, decay, threshold
        self.initial = {name: module.weight.detach().clone() for name, module in self.layers.items()}
        self.running = {name: torch.zeros(module.weight.shape[0], dtype=torch.float64)
                        for name, module in self.layers.items()}
        self.observed = 0
        self.records: list[dict[str, Any]] = []

    @staticmethod
    def step_sizes(update: Tensor) -> Tensor:
        """``s_k = ‖ΔW_k‖₂`` per output neuron (norm in the weight's precision, returned as float64 on CPU)."""
        return _rows(update).norm(dim=1).double().cpu()

    def _on_post_step(self, updates: dict[str, Tensor]) -> None:
        self.observed += 1
        t = self.observed
        for name, update in updates.items():
            sizes = self.step_sizes(update)
            if self.average == "mean":
                self.running[name] += (sizes - self.running[name]) / t
                averaged = self.running[name]
            else:
                self.running[name].mul_(self.decay).add_(sizes, alpha=1 - self.decay)
                averaged = self.running[name] / (1 - self.decay ** t)
            self.records.append({
                "step": self.step, "layer": name, "gini": gini(averaged), "gini_step": gini(sizes),
                "dead_fraction": self.dead_fraction(name) if (t - 1) % self.dead_every == 0 else math.nan,
                "mean_step_size": float(sizes.mean())})

    def average_step_sizes(self, name: str) -> Tensor:
        """The current running average ``a(t)`` of layer ``name`` (bias-corrected for the EMA)."""
        if name not in self.running:
            raise KeyError(f"unknown layer {name!r}; monitored layers: {list(self.layers)}")
        if self.average == "ema" and self.observed:
            return self.running[name] / (1 - self.decay ** self.observed)
        return self.running[name].clone()

    def gini(self, name: str) -> float:
        """Gini coefficient of the running average of layer ``name`` (``nan`` before any update)."""
        averaged = self.average_step_sizes(name)
        return gini(averaged)

    def dead_fraction(self, name: str, threshold: float | None = None) -> float:
        """Fraction of neurons of ``name`` still aligned with their initial weights ([`dead_neurons`][])."""
        if name not in self.layers:
            raise KeyError(f"unknown layer {name!r}; monitored layers: {list(self.layers)}")
        return dead_fraction(self.initial[name], self.layers[name].weight,
                             self.threshold if threshold is None else threshold)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per layer: Gini of the running average at the first and the last observed step, and dead fraction."""
        out = {}
        for name in self.layers:
            rows = [r for r in self.records if r["layer"] == name]
            out[name] = {"gini_start": rows[0]["gini"] if rows else math.nan,
                         "gini_end": rows[-1]["gini"] if rows else math.nan,
                         "dead_fraction": self.dead_fraction(name), "steps": float(len(rows))}
        return out

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Gini of the running average and dead fraction vs step, one line per layer."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for name in self.layers:
            rows = [r for r in self.records if r["layer"] == name]
            axes[0].plot([r["step"] for r in rows], [r["gini"] for r in rows], label=name)
            dead = [r for r in rows if not math.isnan(r["dead_fraction"])]
            axes[1].plot([r["step"] for r in dead], [r["dead_fraction"] for r in dead], label=name)
        axes[0].set_title("Gini of running-average step size")
        axes[1].set_title(f"dead fraction (cos to init >= {self.threshold:g})")
        for axis in axes:
            axis.set_xlabel("step")
            axis.set_ylim(-0.02, 1.02)
        axes[0].legend([name or "<model>" for name in self.layers], fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def write(self, run_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``competition.csv`` and ``competition.png`` into ``run_dir`` (for ``--monitor competition``)."""
        run_dir = Path(run_dir)
        return [self.to_csv(run_dir / "competition.csv"), self.plot(run_dir / "competition.png")]
