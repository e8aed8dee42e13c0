"""One training run of the [HebbFF experiment][ghl_snn.experiments.hebbff]: the network and learner of a method
([`build`][ghl_snn.experiments.hebbff_training.build]), the runner's loop for the goodness methods
([`HebbFFTrainer`][ghl_snn.experiments.hebbff_training.HebbFFTrainer]) and
[`fit`][ghl_snn.experiments.hebbff_training.fit] (per-epoch validation accuracy, checkpoint, ``--resume``, the test
accuracy at the end).
"""
from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..datasets.mnist import VectorSplit
from ..learners.forward_forward import ForwardForward
from ..learners.hebbff import HebbFF, health_message, hebbff_health
from ..models.goodness import best_layer_range, check_layer_range, goodness_scores, layer_accuracies
from ..models.mlp import MLP_PRESETS, ForwardForwardMLP, ForwardForwardReadout, backprop_mlp
from ..rules.hebbff import random_wrong_labels
from ..comparison import runner
from ..comparison.common import seed_everything, select_device

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
    [`best_layer_range`][ghl_snn.models.goodness.best_layer_range]) or by the soft-max logits (BP, the control);
    the checkpoint adds the generator that draws the batch order and the wrong labels, so ``--resume`` is
    bit-identical, the read-out's layers and the per-epoch ``rows``."""

    config: RunConfig | None = None
    learner: Any = None
    generator: torch.Generator | None = None
    _labels: Tensor | None = field(default=None, repr=False)
    _negative: Tensor | None = field(default=None, repr=False)
    _hits: list[Tensor] = field(default_factory=list, repr=False)
    _scored: int = 0
    #: the layers (first, last) whose goodness is summed for a prediction; ``None``: every layer
    readout_layers: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.config is not None and self.config.goodness_layers is not None:
            self.readout_layers = tuple(self.config.goodness_layers)  # type: ignore[assignment]

    def train_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], epoch: int, total: int | None = None,
                    desc: str = "") -> dict[str, float]:
        self._hits, self._scored = [], 0
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
        if method in LOGIT_METHODS:
            return self.model(images)
        self._score_training_rows(images, labels)
        if method.startswith("hebbff"):
            stats = self.learner.train_step(self.model, images, labels, self._negative)
            return stats[-1].gate_pos.detach().reshape(1, 1).expand(rows, 1)
        loss = self.learner.loss(images, labels, self._negative)
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
    [`HebbFFTrainer`][ghl_snn.experiments.hebbff_training.HebbFFTrainer])."""
    return [{"epoch": row["epoch"], "train_seconds": row["epoch_seconds"], "train_stat": row["train_loss"],
             "train_acc": row["train_acc"], "val_acc": row["test_acc"], "val_loss": row["test_loss"]}
            for row in history]


def make_trainer(config: RunConfig, model: nn.Module, learner: Any, generator: torch.Generator) -> HebbFFTrainer:
    """A [`HebbFFTrainer`][ghl_snn.experiments.hebbff_training.HebbFFTrainer] for a model and learner from
    [`build`][]; FF its learner's optimiser, ``hebbff-adam`` the Adam optimiser that applies its ``.grad``,
    ``hebbff`` an inert SGD optimiser (its weights never hold a gradient) so that the runner's optimiser bookkeeping
    stays uniform."""
    if isinstance(learner, torch.optim.Optimizer):
        optimizer = learner
    elif isinstance(learner, ForwardForward):
        optimizer = learner.optimizer
    elif config.method == "hebbff-adam":  # the HebbFF learner's weight decay is already in .grad: none here
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
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
    """One epoch of mini-batch training through [`HebbFFTrainer`][ghl_snn.experiments.hebbff_training.HebbFFTrainer];
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
