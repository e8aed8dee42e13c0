"""HebbFF vs Forward-Forward vs back-propagation on MNIST / FashionMNIST (HebbFF paper, Tables 1-2).

::

    python -m ghl_snn.experiments.hebbff --preset deep-fashionmnist [--methods hebbff hebbff-adam ff ff-sgd bp readout]
        [--epochs N] [--train-limit N] [--grid-train-limit N] [--val-limit N] [--seed S] [--seeds N] [--data-root DIR]

* ``hebbff``: [`HebbFF`][ghl_snn.HebbFF] on a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP]
  (its fast [`train_step`][ghl_snn.learners.hebbff.HebbFF.train_step]: the fused in-place SGD step), all layers
  updated in the same pass, under ``torch.no_grad()`` with every parameter ``requires_grad=False``.
* ``hebbff-adam``: the same HebbFF update written into ``.grad`` (``HebbFF(mode="grad")``, still no autograd)
  and applied by ``torch.optim.Adam``.
* ``ff`` / ``ff-sgd``: the same network and label handling, each layer trained by the local FF softplus loss
  ([`ff_softplus_loss`][ghl_snn.ff_softplus_loss], batch means, layer inputs detached) with one autograd backward
  and Adam (Hinton's choice) or plain SGD -- the latter is exactly HebbFF's update with a per-layer learning rate
  ``η n/2`` (see [`ghl_snn.rules.hebbff`][]).
* ``bp``: the plain MLP of the same preset with a soft-max head, cross-entropy and SGD with momentum 0.9.
* ``readout`` (control): HebbFF's own network at its initialisation (same seed, same weights), frozen; only a
  soft-max read-out on its normalised hidden activity (neutral label) is trained
  ([`ReadoutControl`][ghl_snn.experiments.hebbff.ReadoutControl]): what the network gives before any learning.

Defaults measured to learn on MNIST and Fashion-MNIST (validation split): every pixel standardised with the
training split's statistics (``--no-standardize`` keeps [0, 1] pixels); unit-L2-normalised layer inputs with the
one-hot label scaled by 0.3 (with a scale of 1 the label carries half of every layer's initial pre-activation, and
by the third layer the same image under two labels is less alike than two images under one label, so the deeper
layers see little of the image); weights initialised so that every layer's pre-activation starts as ``N(0, 1)``
(goodness ≈ 0.5, ``ForwardForwardMLP(init_gain=1)``); batch-mean updates; θ chosen near that goodness scale; and
classification by the goodness, summed over the consecutive layers that classify the validation split best, of
every candidate label (``--goodness-layers`` fixes them; every layer's own test accuracy is reported beside).  A
final run whose validation accuracy stays near chance warns with the measured cause (dead units, saturated gates,
goodness not separating true from wrong labels).

Protocol: 20 % of the training set (fixed by the seed) is held out for choosing ``lr`` (and ``θ`` for the goodness
methods) on a grid extended past its edges; the chosen values then train on the remaining 80 % for ``--epochs``
epochs and the test accuracy is reported with the training time (training loop only, evaluation excluded) and the
peak memory (CPU: process RSS above the level before training, measured in a fresh process so earlier runs cannot
hide allocations; CUDA: ``max_memory_allocated``). Every run writes ``<out>/<preset>/<method>/{config.json,
metrics.csv, results.json, curves.png, checkpoint.pt}`` (``<out>/<preset>/<method>/seed<k>/`` with several
``--seeds``) through the runner ([`fit`][ghl_snn.comparison.runner.fit]
with [`HebbFFTrainer`][ghl_snn.experiments.hebbff.HebbFFTrainer]): checkpoint every epoch; ``--resume`` continues
from it bit-identically with the lr/θ chosen before; a run that finished with the same settings (selection grid
included) is not retrained and ``--force`` retrains it from scratch; a non-finite loss or exploding weights stop the
run. The command writes ``<out>/results.{md,json}`` with one table for all runs. FashionMNIST presets need ``<data-
root>/FashionMNIST/raw`` (torchvision layout); a clear error otherwise.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..datasets.mnist import load_mnist, locate_mnist, mnist_vectors
from ..learners.hebbff import HebbFF, health_message, hebbff_health
from ..models.mlp import MLP_PRESETS, ForwardForwardMLP, backprop_mlp
from ..rules.hebbff import ff_softplus_loss, gates_saturated, goodness, random_wrong_labels, saturation_message
from ..comparison import cli, runner
from ..comparison.engine import Param
from ..comparison.common import markdown_table, seed_everything, select_device, write_json
from ..comparison.methods import freeze_all_but
from ..comparison.processes import run_in_child

METHODS = ("hebbff", "hebbff-adam", "ff", "ff-sgd", "bp", "readout")
#: methods with a soft-max read-out (cross-entropy, arg-max logit) instead of goodness
LOGIT_METHODS = ("bp", "readout")
#: the goodness methods and their torch optimiser (``None``: HebbFF's fused in-place SGD step)
GOODNESS_OPTIMIZERS = {"hebbff": None, "hebbff-adam": "adam", "ff": "adam", "ff-sgd": "sgd"}
DATASETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
PRESETS = {f"{arch}-{data}": (arch, name) for arch in MLP_PRESETS for data, name in DATASETS.items()}
NUM_CLASSES = 10

#: default selection grids, centred on the values measured to learn on both data sets (overridable; a choice on an
#: edge extends the grid, see ``select_hyperparameters``).  Every method starts from 9 candidates: 3 lr x 3 θ for
#: the goodness methods, 9 lr for BP and the control.  HebbFF: batch-mean updates on inputs of unit norm, so lr ~ 1
#: moves a pre-activation by O(gate · a) per step; FF with SGD is the same update with lr ``η n/2`` for a layer of
#: n units (n ≈ 2000 in the first layer of both presets); Adam (HebbFF's .grad or FF's gradient) is blind to that
#: scale.  BP and the control: SGD with momentum 0.9.
DEFAULT_LR_GRID = {"hebbff": (0.3, 1.0, 3.0), "hebbff-adam": (0.001, 0.003, 0.01), "ff": (0.001, 0.003, 0.01),
                   "ff-sgd": (300.0, 1000.0, 3000.0),
                   "bp": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                   "readout": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)}
DEFAULT_THETA_GRID = (0.25, 0.5, 1.0)
BP_MOMENTUM = 0.9
#: a final run whose validation accuracy is below this multiple of chance warns with its measured cause
CHANCE_MARGIN = 1.5


@dataclass
class RunConfig:
    """Everything that defines one training run (written to ``config.json``)."""

    preset: str
    method: str
    lr: float
    theta: float | None
    epochs: int
    batch_size: int = 128
    label_scale: float = 0.3
    init_gain: float | None = 1.0
    standardize: bool = True
    hidden: tuple[int, ...] | None = None
    weight_decay: float = 0.0
    goodness_layers: tuple[int, int] | None = None
    train_acc_rows: int = 32
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.2
    train_limit: int | None = None
    val_limit: int | None = None
    data_root: str | None = None
    progress: bool = True
    resume: bool = False
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Split:
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor


#: floor of the per-pixel standard deviation used by ``standardize`` (a pixel that is constant on the training
#: split, e.g. a border pixel, stays 0 instead of dividing by 0)
STD_FLOOR = 1e-3


def load_split(data_root: str | None, dataset: str, val_fraction: float, seed: int,
               standardize: bool = False) -> Split:
    """Flattened [0, 1] images; a seeded ``val_fraction`` of the training set held out for validation.

    ``standardize``: every pixel shifted and scaled by the mean and standard deviation (floored at
    ``STD_FLOOR``) of that pixel over the training part of the split -- never the validation or test images --
    and the same transform applied to validation and test ("flattened and normalized", HebbFF paper, Sec. 4)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    try:
        images, labels = load_mnist(data_root, train=True, name=dataset)
        test_images, test_labels = load_mnist(data_root, train=False, name=dataset)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{dataset} is needed for this preset but could not be loaded: {error}") from None
    x, test_x = mnist_vectors(images), mnist_vectors(test_images)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * x.shape[0]))
    val, train = order[:n_val], order[n_val:]
    if standardize:
        mean, std = x[train].mean(dim=0), x[train].std(dim=0).clamp_min(STD_FLOOR)
        x, test_x = (x - mean) / std, (test_x - mean) / std
    return Split(x[train], labels[train], x[val], labels[val], test_x, test_labels)


