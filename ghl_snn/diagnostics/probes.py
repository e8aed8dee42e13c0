"""Linear probes on frozen features, always paired with the random-initialisation baseline.

The competitive-Hebbian paper's warning: a wide layer of untrained random weights followed by a linear read-out is
already a strong classifier (its Table 1: random 91.6 % on MNIST at 512 units), so a learning rule's probe accuracy
means something only next to the probe accuracy of the *same network at its initialisation*.

Probe: features ``f = encoder(x)`` computed once under ``torch.no_grad()`` in ``eval()`` mode, standardised with the
training-set mean and standard deviation (``(f - μ) / (σ + 1e-6)``, statistics of the training features only), then
a bias-ful ``nn.Linear`` trained by Adam on the softmax cross-entropy ``-log softmax(A f + b)_y`` for ``epochs``
passes over shuffled mini-batches.  Test accuracy is evaluated after every epoch; both the final and the best value
are returned (the paper reports the best; the final one does not select on the test set).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ProbeResult:
    """Outcome of [`linear_probe`][]: accuracies in [0, 1] and the per-epoch test accuracy."""

    final_accuracy: float
    best_accuracy: float
    train_accuracy: float
    history: list[float] = field(default_factory=list)


@torch.no_grad()
def extract_features(encoder: nn.Module | Callable[[Tensor], Tensor], inputs: Tensor,
                     batch_size: int = 1024) -> Tensor:
    """``encoder(inputs)`` in batches, without gradients, in ``eval()`` mode (restored afterwards); flattened to
    ``[N, features]`` float32."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = encoder.training if isinstance(encoder, nn.Module) else None
    if isinstance(encoder, nn.Module):
        encoder.eval()
    try:
        chunks = [encoder(inputs[i:i + batch_size]).reshape(min(batch_size, inputs.shape[0] - i), -1).float()
                  for i in range(0, inputs.shape[0], batch_size)]
    finally:
        if was_training:
            encoder.train()
    return torch.cat(chunks)


def _check_split(features: Tensor, labels: Tensor, split: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{split} features must be 2-d [N, D], got shape {tuple(features.shape)}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{split} labels must be 1-d with one entry per feature row: features "
                         f"{tuple(features.shape)}, labels {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{split} labels must be an integer tensor, got {labels.dtype}")
    if features.shape[0] == 0:
        raise ValueError(f"{split} split is empty")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{split} features contain nan or inf")


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 256, weight_decay: float = 0.0,
                 seed: int = 0, num_classes: int | None = None) -> ProbeResult:
    """Train a softmax-regression probe on frozen features (see the module docstring) and report accuracies."""
    _check_split(train_features, train_labels, "train")
    _check_split(test_features, test_labels, "test")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train and test features differ in width: {train_features.shape[1]} vs "
                         f"{test_features.shape[1]}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    train_labels, test_labels = train_labels.long(), test_labels.long()
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    mean, std = train_features.mean(0), train_features.std(0, correction=0)
    train_x = (train_features - mean) / (std + 1e-6)
    test_x = (test_features - mean) / (std + 1e-6)
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(train_x.shape[1], classes)
    with torch.no_grad():
        bound = 1.0 / train_x.shape[1] ** 0.5
        probe.weight.uniform_(-bound, bound, generator=generator)
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(train_x.shape[0], generator=generator)
        for start in range(0, train_x.shape[0], batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(probe(train_x[index]), train_labels[index]).backward()
            optimizer.step()
        with torch.no_grad():
            history.append(float((probe(test_x).argmax(1) == test_labels).float().mean()))
    with torch.no_grad():
        train_accuracy = float((probe(train_x).argmax(1) == train_labels).float().mean())
    return ProbeResult(final_accuracy=history[-1], best_accuracy=max(history), train_accuracy=train_accuracy,
                       history=history)


def random_init_copy(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``module`` with every sub-module that has ``reset_parameters()`` re-initialised from ``seed``
    (the baseline when the initial weights of a trained network were not kept)."""
    clone = copy.deepcopy(module)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for sub in clone.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    return clone


def probe_against_random_init(encoder: nn.Module, initial_encoder: nn.Module, train_inputs: Tensor,
                              train_labels: Tensor, test_inputs: Tensor, test_labels: Tensor,
                              **probe_kwargs) -> dict[str, float]:
    """Probe the trained ``encoder`` and the same network at its initialisation (``initial_encoder``, e.g. a
    ``copy.deepcopy`` taken before training) with identical probe settings.

    Returns ``trained`` / ``random_init`` (final test accuracy), ``trained_best`` / ``random_init_best`` and
    ``gain = trained - random_init``: a rule learnt something useful for the read-out only when ``gain > 0``.
    """
    results = {}
    for key, net in (("trained", encoder), ("random_init", initial_encoder)):
        result = linear_probe(extract_features(net, train_inputs), train_labels,
                              extract_features(net, test_inputs), test_labels, **probe_kwargs)
        results[key], results[f"{key}_best"] = result.final_accuracy, result.best_accuracy
    results["gain"] = results["trained"] - results["random_init"]
    return results
