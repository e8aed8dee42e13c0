"""Classifying with a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP]: every candidate label scored by its goodness
(``g_l = mean_k a_{l,k}^2``, HebbFF paper Eq. 1) summed over a range of consecutive layers ``first..last``, and the
choice of that range on held-out data.

The HebbFF paper sums over every layer; Hinton's Forward-Forward read-out skips the first, ``(1, L-1)``.  Which
range classifies best depends on the training, so [`best_layer_range`][] scores every range on a validation split.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .mlp import ForwardForwardMLP

LayerRange = tuple[int, int]
"""``(first, last)`` layers (0-based, inclusive) whose goodness is summed."""


def check_layer_range(layers: Sequence[int] | None, count: int) -> None:
    """Raise ``ValueError`` unless ``layers`` is ``None`` or ``(first, last)`` with ``0 <= first <= last < count``."""
    if layers is None:
        return
    if len(layers) != 2 or not 0 <= int(layers[0]) <= int(layers[1]) < count:
        raise ValueError(f"goodness_layers must be (first, last) with 0 <= first <= last < {count} (the network's "
                         f"layers), got {tuple(layers)}")


def best_layer_range(per_layer: Tensor, labels: Tensor) -> LayerRange:
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


def goodness_scores(model: ForwardForwardMLP, x: Tensor, layers: LayerRange | None = None) -> Tensor:
    """Goodness of every candidate label summed over the layers ``first…last`` (B, C); ``None``: every layer."""
    if layers is None:
        return model.label_goodness(x)
    return model.label_goodness(x, per_layer=True)[:, :, layers[0]:layers[1] + 1].sum(dim=2)


@torch.no_grad()
def layer_accuracies(model: ForwardForwardMLP, x: Tensor, y: Tensor, batch_size: int = 500) -> list[float]:
    """Accuracy of each layer's goodness alone on ``(x, y)`` (which layers carry the label evidence)."""
    device = next(model.parameters()).device
    correct = None
    for start in range(0, x.shape[0], batch_size):
        scores = model.label_goodness(x[start:start + batch_size].to(device), per_layer=True)
        hits = (scores.argmax(dim=1).cpu() == y[start:start + batch_size, None]).sum(dim=0)
        correct = hits if correct is None else correct + hits
    return [int(c) / max(x.shape[0], 1) for c in correct] if correct is not None else []
