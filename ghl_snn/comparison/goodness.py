"""The runner's training loop for goodness learners: Forward-Forward (Hinton 2022) and HebbFF, with a logit model
(backprop or a read-out) as their control.

[`GoodnessTrainer`][] is a [`Trainer`][ghl_snn.comparison.runner.Trainer] (checkpoints, bit-identical ``--resume``,
divergence stops) whose model is a [`ForwardForwardMLP`][ghl_snn.models.mlp.ForwardForwardMLP] (or any model with
``label_goodness``) and whose ``learner`` decides the step:

* [`ForwardForward`][ghl_snn.learners.forward_forward.ForwardForward]: per batch, wrong labels ``y_neg`` are drawn
  from ``generator``; the recorded loss is the layer-local softplus loss summed over layers,
  ``sum_l softplus(theta - G_l(x, y)) + softplus(G_l(x, y_neg) - theta)`` (Hinton 2022, eq. 1), whose backward
  pass and the optimiser make the step;
* [`HebbFF`][ghl_snn.learners.hebbff.HebbFF]: its [`train_step`][ghl_snn.learners.hebbff.HebbFF.train_step]
  (no autograd; the recorded "loss" is the last layer's mean positive gate); with ``mode="fused"`` it writes the
  weights itself and the optimiser is inert, with ``mode="grad"`` it writes ``.grad`` and the optimiser applies it;
* ``None``: a logit model trained by cross-entropy and backprop (the control).

Training accuracy of the goodness learners: before each update the first ``train_acc_rows`` images of the batch
are classified by goodness with the weights the update starts from (read once per epoch).  The evaluation scores
every candidate label by its goodness summed over the layers ``goodness_layers`` or, when that is ``None``, over the
range of consecutive layers with the best accuracy on the evaluated batches
([`best_layer_range`][ghl_snn.models.goodness.best_layer_range]), chosen anew at every evaluation and kept in
``readout_layers``.  The checkpoint adds ``generator`` (batch order, wrong labels) and ``readout_layers``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..learners.hebbff import HebbFF
from ..models.goodness import best_layer_range, goodness_scores
from ..rules.hebbff import random_wrong_labels
from .runner import Trainer

__all__ = ["GoodnessTrainer", "goodness_or_logit_loss"]


def goodness_or_logit_loss(output: Tensor, labels: Tensor) -> Tensor:
    """The trainer's loss: cross-entropy of logits ``[N, classes]``, or the mean of the per-row value ``[N, 1]``
    that a goodness learner's step returned."""
    return output.mean() if output.shape[1] == 1 else F.cross_entropy(output, labels)


@dataclass
class GoodnessTrainer(Trainer):
    """The runner's loop for a goodness learner (``learner``: ForwardForward or HebbFF) or a logit model
    (``learner=None``); see the module's description.  ``classes``: the number of labels wrong labels are drawn
    from."""

    learner: Any = None
    generator: torch.Generator | None = None
    classes: int = 10
    train_acc_rows: int = 32
    #: fixed (first, last) layers whose goodness is summed for a prediction; ``None``: chosen at every evaluation
    goodness_layers: tuple[int, int] | None = None
    #: the layers the last prediction summed (``None``: every layer)
    readout_layers: tuple[int, int] | None = None
    loss_fn: Any = goodness_or_logit_loss
    _labels: Tensor | None = field(default=None, repr=False)
    _negative: Tensor | None = field(default=None, repr=False)
    _hits: list[Tensor] = field(default_factory=list, repr=False)
    _scored: int = 0

    def __post_init__(self) -> None:
        if self.goodness_layers is not None:
            self.readout_layers = tuple(self.goodness_layers)  # type: ignore[assignment]

    def train_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], epoch: int, total: int | None = None,
                    desc: str = "") -> dict[str, float]:
        self._hits, self._scored = [], 0
        return super().train_epoch(batches, epoch, total, desc)

    def _score_training_rows(self, images: Tensor, labels: Tensor) -> None:
        rows = min(self.train_acc_rows, images.shape[0])
        if rows > 0:
            scores = goodness_scores(self.model, images[:rows], self.readout_layers)
            self._hits.append((scores.argmax(1) == labels[:rows]).sum())
            self._scored += rows

    def _prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        device = next(self.model.parameters()).device
        if self.learner is not None:
            self._negative = random_wrong_labels(labels, self.classes, generator=self.generator).to(device)
        self._labels = labels.to(device)
        return images.to(device), self._labels

    def _forward(self, images: Tensor) -> Tensor:
        assert self._labels is not None
        labels, rows = self._labels, images.shape[0]
        if self.learner is None:
            return self.model(images)
        self._score_training_rows(images, labels)
        if isinstance(self.learner, HebbFF):
            stats = self.learner.train_step(self.model, images, labels, self._negative)
            return stats[-1].gate_pos.detach().reshape(1, 1).expand(rows, 1)
        loss = self.learner.loss(images, labels, self._negative)
        return loss.reshape(1, 1).expand(rows, 1)

    def _apply_update(self, loss: Tensor) -> None:
        if isinstance(self.learner, HebbFF):
            if self.learner.mode == "fused":
                return  # the fused step already wrote the weights
        else:
            loss.backward()
        self.optimizer.step()

    def _epoch_totals(self, loss_sum: float, correct: float, seen: float) -> tuple[float, float, float]:
        if self.learner is not None:
            # the goodness prediction of the rows scored before each update, as a fraction of the epoch's samples
            hits = float(torch.stack(self._hits).sum()) if self._hits else math.nan
            correct = hits / self._scored * seen if self._scored else math.nan * seen
        return loss_sum, correct, seen

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        self.model.eval()
        device = next(self.model.parameters()).device
        if self.learner is not None:
            pairs = [(self.model.label_goodness(images.to(device), per_layer=True), labels.to(device))
                     for images, labels in batches]
            per_layer, labels = torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])
            if self.goodness_layers is None:
                self.readout_layers = best_layer_range(per_layer, labels)
            first, last = self.readout_layers or (0, per_layer.shape[2] - 1)
            scores = per_layer[:, :, first:last + 1].sum(dim=2)
            return {"test_loss": float(F.cross_entropy(scores, labels)),
                    "test_acc": float((scores.argmax(1) == labels).float().mean())}
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in batches:
            scores = self.model(images.to(device))
            labels = labels.to(scores.device)
            loss_sum += float(F.cross_entropy(scores, labels, reduction="sum"))
            correct += int((scores.argmax(1) == labels).sum())
            seen += labels.shape[0]
        return {"test_loss": loss_sum / max(seen, 1), "test_acc": correct / max(seen, 1)}

    def state_dict(self, epoch: int, elapsed: float) -> dict[str, Any]:
        state = super().state_dict(epoch, elapsed)
        state["generator"] = self.generator.get_state() if self.generator is not None else None
        state["readout_layers"] = self.readout_layers
        return state

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, float]:
        if state.get("readout_layers") is not None:
            self.readout_layers = tuple(state["readout_layers"])  # type: ignore[assignment]
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        return super().load_state_dict(state)
