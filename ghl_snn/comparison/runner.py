"""The training loop every experiment reuses: train/evaluate, metrics, checkpoints, resume, divergence guard.

One run writes into its output folder ``config.json``, ``metrics.csv`` (one row per epoch), ``results.json``
(final and best test accuracy, wall time, images/s, peak memory), ``curves.png`` and ``checkpoint.pt`` (after every
epoch, written atomically).  ``resume=True`` restores model, optimiser, scheduler, plasticity rule, RNG state and
history from the checkpoint, and the continued run is bit-identical to an uninterrupted one (batch order depends
only on (seed, epoch), see [`ghl_snn.datasets.cifar.BatchStream`][]).  A non-finite loss stops the run with
[`TrainingDiverged`][] before the optimiser step, and so do weights that turn non-finite or exceed
``Trainer.weight_bound`` (checked after every epoch, before its checkpoint), so the last checkpoint stays the last
good one; so does a learner's ``FloatingPointError`` (a non-finite gradient, eligibility or modulator signal).
Ctrl-C leaves the checkpoint of the last finished epoch.  [`plan_run`][] decides what happens to a run folder that
already holds a run (skip, resume, start, or refuse one whose settings changed).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .common import PeakMemory, atomic_path, write_json

Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, step and the last good checkpoint."""


class RunExists(RuntimeError):
    """The output folder already holds a run that this call would overwrite; the message says what to pass."""


#: what ``plan_run`` decides for one run folder
SKIP, RESUME, FRESH = "skip", "resume", "fresh"


def _stored(out: Path) -> tuple[int | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(epoch of checkpoint.pt or None, results.json or None, config.json or None) of a run folder."""
    epoch = None
    if (out / "checkpoint.pt").is_file():
        try:
            epoch = int(torch.load(out / "checkpoint.pt", weights_only=False, map_location="cpu",
                                   mmap=True)["epoch"])  # mmap: reads the small header, not every tensor
        except Exception as error:  # noqa: BLE001 -- any unreadable checkpoint is reported the same way
            raise RunExists(f"{out / 'checkpoint.pt'} cannot be read ({type(error).__name__}); remove it or pass "
                            "--force to start this run again") from None
    documents = []
    for name in ("results.json", "config.json"):
        try:
            documents.append(json.loads((out / name).read_text()) if (out / name).is_file() else None)
        except ValueError:
            documents.append(None)  # a damaged results/config file: the run counts as unfinished
    return epoch, documents[0], documents[1]


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """``{"preset": {"lr": 0.1}}`` -> ``{"preset.lr": 0.1}`` (JSON values, so that tuples equal lists)."""
    if not isinstance(settings, dict):
        return {prefix: settings}
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def identity_changes(stored: dict[str, Any], identity: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Every setting in which ``identity`` differs from the ``stored`` one, as ``"name: old -> new"`` (nested
    settings by their dotted name, e.g. ``preset.lr``); settings whose last name is in ``ignore`` are left out."""
    old, new = _flat(json.loads(json.dumps(stored, default=str))), _flat(json.loads(json.dumps(identity, default=str)))
    missing, ignore = "(not set)", set(ignore)
    return [f"{key}: {json.dumps(old.get(key, missing))} -> {json.dumps(new.get(key, missing))}"
            for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing) and key.rsplit(".", 1)[-1] not in ignore]


def plan_run(out_dir: str | os.PathLike[str], epochs: int | None, identity: dict[str, Any] | None = None,
             resume: bool = False, force: bool = False) -> str:
    """What to do with the run folder ``out_dir``: ``"skip"`` (finished with the same ``identity``),
    ``"resume"`` (continue from ``checkpoint.pt``) or ``"fresh"`` (train from scratch).

    * ``force``: always fresh.
    * first, a run (checkpoint or results) stored with another ``identity`` (the settings stored in
      ``config.json`` under ``"run_identity"``) raises [`RunExists`][] naming every setting that differs, with or
      without ``resume``: a run is never continued or reported under settings it was not trained with.  Only the
      number of epochs may grow (``resume`` continues the run to the new length, its learning-rate schedule restored
      from the checkpoint as it was); a run trained for more epochs than asked is refused.
    * ``resume``: continue what has a checkpoint, start what has none, skip what finished ``epochs`` epochs.
    * neither: a finished run is skipped; a half-finished one raises [`RunExists`][] (nothing is overwritten by
      surprise).
    ``epochs=None``: runs without per-epoch checkpoints (finished = ``results.json`` present).
    """
    out = Path(out_dir)
    if force:
        return FRESH
    epoch, results, config = _stored(out)
    stored_identity = (config or {}).get("run_identity")
    if identity is not None and stored_identity is not None and (epoch is not None or results is not None):
        # the run length is the runner's own business (below) when it counts epochs
        changes = identity_changes(stored_identity, identity, ignore=("epochs",) if epochs is not None else ())
        if changes:
            state = "finished" if results is not None else f"unfinished (checkpoint of epoch {epoch})"
            raise RunExists(f"{out} holds a {state} run with other settings ({'; '.join(changes)}); pass --force "
                            "to replace it, or choose another --out")
    if epochs is not None and epoch is not None and epoch > epochs:
        raise RunExists(f"{out} holds a run trained for {epoch} epochs, more than the {epochs} asked for; pass "
                        "--force to train it again, or choose another --out")
    finished = results is not None and (epochs is None or (epoch is not None and epoch >= epochs))
    if resume:
        if finished:
            return SKIP
        return RESUME if epoch is not None else FRESH
    if finished:
        return SKIP
    if epoch is not None or results is not None:
        raise RunExists(f"{out} holds an unfinished run (checkpoint of epoch {epoch}); pass --resume to continue "
                        "it or --force to start again")
    return FRESH