class ReadoutControl(nn.Module):
    """Control: a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP] frozen at the initialisation FF and HebbFF start
    from, with a trained soft-max read-out on its hidden activity.

    The label input is neutral (``label_scale / C`` for every class, as in Hinton's FF read-out) and the read-out
    sees every layer's activity, each L2-normalised, concatenated: what the same network gives a linear classifier
    before any learning."""

    def __init__(self, network: ForwardForwardMLP) -> None:
        super().__init__()
        self.network = network
        width = sum(layer.out_features for layer in network.layers)
        self.readout = nn.Linear(width, network.num_classes)
        freeze_all_but(self, [self.readout])

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """The frozen network's normalised activity of every layer under the neutral label, (B, Σ n_l)."""
        h = self.network.flatten_input(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        neutral = torch.full((h.shape[0], self.network.num_classes), self.network.label_scale /
                             self.network.num_classes, dtype=h.dtype, device=h.device)
        parts = []
        for layer in self.network.layers:
            h = F.relu(layer(torch.cat([self.network.normalize(h), neutral], dim=1)))
            parts.append(self.network.normalize(h))
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.features(x))


def build(config: RunConfig, device: torch.device) -> tuple[nn.Module, Any]:
    """Model and learner of a run: the HebbFF learner (``hebbff``: its fused SGD step; ``hebbff-adam``: a
    ``mode="grad"`` learner, paired with Adam in [`make_trainer`][ghl_snn.experiments.hebbff.make_trainer]) or the
    torch optimiser (FF with Adam or SGD, BP, the read-out control)."""
    arch, _ = PRESETS[config.preset]
    hidden = tuple(config.hidden) if config.hidden else MLP_PRESETS[arch]
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose from {', '.join(METHODS)}")
    if config.method == "bp":
        model = backprop_mlp(784, hidden, NUM_CLASSES).to(device)
        return model, torch.optim.SGD(model.parameters(), lr=config.lr, momentum=BP_MOMENTUM,
                                      weight_decay=config.weight_decay)
    network = ForwardForwardMLP(784, hidden, NUM_CLASSES, config.label_scale, config.init_gain).to(device)
    check_goodness_layers(config.goodness_layers, len(network.layers))
    if config.method == "readout":  # control: HebbFF's own initialised network, frozen; only the read-out learns
        model = ReadoutControl(network).to(device)
        return model, torch.optim.SGD(model.readout.parameters(), lr=config.lr, momentum=BP_MOMENTUM,
                                      weight_decay=config.weight_decay)
    optimizer = GOODNESS_OPTIMIZERS[config.method]
    if config.method.startswith("hebbff"):
        network.requires_grad_(False)
        return network, HebbFF(network.layers, lr=config.lr, theta=config.theta, weight_decay=config.weight_decay,
                               mode="fused" if optimizer is None else "grad")
    if optimizer == "adam":
        return network, torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return network, torch.optim.SGD(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def hebbff_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The torch optimiser that applies a ``hebbff-adam`` learner's ``.grad`` (the HebbFF learner's weight decay
    is already in ``.grad``, so none here)."""
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def _warn_saturation(positive: Sequence[tuple[Tensor, Tensor]], negative: Sequence[tuple[Tensor, Tensor]],
                     theta: float) -> None:
    """FF counterpart of HebbFF's check: warn when θ saturates every gate of a layer (softplus then inert)."""
    for index, ((_, a_pos), (_, a_neg)) in enumerate(zip(positive, negative)):
        g_pos, g_neg = goodness(a_pos.detach()), goodness(a_neg.detach())
        if gates_saturated(g_pos, g_neg, theta):
            warnings.warn("FF: " + saturation_message(index, theta, float(g_pos.mean()), float(g_neg.mean())),
                          RuntimeWarning, stacklevel=3)
            return


