"""Figures of the diagnostics: input receptive fields of a layer and the Gini coefficient of the step sizes over
training ([`CompetitionMonitor`][ghl_snn.diagnostics.competition.CompetitionMonitor]), written as PNG files
(matplotlib, Agg backend).

A receptive field is a neuron's row of input weights ``W[k]`` shown as an image of the input's shape; each panel
is scaled to its own ``max |W[k]|`` (diverging colour map: blue negative, red positive), as in the receptive-field
figures of Krotov & Hopfield (2019) and Journé et al. (2023, SoftHebb).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

__all__ = ["receptive_fields", "plot_gini", "compress_png"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def receptive_fields(weights: Mapping[str, Tensor], path: Path, count: int, title: str,
                     shape: tuple[int, int] = (28, 28), columns: int = 8) -> None:
    """One block of panels per entry of ``weights`` (name -> weight ``[neurons, H * W]``): the first ``count``
    neurons' input weights as ``shape`` images, ``columns`` per row; saved with a palette ([`compress_png`][])."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    plt = _pyplot()
    rows = (count + columns - 1) // columns
    width = columns * len(weights) + len(weights) - 1
    fig, axes = plt.subplots(rows, width, figsize=(0.62 * width, 0.7 * rows + 0.5))
    axes = axes.reshape(rows, -1)
    for axis in axes.flat:
        axis.axis("off")
    for block, (name, weight) in enumerate(weights.items()):
        for k in range(min(count, weight.shape[0])):
            image = weight[k].reshape(shape).float().numpy()
            scale = float(abs(image).max()) or 1.0
            axis = axes[k // columns, block * (columns + 1) + k % columns]
            axis.imshow(image, cmap="RdBu_r", vmin=-scale, vmax=scale)
        axes[0, block * (columns + 1) + columns // 2].set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    compress_png(path)


def compress_png(path: Path, colors: int = 48) -> None:
    """Re-save a PNG with an adaptive palette of ``colors`` colours (images of noisy weights barely compress
    otherwise)."""
    from PIL import Image

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors=colors)
    quantized.save(path, optimize=True)


def plot_gini(traces: Mapping[tuple[int, str], Sequence[tuple[int, float]]], path: Path) -> None:
    """The Gini coefficient of the running-average step sizes (``CompetitionMonitor.records``: ``(step, gini)``)
    against the step, one panel per layer width and one line per method (``traces[(width, method)]``)."""
    plt = _pyplot()
    widths = sorted({w for w, _ in traces})
    fig, axes = plt.subplots(1, len(widths), figsize=(3.2 * len(widths), 3), sharey=True, squeeze=False)
    for axis, width in zip(axes[0], widths):
        for (w, method), trace in traces.items():
            if w == width:
                axis.plot([s for s, _ in trace], [g for _, g in trace], label=method)
        axis.set_title(f"{width} hidden units")
        axis.set_xlabel("step")
        axis.set_ylim(0, 1)
    axes[0, 0].set_ylabel("Gini of running-average step size")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