@dataclass
class Trainer:
    """Model + optimiser (+ per-iteration LR scheduler, + optional plasticity rule with a ``step()``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    rule: Any | None = None
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    history: list[dict[str, float]] = field(default_factory=list)

    #: cap on the batches of every training epoch (smoke runs); ``None`` = the whole epoch
    max_steps: int | None = None
    #: divergence bound: after every epoch, a parameter with a non-finite entry or ``max|w|`` above this stops the
    #: run (``TrainingDiverged``) before its checkpoint is written; ``None`` checks finiteness only
    weight_bound: float | None = 1e6
    #: show a progress bar per training epoch
    progress: bool = True

    def check_weights(self, epoch: int) -> None:
        """Raise [`TrainingDiverged`][] naming the first parameter that is non-finite or past ``weight_bound``."""
        for name, parameter in self.model.named_parameters():
            largest = parameter.detach().abs().max().item() if parameter.numel() else 0.0
            if not math.isfinite(largest):
                raise TrainingDiverged(f"parameter {name} became non-finite in epoch {epoch + 1}")
            if self.weight_bound is not None and largest > self.weight_bound:
                raise TrainingDiverged(f"parameter {name} exploded (max |w| = {largest:.3g} > bound "
                                       f"{self.weight_bound:g}) in epoch {epoch + 1}")

    # Steps of the loop that subclasses (AMP, DDP) override; the loop itself lives only in train_epoch.
    def _prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return images, labels

    def _forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _apply_update(self, loss: Tensor) -> None:
        """Backward pass, then the plasticity rule rewrites ``.grad``, then the optimiser steps."""
        loss.backward()
        if self.rule is not None:
            self.rule.step()
        self.optimizer.step()

    def _epoch_totals(self, loss_sum: float, correct: float, seen: float) -> tuple[float, float, float]:
        return loss_sum, correct, seen

    def train_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], epoch: int, total: int | None = None,
                    desc: str = "") -> dict[str, float]:
        self.model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        if total is not None and self.max_steps is not None:
            total = min(total, self.max_steps)
        progress = tqdm(batches, total=total, desc=f"{desc} epoch {epoch + 1}", leave=False, mininterval=1.0,
                        disable=not self.progress)
        for step, (images, labels) in enumerate(progress):
            if self.max_steps is not None and step >= self.max_steps:
                break
            images, labels = self._prepare(images, labels)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self._forward(images)
            loss = self.loss_fn(logits.float(), labels)
            # the loss (checked before any update) and the batch's hits come back in one device synchronisation
            batch_loss, batch_correct = torch.stack([loss.detach(), (logits.argmax(1) == labels).sum().to(loss.dtype)
                                                     ]).tolist()
            if not math.isfinite(batch_loss):
                if self.rule is not None and hasattr(self.rule, "clear"):
                    self.rule.clear()
                raise TrainingDiverged(f"loss became {batch_loss} at epoch {epoch + 1}, step {step + 1}")
            try:
                self._apply_update(loss)
            except FloatingPointError as error:  # a learner's guard: non-finite dL/dW, eligibility or signal
                raise TrainingDiverged(f"{error} (epoch {epoch + 1}, step {step + 1})") from None
            if self.scheduler is not None:
                self.scheduler.step()
            loss_sum += batch_loss * labels.shape[0]
            correct += int(batch_correct)
            seen += labels.shape[0]
            if step % 20 == 0:
                progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        loss_sum, correct, seen = self._epoch_totals(loss_sum, correct, seen)
        return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "train_samples": int(seen)}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in batches:
            logits = self.model(images)
            loss_sum += self.loss_fn(logits, labels).item() * labels.shape[0]
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.shape[0]
        return {"test_loss": loss_sum / max(seen, 1), "test_acc": correct / max(seen, 1)}

    # -------------------------------------------------------------- checkpoints
    def state_dict(self, epoch: int, elapsed: float) -> dict[str, Any]:
        return {
            "epoch": epoch, "elapsed": elapsed, "history": self.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rule": self.rule.state_dict() if self.rule is not None and hasattr(self.rule, "state_dict") else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, float]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.rule is not None and state["rule"] is not None:
            self.rule.load_state_dict(state["rule"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = list(state["history"])
        return int(state["epoch"]), float(state["elapsed"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically through a uniquely named temporary file: an interrupted or failed save (disk full) never
    replaces the last good checkpoint and leaves no temporary file behind."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def plot_curves(path: Path, history: list[dict[str, float]] | Mapping[str, list[dict[str, float]]],
                title: str = "") -> None:
    """Accuracy (%) and cross-entropy per epoch as a PNG: integer epoch ticks, the legend beside the axes.

    ``history``: one run's rows (train and test accuracy and loss), or ``{label: rows}`` for several runs compared
    (test accuracy and training loss, one line per label).  Accuracies are the split-named fractions ``train_acc``,
    ``val_acc``, ``test_acc`` (plotted in percent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def column(rows: list[dict[str, float]], key: str) -> list[float]:
        values = [row[key] for row in rows]
        return [100 * v for v in values] if key.endswith("_acc") else values

    style = {"marker": "o", "markersize": 4}  # one epoch is one point: visible only with a marker
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    if isinstance(history, Mapping):
        for label, rows in history.items():
            epochs = [row["epoch"] for row in rows]
            acc_ax.plot(epochs, column(rows, "test_acc"), label=label, **style)
            loss_ax.plot(epochs, column(rows, "train_loss"), label=label, **style)
        acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
        loss_ax.set(xlabel="epoch", ylabel="train cross-entropy")
        epochs = sorted({row["epoch"] for rows in history.values() for row in rows})
    else:
        epochs = [row["epoch"] for row in history]
        for split in ("train", "val", "test"):
            if f"{split}_acc" in history[0]:
                acc_ax.plot(epochs, column(history, f"{split}_acc"), label=split, **style)
            if f"{split}_loss" in history[0]:
                loss_ax.plot(epochs, column(history, f"{split}_loss"), label=split, **style)
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
        loss_ax.set(xlabel="epoch", ylabel="cross-entropy")
    for axis in (acc_ax, loss_ax):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    loss_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))   # outside the data
    if len(epochs) == 1:
        for axis in (acc_ax, loss_ax):
            axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)