@dataclass
class HebbFFTrainer(runner.Trainer):
    """The runner's loop ([`Trainer`][ghl_snn.comparison.runner.Trainer]) for the six methods of this experiment.

    ``bp`` / ``readout``: the plain loop (cross-entropy, backward, SGD step).  ``ff`` / ``ff-sgd``: the batch's
    wrong labels are drawn in ``_prepare``, ``_forward`` returns the layer-local FF softplus loss summed over layers
    (one value per sample row, so the loop's mean is that loss) and ``_apply_update`` is its backward and the
    optimiser step.  ``hebbff``: ``_forward`` is HebbFF's fast
    [`train_step`][ghl_snn.learners.hebbff.HebbFF.train_step] (no autograd; the "loss" recorded is the last layer's
    mean positive gate) and the optimiser is inert (no parameter ever holds a gradient); ``hebbff-adam``: the same
    step writes ``.grad`` (``mode="grad"``) and Adam applies it.

    Training accuracy of the goodness methods: before each update the first ``config.train_acc_rows`` images of the
    batch are classified by goodness (every candidate label, as in the evaluation) with the weights the update
    starts from -- BP's training accuracy is likewise that of the forward before its step. The evaluation scores
    every candidate label by its goodness summed over the layers ``readout_layers`` (FF, HebbFF:
    ``config.goodness_layers`` or, when that is ``None``, the range of consecutive layers with the best accuracy on
    the evaluated -- validation -- batches, chosen anew at every evaluation:
    [`best_layer_range`][ghl_snn.experiments.hebbff.best_layer_range]) or by the soft-max logits (BP, the control);
    the checkpoint adds the generator that draws the batch order and the wrong labels, so ``--resume`` is
    bit-identical, the read-out's layers and the per-epoch ``rows``."""

    config: RunConfig | None = None
    learner: Any = None
    generator: torch.Generator | None = None
    _labels: Tensor | None = field(default=None, repr=False)
    _negative: Tensor | None = field(default=None, repr=False)
    _step: int = 0
    _hits: list[Tensor] = field(default_factory=list, repr=False)
    _scored: int = 0
    #: the layers (first, last) whose goodness is summed for a prediction; ``None``: every layer
    readout_layers: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.config is not None and self.config.goodness_layers is not None:
            self.readout_layers = tuple(self.config.goodness_layers)  # type: ignore[assignment]

    def train_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], epoch: int, total: int | None = None,
                    desc: str = "") -> dict[str, float]:
        self._step, self._hits, self._scored = 0, [], 0
        return super().train_epoch(batches, epoch, total, desc)

    def _score_training_rows(self, images: Tensor, labels: Tensor) -> None:
        """Goodness prediction of the batch's first ``train_acc_rows`` images before the update (hits kept on
        the device; read once per epoch)."""
        assert self.config is not None
        rows = min(self.config.train_acc_rows, images.shape[0])
        if rows > 0:
            scores = goodness_scores(self.model, images[:rows], self.readout_layers)
            self._hits.append((scores.argmax(1) == labels[:rows]).sum())
            self._scored += rows

    def _prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        assert self.config is not None
        device = next(self.model.parameters()).device
        if self.config.method not in LOGIT_METHODS:
            self._negative = random_wrong_labels(labels, NUM_CLASSES, generator=self.generator).to(device)
        self._labels = labels.to(device)
        return images.to(device), self._labels

    def _forward(self, images: Tensor) -> Tensor:
        assert self.config is not None and self._labels is not None
        method, labels, rows = self.config.method, self._labels, images.shape[0]
        self._step += 1
        if method in LOGIT_METHODS:
            return self.model(images)
        self._score_training_rows(images, labels)
        if method.startswith("hebbff"):
            stats = self.learner.train_step(self.model, images, labels, self._negative)
            return stats[-1].gate_pos.detach().reshape(1, 1).expand(rows, 1)
        positive, negative = self.model.trace(images, labels), self.model.trace(images, self._negative)
        loss = sum(ff_softplus_loss(a_pos, a_neg, self.config.theta, reduction="mean")
                   for (_, a_pos), (_, a_neg) in zip(positive, negative))
        if self._step == 1 and torch.isfinite(loss):
            _warn_saturation(positive, negative, float(self.config.theta))
        return loss.reshape(1, 1).expand(rows, 1)

    def _apply_update(self, loss: Tensor) -> None:
        assert self.config is not None
        if self.config.method == "hebbff":
            return  # the fused step already wrote the weights
        if self.config.method != "hebbff-adam":
            loss.backward()
        self.optimizer.step()

    def _epoch_totals(self, loss_sum: float, correct: float, seen: float) -> tuple[float, float, float]:
        if self.config is not None and self.config.method not in LOGIT_METHODS:
            # the goodness prediction of the rows scored before each update, as a fraction of the epoch's samples
            hits = float(torch.stack(self._hits).sum()) if self._hits else math.nan
            correct = hits / self._scored * seen if self._scored else math.nan * seen
        return loss_sum, correct, seen

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        assert self.config is not None
        self.model.eval()
        if self.config.method not in LOGIT_METHODS:
            device = next(self.model.parameters()).device
            pairs = [(self.model.label_goodness(images.to(device), per_layer=True), labels.to(device))
                     for images, labels in batches]
            per_layer, labels = torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])
            if self.config.goodness_layers is None:
                self.readout_layers = best_layer_range(per_layer, labels)
            first, last = self.readout_layers or (0, per_layer.shape[2] - 1)
            scores = per_layer[:, :, first:last + 1].sum(dim=2)
            return {"test_loss": float(F.cross_entropy(scores, labels)),
                    "test_acc": float((scores.argmax(1) == labels).float().mean())}
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in batches:
            scores = label_scores(self.config.method, self.model, images)
            labels = labels.to(scores.device)
            loss_sum += float(F.cross_entropy(scores, labels, reduction="sum"))
            correct += int((scores.argmax(1) == labels).sum())
            seen += labels.shape[0]
        return {"test_loss": loss_sum / max(seen, 1), "test_acc": correct / max(seen, 1)}

    def state_dict(self, epoch: int, elapsed: float) -> dict[str, Any]:
        state = super().state_dict(epoch, elapsed)
        state["generator"] = self.generator.get_state() if self.generator is not None else None
        state["rows"] = run_rows(self.history)
        state["config"] = asdict(self.config) if self.config is not None else None
        state["readout_layers"] = self.readout_layers
        return state

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, float]:
        if state.get("readout_layers") is not None:
            self.readout_layers = tuple(state["readout_layers"])  # type: ignore[assignment]
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        return super().load_state_dict(state)


