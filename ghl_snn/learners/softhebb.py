"""SoftHebb's learners (Journé, Rodriguez, Guo & Moraitis, ICLR 2023): objects that update weights.

* [`SoftHebbLearner`][] -- unsupervised SoftHebb steps on chosen layers:
  ``W_k <- W_k + lr * |r_k - 1|**p * E_k / max|E|`` with the eligibility ``E`` of
  [`ghl_snn.rules.softhebb.SoftHebb`][] and ``r_k = ||w_k||_2`` (the weight-norm-dependent learning rate).
* [`train_softhebb`][] -- the DeepHebb protocol, the GHL paper's Table 1/3 and Fig. 2 baseline: one unsupervised
  SoftHebb epoch per plastic layer (earlier layers fixed, no labels), then the remaining parameters (classifier,
  BatchNorm affine) by backprop on the frozen features.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..guards import NonFinite
from ..modulators import Ones
from ..plasticity import GHL
from ..rules.softhebb import SoftHebb, norm_learning_rate


class SoftHebbLearner(GHL):
    """Unsupervised SoftHebb updates for the given layers: ``W_k <- W_k + lr * |r_k - 1|**p * E_k / max|E|``.

    The GHL plug-in with SoftHebb's rule for every layer and the local-only modulator (``.grad = -E``); ``step``
    then applies the norm-dependent step itself, so it needs no labels and no backward pass.  Call ``step`` after a
    training-mode forward with gradients enabled.  ``strict`` and ``nonfinite`` are the guards every learner shares
    ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]): a layer the guards leave without an update (frozen, silent,
    non-finite under ``"skip"``) is not moved.
    """

    def __init__(self, model: nn.Module, taus: Mapping[str, float], lr: float = 0.01, power: float = 0.5,
                 strict: bool = False, nonfinite: NonFinite = "raise") -> None:
        self.lr, self.power = float(lr), float(power)
        taus = dict(taus)
        super().__init__(model, layers=list(taus), modulator=Ones(), rule=lambda name, _: SoftHebb(taus[name]),
                         strict=strict, nonfinite=nonfinite)

    @torch.no_grad()
    def step(self, **context: Any) -> None:
        weights = [module.weight for module in self.layers.values()]
        for weight in weights:  # what the guards leave without an update keeps no stale gradient either
            weight.grad = None
        super().step(**context)
        for weight in weights:
            if weight.grad is not None and weight.requires_grad:
                weight.sub_(self.lr * norm_learning_rate(weight, self.power) * weight.grad)
                weight.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The shared layout (per-layer temperatures, steps) plus the learning rate and power."""
        return {**super().state_dict(), "lr": self.lr, "power": self.power}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.lr, self.power = float(state["lr"]), float(state["power"])


def train_softhebb(model: nn.Module, taus: Mapping[str, float], train_batches: Callable[[int], Iterable[Any]],
                   classifier_epochs: int = 1, hebb_lr: float = 0.01, classifier_lr: float = 1e-3,
                   power: float = 0.5, max_steps: int | None = None) -> list[dict[str, Any]]:
    """The DeepHebb protocol: one unsupervised SoftHebb epoch per plastic layer (in order), then backprop on the rest.

    ``train_batches(epoch)`` yields ``(images, labels)``; ``max_steps`` caps every epoch (for smoke tests).  While
    layer ``l`` learns, every other parameter is fixed; afterwards all plastic weights are frozen and the
    remaining parameters (classifier, BatchNorm affine) are trained with Adam on the cross-entropy.  Returns one
    ``{"phase", "loss"}`` row per epoch (loss = mean cross-entropy of the classifier phase, None for Hebbian ones).
    """
    history: list[dict[str, Any]] = []
    plastic = dict(taus)
    named = dict(model.named_modules())
    for index, (name, tau) in enumerate(plastic.items()):
        learner = SoftHebbLearner(model, {name: tau}, lr=hebb_lr, power=power)
        model.train()
        try:
            for step, (images, _) in enumerate(train_batches(index)):
                if max_steps is not None and step >= max_steps:
                    break
                model(images)
                learner.step()
        finally:
            learner.remove()
        history.append({"phase": f"hebb:{name}", "loss": None})
    plastic_params = {id(p) for n in plastic for p in named[n].parameters()}
    rest = [p for p in model.parameters() if id(p) not in plastic_params]
    for p in model.parameters():
        p.requires_grad_(id(p) not in plastic_params)
    optimizer = torch.optim.Adam(rest, lr=classifier_lr)
    for epoch in range(classifier_epochs):
        model.train()
        total, seen = 0.0, 0
        for step, (images, labels) in enumerate(train_batches(len(plastic) + epoch)):
            if max_steps is not None and step >= max_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * labels.shape[0], seen + labels.shape[0]
        history.append({"phase": "classifier", "loss": total / max(seen, 1)})
    for p in model.parameters():
        p.requires_grad_(True)
    return history
