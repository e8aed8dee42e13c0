"""``python -m ghl_snn.experiments.ghl_vs_sign``: why GHL's Hebbian magnitude helps or hurts, measured at the step
sizes a fair comparison chose.

GHL writes ``sign(dL/dW) ⊙ |E|`` into the gradient of the hidden convolutions (GHL paper Eq. 6, ``E`` the
SWTA-Oja eligibility of Eq. 4, normalised by ``max|E|``); the paper's sign-only ablation (Table 5) replaces
``|E|`` by 1.  The accuracy comparison -- every variant's learning rate chosen on a validation split at the reported
horizon, seeds paired, the read-out-only control, backprop and chance -- is
[`ghl_snn.experiments.cifar_compare`][] with the rows ``ghl`` (the paper's ``max``), ``ghl-mean`` (``E / mean|E|``:
sign-only's mean step with GHL's shape), ``ghl-channel`` (per-output-channel max), ``sign``, ``bp`` and
``readout``.  This command reads that comparison (``--comparison DIR``: its ``results.json``, whose settings --
width, training pool, validation fraction, test subset, epochs -- it reuses) and measures what the accuracies do
not show:

* **monitor**: every chosen configuration of ``--methods`` trained again on ``--seeds`` seeds (the same data, the
  validation split evaluated after every epoch) with the step-size monitor (mean ``|.grad|``, ``lr·mean|.grad|``,
  mean ``|ΔW|``) and the Hebbian alignment of every update
  ([`ghl_snn.diagnostics.AlignmentMonitor`][ghl_snn.AlignmentMonitor]) every ``--monitor-every`` steps; the final
  network is kept (``monitor/<row>/seed<k>/``);
* **probe**: ``gradient_agreement`` of the initial and the monitored final networks (does ``|E|`` say where the
  gradient is large?): ``probe.md`` / ``probe.json``;
* **report**: ``summary.md`` / ``summary.json`` (step sizes per layer over the run; alignment over its last third)
  and the plots ``stepsize.png`` and ``alignment.png`` (seed 0).

Monitored runs already finished are skipped (``--resume`` continues an interrupted one, ``--force`` trains again).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets.cifar import BatchStream, find_cifar
from ..diagnostics.gradient_agreement import gradient_agreement
from ..models import MODELS
from .cifar import run_method
from .cifar_compare import BATCH_SIZE, row_recipe, train_val_split
from ..comparison import cli
from ..comparison.common import markdown_table, select_device, write_json
from ..comparison.stats import mean_sd

#: the rows of the comparison whose updates are monitored
VARIANTS = ("ghl", "ghl-mean", "ghl-channel", "sign", "bp", "readout")


@dataclass(frozen=True)
class Protocol:
    """The settings of the comparison the study reads (``identity`` of its ``results.json``)."""

    width: float
    pool: int
    val_fraction: float
    epochs: int
    test_subset: int

    @classmethod
    def of(cls, results: dict[str, Any]) -> "Protocol":
        identity = results.get("identity", {})
        missing = [name for name in cls.__dataclass_fields__ if name not in identity]
        if missing:
            raise cli.CliError(f"the comparison's settings lack {missing}: is it a cifar_compare results.json?")
        return cls(**{name: identity[name] for name in cls.__dataclass_fields__})


def read_comparison(folder: Path) -> tuple[Protocol, dict[str, dict[str, float]]]:
    """The protocol and every row's chosen learning rates of the comparison stored in ``folder``."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise cli.CliError(f"{path} is missing: run python -m ghl_snn.experiments.cifar_compare --out {folder} first")
    results = json.loads(path.read_text())
    if "final" not in results:
        raise cli.CliError(f"the comparison in {folder} is unfinished: its rates are not chosen yet")
    return Protocol.of(results), {name: dict(entry["hparams"]) for name, entry in results["chosen"].items()}