Evaluation = Callable[[], Iterable[tuple[Tensor, Tensor]]]


def evaluate_splits(trainer: Trainer, evaluations: Mapping[str, Evaluation]) -> dict[str, float]:
    """``trainer.evaluate`` on every split, each score named by its split: ``test_acc`` of the ``"val"`` split is
    ``val_acc``, any other key ``k`` becomes ``val_k`` (the ``"test"`` split keeps the trainer's own names)."""
    scores: dict[str, float] = {}
    for split, batches in evaluations.items():
        for key, value in trainer.evaluate(batches()).items():
            name = key if split == "test" else key.replace("test_", f"{split}_", 1) if key.startswith("test_") \
                else f"{split}_{key}"
            scores[name] = value
    return scores


def trial_history(trainer: Trainer, train_batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
                  evaluations: Mapping[str, Evaluation], epochs: int, steps_per_epoch: int | None = None,
                  label: str | None = None) -> dict[str, Any]:
    """One trial of [`compare`][ghl_snn.comparison.engine.compare] (no files): ``epochs`` epochs of
    ``train_batches(epoch)``, each followed by [`evaluate_splits`][] on ``evaluations``; returns the engine's
    ``{"history": [...]}`` (train scores and every split's, named by split, and the seconds so far), or with
    ``"diverged": True`` and the error once the loss or a weight turns non-finite.  ``label``: a line with the
    last epoch's val / test accuracy is printed under it."""
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for epoch in range(epochs):
            trained = trainer.train_epoch(train_batches(epoch), epoch, steps_per_epoch)
            trainer.check_weights(epoch)
            history.append({"epoch": epoch + 1, "train_acc": trained["train_acc"], "train_loss": trained["train_loss"],
                            **evaluate_splits(trainer, evaluations), "seconds": time.perf_counter() - started})
    except TrainingDiverged as error:
        return {"diverged": True, "history": history, "error": str(error)}
    if label is not None:
        last = history[-1]
        print(f"{label}: val_acc {last['val_acc']:.4f}  test_acc {last['test_acc']:.4f}  ({last['seconds']:.0f} s)",
              flush=True)
    return {"history": history}


