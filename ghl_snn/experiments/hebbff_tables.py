"""The HebbFF experiment's tables over seeds: mean ± sd per method and the paired 95 % intervals (HebbFF paper,
Tables 1-2).

::

    python -m ghl_snn.experiments.hebbff_tables runs/hebbff [runs/hebbff-readout ...] [--out FILE] [--json FILE]

Every folder is the ``--out`` of a ``python -m ghl_snn.experiments.hebbff`` command: several ``--seeds`` in one
folder (``<preset>/<method>/seed<k>/``) or one ``--seed`` per folder (``<preset>/<method>/``), the same presets,
methods and protocol otherwise; runs are paired by their seed.  Per preset the table gives every method's test
accuracy (mean ± sd over the seeds, each run's own value beside), its validation accuracy, the chosen learning
rate / θ / goodness layers, the training time per epoch and the peak memory; below it the paired differences of test
accuracy (``a − b`` per seed, mean and 95 % Student-t interval,
[`paired_interval`][ghl_snn.comparison.stats.paired_interval]):
HebbFF against FF with the same optimiser, each goodness method against the read-out control, and HebbFF with Adam
against HebbFF with SGD.  A difference is called real only where its interval excludes 0.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..comparison.common import markdown_table
from ..comparison.stats import mean_sd, paired_interval

#: (a, b): the paired differences a − b reported under every preset
PAIRS = (("hebbff", "ff-sgd"), ("hebbff-adam", "ff"), ("hebbff", "readout"), ("hebbff-adam", "readout"),
         ("ff", "readout"), ("ff-sgd", "readout"), ("hebbff-adam", "hebbff"), ("bp", "hebbff-adam"))
LABELS = {"hebbff": "HebbFF (SGD, fused step)", "hebbff-adam": "HebbFF + Adam (.grad)", "ff": "FF (Adam)",
          "ff-sgd": "FF (SGD)", "bp": "BP (SGD + momentum)", "readout": "control: HebbFF's initial network frozen, "
          "read-out trained", "chance": "control: chance"}


def load_runs(folders: Sequence[str | Path]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{preset: {method: [result of each seed, in seed order]}}`` from every run's
    ``<folder>/<preset>/<method>/results.json`` or ``<folder>/<preset>/<method>/seed<k>/results.json``."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for index, folder in enumerate(folders):
        paths = sorted(Path(folder).glob("*/*/results.json")) + sorted(Path(folder).glob("*/*/seed*/results.json"))
        if not paths:
            raise ValueError(f"{folder} holds no run of the HebbFF command (no <preset>/<method>/results.json "
                             "or <preset>/<method>/seed<k>/results.json)")
        for path in paths:
            try:
                result = json.loads(path.read_text())
                preset, method = result["preset"], result["method"]
            except (OSError, ValueError, KeyError) as error:
                raise ValueError(f"{path}: not the results of a HebbFF run ({error})") from None
            result.setdefault("seed", index)  # runs written without their seed: the folders are in seed order
            if "val_acc_per_epoch" not in result:  # a compact record keeps its own
                result["val_acc_per_epoch"] = validation_curve(path.parent / "metrics.csv")
            runs.setdefault(preset, {}).setdefault(method, []).append(result)
    for methods in runs.values():
        for method, results in methods.items():
            results.sort(key=lambda r: r["seed"])
            seeds = [r["seed"] for r in results]
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{method} of {results[0]['preset']}: a seed given twice among {seeds}")
    return runs


def validation_curve(metrics_csv: Path) -> list[float] | None:
    """The validation accuracy after every epoch, from a run's ``metrics.csv`` (``None`` if the run has none)."""
    try:
        with metrics_csv.open(newline="") as handle:
            return [float(row["val_acc"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return None


def chosen_value(result: dict[str, Any], name: str) -> str:
    """A run's ``lr`` or ``theta`` for a table cell, marked ``(edge)`` where its selection left it on the edge of the
    searched grid (``grid_edges``); ``–`` when the method has none."""
    value = result.get(name)
    text = "–" if value is None else f"{value:g}"
    return text + " (edge)" if name in (result.get("grid_edges") or ()) else text


def preset_table(preset: str, methods: dict[str, list[dict[str, Any]]], classes: int = 10) -> str:
    """The Markdown table of one preset and its paired differences."""
    rows = []
    for method in [m for m in LABELS if m in methods]:
        results = methods[method]
        per_epoch = [r["train_time_s"] / max(r["epochs"], 1) for r in results]
        rows.append({
            "method": LABELS[method], "seeds": len(results),
            "test acc % (mean ± sd)": mean_sd([r["test_acc"] for r in results], 100),
            "per seed": " / ".join(f"{100 * r['test_acc']:.1f}" for r in results),
            "val acc %": mean_sd([r["val_acc"] for r in results], 100),
            "lr": " / ".join(chosen_value(r, "lr") for r in results),
            "θ": " / ".join(chosen_value(r, "theta") for r in results),
            "per-layer test acc % (mean)": " / ".join(
                f"{100 * statistics.fmean(layer):.1f}" for layer in zip(*(r["test_acc_per_layer"] for r in results))
            ) if all(r.get("test_acc_per_layer") for r in results) else "–",
            "goodness layers": " / ".join("–" if r.get("goodness_layers") is None else
                                          "{}–{}".format(*r["goodness_layers"]) for r in results),
            "train s / epoch": f"{statistics.fmean(per_epoch):.1f}",
            "peak MiB": f"{statistics.fmean(r['peak_mib'] for r in results):.0f}"})
    rows.append({"method": LABELS["chance"], "test acc % (mean ± sd)": f"{100 / classes:.2f}"})
    text = [f"### {preset}", "", markdown_table(rows, list(rows[0])), ""]
    pairs = []
    for a, b in PAIRS:
        acc_a, acc_b = ({r["seed"]: r["test_acc"] for r in methods.get(m, [])} for m in (a, b))
        common = sorted(set(acc_a) & set(acc_b))  # paired by seed
        if len(common) >= 2:
            interval = paired_interval([acc_a[k] for k in common], [acc_b[k] for k in common])
            pairs.append({"difference (test acc, points)": f"{a} − {b}",
                          "mean": f"{100 * interval['mean']:+.2f}",
                          "95 % interval": f"[{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]",
                          "real (excludes 0)": "yes" if interval["excludes_zero"] else "no",
                          "seeds": interval["n"]})
    if pairs:
        text += [markdown_table(pairs, list(pairs[0])), ""]
    return "\n".join(text)


#: the keys of each run kept by ``--json`` (the record a figure is drawn from)
RECORD_KEYS = ("preset", "method", "seed", "lr", "theta", "epochs", "train_samples", "train_acc", "val_acc", "test_acc",
               "test_acc_per_layer", "goodness_layers", "train_time_s", "peak_mib", "val_acc_per_epoch",
               "grid_edges")


def records(folders: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One compact record per run (``RECORD_KEYS``), presets and methods in the order of the tables."""
    return records_of(load_runs(folders))


def records_of(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """``records`` of runs already loaded by [`load_runs`][]."""
    return [{key: result.get(key) for key in RECORD_KEYS}
            for methods in runs.values() for results in methods.values() for result in results]


def tables(folders: Sequence[str | Path]) -> str:
    """Every preset's table (presets in the order first met)."""
    return tables_of(load_runs(folders))


def tables_of(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """``tables`` of runs already loaded by [`load_runs`][]."""
    return "\n".join(preset_table(preset, methods) for preset, methods in runs.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghl_snn.experiments.hebbff_tables",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="the --out folder of each seed's HebbFF command")
    parser.add_argument("--out", default=None, help="write the tables to this Markdown file (default: print)")
    parser.add_argument("--json", default=None, help="also write one compact record per run to this JSON file")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.folders)  # read once for the tables and the records
        text = tables_of(runs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(records_of(runs), indent=1) + "\n")
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
