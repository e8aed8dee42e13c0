"""``python -m ghl_snn.experiments.ghl_vs_sign``: is GHL's Hebbian magnitude worth it at equal tuning?

GHL writes ``sign(dL/dW) ⊙ |E|`` into the gradient of the hidden convolutions (GHL paper Eq. 6, ``E`` the
SWTA-Oja eligibility of Eq. 4, normalised by ``max|E|``); the paper's sign-only ablation (Table 5) replaces
``|E|`` by 1.  With max-normalisation most ``|E|/max|E|`` are a small fraction of 1, so at one learning rate GHL
takes much smaller steps than sign-only.  This study separates the Hebbian *shape* from the step *size*:

* variants ``ghl-max`` (the paper's), ``ghl-mean`` (``E / mean|E|``: the same mean step as sign-only),
  ``ghl-channel`` (per-output-channel max), ``sign`` (``|E| := 1``), ``bp`` (backprop, SGD momentum 0.9) and the
  ``readout`` control (backprop on the classifier only, convolutions frozen at initialisation); chance is 10 %.
* **sweep**: every variant gets the same number of trials (``--trials``), chosen on a stratified validation split
  held out of the training images (never the test set): a multiplicative line search over the convolutions'
  learning rate (start at the method's default, ×3 / ÷3, then continue from the best point), and the last trial
  multiplies the head's learning rate by 3 at the best convolution rate (``readout`` searches its head rate
  only).
* **horizon**: the chosen configuration of every variant, ``--seeds`` seeds, ``--epochs`` epochs, test accuracy after
  every epoch, the Hebbian alignment of every update
  ([`ghl_snn.diagnostics.AlignmentMonitor`][ghl_snn.AlignmentMonitor]) and the step sizes (``StepSizeMonitor``: mean
  ``|.grad|``, mean ``|ΔW|``).
* **probe**: ``gradient_agreement`` of the initial and the trained networks (does ``|E|`` say where the
  gradient is large?).
* **report**: ``<horizon>-summary.md`` / ``-summary.json`` and ``<horizon>-accuracy.png``, ``-stepsize.png``,
  ``-alignment.png`` (``<horizon>`` is ``--horizon-dir``, default ``horizon``).

Runs already finished (their ``results.json`` exists) are skipped, so the variants can be trained by successive
commands into one ``--out`` and ``--phase report`` summarises everything at the end; an interrupted horizon run
continues from its checkpoint with ``--resume`` (``--force`` trains every run again).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets.cifar import BatchStream, find_cifar, load_cifar, split_validation
from ..diagnostics.gradient_agreement import gradient_agreement
from ..models import MODELS
from .cifar import run_method
from .cifar_presets import BP_SETTINGS, GHL_SETTINGS, PRESETS, Preset
from ..comparison import cli
from ..comparison.common import markdown_table, select_device, write_json
from ..comparison.stats import mean_sd

CHANCE = 0.10


@dataclass(frozen=True)
class Variant:
    """One compared learner: a harness method, its eligibility normalisation, and its default step sizes."""

    method: str
    normalize: str | None
    conv_lr: float
    head_lr: float
    tune_conv: bool = True
    description: str = ""


_GHL = GHL_SETTINGS["deephebb"]
VARIANTS: dict[str, Variant] = {
    "ghl-max": Variant("ghl", "max", _GHL.conv_lr, _GHL.rest_lr, description="sign(dL/dW) ⊙ |E|/max|E| (paper)"),
    "ghl-mean": Variant("ghl", "mean", _GHL.conv_lr, _GHL.rest_lr, description="sign(dL/dW) ⊙ |E|/mean|E|"),
    "ghl-channel": Variant("ghl", "channel", _GHL.conv_lr, _GHL.rest_lr,
                           description="sign(dL/dW) ⊙ |E_k|/max|E_k| per output channel k"),
    "sign": Variant("sign", "max", _GHL.conv_lr, _GHL.rest_lr, description="sign(dL/dW) (|E| := 1, Table 5)"),
    "bp": Variant("bp", "max", BP_SETTINGS.conv_lr, BP_SETTINGS.rest_lr,
                  description="backprop, SGD momentum 0.9, wd 5e-4"),
    "readout": Variant("bp", "max", 0.0, BP_SETTINGS.rest_lr, tune_conv=False,
                       description="control: convolutions frozen at init, classifier by backprop"),
}


def next_learning_rate(tried: dict[float, float], start: float, factor: float = 3.0) -> float:
    """Next point of a multiplicative line search maximising the validation accuracy ``tried[lr]``.

    Order: ``start``, ``start·factor``, ``start/factor``; then one step of ``factor`` beyond the best point towards
    its untried side; when both neighbours of the best point were tried, ``√factor`` towards the better neighbour.
    """
    if start <= 0:
        raise ValueError(f"line search needs a start > 0, got {start}")
    for candidate in (start, start * factor, start / factor):
        if not any(math.isclose(candidate, lr, rel_tol=1e-9) for lr in tried):
            return candidate
    best = max(tried, key=lambda lr: (tried[lr], -abs(math.log(lr / start))))

    def seen(lr: float) -> float | None:
        return next((acc for key, acc in tried.items() if math.isclose(key, lr, rel_tol=1e-9)), None)

    up, down = seen(best * factor), seen(best / factor)
    if up is None:
        return best * factor
    if down is None:
        return best / factor
    step = math.sqrt(factor)
    for candidate in ((best * step, best / step) if up >= down else (best / step, best * step)):
        if seen(candidate) is None:
            return candidate
    return best * factor ** 2


@dataclass(frozen=True)
class Protocol:
    width: float = 0.125
    pool: int = 5000
    val_fraction: float = 0.2
    sweep_epochs: int = 3
    trials: int = 5
    epochs: int = 12
    seeds: int = 3
    test_subset: int = 2000
    batch_size: int = 64
    monitor_every: int = 10


def preset_for(variant: Variant, protocol: Protocol, epochs: int, conv_lr: float, head_lr: float) -> Preset:
    base = PRESETS[f"deephebb-cifar10-{variant.method}"]
    return replace(base, epochs=epochs, width=protocol.width, batch_size=protocol.batch_size,
                   conv_lr=conv_lr, head_lr=head_lr, normalize=variant.normalize,
                   bp_lr=BP_SETTINGS.conv_lr)


def sweep_trials(variant: Variant, trials: int, evaluate) -> list[dict[str, float]]:
    """Run ``trials`` validation trials (``evaluate(conv_lr, head_lr) -> val acc``); returns them in order."""
    rows: list[dict[str, float]] = []
    if not variant.tune_conv:  # read-out control: the line search runs over the head's rate
        tried: dict[float, float] = {}
        for _ in range(trials):
            lr = next_learning_rate(tried, variant.head_lr)
            tried[lr] = evaluate(variant.conv_lr, lr)
            rows.append({"conv_lr": variant.conv_lr, "head_lr": lr, "val_acc": tried[lr]})
        return rows
    tried = {}
    for _ in range(max(1, trials - 1)):
        lr = next_learning_rate(tried, variant.conv_lr)
        tried[lr] = evaluate(lr, variant.head_lr)
        rows.append({"conv_lr": lr, "head_lr": variant.head_lr, "val_acc": tried[lr]})
    if trials > 1:
        best = max(rows, key=lambda r: r["val_acc"])
        head = variant.head_lr * 3.0
        rows.append({"conv_lr": best["conv_lr"], "head_lr": head, "val_acc": evaluate(best["conv_lr"], head)})
    return rows


def best_trial(rows: list[dict[str, float]]) -> dict[str, float]:
    """The trial with the highest validation accuracy (the earliest one on a tie)."""
    return max(rows, key=lambda r: r["val_acc"])


def _lr_tag(value: float) -> str:
    return f"{value:.3g}".replace("+", "")


def run_study(args: argparse.Namespace, protocol: Protocol, variants: list[str]) -> None:
    out = Path(args.out)
    device = select_device(args.device)
    train_all = load_cifar("cifar10", args.data_root, train=True)
    test_all = load_cifar("cifar10", args.data_root, train=False)
    pool = train_all.subset(protocol.pool, seed=0)
    train, val = split_validation(pool, protocol.val_fraction, seed=0)
    test = test_all.subset(protocol.test_subset, seed=12345)
    del train_all, test_all
    print(f"ghl-vs-sign: {len(train)} train / {len(val)} val / {len(test)} test, width {protocol.width}, "
          f"variants {', '.join(variants)}", flush=True)
    config = {"argv": sys.argv, "protocol": protocol.__dict__}
    for name in variants:  # phase 1: the validation sweep
        if args.phase not in ("all", "sweep"):
            break
        variant = VARIANTS[name]

        def evaluate(conv_lr: float, head_lr: float, name: str = name, variant: Variant = variant) -> float:
            run_dir = out / "sweep" / name / f"conv{_lr_tag(conv_lr)}_head{_lr_tag(head_lr)}"
            done = run_dir / "results.json"
            if done.is_file() and not args.force:
                stored = json.loads(done.read_text())  # runs recorded before the split was named: final_test_acc
                return stored.get("final_val_acc", stored.get("final_test_acc"))
            preset = preset_for(variant, protocol, protocol.sweep_epochs, conv_lr, head_lr)
            result = run_method(variant.method, preset, train, val, 0, run_dir, device, resume=args.resume,
                                force=args.force, quiet=args.quiet, split="val",
                                config={**config, "variant": name, "phase": "sweep", "eval_on": "val"})
            return result["final_val_acc"]

        rows = sweep_trials(variant, protocol.trials, evaluate)
        write_json(out / "sweep" / name / "trials.json", {"variant": name, "trials": rows, "best": best_trial(rows)})
    if args.phase not in ("all", "horizon"):
        return
    # phase 2: every variant's first seed first, so that partial results are usable
    for seed in range(args.seed, args.seed + protocol.seeds):
        for name in variants:
            trials = out / "sweep" / name / "trials.json"
            if not trials.is_file():
                raise cli.CliError(f"{trials} is missing: run --phase sweep for {name} first")
            variant, choice = VARIANTS[name], json.loads(trials.read_text())["best"]
            run_dir = out / args.horizon_dir / name / f"seed{seed}"
            if (run_dir / "results.json").is_file() and not args.force:
                continue
            preset = preset_for(variant, protocol, protocol.epochs, choice["conv_lr"], choice["head_lr"])
            run_method(variant.method, preset, train, test, seed, run_dir, device, resume=args.resume,
                       force=args.force, quiet=args.quiet, monitor="alignment,stepsize",
                       monitor_every=protocol.monitor_every,
                       config={**config, "variant": name, "phase": "horizon", "eval_on": "test", "choice": choice})


def probe(args: argparse.Namespace, protocol: Protocol, variants: list[str]) -> str:
    """``gradient_agreement`` of the initial network and of every finished horizon run's final network."""
    out = Path(args.out)
    train_all = load_cifar("cifar10", args.data_root, train=True)
    train, _ = split_validation(train_all.subset(protocol.pool, seed=0), protocol.val_fraction, seed=0)
    del train_all
    batches = list(BatchStream(train.subset(8 * protocol.batch_size, seed=99), protocol.batch_size,
                               torch.device("cpu")).epoch(0))
    models: dict[str, list[nn.Module]] = {"init": []}
    for seed in range(protocol.seeds):
        torch.manual_seed(seed)
        models["init"].append(MODELS["deephebb"](num_classes=10, width=protocol.width))
    for name in variants:
        for checkpoint in sorted((out / args.horizon_dir / name).glob("seed*/checkpoint.pt")):
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
    write_json(out / f"{args.horizon_dir}-probe.json", data)
    text = markdown_table(rows)
    (out / f"{args.horizon_dir}-probe.md").write_text(text + "\n")
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