def fit(trainer: Trainer, train_batches: Batches, test_batches: Evaluation | Mapping[str, Evaluation],
        epochs: int, out_dir: str | os.PathLike[str], config: dict[str, Any], resume: bool = False,
        steps_per_epoch: int | None = None, device: torch.device | str = "cpu", desc: str = "",
        force: bool = False) -> dict[str, Any]:
    """Train for ``epochs`` epochs with an evaluation and a checkpoint after each; return ``results.json``'s dict.

    ``train_batches(epoch)`` yields the epoch's batches; ``test_batches()`` the evaluation batches, or
    ``{split: batches}`` for several evaluation splits (e.g. ``{"val": ..., "test": ...}``): every score of
    ``metrics.csv``, ``curves.png`` and ``results.json`` is then named by its split (``val_acc``, ``test_acc``,
    ``final_val_acc``...; "best" is read on the first split).  What happens
    to an existing run in ``out_dir`` follows [`plan_run`][] (``config["run_identity"]``, when given, identifies
    the configuration): a finished run is returned without training, ``resume`` continues a checkpoint
    (bit-identically) or starts a run that has none, ``force`` trains from scratch; a half-finished run is never
    overwritten without one of them ([`RunExists`][]).  Raises [`TrainingDiverged`][] on a non-finite loss.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    evaluations = test_batches if isinstance(test_batches, Mapping) else {"test": test_batches}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    start_epoch, elapsed = 0, 0.0
    plan = plan_run(out, epochs, config.get("run_identity"), resume, force)
    if plan == SKIP:
        trainer.load_state_dict(torch.load(checkpoint, weights_only=False))
        tqdm.write(f"{desc}: finished run in {out}, not retrained (--force retrains)")
        return json.loads((out / "results.json").read_text())  # already complete: nothing to train
    if plan == RESUME:
        start_epoch, elapsed = trainer.load_state_dict(torch.load(checkpoint, weights_only=False))
    else:
        trainer.history = []
        for name in ("results.json", "checkpoint.pt", "metrics.csv"):  # a stale file must not outlive a restart
            (out / name).unlink(missing_ok=True)
    write_json(out / "config.json", config)
    samples, session_time = 0, 0.0
    with PeakMemory(device) as memory:
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            epoch_lr = trainer.optimizer.param_groups[0]["lr"]  # the rate this epoch starts with (before its steps)
            try:
                row = trainer.train_epoch(train_batches(epoch), epoch, steps_per_epoch, desc)
                trainer.check_weights(epoch)
            except TrainingDiverged as error:
                last = f"{checkpoint} (epoch {start_epoch if not trainer.history else trainer.history[-1]['epoch']})" \
                    if checkpoint.is_file() else "none (diverged during the first epoch)"
                raise TrainingDiverged(f"{error}; training stopped, last good checkpoint: {last}") from None
            train_time = time.perf_counter() - started
            elapsed += train_time
            session_time += train_time
            samples += int(row.pop("train_samples"))
            row = {"epoch": epoch + 1, **row, **evaluate_splits(trainer, evaluations),
                   "lr": epoch_lr, "epoch_seconds": train_time}
            trainer.history.append(row)
            save_checkpoint(checkpoint, trainer.state_dict(epoch + 1, elapsed))
            write_metrics_csv(out / "metrics.csv", trainer.history)
            if trainer.progress:
                scores = "  ".join(f"{split} acc {row[f'{split}_acc']:.4f}" for split in evaluations)
                tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: train acc {row['train_acc']:.4f}  {scores}  "
                           f"({train_time:.1f}s)")
    plot_curves(out / "curves.png", trainer.history, desc)
    first = next(iter(evaluations))
    selected = [row[f"{first}_acc"] for row in trainer.history]
    results = {
        **{f"final_{split}_acc": trainer.history[-1][f"{split}_acc"] for split in evaluations},
        f"best_{first}_acc": max(selected), "best_epoch": 1 + selected.index(max(selected)),
        "epochs": len(trainer.history),
        "wall_time_s": elapsed, "images_per_s": samples / session_time if samples else math.nan,
        "peak_memory_mib": memory.peak_mib, "peak_rss_mib": memory.peak_rss_mib,
    }
    write_json(out / "results.json", results)
    return results