def run_rows(history: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """The runner's per-epoch rows under this experiment's column names (``val_acc`` is measured on the validation
    split; ``train_stat`` is the mean training loss of FF / BP, the mean positive gate of HebbFF; ``train_acc`` the
    accuracy on the training batches before each update, see
    [`HebbFFTrainer`][ghl_snn.experiments.hebbff.HebbFFTrainer])."""
    return [{"epoch": row["epoch"], "train_seconds": row["epoch_seconds"], "train_stat": row["train_loss"],
             "train_acc": row["train_acc"], "val_acc": row["test_acc"], "val_loss": row["test_loss"]}
            for row in history]


def make_trainer(config: RunConfig, model: nn.Module, learner: Any, generator: torch.Generator) -> HebbFFTrainer:
    """A [`HebbFFTrainer`][ghl_snn.experiments.hebbff.HebbFFTrainer] for a model and learner from
    [`build`][ghl_snn.experiments.hebbff.build]; ``hebbff-adam`` gets the Adam optimiser that applies its ``.grad``,
    ``hebbff`` an inert SGD optimiser (its weights never hold a gradient) so that the runner's optimiser bookkeeping
    stays uniform."""
    if isinstance(learner, torch.optim.Optimizer):
        optimizer = learner
    elif config.method == "hebbff-adam":
        optimizer = hebbff_optimizer(config, model)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    return HebbFFTrainer(model, optimizer, rule=None if learner is optimizer else learner, loss_fn=_mean_output,
                         progress=config.progress, config=config, learner=learner, generator=generator)


def _mean_output(output: Tensor, labels: Tensor) -> Tensor:
    """The trainer's loss: cross-entropy of logits (BP) or the mean of the per-row value ``_forward`` returned."""
    return output.mean() if output.shape[1] == 1 else F.cross_entropy(output, labels)


def _batches(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch's shuffled batches; the permutation is drawn from ``generator`` when the first batch is asked for."""
    order = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def train_epoch(config: RunConfig, model: nn.Module, learner: Any, x: Tensor, y: Tensor,
                generator: torch.Generator, device: torch.device) -> float:
    """One epoch of mini-batch training through [`HebbFFTrainer`][ghl_snn.experiments.hebbff.HebbFFTrainer];
    returns the mean training loss (FF/BP) or mean positive gate (HebbFF).  A non-finite loss raises
    ``FloatingPointError``."""
    trainer = make_trainer(config, model, learner, generator)
    try:
        row = trainer.train_epoch(_batches(x, y, config.batch_size, generator), 0,
                                  desc=f"{config.preset} {config.method}")
    except runner.TrainingDiverged as error:
        raise FloatingPointError(f"{config.method}: training {error} (learning rate too large?)") from None
    return row["train_loss"]


def check_goodness_layers(layers: Sequence[int] | None, count: int) -> None:
    """Raise ``ValueError`` unless ``layers`` is ``None`` or ``(first, last)`` with ``0 <= first <= last < count``."""
    if layers is None:
        return
    if len(layers) != 2 or not 0 <= int(layers[0]) <= int(layers[1]) < count:
        raise ValueError(f"goodness_layers must be (first, last) with 0 <= first <= last < {count} (the network's "
                         f"layers), got {tuple(layers)}")


def best_layer_range(per_layer: Tensor, labels: Tensor) -> tuple[int, int]:
    """The consecutive layers ``(first, last)`` whose summed goodness classifies ``labels`` best.

    ``per_layer``: (B, C, L) goodness of every candidate label per layer (``label_goodness(per_layer=True)``).
    Every range ``first ≤ last`` is scored; ties go to the longer range, then to the earlier one (all layers, as in
    the HebbFF paper, wins any tie; ``(1, L−1)`` is Hinton's FF read-out, ``(0, 0)`` the first layer alone)."""
    count = per_layer.shape[2]
    cumulative = torch.cat([torch.zeros_like(per_layer[:, :, :1]), per_layer.cumsum(dim=2)], dim=2)
    ranges = sorted(((first, last) for first in range(count) for last in range(first, count)),
                    key=lambda r: (r[0] - r[1], r[0]))
    accuracy = torch.stack([((cumulative[:, :, last + 1] - cumulative[:, :, first]).argmax(1) == labels).float().mean()
                            for first, last in ranges])
    return ranges[int(accuracy.argmax())]  # argmax returns the first of equal maxima: the preferred range


def goodness_scores(model: ForwardForwardMLP, x: Tensor, layers: tuple[int, int] | None = None) -> Tensor:
    """Goodness of every candidate label summed over the layers ``first…last`` (B, C); ``None``: every layer."""
    if layers is None:
        return model.label_goodness(x)
    return model.label_goodness(x, per_layer=True)[:, :, layers[0]:layers[1] + 1].sum(dim=2)


def label_scores(method: str, model: nn.Module, x: Tensor, layers: tuple[int, int] | None = None) -> Tensor:
    """Per-label scores of a batch: the soft-max logits (BP, the read-out control) or the goodness of every
    candidate label summed over the layers ``layers`` (FF, HebbFF; ``None``: all)."""
    x = x.to(next(model.parameters()).device)
    return model(x) if method in LOGIT_METHODS else goodness_scores(model, x, layers)


@torch.no_grad()
def evaluate(method: str, model: nn.Module, x: Tensor, y: Tensor, device: torch.device,
             batch_size: int = 500, layers: tuple[int, int] | None = None) -> float:
    """Accuracy: arg-max logit (BP, control) or the label with the highest goodness summed over ``layers``
    (FF, HebbFF; ``None``: every layer)."""
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        prediction = label_scores(method, model, x[start:start + batch_size].to(device), layers).argmax(dim=1)
        correct += int((prediction.cpu() == y[start:start + batch_size]).sum())
    return correct / max(x.shape[0], 1)


@torch.no_grad()
def evaluate_layers(model: ForwardForwardMLP, x: Tensor, y: Tensor, device: torch.device,
                    batch_size: int = 500) -> list[float]:
    """FF / HebbFF accuracy of each layer's goodness alone (which layers carry the label evidence)."""
    correct = None
    for start in range(0, x.shape[0], batch_size):
        scores = model.label_goodness(x[start:start + batch_size].to(device), per_layer=True)
        hits = (scores.argmax(dim=1).cpu() == y[start:start + batch_size, None]).sum(dim=0)
        correct = hits if correct is None else correct + hits
    return [int(c) / max(x.shape[0], 1) for c in correct] if correct is not None else []


#: RunConfig fields that do not change a run's results (left out of its identity)
NOT_IDENTITY = ("device", "data_root", "progress", "resume", "force", "extra")


#: keys of the runner's ``results.json`` that, in this experiment, describe the validation split
RUNNER_VALIDATION_KEYS = ("final_test_acc", "best_test_acc", "best_epoch")


def run_identity(config: RunConfig) -> dict[str, Any]:
    """The settings that identify a final run (stored in ``config.json``; see
    [`plan_run`][ghl_snn.comparison.runner.plan_run]), including the selection grid that chose its lr / θ."""
    identity = {key: value for key, value in asdict(config).items() if key not in NOT_IDENTITY}
    return {**identity, "grid": config.extra.get("grid")}


def fit(config: RunConfig, split: Split, run_dir: Path | None = None, test: bool = True) -> dict[str, Any]:
    """Train one configuration through the runner ([`fit`][ghl_snn.comparison.runner.fit]: per-epoch validation
    accuracy, checkpoint, ``config.resume`` bit-identical, a finished run skipped unless ``config.force``, divergence
    stop, curves); the test accuracy at the end.  ``run_dir=None`` (grid candidates) trains in a temporary folder."""
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="hebbff-") as scratch:
            return fit(config, split, Path(scratch), test)
    device = select_device(config.device)
    seed_everything(config.seed)
    train_x, train_y = split.train_x[:config.train_limit], split.train_y[:config.train_limit]
    val_x, val_y = split.val_x[:config.val_limit], split.val_y[:config.val_limit]
    model, learner = build(config, device)
    generator = torch.Generator().manual_seed(config.seed + 1)
    trainer = make_trainer(config, model, learner, generator)

    def val_batches() -> Iterator[tuple[Tensor, Tensor]]:
        return ((val_x[s:s + 500], val_y[s:s + 500]) for s in range(0, val_x.shape[0], 500))

    stored = runner.fit(trainer, lambda epoch: _batches(train_x, train_y, config.batch_size, generator), val_batches,
                        config.epochs, run_dir, {**asdict(config), "run_identity": run_identity(config)},
                        resume=config.resume, steps_per_epoch=math.ceil(train_x.shape[0] / config.batch_size),
                        device=device, desc=f"{config.preset} {config.method}", force=config.force)
    rows = run_rows(trainer.history)
    runner.write_metrics_csv(run_dir / "metrics.csv", rows)  # under this experiment's column names (val_acc, ...)
    if config.method == "hebbff" and any(p.requires_grad or p.grad is not None for p in model.parameters()):
        raise RuntimeError("HebbFF training left a parameter requiring or holding a gradient")
    if test and config.method not in LOGIT_METHODS and rows[-1]["val_acc"] < CHANCE_MARGIN / NUM_CLASSES:
        warn_at_chance(config, model, val_x, val_y, rows[-1]["val_acc"], device)
    result = {"preset": config.preset, "method": config.method, "seed": config.seed, "lr": config.lr,
              "theta": config.theta, "epochs": config.epochs, "train_samples": int(train_x.shape[0]),
              "train_acc": rows[-1]["train_acc"], "val_acc": rows[-1]["val_acc"],
              "best_val_acc": max(r["val_acc"] for r in rows), "train_time_s": sum(r["train_seconds"] for r in rows),
              "peak_mib": stored.get("peak_mib", stored.get("peak_memory_mib")),
              "peak_rss_mib": stored.get("peak_rss_mib"), "device": str(device), "threads": torch.get_num_threads()}
    if config.method not in LOGIT_METHODS:
        result["goodness_layers"] = list(trainer.readout_layers or (0, len(model.layers) - 1))
    if test:
        result["test_acc"] = evaluate(config.method, model, split.test_x, split.test_y, device,
                                      layers=trainer.readout_layers)
        if config.method not in LOGIT_METHODS:
            result["test_acc_per_layer"] = evaluate_layers(model, split.test_x, split.test_y, device)
    # the runner's own test_* keys measure the validation split here: left out, the rest (memory, speed) kept
    kept = {k: v for k, v in stored.items() if k not in result and k not in RUNNER_VALIDATION_KEYS}
    return {**kept, **result}


def warn_at_chance(config: RunConfig, model: nn.Module, x: Tensor, y: Tensor, accuracy: float,
                   device: torch.device) -> str:
    """Warn that a FF / HebbFF run ended near chance, naming the cause measured on one validation batch."""
    xb, yb = x[:512].to(device), y[:512].to(device)
    y_neg = random_wrong_labels(y[:512], NUM_CLASSES, torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        report = hebbff_health(model.trace(xb, yb), model.trace(xb, y_neg), float(config.theta))
    cause = health_message(report, float(config.theta)) or "no single cause measured (training too short?)"
    message = (f"{config.method} {config.preset}: validation accuracy {accuracy:.3f} is at chance "
               f"({1 / NUM_CLASSES:.2f}) with lr={config.lr:g}, theta={config.theta:g}: {cause}")
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message


#: how many log steps the selection may extend a grid past the edge its best value sits on
MAX_EXTEND = 3


def select_hyperparameters(config: RunConfig, split: Split, lr_grid: Sequence[float],
                           theta_grid: Sequence[float | None], epochs: int, train_limit: int | None,
                           max_extend: int = MAX_EXTEND
                           ) -> tuple[float, float | None, list[dict[str, Any]], list[str]]:
    """Grid search on the validation split, extended past its edges; a diverging candidate scores 0.

    Every ``(lr, θ)`` of the grid is trained; then, while the best value of ``lr`` or ``θ`` sits on the edge of
    its values, one more log step (the grid's own ratio, [`Param`][ghl_snn.comparison.engine.Param]) is added
    past that edge and tried with the other value at its best, at most ``max_extend`` steps per parameter.
    Returns the chosen ``lr`` and ``θ``, every trial and the parameters whose choice is still on an edge."""
    if len(lr_grid) * len(theta_grid) == 1:
        return float(lr_grid[0]), theta_grid[0], [], []
    values: dict[str, list[float | None]] = {"lr": sorted(lr_grid),
                                             "theta": sorted(theta_grid, key=lambda v: -1 if v is None else v)}
    params = {name: Param(name, grid, step=None if len(grid) > 1 else 10.0, lower=min(1e-7, min(grid)),
                          upper=max(1e7, max(grid)))
              for name, grid in values.items() if len(grid) > 0 and None not in grid and min(grid) > 0}
    scores: dict[tuple[float, float | None], float] = {}
    trials: list[dict[str, Any]] = []

    def score(lr: float, theta: float | None) -> float:
        if (lr, theta) not in scores:
            trial = RunConfig(**{**asdict(config), "lr": lr, "theta": theta, "epochs": epochs,
                                 "train_limit": train_limit, "progress": False})
            try:
                val_acc = fit(trial, split, test=False)["val_acc"]
            except (FloatingPointError, runner.TrainingDiverged) as error:
                print(f"grid: lr={lr:g} theta={theta} diverged: {error}", file=sys.stderr)
                val_acc = 0.0
            scores[(lr, theta)] = val_acc
            trials.append({"lr": lr, "theta": theta, "val_acc": val_acc})
            print(f"grid {config.preset} {config.method}: lr={lr:g} theta={theta} val_acc={val_acc:.4f}",
                  file=sys.stderr, flush=True)
        return scores[(lr, theta)]

    for lr, theta in tqdm(list(itertools.product(values["lr"], values["theta"])),
                          desc=f"grid {config.preset} {config.method}", disable=not config.progress):
        score(lr, theta)
    extended = dict.fromkeys(values, 0)
    while True:
        best = max(scores, key=lambda point: (scores[point], [-(v or 0.0) for v in point]))  # ties: smaller
        grown = False
        for axis, name in enumerate(("lr", "theta")):
            axis_values, param = values[name], params.get(name)
            if param is None or len(axis_values) < 2 or extended[name] >= max_extend:
                continue
            position = axis_values.index(best[axis])
            if position in (0, len(axis_values) - 1):
                if position == 0:
                    new = axis_values[0] / param.factor
                    axis_values.insert(0, new)
                else:
                    new = axis_values[-1] * param.factor
                    axis_values.append(new)
                extended[name] += 1
                score(*(best[:axis] + (new,) + best[axis + 1:]))
                grown = True
        if not grown:
            break
    edges = [name for axis, name in enumerate(("lr", "theta")) if len(values[name]) > 1 and
             best[axis] in (values[name][0], values[name][-1])]
    return best[0], best[1], trials, edges


def _isolated_entry(config: dict[str, Any], run_dir: str) -> None:
    """Child process (see [`run_in_child`][ghl_snn.comparison.processes.run_in_child]): load data, train, write
    ``results.json`` (fresh process -> clean RSS baseline)."""
    run_config = RunConfig(**config)
    torch.set_num_threads(run_config.extra.get("threads", torch.get_num_threads()))
    split = load_split(run_config.data_root, PRESETS[run_config.preset][1], run_config.val_fraction,
                       run_config.seed, run_config.standardize)
    write_json(Path(run_dir) / "results.json", fit(run_config, split, Path(run_dir)))


def final_run(config: RunConfig, split: Split, run_dir: Path, isolate: bool) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    # what the runner will do with this folder, decided here so that a refusal is one line from this process
    runner.plan_run(run_dir, config.epochs, run_identity(config), config.resume, config.force)
    if not isolate:
        result = fit(config, split, run_dir)
        write_json(run_dir / "results.json", result)
        return result
    config.extra["threads"] = torch.get_num_threads()
    run_in_child(_isolated_entry, asdict(config), str(run_dir))  # its errors (divergence, ...) are raised here
    return json.loads((run_dir / "results.json").read_text())


#: the record of a run's grid search, kept in its folder from the moment the search ends
GRID_RECORD = "grid.json"


def stored_grid(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The grid search recorded in ``run_dir`` for the same settings (``identity``), or ``None``."""
    try:
        record = json.loads((run_dir / GRID_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("identity") == json.loads(json.dumps(identity, default=str)) else None


def chosen_values(folder: Path, preset: str, method: str) -> dict[str, Any]:
    """The ``lr`` and ``theta`` a finished run in ``folder/<preset>/<method>`` trained with (``--chosen-from``); for
    the ``--out`` of a command run with several ``--seeds``, its first seed's (``<method>/seed<k>/``, lowest k)."""
    path = folder / preset / method / "results.json"
    seeded = sorted(path.parent.glob("seed*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    if not path.exists() and seeded:
        path = seeded[0]
    try:
        result = json.loads(path.read_text())
        return {"lr": float(result["lr"]), "theta": result.get("theta")}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--chosen-from: {path} holds no finished {method} run of {preset} ({error})") from None


def build_parser() -> argparse.ArgumentParser:
    pos, posf, nonnegf = cli.positive_int, cli.positive_float, cli.nonnegative_float
    parser = cli.parser("python -m ghl_snn.experiments.hebbff", __doc__.split("\n")[0], raw=False)
    parser.add_argument("--preset", nargs="+", default=["deep-mnist"], choices=sorted(PRESETS),
                        help="network and data set, one table row group each")
    cli.add_methods_argument(parser, METHODS, METHODS)
    cli.add_common_arguments(parser, out_default="runs/hebbff", epochs_default=10, epochs_help="epochs of the final "
                             "run", seeds_help="seeds (each draws its own validation split and initialisation)",
                             out_layout=" (runs in DIR/<preset>/<method>/, DIR/<preset>/<method>/seed<k>/ with "
                                        "several seeds)",
                             data_help="the folder holding MNIST/ (and FashionMNIST/)")
    parser.add_argument("--batch-size", type=pos, default=128, help="mini-batch size")
    parser.add_argument("--lr", type=posf, default=None, help="fix lr (skips the lr grid)")
    parser.add_argument("--theta", type=nonnegf, default=None, help="fix theta (skips the theta grid)")
    parser.add_argument("--lr-grid", type=posf, nargs="+", default=None,
                        help=f"lr candidates (default per method: {DEFAULT_LR_GRID})")
    parser.add_argument("--theta-grid", type=nonnegf, nargs="+", default=list(DEFAULT_THETA_GRID),
                        help="goodness threshold θ candidates of hebbff and ff")
    parser.add_argument("--chosen-from", metavar="DIR", default=None,
                        help="no grid search: every run takes the lr / theta chosen for its preset and method in "
                             "DIR (the --out of an earlier command, e.g. another seed's); --lr / --theta override")
    parser.add_argument("--chosen-preset", metavar="PRESET", choices=sorted(PRESETS), default=None,
                        help="with --chosen-from: take the values chosen for this preset (e.g. the deep net's for "
                             "the wide one) instead of each run's own")
    parser.add_argument("--grid-epochs", type=pos, default=1, help="epochs per grid candidate")
    parser.add_argument("--grid-train-limit", type=pos, default=None,
                        help="train each grid candidate on the first N samples of the 80%% split "
                             "(default: --train-limit)")
    parser.add_argument("--train-limit", type=pos, default=None, help="final run: first N training samples")
    parser.add_argument("--val-limit", type=pos, default=None, help="evaluate on the first N validation samples")
    parser.add_argument("--val-fraction", type=cli.open_fraction, default=0.2,
                        help="fraction of the training set held out for choosing lr and θ")
    parser.add_argument("--label-scale", type=posf, default=0.3,
                        help="scale s of the one-hot label appended to every layer's input (a layer's label part "
                             "starts with a fraction s^2/(1+s^2) of its pre-activation variance)")
    parser.add_argument("--no-standardize", action="store_true",
                        help="keep the [0, 1] pixels (default: per-pixel mean and std of the training split)")
    parser.add_argument("--init-gain", type=nonnegf, default=1.0,
                        help="FF/HebbFF weight init: pre-activations start as N(0, gain^2); 0 = PyTorch default")
    parser.add_argument("--hidden", type=pos, nargs="+", default=None,
                        help="override the preset's hidden widths (e.g. for a quick smoke run)")
    parser.add_argument("--weight-decay", type=nonnegf, default=0.0, help="weight decay of every method")
    parser.add_argument("--goodness-layers", type=cli.nonnegative_int, nargs=2, metavar=("FIRST", "LAST"),
                        default=None, help="FF/HebbFF prediction: goodness summed over layers FIRST..LAST (0-based; "
                        "'1 L-1' is Hinton's FF read-out); default: the range with the best validation accuracy")
    parser.add_argument("--train-acc-rows", type=cli.nonnegative_int, default=32,
                        help="FF/HebbFF training accuracy: images of each batch classified by goodness before the "
                             "update (0 = none)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="train the final run in this process (peak RSS then less meaningful)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The checked options: a bad value exits with one line and exit code 2 before anything is read."""
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Grid search + final run for every (preset, method); returns the result rows (also written to ``--out``)."""
    roots = {preset: locate_mnist(args.data_root, PRESETS[preset][1]) for preset in args.preset}  # before any work
    out = Path(args.out)
    results = []
    seeds = cli.seeds_of(args)
    for preset, seed in itertools.product(args.preset, seeds):
        root = roots[preset]
        split = load_split(str(root), PRESETS[preset][1], args.val_fraction, seed, not args.no_standardize)
        for method in args.methods:
            base = RunConfig(preset=preset, method=method, lr=math.nan, theta=None, epochs=args.epochs,
                             batch_size=args.batch_size, label_scale=args.label_scale,
                             standardize=not args.no_standardize,
                             init_gain=args.init_gain if args.init_gain > 0 else None,
                             hidden=tuple(args.hidden) if args.hidden else None,
                             weight_decay=args.weight_decay,
                             goodness_layers=tuple(args.goodness_layers) if args.goodness_layers else None,
                             train_acc_rows=args.train_acc_rows, seed=seed,
                             device=args.device, val_fraction=args.val_fraction, train_limit=args.train_limit,
                             val_limit=args.val_limit, data_root=str(root),
                             progress=not args.quiet)
            lr_grid = [args.lr] if args.lr is not None else (args.lr_grid or DEFAULT_LR_GRID[method])
            theta_grid: list[float | None] = [None] if method in LOGIT_METHODS else (
                [args.theta] if args.theta is not None else args.theta_grid)
            if args.chosen_from is not None:
                chosen = chosen_values(Path(args.chosen_from), args.chosen_preset or preset, method)
                lr_grid = [args.lr if args.lr is not None else chosen["lr"]]
                theta_grid = [None] if method in LOGIT_METHODS else [
                    args.theta if args.theta is not None else chosen["theta"]]
            run_dir = out / preset / method / (f"seed{seed}" if len(seeds) > 1 else "")
            grid = {"lr": list(lr_grid), "theta": list(theta_grid), "epochs": args.grid_epochs,
                    "train_limit": args.grid_train_limit}
            # the search is identified by the settings of the run it serves, before its lr / θ are chosen
            search_identity = {key: value for key, value in run_identity(RunConfig(**{**asdict(base), "extra": {
                "grid": grid}})).items() if key not in ("lr", "theta", "epochs")}
            record = None if args.force else stored_grid(run_dir, search_identity)
            if record is None and not args.force and (run_dir / "config.json").exists() and (
                    (run_dir / "checkpoint.pt").exists() or (run_dir / "results.json").exists()):
                # a stored run without a grid record: keep the lr / θ chosen before (plan_run compares the rest)
                saved = json.loads((run_dir / "config.json").read_text())
                record = {"lr": saved["lr"], "theta": saved["theta"], "trials": [], "seconds": None}
            if record is None:
                started = time.perf_counter()
                lr, theta, trials, edges = select_hyperparameters(base, split, lr_grid, theta_grid, args.grid_epochs,
                                                           args.grid_train_limit if args.grid_train_limit is not None
                                                           else args.train_limit)
                record = {"identity": search_identity, "lr": lr, "theta": theta, "trials": trials,
                          "edges": edges, "seconds": time.perf_counter() - started}
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json(run_dir / GRID_RECORD, record)
            lr, theta = record["lr"], record["theta"]
            config = RunConfig(**{**asdict(base), "lr": lr, "theta": theta, "resume": args.resume,
                                  "force": args.force, "extra": {"grid": grid}})
            result = final_run(config, split, run_dir, isolate=not args.no_isolate)
            result["grid"] = record["trials"]
            result["grid_edges"] = record.get("edges", [])
            if record["seconds"] is not None and len(record["trials"]) > 0:
                result["grid_seconds"] = record["seconds"]
            write_json(run_dir / "results.json", result)
            results.append(result)
            print(f"{preset} {method}: lr={lr:g} theta={theta} test_acc={result['test_acc']:.4f} "
                  f"time={result['train_time_s']:.1f}s peak={result['peak_mib']:.1f}MiB", file=sys.stderr,
                  flush=True)
            write_summary(out, results, args)
    return results


TABLE_COLUMNS = ("preset", "method", "seed", "lr", "theta", "epochs", "train_samples", "train_acc", "val_acc",
                 "test_acc", "goodness_layers", "train_time_s", "peak_mib", "peak_rss_mib")


def write_summary(out: Path, results: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [{column: result.get(column) for column in TABLE_COLUMNS} for result in results]
    write_json(out / "results.json", {"command": " ".join(sys.argv), "args": vars(args), "results": list(results)})
    (out / "results.md").write_text(markdown_table(rows, TABLE_COLUMNS) + "\n")


def run_and_print(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every preset, seed and method, write the outputs and print the table."""
    results = run(args)
    print(markdown_table([{c: r.get(c) for c in TABLE_COLUMNS} for r in results], TABLE_COLUMNS))
    return results


def locate_data(args: argparse.Namespace) -> None:
    """Every preset's data set is there (one clear error otherwise, before the output folder is touched)."""
    for preset in args.preset:
        locate_mnist(args.data_root, PRESETS[preset][1])


main, cli_main = cli.entry_points(parse_args, lambda args: run_and_print(args), check=locate_data)


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(cli_main())
