"""Fair comparison of learning rules: equal tuning on validation data, seeds paired across methods, paired 95 %
intervals, and one table and one plot in the same format for every experiment.

An experiment plugs in with one callback ``run(method, hparams, seed) -> record``: it trains ``method`` with the
hyper-parameters ``hparams`` from seed ``seed`` and returns ``{"history": [row, ...], ...}`` with one row per epoch,
``{"epoch": 1, "train_acc": ..., "val_acc": ..., "test_acc": ...}`` (or ``{"diverged": True, ...}`` for a run whose
loss or weights became non-finite: it loses every selection).  Every accuracy or loss is named by the
split it was measured on (``train_`` / ``val_`` / ``test_``); any other key of the record (wall time, memory) is
stored as is.  [`compare`][ghl_snn.comparison.engine.compare] then

1. **tunes** every [`Method`][ghl_snn.comparison.engine.Method]: each
   [`Param`][ghl_snn.comparison.engine.Param] (a learning rate per method and per parameter group) starts from
   a log-spaced grid; all grid combinations run on the tuning seeds and are scored by the **validation accuracy of
   the last epoch, averaged over the tuning seeds** (test scores are never read); while the best value of a
   parameter sits on the edge of its values, the grid is extended one log step past that edge (the other
   parameters held at their best) until the best is interior, the next step would cross the parameter's bound, or
   ``max_extend`` steps were taken -- a choice still on an edge is flagged (``edges`` in ``results.json`` and
   "(lower edge)" / "(upper edge)" in the table);
2. runs every method at its chosen values on the **final seeds** (the same seeds for every method, so that runs
   are paired by seed; tuning runs with the same values and seed are reused);
3. compares each method with each of its ``controls``: the per-seed difference of the last epoch's test accuracy,
   its mean and the 95 % Student-t interval ``mean ± t_{0.975, n-1} s / sqrt(n)``
   ([`paired_interval`][ghl_snn.comparison.stats.paired_interval]).
   A difference is called real only where that interval excludes 0.

Outputs in ``out``: ``results.json`` (methods, every trial with its history, chosen values, edge flags, final
scores per seed, comparisons; rewritten after every trial, and trials already stored are reused on a re-run),
``results.md`` ([`results_table`][ghl_snn.comparison.engine.results_table]) and ``curves.png``
([`plot_curves`][ghl_snn.comparison.engine.plot_curves]).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cli import CliError, run_identity, seeds_of
from .common import atomic_path, markdown_table, write_json
from .runner import RunExists, TrainingDiverged, identity_changes
from .stats import mean_sd, paired_interval

__all__ = ["Param", "Method", "Run", "check_record", "tune", "compare",
           "compare_command", "results_table", "plot_curves"]

#: the callback an experiment provides: ``run(method name, hyper-parameters, seed) -> record``
Run = Callable[[str, dict[str, Any], int], Mapping[str, Any]]

SPLITS = ("train", "val", "test")
_SCORE = re.compile(r"(acc|loss|accuracy)")


@dataclass(frozen=True)
class Param:
    """One tuned hyper-parameter (typically the learning rate of one parameter group).

    ``grid``: the starting values (log-spaced, at least one); ``step``: the factor between neighbouring values used
    to extend past an edge (default: the grid's own ratio, required when the grid has one value); ``lower`` /
    ``upper``: the bounds no value may cross; ``start``: the grid value this parameter holds while a method with
    ``joint=False`` searches the parameters before it (default: the middle of the grid)."""

    name: str
    grid: Sequence[float]
    step: float | None = None
    lower: float = 1e-7
    upper: float = 1e3
    start: float | None = None

    def __post_init__(self) -> None:
        values = sorted(float(v) for v in self.grid)
        if not values or any(not v > 0 or not math.isfinite(v) for v in values):
            raise ValueError(f"Param {self.name!r}: grid needs positive finite values, got {list(self.grid)}")
        if len(set(values)) != len(values):
            raise ValueError(f"Param {self.name!r}: grid has repeated values {list(self.grid)}")
        if self.step is None and len(values) < 2:
            raise ValueError(f"Param {self.name!r}: a one-value grid needs step (the factor of one log step)")
        if self.step is not None and not self.step > 1:
            raise ValueError(f"Param {self.name!r}: step must be > 1, got {self.step}")
        if not 0 < self.lower <= values[0] or values[-1] > self.upper:
            raise ValueError(f"Param {self.name!r}: grid {values} must lie within [{self.lower}, {self.upper}]")
        if self.start is not None and float(self.start) not in values:
            raise ValueError(f"Param {self.name!r}: start {self.start} is not a value of the grid {values}")

    @property
    def start_value(self) -> float:
        """The value held while other parameters are searched one at a time."""
        values = sorted(float(v) for v in self.grid)
        return float(self.start) if self.start is not None else values[(len(values) - 1) // 2]

    @property
    def factor(self) -> float:
        """The ratio of one log step."""
        if self.step is not None:
            return float(self.step)
        values = sorted(float(v) for v in self.grid)
        return (values[-1] / values[0]) ** (1 / (len(values) - 1))


@dataclass(frozen=True)
class Method:
    """One row of a comparison: its name (passed to the callback), the tuned
    [`Param`][ghl_snn.comparison.engine.Param]s, fixed hyper-parameters passed unchanged, and the names of the
    methods it is compared with (controls and baselines).  ``joint=False`` starts the search one parameter at a
    time, in order (each grid with the parameters before it at their best values and those after it at their
    ``start``: the sum of the grids' sizes, not their product), before the same refinement around the best
    point."""

    name: str
    tuned: Sequence[Param] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    controls: Sequence[str] = ()
    joint: bool = True


# ----------------------------------------------------------------------------------------------- records
def check_record(record: Mapping[str, Any], need: Sequence[str] = ("val_acc",)) -> list[dict[str, Any]]:
    """The record's per-epoch rows after checking them: a non-empty ``history`` list, every score named by its
    split (a key containing ``acc`` or ``loss`` starts with ``train_``, ``val_`` or ``test_``), every key of
    ``need`` present and finite in every row.  Raises ``ValueError`` naming the problem."""
    history = record.get("history") if isinstance(record, Mapping) else None
    if not isinstance(history, list) or not history:
        raise ValueError("the run callback must return {'history': [one dict per epoch, ...]}, got "
                         f"{type(record).__name__} with keys {sorted(record) if isinstance(record, Mapping) else []}")
    for index, row in enumerate(history):
        for key in row:
            if _SCORE.search(key) and key.split("_")[0] not in SPLITS:
                raise ValueError(f"epoch row {index}: score {key!r} does not name its split; call it "
                                 "train_..., val_... or test_...")
        for key in need:
            value = row.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"epoch row {index}: {key!r} missing or not a finite number ({value!r})")
    return [dict(row) for row in history]


def trial_key(method: str, hparams: Mapping[str, Any], seed: int) -> str:
    """The key a trial is stored and reused under: its method, hyper-parameters and seed."""
    return json.dumps([method, dict(sorted(hparams.items())), int(seed)], default=str)


class _Trials:
    """Every run of one comparison, keyed by (method, hparams, seed); stored in ``results.json`` after each."""

    def __init__(self, run: Run, path: Path | None, previous: list[dict[str, Any]]) -> None:
        self.run, self.path, self.trials = run, path, previous
        self.index = {trial_key(t["method"], t["hparams"], t["seed"]): t for t in previous}
        self.state: dict[str, Any] = {}

    def get(self, method: str, hparams: dict[str, Any], seed: int, phase: str) -> dict[str, Any]:
        key = trial_key(method, hparams, seed)
        if key not in self.index:
            record = self.run(method, dict(hparams), int(seed))
            diverged = bool(record.get("diverged")) if isinstance(record, Mapping) else False
            history = check_record(record, ()) if diverged and record.get("history") else [] if diverged else \
                check_record(record, ("val_acc",))
            extra = {k: v for k, v in record.items() if k != "history"}
            trial = {"method": method, "hparams": dict(hparams), "seed": int(seed), "phase": phase,
                     "history": history, **extra}
            self.trials.append(trial)
            self.index[key] = trial
            self.save()
        return self.index[key]

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, {**self.state, "trials": self.trials})


def _last(trial: Mapping[str, Any], key: str) -> float:
    """The last epoch's ``key``; ``-inf`` for a run that diverged (it loses every selection)."""
    return float("-inf") if trial.get("diverged") else float(trial["history"][-1][key])


# ----------------------------------------------------------------------------------------------- tuning
def tune(method: Method, trials: _Trials | Run, seeds: Sequence[int], max_extend: int = 4) -> dict[str, Any]:
    """Choose ``method``'s tuned values by the last epoch's validation accuracy averaged over ``seeds``.

    Runs the full grid, then, around the best point, tries both neighbours along every parameter (the others at
    their best) and extends a parameter whose best value is on an edge by one log step, until the best is
    interior along every parameter or an edge is at its bound or ``max_extend`` steps.  Returns ``{"hparams",
    "val_acc", "edges", "values", "trials"}``: ``edges[name]`` is ``None`` (interior), ``"lower"`` or ``"upper"``."""
    if len(seeds) < 2:
        raise ValueError(f"tuning needs at least 2 seeds (selection on a mean), got {list(seeds)}")
    store = trials if isinstance(trials, _Trials) else _Trials(trials, None, [])
    values = {p.name: sorted(float(v) for v in p.grid) for p in method.tuned}
    scores: dict[tuple[float, ...], float] = {}

    def score(point: tuple[float, ...]) -> float:
        if point not in scores:
            hparams = {**method.fixed, **dict(zip(values, point))}
            scores[point] = statistics.fmean(_last(store.get(method.name, hparams, s, "tune"), "val_acc")
                                             for s in seeds)
        return scores[point]

    if method.joint:
        for point in itertools.product(*values.values()):
            score(point)
    else:  # one parameter after the other, each at the best values of those before it (the later at their start)
        current = [p.start_value for p in method.tuned]
        for axis, param in enumerate(method.tuned):
            line = [tuple(current[:axis]) + (value,) + tuple(current[axis + 1:]) for value in values[param.name]]
            current[axis] = max(line, key=lambda point: (score(point), -point[axis]))[axis]
    extended = dict.fromkeys(values, 0)
    while True:
        best = max(scores, key=lambda p: (scores[p], [-v for v in p]))  # ties: the smaller values
        grown = False
        for axis, param in enumerate(method.tuned):
            axis_values = values[param.name]
            if len(axis_values) < 2:
                continue
            position = axis_values.index(best[axis])
            if extended[param.name] < max_extend:
                if position == 0 and axis_values[0] / param.factor >= param.lower * (1 - 1e-9):
                    axis_values.insert(0, axis_values[0] / param.factor)
                    extended[param.name] += 1
                    position += 1
                elif position == len(axis_values) - 1 and axis_values[-1] * param.factor <= param.upper * (1 + 1e-9):
                    axis_values.append(axis_values[-1] * param.factor)
                    extended[param.name] += 1
            for neighbour in axis_values[max(position - 1, 0):position + 2]:  # both neighbours at the others' best
                point = best[:axis] + (neighbour,) + best[axis + 1:]
                if point not in scores:
                    score(point)
                    grown = True
        if not grown:
            break
    edges = {}
    for axis, param in enumerate(method.tuned):
        axis_values = values[param.name]
        edges[param.name] = None if len(axis_values) < 2 else \
            "lower" if best[axis] == axis_values[0] else "upper" if best[axis] == axis_values[-1] else None
    return {"hparams": {**method.fixed, **dict(zip(values, best))}, "val_acc": scores[best] if scores else None,
            "edges": edges, "values": values, "trials": len(scores) * len(seeds)}


# ----------------------------------------------------------------------------------------------- comparison
def compare(methods: Sequence[Method], run: Run, out: str | os.PathLike[str] | None = None,
            tune_seeds: Sequence[int] = (0, 1), seeds: Sequence[int] = (0, 1, 2), max_extend: int = 4,
            title: str = "", level: float = 0.95, identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Tune every method ([`tune`][ghl_snn.comparison.engine.tune]), run it on ``seeds``, compare it with its
    controls, write the outputs.

    Returns (and writes to ``out/results.json``) ``{"title", "methods", "tune_seeds", "seeds", "chosen",
    "final", "comparisons", "trials"}``; a method with no tuned parameter is not tuned.  Trials already in
    ``out/results.json`` with the same method, values and seed are reused, not rerun; ``identity`` (the settings
    the callback depends on, such as epochs or data size) must then equal the stored one (``ValueError`` if not).

    Examples:
        GHL against plain backprop on a toy task: the callback trains a method and returns its split-named
        accuracies per epoch; each learning rate is tuned on validation (the grid extended past its upper edge),
        the final seeds 0, 1, 2 compared pairwise (``out=folder`` also writes the table, record and plot).

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL, GradSign
        >>> from ghl_snn.comparison import Method, Param, compare
        >>> x = torch.randn(384, 8, generator=torch.Generator().manual_seed(0))
        >>> y = (x[:, 0] + x[:, 1] > 0).long()
        >>> splits = {"train": slice(0, 256), "val": slice(256, 320), "test": slice(320, 384)}
        >>> def run(method, hparams, seed):
        ...     torch.manual_seed(seed)
        ...     model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        ...     rule = GHL(model, modulator=GradSign()) if method == "ghl" else None   # "backprop": no rule
        ...     optimizer = torch.optim.SGD(model.parameters(), lr=hparams["lr"])
        ...     history = []
        ...     for epoch in range(3):
        ...         for batch in torch.randperm(256).split(32):
        ...             optimizer.zero_grad()
        ...             F.cross_entropy(model(x[batch]), y[batch]).backward()
        ...             if rule is not None:
        ...                 rule.step()                             # grad <- sign(dL/dW) * |E|
        ...             optimizer.step()
        ...         with torch.no_grad():
        ...             history.append({"epoch": epoch + 1, **{f"{split}_acc": (model(x[s]).argmax(1) == y[s])
        ...                             .float().mean().item() for split, s in splits.items()}})
        ...     return {"history": history}
        >>> lr = Param("lr", [0.01, 0.1])
        >>> results = compare([Method("ghl", [lr], controls=["backprop"]), Method("backprop", [lr])], run)
        >>> results["chosen"]["ghl"]["values"]["lr"][-1] > 0.1          # extended past the grid's upper edge
        True
        >>> difference = results["comparisons"][0]                     # ghl - backprop, test_acc, per seed
        >>> difference["control"], difference["n"], difference["low"] <= difference["mean"] <= difference["high"]
        ('backprop', 3, True)
    """
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    for method in methods:
        unknown = [c for c in method.controls if c not in names]
        if unknown:
            raise ValueError(f"method {method.name!r} is compared with {unknown}, which are not among {names}")
    if len(seeds) < 1:
        raise ValueError("final runs need at least 1 seed (3 or more for a paired interval worth reading)")
    path = Path(out) / "results.json" if out is not None else None
    stored = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    identity = json.loads(json.dumps(dict(identity or {}), default=str))
    if stored and stored.get("identity", {}) != identity:
        changes = identity_changes(stored.get("identity", {}), identity)
        raise RunExists(f"{path} holds trials of other settings ({'; '.join(changes)}); pass --force to start "
                        "again, or choose another output folder")
    previous = stored.get("trials", [])
    trials = _Trials(run, path, previous)
    trials.state = {"title": title, "identity": identity, "methods": [asdict(m) for m in methods],
                    "tune_seeds": list(tune_seeds), "seeds": list(seeds), "level": level}
    chosen = {m.name: tune(m, trials, tune_seeds, max_extend) if m.tuned else
              {"hparams": dict(m.fixed), "val_acc": None, "edges": {}, "values": {}, "trials": 0} for m in methods}
    trials.state["chosen"] = chosen
    final: dict[str, Any] = {}
    for method in methods:
        runs = [trials.get(method.name, chosen[method.name]["hparams"], s, "final") for s in seeds]
        for trial in runs:
            if trial.get("diverged"):
                raise TrainingDiverged(f"{method.name} diverged with its chosen values "
                                       f"{chosen[method.name]['hparams']} and seed {trial['seed']}; narrow its grid "
                                       "(Param upper bound)")
            check_record(trial, ("val_acc", "test_acc"))
        final[method.name] = {split: [_last(t, f"{split}_acc") for t in runs]
                              for split in SPLITS if all(f"{split}_acc" in t["history"][-1] for t in runs)}
        final[method.name]["histories"] = [t["history"] for t in runs]
    comparisons = [{"method": m.name, "control": c, "score": "test_acc",
                    **_paired(final[m.name]["test"], final[c]["test"], level)}
                   for m in methods for c in m.controls]
    results = {**trials.state, "final": final, "comparisons": comparisons, "trials": trials.trials}
    if out is not None:
        write_json(path, results)
        with atomic_path(Path(out) / "results.md") as tmp:
            tmp.write_text(results_table(results) + "\n")
        plot_curves(results, Path(out) / "curves.png")
    return results


def compare_command(args: Any, methods: Sequence[Method], run: Run, title: str,
                    out: str | os.PathLike[str] | None = None, ignore: Sequence[str] = (),
                    **options: Any) -> dict[str, Any]:
    """The body of a comparison command (options of [`ghl_snn.comparison.cli`][]), with the runner's rules for
    what a folder already holds: ``--force`` starts again; a finished comparison with the same settings is reused
    (its trials are not run again); an unfinished one is continued only with ``--resume`` (nothing is
    overwritten by surprise).  The tuning runs on ``--tune-seeds`` seeds from ``--seed``, the final runs on
    ``--seed`` .. ``--seed + --seeds - 1``; every option but those that do not change a run's result (and
    ``ignore``, e.g. the rows and grids, which are part of each trial's key) identifies the comparison.  Prints
    the table unless ``--quiet``."""
    out = Path(out if out is not None else args.out)
    stored = out / "results.json"
    if args.force:
        stored.unlink(missing_ok=True)
    elif stored.is_file() and not args.resume:
        try:
            finished = "final" in json.loads(stored.read_text())
        except ValueError:
            finished = False
        if not finished:
            raise CliError(f"{out} holds an unfinished comparison; pass --resume to continue it (stored runs are "
                           "reused) or --force to start again")
    # the rows, their grids and the seeds are part of every trial's key, not of the comparison's identity
    identity = {k: v for k, v in run_identity(args).items() if k not in ("methods", "data_root", "seed", *ignore)}
    results = compare(methods, run, out, tune_seeds=tuple(range(args.seed, args.seed + args.tune_seeds)),
                      seeds=tuple(seeds_of(args)), title=title, identity=identity, **options)
    if not args.quiet:
        print((out / "results.md").read_text())
    return results


def _paired(a: Sequence[float], b: Sequence[float], level: float) -> dict[str, Any]:
    """``paired_interval`` of ``a - b``; with one pair only the difference (no interval: ``low`` / ``high`` /
    ``excludes_zero`` are ``None``)."""
    if len(a) >= 2:
        return paired_interval(a, b, level)
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    return {"n": len(diffs), "diffs": diffs, "mean": diffs[0], "sd": None, "low": None, "high": None,
            "level": level, "excludes_zero": None}


def _gain(comparison: Mapping[str, Any]) -> str:
    """``vs control: +d [low, high]`` in points; ``(1 seed, no interval)`` without one."""
    text = f"vs {comparison['control']}: {100 * comparison['mean']:+.2f}"
    if comparison["low"] is None:
        return text + " (1 seed, no interval)"
    return text + f" [{100 * comparison['low']:+.2f}, {100 * comparison['high']:+.2f}]"


def results_table(results: Mapping[str, Any]) -> str:
    """The one results table: per method the chosen values (an edge choice marked), tuning trials, the last
    epoch's train / val / test accuracy (mean ± sd over the final seeds, %) and, per control, the paired test
    difference in points with its 95 % interval."""
    rows = []
    for method in results["methods"]:
        name = method["name"]
        pick = results["chosen"][name]
        tuned = {p["name"] for p in method["tuned"]}
        values = "; ".join(f"{k}={v:.3g}" + (f" ({pick['edges'][k]} edge)" if pick["edges"].get(k) else "")
                           for k, v in pick["hparams"].items() if k in tuned) or "-"
        final = results["final"][name]
        gains = "; ".join(_gain(c) for c in results["comparisons"] if c["method"] == name) or "-"
        rows.append({"method": name, "chosen": values, "tuning trials": pick["trials"],
                     **{f"{split}_acc (%)": mean_sd(final[split], 100) if split in final else "-" for split in SPLITS},
                     "paired test_acc difference, points [95 % CI]": gains})
    return markdown_table(rows)


def plot_curves(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Accuracy against epoch of the final runs, one panel per split, one line per method (mean over seeds) with a
    band of ± one standard deviation; integer epoch ticks, legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    final = results["final"]
    splits = [s for s in SPLITS if any(s in f for f in final.values())]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits) + 1.8, 3.4), squeeze=False)
    for axis, split in zip(axes[0], splits):
        for name, scores in final.items():
            if split not in scores:
                continue
            key = f"{split}_acc"  # a split may be measured at some epochs only (e.g. test at the end)
            curves = [[row[key] for row in history if key in row] for history in scores["histories"]]
            length = min(len(c) for c in curves)
            epochs = [row["epoch"] for row in scores["histories"][0] if key in row][:length]
            columns = [[c[i] for c in curves] for i in range(length)]
            mean = [100 * statistics.fmean(c) for c in columns]
            sd = [100 * statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
            line, = axis.plot(epochs, mean, marker="o", markersize=3, label=name)
            axis.fill_between(epochs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                              color=line.get_color(), alpha=0.2, linewidth=0)
        axis.set(xlabel="epoch", ylabel=f"{split}_acc (%)", title=f"{split} split")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title=f"mean ± sd over {len(results['seeds'])} seeds")
    if results.get("title"):
        fig.suptitle(results["title"])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)