def monitor(args: argparse.Namespace) -> None:
    """Train every chosen configuration of ``args.methods`` again with the step-size and alignment monitors."""
    protocol, chosen = read_comparison(Path(args.comparison))
    if args.epochs is not None and args.epochs != protocol.epochs:
        raise cli.CliError(f"--epochs {args.epochs}: the comparison's rates were chosen at {protocol.epochs} epochs; "
                           "monitor them at that horizon (leave --epochs out) or run a comparison at the other one")
    absent = [name for name in args.methods if name not in chosen]
    if absent:
        raise cli.CliError(f"the comparison in {args.comparison} has no row {absent}; its rows: {sorted(chosen)}")
    device = select_device(args.device)
    train, val = train_val_split(args.data_root, protocol.pool, protocol.val_fraction)
    for seed in cli.seeds_of(args):
        for name in args.methods:
            harness, preset = row_recipe(name, chosen[name], protocol.epochs, protocol.width)
            run_method(harness, preset, train, val, seed, Path(args.out) / "monitor" / name / f"seed{seed}", device,
                       resume=args.resume, force=args.force, quiet=args.quiet, split="val",
                       monitor="alignment,stepsize", monitor_every=args.monitor_every,
                       config={"argv": sys.argv, "row": name, "chosen": chosen[name],
                               "comparison": str(args.comparison)})


def probe(args: argparse.Namespace) -> str:
    """``gradient_agreement`` of the initial network and of every finished monitored run's final network."""
    out, variants = Path(args.out), args.methods
    protocol, _ = read_comparison(Path(args.comparison))
    train, _ = train_val_split(args.data_root, protocol.pool, protocol.val_fraction)
    batches = list(BatchStream(train.subset(8 * BATCH_SIZE, seed=99), BATCH_SIZE, torch.device("cpu")).epoch(0))
    models: dict[str, list[nn.Module]] = {"init": []}
    for seed in cli.seeds_of(args):
        torch.manual_seed(seed)
        models["init"].append(MODELS["deephebb"](num_classes=10, width=protocol.width))
    for name in variants:
        for checkpoint in sorted((out / "monitor" / name).glob("seed*/checkpoint.pt")):
            if not (checkpoint.parent / "results.json").is_file():
                continue
            model = MODELS["deephebb"](num_classes=10, width=protocol.width)
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
            models.setdefault(name, []).append(model)
    rows, data = [], {}
    for name, nets in models.items():
        results = []
        for model in nets:
            torch.manual_seed(0)  # the same dropout masks for every network
            model.train()
            results.append(gradient_agreement(model, batches, model.plastic_taus))
        data[name] = results
        for layer in results[0]:
            rows.append({"network": f"{name} ({len(results)})", "layer": layer, **{
                key: mean_sd([r[layer][key] for r in results], 1, 3) for key in results[0][layer]}})
    write_json(out / "probe.json", data)
    text = markdown_table(rows)
    (out / "probe.md").write_text(text + "\n")
    return text


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _layer_means(rows: list[dict[str, str]], column: str, last_fraction: float = 1.0) -> dict[str, float]:
    layers: dict[str, list[float]] = {}
    for row in rows:
        value = float(row[column]) if row[column] not in ("", "nan") else math.nan
        layers.setdefault(row["layer"], []).append(value)
    out = {}
    for layer, values in layers.items():
        values = values[int(len(values) * (1 - last_fraction)):]
        finite = [v for v in values if not math.isnan(v)]
        out[layer] = statistics.mean(finite) if finite else math.nan
    return out


def report(out: Path, variants: list[str]) -> str:
    """Summarise the monitored runs under ``out/monitor/``: ``summary.md`` / ``summary.json`` (step sizes per layer,
    mean over the run; Hebbian alignment, mean over its last third; mean ± sd over seeds) and the plots
    ``stepsize.png`` and ``alignment.png``."""
    summary: dict[str, Any] = {"variants": {}}
    step_rows, align_rows = [], []
    for name in variants:
        runs = sorted((out / "monitor" / name).glob("seed*/results.json"))
        if not runs:
            continue
        steps: dict[str, dict[str, list[float]]] = {}
        aligns: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            if (r.parent / "stepsize.csv").is_file():
                rows = _read_csv(r.parent / "stepsize.csv")
                for column in ("signal_step", "mean_abs_update", "mean_abs_signal"):
                    for layer, value in _layer_means(rows, column).items():
                        steps.setdefault(layer, {}).setdefault(column, []).append(value)
            if (r.parent / "alignment.csv").is_file():
                rows = _read_csv(r.parent / "alignment.csv")
                for column in ("signal_alignment", "update_alignment", "hebbian_neuron_fraction"):
                    for layer, value in _layer_means(rows, column, last_fraction=1 / 3).items():
                        aligns.setdefault(layer, {}).setdefault(column, []).append(value)
        summary["variants"][name] = {
            "seeds": len(runs),
            "step_sizes": {layer: {c: statistics.mean(v) for c, v in cols.items()} for layer, cols in steps.items()},
            "alignment_last_third": {layer: {c: statistics.mean(v) for c, v in cols.items()}
                                     for layer, cols in aligns.items()}}
        for layer, cols in steps.items():
            step_rows.append({"variant": name, "layer": layer,
                              "lr·mean|G| (×1e-4)": mean_sd(cols["signal_step"], 1e4, 3),
                              "mean|ΔW| (×1e-4)": mean_sd(cols["mean_abs_update"], 1e4, 3),
                              "mean|G|": mean_sd(cols["mean_abs_signal"], 1, 4)})
        for layer, cols in aligns.items():
            align_rows.append({"variant": name, "layer": layer,
                               "cos(-G, H)": mean_sd(cols["signal_alignment"], 1, 3),
                               "cos(ΔW, H)": mean_sd(cols["update_alignment"], 1, 3),
                               "Hebbian neurons": mean_sd(cols["hebbian_neuron_fraction"], 1, 2)})
    text = ["## step sizes (mean over the run, per layer)", "", markdown_table(step_rows) if step_rows else "(none)",
            "", "## Hebbian alignment (mean over the last third of the run)", "",
            markdown_table(align_rows) if align_rows else "(none)", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(text))
    write_json(out / "summary.json", summary)
    plot_study(out, variants)
    return "\n".join(text)