def report(out: Path, protocol: Protocol, variants: list[str], horizon: str = "horizon") -> str:
    """Summarise the sweep and the ``horizon`` runs under ``out``: ``<horizon>-summary.md`` / ``.json`` and the
    plots ``<horizon>-accuracy.png``, ``-stepsize.png``, ``-alignment.png``."""
    summary: dict[str, Any] = {"protocol": protocol.__dict__, "chance": CHANCE, "variants": {}}
    sweep_rows, result_rows, curve_data, step_rows, align_rows = [], [], {}, [], []
    for name in variants:
        entry: dict[str, Any] = {"description": VARIANTS[name].description}
        trials_file = out / "sweep" / name / "trials.json"
        if trials_file.is_file():
            trials = json.loads(trials_file.read_text())
            entry["sweep"] = trials
            sweep_rows.append({"variant": name, "trials (conv lr / head lr → val %)": "; ".join(
                f"{t['conv_lr']:.3g}/{t['head_lr']:.3g} → {100 * t['val_acc']:.1f}" for t in trials["trials"]),
                "chosen": f"{trials['best']['conv_lr']:.3g} / {trials['best']['head_lr']:.3g}",
                "val %": f"{100 * trials['best']['val_acc']:.1f}"})
        runs = sorted((out / horizon / name).glob("seed*/results.json"))
        if not runs:
            summary["variants"][name] = entry
            continue
        results = [json.loads(r.read_text()) for r in runs]
        curves = [[float(row["test_acc"]) for row in _read_csv(r.parent / "metrics.csv")] for r in runs]
        curve_data[name] = curves
        entry.update({"seeds": len(runs), "final_test_acc": [r["final_test_acc"] for r in results],
                      "best_test_acc": [r["best_test_acc"] for r in results], "curves": curves})
        length = min(len(c) for c in curves)
        marks = sorted(m for m in {1, 2, 3, length // 4, length // 2, (3 * length) // 4, length} if 0 < m <= length)
        result_rows.append({"variant": name, "seeds": len(runs),
                            "final test %": mean_sd(entry["final_test_acc"], 100),
                            "best test %": mean_sd(entry["best_test_acc"], 100),
                            **{f"ep {m}": mean_sd([c[m - 1] for c in curves], 100, 1) for m in marks}})
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
        entry["step_sizes"] = {layer: {c: statistics.mean(v) for c, v in cols.items()} for layer, cols in steps.items()}
        entry["alignment_last_third"] = {layer: {c: statistics.mean(v) for c, v in cols.items()}
                                         for layer, cols in aligns.items()}
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
        summary["variants"][name] = entry
    text = [f"chance: {100 * CHANCE:.0f} %", "", "## validation sweep", "", markdown_table(sweep_rows) if sweep_rows
            else "(none)", "", "## test accuracy (mean ± std over seeds)", "",
            markdown_table(result_rows) if result_rows else "(none)", "",
            "## step sizes (mean over the run, per layer)", "", markdown_table(step_rows) if step_rows else "(none)",
            "", "## Hebbian alignment (mean over the last third of the run)", "",
            markdown_table(align_rows) if align_rows else "(none)", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{horizon}-summary.md").write_text("\n".join(text))
    write_json(out / f"{horizon}-summary.json", summary)
    if curve_data:
        plot_study(out, variants, horizon)
    return "\n".join(text)


def plot_study(out: Path, variants: list[str], horizon: str = "horizon") -> None:
    """``<horizon>-accuracy.png`` (test accuracy per epoch, min-max band over seeds), ``-stepsize.png`` and
    ``-alignment.png`` (signal step ``lr·mean|G|`` and ``cos(-G, H)`` per plastic layer over training, seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    for name in variants:
        runs = sorted((out / horizon / name).glob("seed*/metrics.csv"))
        if not runs:
            continue
        curves = [[100 * float(row["test_acc"]) for row in _read_csv(r)] for r in runs]
        length = min(len(c) for c in curves)
        columns = list(zip(*(c[:length] for c in curves)))
        epochs = range(1, length + 1)
        axis.plot(epochs, [statistics.mean(c) for c in columns], marker="o", ms=3, label=f"{name} ({len(runs)})")
        axis.fill_between(epochs, [min(c) for c in columns], [max(c) for c in columns], alpha=0.15)
    axis.axhline(100 * CHANCE, color="grey", ls=":", label="chance")
    axis.set(xlabel="epoch", ylabel="test accuracy (%)", title="tuned step sizes (mean, min–max over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{horizon}-accuracy.png", dpi=110)
    plt.close(fig)
    for filename, column, ylabel, log in (("stepsize.png", "signal_step", "lr · mean|G| (signal step)", True),
                                          ("alignment.png", "signal_alignment", "cos(-G, H)", False)):
        source = "stepsize.csv" if column == "signal_step" else "alignment.csv"
        files = {name: out / horizon / name / "seed0" / source for name in variants}
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
        fig.savefig(out / f"{horizon}-{filename}", dpi=100)
        plt.close(fig)


#: help text and checked type of every protocol option
PROTOCOL_OPTIONS: dict[str, tuple[Any, str]] = {
    "width": (cli.positive_float, "channel multiplier of the DeepHebb network"),
    "pool": (cli.positive_int, "training images drawn (seeded) for the sweep, before the validation split"),
    "val_fraction": (cli.open_fraction, "fraction of the pool held out for validation in the sweep"),
    "sweep_epochs": (cli.positive_int, "epochs of every sweep trial"),
    "trials": (cli.positive_int, "validation trials per variant (equal tuning effort)"),
    "test_subset": (cli.positive_int, "test images evaluated (a fixed seeded subset)"),
    "batch_size": (cli.positive_int, "mini-batch size"),
    "monitor_every": (cli.positive_int, "record the step-size and alignment monitors every k-th step"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.ghl_vs_sign", __doc__)
    parser.add_argument("--phase", choices=("all", "sweep", "horizon", "report", "probe"), default="all",
                        help="sweep (validation trials), horizon (seeded runs at the chosen rates), report "
                             "(tables and plots from --out), all of these; probe: gradient agreement of the "
                             "initial and the trained networks")
    cli.add_methods_argument(parser, VARIANTS, VARIANTS, help="variants")
    defaults = Protocol()
    cli.add_common_arguments(parser, out_default="runs/ghl-vs-sign", seeds_default=defaults.seeds,
                             seeds_help="seeds of the horizon runs", epochs_default=defaults.epochs,
                             epochs_help="epochs of the horizon runs at the chosen learning rates",
                             data_help="the folder holding cifar10-jpeg/ or cifar-10-batches-py/")
    parser.add_argument("--horizon-dir", default="horizon", help="sub-folder of --out for the horizon runs (e.g. "
                        "one per --epochs)")
    for field_name, value in defaults.__dict__.items():
        if field_name in PROTOCOL_OPTIONS:
            kind, text = PROTOCOL_OPTIONS[field_name]
            parser.add_argument("--" + field_name.replace("_", "-"), type=kind, default=value, help=text)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options with ``args.protocol``."""
    args = build_parser().parse_args(argv)
    args.protocol = Protocol(**{name: getattr(args, name) for name in Protocol().__dict__})
    return args


def run(args: argparse.Namespace) -> str:
    """The chosen phase(s) into ``--out``; returns the report (or the probe's table)."""
    if args.phase == "probe":
        text = probe(args, args.protocol, args.methods)
    else:
        if args.phase != "report":
            run_study(args, args.protocol, args.methods)
        text = report(Path(args.out), args.protocol, args.methods, args.horizon_dir)
    print(text)
    return text


main, cli_main = cli.entry_points(parse_args, run, check=lambda args: args.phase == "report" or find_cifar(
    "cifar10", args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
