"""Draw the summary figure of a recorded experiment whose run wrote tables but no plot (run from the repository root).

    python docs/_tools/recorded_figures.py

Reads only the recorded Markdown tables of the experiment's folder (nothing is re-run) and writes

* ``experiments/hebbff-tables/accuracy.png``: test accuracy per method, network and data set (bars: mean over
  seeds; dots: one seed each), beside the paper's numbers (Krutsylo, *The Hebbian Forward-Forward Algorithm*,
  Table 1) and chance, from ``runs.json`` (``python -m ghl_snn.experiments.hebbff_tables ... --json``);
* ``experiments/hebbff-tables/full-length-curves.png``: validation accuracy after every epoch of the full-length
  runs (10 epochs on 48,000 images; thin lines one seed, thick the mean), beside the paper's converged test
  accuracy, from ``full-length-runs.json``;
* ``experiments/model-zoo/ratios.png``: the GHL/BP step-time ratio of every model in each recorded setting, with
  the 1.5 target, from ``experiments/model-zoo/tables.md``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"

#: The Hebbian Forward-Forward Algorithm, Table 1 (test accuracy, %, converged): (network, data set, method)
HEBBFF_PAPER = {("deep", "fashionmnist", "bp"): 88.03, ("deep", "fashionmnist", "ff"): 80.79,
                ("deep", "fashionmnist", "hebbff"): 80.65, ("deep", "mnist", "bp"): 97.62,
                ("deep", "mnist", "ff"): 89.79, ("deep", "mnist", "hebbff"): 90.03,
                ("wide", "fashionmnist", "bp"): 88.09, ("wide", "fashionmnist", "ff"): 81.20,
                ("wide", "fashionmnist", "hebbff"): 80.87, ("wide", "mnist", "bp"): 97.79,
                ("wide", "mnist", "ff"): 89.41, ("wide", "mnist", "hebbff"): 89.16}


def markdown_tables(text: str) -> list[tuple[str, list[dict[str, str]], str]]:
    """Every pipe table of a Markdown text as ``(heading above it, rows as dicts, first non-blank line after it)``."""
    tables, heading, lines, i = [], "", text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            after = next((line for line in lines[i:] if line.strip()), "")
            tables.append((heading, rows, after))
            continue
        i += 1
    return tables


def panel_title(preset: str) -> str:
    """``deep MLP, Fashion-MNIST`` for the preset ``deep-fashionmnist``."""
    net, data = preset.split("-")
    return f"{net} MLP, {'Fashion-MNIST' if data == 'fashionmnist' else 'MNIST'}"


def save_with_legend(fig: plt.Figure, handles: list, labels: list, ncol: int, bottom: float, out: Path) -> Path:
    """One legend under the panels (``bottom``: the figure's fraction kept for it), then the PNG at ``out``."""
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def hebbff_accuracy(folder: Path = EXPERIMENTS / "hebbff-tables") -> Path:
    runs: dict[tuple[str, str], list[float]] = {}
    for record in json.loads((folder / "runs.json").read_text(encoding="utf-8")):
        runs.setdefault((record["preset"], record["method"]), []).append(100 * float(record["test_acc"]))
    presets = [p for p in ("deep-mnist", "wide-mnist", "deep-fashionmnist", "wide-fashionmnist")
               if any(key[0] == p for key in runs)]
    methods = [("hebbff", "HebbFF\n(SGD)"), ("hebbff-adam", "HebbFF\n+ Adam"), ("ff-sgd", "FF\n(SGD)"),
               ("ff", "FF\n(Adam)"), ("bp", "BP"), ("readout", "control:\nread-out")]
    paper_of = {"hebbff": "hebbff", "hebbff-adam": "hebbff", "ff-sgd": "ff", "ff": "ff", "bp": "bp"}
    columns = 2
    rows = (len(presets) + columns - 1) // columns
    fig, grid = plt.subplots(rows, columns, figsize=(11, 4.0 * rows), sharey=True, squeeze=False)
    for ax, preset in zip(grid.flat, presets):
        net, data = preset.split("-")
        for x, (method, _) in enumerate(methods):
            values = runs.get((preset, method), [])
            if not values:
                continue
            ax.bar(x, sum(values) / len(values), color="#9ecae1" if method != "readout" else "#d9d9d9",
                   edgecolor="#444444", width=0.6, label="ours, mean of seeds" if x == 0 else None)
            ax.plot([x] * len(values), values, "o", color="#08519c", ms=4, label="ours, one seed" if x == 0 else None)
            paper = HEBBFF_PAPER.get((net, data, paper_of.get(method, "")))
            if paper is not None:
                ax.plot(x, paper, "D", color="#d94801", ms=6, label="paper (converged)" if x == 0 else None)
        ax.axhline(10, color="#666666", ls="--", lw=1, label="chance")
        ax.set_xticks(range(len(methods)), [label for _, label in methods], fontsize=8)
        ax.set_title(panel_title(preset), fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(grid.flat)[len(presets):]:
        ax.axis("off")
    for ax in grid[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("ours: 2 epochs on 20,000 images, 3 seeds; paper: trained to convergence", fontsize=10)
    return save_with_legend(fig, *grid[0, 0].get_legend_handles_labels(), ncol=4, bottom=0.06,
                            out=folder / "accuracy.png")


def hebbff_curves(folder: Path = EXPERIMENTS / "hebbff-tables") -> Path:
    curves: dict[tuple[str, str], list[list[float]]] = {}
    for record in json.loads((folder / "full-length-runs.json").read_text(encoding="utf-8")):
        if record.get("val_acc_per_epoch"):
            curves.setdefault((record["preset"], record["method"]), []).append(
                [100 * v for v in record["val_acc_per_epoch"]])
    presets = [p for p in ("deep-mnist", "wide-mnist", "deep-fashionmnist", "wide-fashionmnist")
               if any(key[0] == p for key in curves)]
    styles = {"hebbff": ("HebbFF (SGD)", "#08519c"), "ff-sgd": ("FF (SGD)", "#6baed6"), "hebbff-adam":
              ("HebbFF + Adam", "#a50f15"), "ff": ("FF (Adam)", "#fb6a4a"), "bp": ("BP", "#238b45"),
              "readout": ("control: read-out", "#737373")}
    columns = min(len(presets), 2)  # two panels a row: the deep and the wide net of one data set side by side
    rows = -(-len(presets) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.0 * rows + 0.4), sharey=True, squeeze=False)
    for ax in axes.flat[len(presets):]:
        ax.remove()
    for ax, preset in zip(axes.flat, presets):
        net, data = preset.split("-")
        for method, (label, color) in styles.items():
            runs = curves.get((preset, method), [])
            if not runs:
                continue
            epochs = range(1, len(runs[0]) + 1)
            for run in runs:
                ax.plot(epochs, run, color=color, lw=0.6, alpha=0.5)
            ax.plot(epochs, [sum(v) / len(v) for v in zip(*runs)], color=color, lw=2, label=label)
        paper = HEBBFF_PAPER.get((net, data, "hebbff"))
        if paper is not None:
            ax.axhline(paper, color="#d94801", ls=":", lw=1.2, label="paper, HebbFF (test, converged)")
        ax.set_title(panel_title(preset), fontsize=10)
        ax.set_xlabel("epoch (48,000 training images)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy (%)")
    return save_with_legend(fig, *axes[0, 0].get_legend_handles_labels(), ncol=4, bottom=0.1 / rows,
                            out=folder / "full-length-curves.png")


def model_zoo_ratios(folder: Path = EXPERIMENTS / "model-zoo") -> Path:
    panels: dict[str, dict[str, dict[str, float]]] = {}
    for heading, rows, after in markdown_tables((folder / "tables.md").read_text(encoding="utf-8")):
        allocator = "retain" if after.rstrip().endswith("retain") else "default"
        panels.setdefault(heading, {})[allocator] = {row["model"]: float(row["GHL/BP"]) for row in rows}
    models = sorted({m for panel in panels.values() for series in panel.values() for m in series}, reverse=True)
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    fig, grid = plt.subplots(rows, columns, figsize=(10, 5.6 * rows), sharex=True, sharey=True, squeeze=False)
    axes = list(grid.flat)
    for ax, (heading, series) in zip(axes, panels.items()):
        for allocator, marker, color in (("default", "o", "#2171b5"), ("retain", "s", "#d94801")):
            if allocator in series:
                ax.plot([series[allocator].get(m, float("nan")) for m in models], range(len(models)), marker,
                        color=color, ms=5, alpha=0.85, ls="none",
                        label="glibc allocator" if allocator == "default" else "--allocator retain")
        ax.axvline(1.5, color="#444444", ls="--", lw=1, label="target 1.5")
        ax.set_title(heading, fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelbottom=True)
    for ax in grid[-1]:
        ax.set_xlabel("GHL / BP step time (CPU, one thread)")
    axes[0].set_yticks(range(len(models)), models, fontsize=9)
    legend = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    return save_with_legend(fig, list(legend.values()), list(legend.keys()), ncol=3, bottom=0.03,
                            out=folder / "ratios.png")


if __name__ == "__main__":
    for draw in (hebbff_accuracy, hebbff_curves, model_zoo_ratios):
        print(draw().relative_to(ROOT))