def plot_study(out: Path, variants: list[str]) -> None:
    """``stepsize.png`` and ``alignment.png``: the signal step ``lr·mean|G|`` and ``cos(-G, H)`` per plastic layer
    over training (seed 0 of each monitored row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for filename, column, ylabel, log in (("stepsize.png", "signal_step", "lr · mean|G| (signal step)", True),
                                          ("alignment.png", "signal_alignment", "cos(-G, H)", False)):
        source = "stepsize.csv" if column == "signal_step" else "alignment.csv"
        files = {name: out / "monitor" / name / "seed0" / source for name in variants}
        files = {name: path for name, path in files.items() if path.is_file()}
        if not files:
            continue
        layers = list(dict.fromkeys(row["layer"] for row in _read_csv(next(iter(files.values())))))
        fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.4), squeeze=False)
        for index, layer in enumerate(layers):
            ax = axes[0][index]
            for name, path in files.items():
                rows = [r for r in _read_csv(path) if r["layer"] == layer and r[column] not in ("", "nan")]
                ax.plot([int(r["step"]) for r in rows], [float(r[column]) for r in rows], label=name, lw=1)
            ax.set(title=f"layer {layer}", xlabel="optimiser step", ylabel=ylabel)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=100)
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.ghl_vs_sign", __doc__)
    parser.add_argument("--phase", choices=("all", "monitor", "report", "probe"), default="all",
                        help="monitor (the chosen configurations trained again with the monitors), report (tables "
                             "and plots of the monitored runs), probe (gradient agreement of the initial and the "
                             "monitored networks); all: monitor, then report")
    parser.add_argument("--comparison", metavar="DIR", default="runs/ghl-vs-sign/engine",
                        help="the folder of a finished cifar_compare comparison whose chosen rates are monitored "
                             "(default: runs/ghl-vs-sign/engine)")
    cli.add_methods_argument(parser, VARIANTS, VARIANTS, help="rows of the comparison to monitor")
    cli.add_common_arguments(parser, out_default="runs/ghl-vs-sign", seeds_default=1,
                             seeds_help="seeds of the monitored runs", epochs_default=None,
                             epochs_help="epochs of the monitored runs: those of the comparison, whose rates were "
                                         "chosen at that horizon",
                             data_help="the folder holding cifar10-jpeg/ or cifar-10-batches-py/")
    parser.add_argument("--monitor-every", type=cli.positive_int, default=10,
                        help="record the step-size and alignment monitors every k-th step (default: 10)")
    return parser


def run(args: argparse.Namespace) -> str:
    """The chosen phase(s) into ``--out``; returns the report (or the probe's table)."""
    if args.phase == "probe":
        text = probe(args)
    else:
        if args.phase != "report":
            monitor(args)
        text = report(Path(args.out), args.methods)
    print(text)
    return text


main, cli_main = cli.entry_points(lambda argv: build_parser().parse_args(argv), run,
                                  check=lambda args: args.phase == "report" or find_cifar("cifar10", args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
