"""One training run of the [HebbFF experiment][ghl_snn.experiments.hebbff]: the network and learner of a method
([`build`][ghl_snn.experiments.hebbff_training.build]), the runner's loop for the goodness methods
([`GoodnessTrainer`][ghl_snn.comparison.goodness.GoodnessTrainer]) and
[`fit`][ghl_snn.experiments.hebbff_training.fit] (per-epoch validation accuracy, checkpoint, ``--resume``, the test
accuracy at the end).
"""
from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..datasets.mnist import VectorSplit
from ..learners.forward_forward import ForwardForward
from ..learners.hebbff import HebbFF, health_message, hebbff_health
from ..models.goodness import check_layer_range, goodness_scores, layer_accuracies
from ..models.mlp import MLP_PRESETS, ForwardForwardMLP, ForwardForwardReadout, backprop_mlp
from ..rules.hebbff import random_wrong_labels
from ..comparison import runner
from ..comparison.common import seed_everything, select_device
from ..comparison.goodness import GoodnessTrainer

METHODS = ("hebbff", "hebbff-adam", "ff", "ff-sgd", "bp", "readout")
#: methods with a soft-max read-out (cross-entropy, arg-max logit) instead of goodness
LOGIT_METHODS = ("bp", "readout")
#: the goodness methods and their torch optimiser (``None``: HebbFF's fused in-place SGD step)
GOODNESS_OPTIMIZERS = {"hebbff": None, "hebbff-adam": "adam", "ff": "adam", "ff-sgd": "sgd"}
DATASETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
PRESETS = {f"{arch}-{data}": (arch, name) for arch in MLP_PRESETS for data, name in DATASETS.items()}
NUM_CLASSES = 10
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


def build(config: RunConfig, device: torch.device) -> tuple[nn.Module, Any]:
    """Model and learner of a run: the HebbFF learner (``hebbff``: its fused SGD step; ``hebbff-adam``: a
    ``mode="grad"`` learner, paired with Adam in [`make_trainer`][]), the [`ForwardForward`][ghl_snn.ForwardForward]
    learner with Adam or SGD, or the torch optimiser (BP, the control)."""
    arch, _ = PRESETS[config.preset]
    hidden = tuple(config.hidden) if config.hidden else MLP_PRESETS[arch]
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose from {', '.join(METHODS)}")
    if config.method == "bp":
        model = backprop_mlp(784, hidden, NUM_CLASSES).to(device)
        return model, torch.optim.SGD(model.parameters(), lr=config.lr, momentum=BP_MOMENTUM,
                                      weight_decay=config.weight_decay)
    network = ForwardForwardMLP(784, hidden, NUM_CLASSES, config.label_scale, config.init_gain).to(device)
    check_layer_range(config.goodness_layers, len(network.layers))
    if config.method == "readout":  # control: HebbFF's own initialised network, frozen; only the read-out learns
        model = ForwardForwardReadout(network).to(device)
        return model, torch.optim.SGD(model.readout.parameters(), lr=config.lr, momentum=BP_MOMENTUM,
                                      weight_decay=config.weight_decay)
    optimizer = GOODNESS_OPTIMIZERS[config.method]
    if config.method.startswith("hebbff"):
        network.requires_grad_(False)
        return network, HebbFF(network.layers, lr=config.lr, theta=config.theta, weight_decay=config.weight_decay,
                               mode="fused" if optimizer is None else "grad")
    optimizer_class = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    optimizer = optimizer_class(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return network, ForwardForward(network, config.theta, optimizer)


def run_rows(history: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """The runner's per-epoch rows under this experiment's column names (``val_acc`` is measured on the validation
    split; ``train_stat`` is the mean training loss of FF / BP, the mean positive gate of HebbFF; ``train_acc`` the
    accuracy on the training batches before each update, see
    [`GoodnessTrainer`][ghl_snn.comparison.goodness.GoodnessTrainer])."""
    return [{"epoch": row["epoch"], "train_seconds": row["epoch_seconds"], "train_stat": row["train_loss"],
             "train_acc": row["train_acc"], "val_acc": row["test_acc"], "val_loss": row["test_loss"]}
            for row in history]


def make_trainer(config: RunConfig, model: nn.Module, learner: Any, generator: torch.Generator) -> GoodnessTrainer:
    """The runner's loop ([`GoodnessTrainer`][ghl_snn.comparison.goodness.GoodnessTrainer]) for a model and learner
    from [`build`][]; FF its learner's optimiser, ``hebbff-adam`` the Adam optimiser that applies its ``.grad``,
    ``hebbff`` an inert SGD optimiser (its weights never hold a gradient) so that the runner's optimiser bookkeeping
    stays uniform; BP and the read-out control train their logits (``learner`` is their optimiser)."""
    if isinstance(learner, torch.optim.Optimizer):
        optimizer = learner
    elif isinstance(learner, ForwardForward):
        optimizer = learner.optimizer
    elif config.method == "hebbff-adam":  # the HebbFF learner's weight decay is already in .grad: none here
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    goodness = None if learner is optimizer else learner
    return GoodnessTrainer(model, optimizer, rule=goodness, progress=config.progress, learner=goodness,
                           generator=generator, classes=NUM_CLASSES, train_acc_rows=config.train_acc_rows,
                           goodness_layers=config.goodness_layers)


def _batches(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch's shuffled batches; the permutation is drawn from ``generator`` when the first batch is asked for."""
    order = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def train_epoch(config: RunConfig, model: nn.Module, learner: Any, x: Tensor, y: Tensor,
                generator: torch.Generator, device: torch.device) -> float:
    """One epoch of mini-batch training through [`GoodnessTrainer`][ghl_snn.comparison.goodness.GoodnessTrainer];
    returns the mean training loss (FF/BP) or mean positive gate (HebbFF).  A non-finite loss raises
    ``FloatingPointError``."""
    trainer = make_trainer(config, model, learner, generator)
    try:
        row = trainer.train_epoch(_batches(x, y, config.batch_size, generator), 0,
                                  desc=f"{config.preset} {config.method}")
    except runner.TrainingDiverged as error:
        raise FloatingPointError(f"{config.method}: training {error} (learning rate too large?)") from None
    return row["train_loss"]


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


#: RunConfig fields that do not change a run's results (left out of its identity)
NOT_IDENTITY = ("device", "data_root", "progress", "resume", "force", "extra")


#: keys of the runner's ``results.json`` that, in this experiment, describe the validation split
RUNNER_VALIDATION_KEYS = ("final_test_acc", "best_test_acc", "best_epoch")


def run_identity(config: RunConfig) -> dict[str, Any]:
    """The settings that identify a final run (stored in ``config.json``; see
    [`plan_run`][ghl_snn.comparison.runner.plan_run]), including the selection grid that chose its lr / θ."""
    identity = {key: value for key, value in asdict(config).items() if key not in NOT_IDENTITY}
    return {**identity, "grid": config.extra.get("grid")}


def fit(config: RunConfig, split: VectorSplit, run_dir: Path | None = None, test: bool = True) -> dict[str, Any]:
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
            result["test_acc_per_layer"] = layer_accuracies(model, split.test_x, split.test_y)
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
