"""HebbFF vs Forward-Forward vs back-propagation on MNIST / FashionMNIST (HebbFF paper, Tables 1-2).

::

    python -m ghl_snn.experiments.hebbff --preset deep-fashionmnist [--methods hebbff hebbff-adam ff ff-sgd bp readout]
        [--epochs N] [--train-limit N] [--grid-train-limit N] [--val-limit N] [--seed S] [--seeds N] [--data-root DIR]

* ``hebbff``: [`HebbFF`][ghl_snn.HebbFF]'s fused in-place SGD step on a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP]
  (no autograd, every parameter ``requires_grad=False``); ``hebbff-adam``: the same update written into ``.grad``
  (``HebbFF(mode="grad")``) and applied by ``torch.optim.Adam``.
* ``ff`` / ``ff-sgd``: [`ForwardForward`][ghl_snn.ForwardForward] on the same network, with Adam (Hinton's choice) or
  plain SGD (exactly HebbFF's update with a per-layer learning rate ``η n/2``).
* ``bp``: the plain MLP of the same preset, cross-entropy, SGD with momentum 0.9.
* ``readout`` (control): HebbFF's own network at its initialisation, frozen, with a trained soft-max read-out
  ([`ForwardForwardReadout`][ghl_snn.ForwardForwardReadout]): what the network gives before any learning.

Defaults (measured to learn on both data sets): pixels standardised with the training split's statistics
(``--no-standardize``: [0, 1]); the one-hot label scaled by 0.3; every pre-activation starting as ``N(0, 1)``
(``init_gain=1``); batch-mean updates; classification by the goodness of every candidate label summed over the
consecutive layers that classify the validation split best ([`ghl_snn.models.goodness`][]; ``--goodness-layers``
fixes them).  A final run whose validation accuracy stays near chance warns with the measured cause.

Protocol: a seeded 20 % of the training set is held out for choosing ``lr`` (and ``θ``) on a grid extended past
its edges, each candidate scored by its validation accuracy averaged over ``--tune-seeds`` seeds (each its own
split and initialisation; one selection serves every final seed of the command); the chosen values train on the
other 80 % for ``--epochs`` epochs; the test accuracy is reported with
the training time and the peak memory (CPU: RSS of a fresh process above its level before training).  Every run
writes ``<out>/<preset>/<method>[/seed<k>]/{config.json, metrics.csv, results.json, curves.png, checkpoint.pt}``
through the runner ([`ghl_snn.experiments.hebbff_training`][]: checkpoint every epoch, ``--resume`` bit-identical,
a finished run with the same settings is not retrained unless ``--force``, divergence stops the run);
``<out>/results.{md,json}`` holds the table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..datasets.mnist import VectorSplit, locate_mnist, mnist_split
from ..comparison import cli, runner
from ..comparison.common import markdown_table, write_json
from ..comparison.engine import Method, Param, tune
from .hebbff_training import LOGIT_METHODS, METHODS, PRESETS, RunConfig, fit, run_identity
from ..comparison.processes import run_in_child

#: default selection grids, centred on the values measured to learn on both data sets (overridable; a choice on an
#: edge extends the grid, see ``select_hyperparameters``).  Every method starts from 9 candidates: 3 lr x 3 θ for
#: the goodness methods, 9 lr for BP and the control.  HebbFF: batch-mean updates on inputs of unit norm, so lr ~ 1
#: moves a pre-activation by O(gate · a) per step; FF with SGD is the same update with lr ``η n/2`` for a layer of
#: n units (n ≈ 2000 in the first layer of both presets); Adam (HebbFF's .grad or FF's gradient) is blind to that
#: scale.  BP and the control: SGD with momentum 0.9.
DEFAULT_LR_GRID = {"hebbff": (0.3, 1.0, 3.0), "hebbff-adam": (0.001, 0.003, 0.01), "ff": (0.001, 0.003, 0.01),
                   "ff-sgd": (300.0, 1000.0, 3000.0),
                   "bp": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                   "readout": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)}
DEFAULT_THETA_GRID = (0.25, 0.5, 1.0)


#: how many log steps the selection may extend a grid past the edge its best value sits on
MAX_EXTEND = 3


def select_hyperparameters(config: RunConfig, split_of: Callable[[int], VectorSplit], lr_grid: Sequence[float],
                           theta_grid: Sequence[float | None], epochs: int, train_limit: int | None,
                           seeds: Sequence[int] = (0, 1), max_extend: int = MAX_EXTEND
                           ) -> tuple[float, float | None, list[dict[str, Any]], list[str]]:
    """Choose ``lr`` (and ``θ``) by the validation accuracy averaged over ``seeds``, with the comparison engine's
    search ([`tune`][ghl_snn.comparison.engine.tune]): every ``(lr, θ)`` of the grid is trained on every seed
    (``split_of(seed)``: that seed's split, whose validation part scores it); then both neighbours of the best point
    along each parameter, and one more log step (the grid's own ratio) past an edge the best sits on, at most
    ``max_extend`` steps per parameter.  A one-value grid is fixed, not searched; a diverging candidate loses.
    Returns the chosen ``lr`` and ``θ``, every trial (``lr``, ``theta``, ``seed``, ``val_acc``) and the parameters
    whose choice is still on an edge."""
    tuned, fixed = [], {}
    for name, grid in (("lr", list(lr_grid)), ("theta", list(theta_grid))):
        if len(grid) == 1:
            fixed[name] = grid[0]
        elif any(value is None or not value > 0 for value in grid):
            raise ValueError(f"{name} candidates {grid}: a searched grid needs values > 0 (fix {name} instead)")
        else:
            tuned.append(Param(name, tuple(grid), lower=min(1e-7, min(grid)), upper=max(1e7, max(grid))))
    if not tuned:
        return float(fixed["lr"]), fixed["theta"], [], []
    trials: list[dict[str, Any]] = []

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        trial = RunConfig(**{**asdict(config), **hparams, "seed": seed, "epochs": epochs, "train_limit": train_limit,
                             "progress": False})
        try:
            val_acc = fit(trial, split_of(seed), test=False)["val_acc"]
        except (FloatingPointError, runner.TrainingDiverged) as error:
            print(f"grid: lr={trial.lr:g} theta={trial.theta} seed {seed} diverged: {error}", file=sys.stderr)
            trials.append({"lr": trial.lr, "theta": trial.theta, "seed": seed, "val_acc": None})
            return {"diverged": True, "history": [], "error": str(error)}
        trials.append({"lr": trial.lr, "theta": trial.theta, "seed": seed, "val_acc": val_acc})
        print(f"grid {config.preset} {method}: lr={trial.lr:g} theta={trial.theta} seed {seed} val_acc={val_acc:.4f}",
              file=sys.stderr, flush=True)
        return {"history": [{"epoch": epochs, "val_acc": val_acc}]}

    choice = tune(Method(config.method, tuple(tuned), fixed), run, seeds, max_extend)
    return (float(choice["hparams"]["lr"]), choice["hparams"]["theta"], trials,
            [name for name, edge in choice["edges"].items() if edge])


def _isolated_entry(config: dict[str, Any], run_dir: str) -> None:
    """Child process (see [`run_in_child`][ghl_snn.comparison.processes.run_in_child]): load data, train, write
    ``results.json`` (fresh process -> clean RSS baseline)."""
    run_config = RunConfig(**config)
    torch.set_num_threads(run_config.extra.get("threads", torch.get_num_threads()))
    split = mnist_split(run_config.data_root, PRESETS[run_config.preset][1], run_config.val_fraction,
                        run_config.seed, run_config.standardize)
    write_json(Path(run_dir) / "results.json", fit(run_config, split, Path(run_dir)))


def final_run(config: RunConfig, split: VectorSplit, run_dir: Path, isolate: bool) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    # what the runner will do with this folder, decided here so that a refusal is one line from this process
    runner.plan_run(run_dir, config.epochs, run_identity(config), config.resume, config.force)
    if not isolate:
        result = fit(config, split, run_dir)
        write_json(run_dir / "results.json", result)
        return result
    config.extra["threads"] = torch.get_num_threads()
    run_in_child(_isolated_entry, asdict(config), str(run_dir))  # its errors (divergence, ...) are raised here
    return json.loads((run_dir / "results.json").read_text())


#: the record of a run's grid search, kept in its folder from the moment the search ends
GRID_RECORD = "grid.json"


def stored_grid(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The grid search recorded in ``run_dir`` for the same settings (``identity``), or ``None``."""
    try:
        record = json.loads((run_dir / GRID_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("identity") == json.loads(json.dumps(identity, default=str)) else None


def chosen_values(folder: Path, preset: str, method: str) -> dict[str, Any]:
    """The ``lr`` and ``theta`` a finished run in ``folder/<preset>/<method>`` trained with (``--chosen-from``), and
    ``edges``: those of the two its selection left on a grid edge (``grid_edges``), which a run reusing the values
    carries on; for the ``--out`` of a command run with several ``--seeds``, its first seed's
    (``<method>/seed<k>/``, lowest k)."""
    path = folder / preset / method / "results.json"
    seeded = sorted(path.parent.glob("seed*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    if not path.exists() and seeded:
        path = seeded[0]
    try:
        result = json.loads(path.read_text())
        return {"lr": float(result["lr"]), "theta": result.get("theta"), "edges": list(result.get("grid_edges") or [])}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--chosen-from: {path} holds no finished {method} run of {preset} ({error})") from None


def build_parser() -> argparse.ArgumentParser:
    pos, posf, nonnegf = cli.positive_int, cli.positive_float, cli.nonnegative_float
    parser = cli.parser("python -m ghl_snn.experiments.hebbff", __doc__.split("\n")[0], raw=False)
    parser.add_argument("--preset", nargs="+", default=["deep-mnist"], choices=sorted(PRESETS),
                        help="network and data set, one table row group each")
    cli.add_methods_argument(parser, METHODS, METHODS)
    cli.add_common_arguments(parser, out_default="runs/hebbff", epochs_default=10, epochs_help="epochs of the final "
                             "run", seeds_help="seeds (each draws its own validation split and initialisation)",
                             out_layout=" (runs in DIR/<preset>/<method>/, DIR/<preset>/<method>/seed<k>/ with "
                                        "several seeds)",
                             data_help="the folder holding MNIST/ (and FashionMNIST/)")
    parser.add_argument("--batch-size", type=pos, default=128, help="mini-batch size")
    parser.add_argument("--lr", type=posf, default=None, help="fix lr (skips the lr grid)")
    parser.add_argument("--theta", type=nonnegf, default=None, help="fix theta (skips the theta grid)")
    parser.add_argument("--lr-grid", type=posf, nargs="+", default=None,
                        help=f"lr candidates (default per method: {DEFAULT_LR_GRID})")
    parser.add_argument("--theta-grid", type=nonnegf, nargs="+", default=list(DEFAULT_THETA_GRID),
                        help="goodness threshold θ candidates of hebbff and ff")
    parser.add_argument("--chosen-from", metavar="DIR", default=None,
                        help="no grid search: every run takes the lr / theta chosen for its preset and method in "
                             "DIR (the --out of an earlier command, e.g. another seed's); --lr / --theta override")
    parser.add_argument("--chosen-preset", metavar="PRESET", choices=sorted(PRESETS), default=None,
                        help="with --chosen-from: take the values chosen for this preset (e.g. the deep net's for "
                             "the wide one) instead of each run's own")
    parser.add_argument("--tune-seeds", type=pos, default=2, help="seeds whose validation accuracy is averaged "
                        "to score a grid candidate (--seed, --seed+1, ...; each draws its own split)")
    parser.add_argument("--grid-epochs", type=pos, default=1, help="epochs per grid candidate")
    parser.add_argument("--grid-train-limit", type=pos, default=None,
                        help="train each grid candidate on the first N samples of the 80%% split "
                             "(default: --train-limit)")
    parser.add_argument("--train-limit", type=pos, default=None, help="final run: first N training samples")
    parser.add_argument("--val-limit", type=pos, default=None, help="evaluate on the first N validation samples")
    parser.add_argument("--val-fraction", type=cli.open_fraction, default=0.2,
                        help="fraction of the training set held out for choosing lr and θ")
    parser.add_argument("--label-scale", type=posf, default=0.3,
                        help="scale s of the one-hot label appended to every layer's input (a layer's label part "
                             "starts with a fraction s^2/(1+s^2) of its pre-activation variance)")
    parser.add_argument("--no-standardize", action="store_true",
                        help="keep the [0, 1] pixels (default: per-pixel mean and std of the training split)")
    parser.add_argument("--init-gain", type=nonnegf, default=1.0,
                        help="FF/HebbFF weight init: pre-activations start as N(0, gain^2); 0 = PyTorch default")
    parser.add_argument("--hidden", type=pos, nargs="+", default=None,
                        help="override the preset's hidden widths (e.g. for a quick smoke run)")
    parser.add_argument("--weight-decay", type=nonnegf, default=0.0, help="weight decay of every method")
    parser.add_argument("--goodness-layers", type=cli.nonnegative_int, nargs=2, metavar=("FIRST", "LAST"),
                        default=None, help="FF/HebbFF prediction: goodness summed over layers FIRST..LAST (0-based; "
                        "'1 L-1' is Hinton's FF read-out); default: the range with the best validation accuracy")
    parser.add_argument("--train-acc-rows", type=cli.nonnegative_int, default=32,
                        help="FF/HebbFF training accuracy: images of each batch classified by goodness before the "
                             "update (0 = none)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="train the final run in this process (peak RSS then less meaningful)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The checked options: a bad value exits with one line and exit code 2 before anything is read."""
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Grid search + final run for every (preset, method); returns the result rows (also written to ``--out``)."""
    roots = {preset: locate_mnist(args.data_root, PRESETS[preset][1]) for preset in args.preset}  # before any work
    out = Path(args.out)
    results = []
    seeds, tune_seeds = cli.seeds_of(args), list(range(args.seed, args.seed + args.tune_seeds))
    splits: dict[tuple[str, int], VectorSplit] = {}
    choices: dict[tuple[str, str], dict[str, Any]] = {}  # one selection per (preset, method) serves every seed

    def split_of(preset: str, seed: int) -> VectorSplit:
        if (preset, seed) not in splits:
            for key in [key for key in splits if key[0] != preset]:
                del splits[key]  # one data set in memory at a time
            splits[(preset, seed)] = mnist_split(str(roots[preset]), PRESETS[preset][1], args.val_fraction, seed,
                                                 not args.no_standardize)
        return splits[(preset, seed)]

    for preset, seed in itertools.product(args.preset, seeds):
        root = roots[preset]
        split = split_of(preset, seed)
        for method in args.methods:
            base = RunConfig(preset=preset, method=method, lr=math.nan, theta=None, epochs=args.epochs,
                             batch_size=args.batch_size, label_scale=args.label_scale,
                             standardize=not args.no_standardize,
                             init_gain=args.init_gain if args.init_gain > 0 else None,
                             hidden=tuple(args.hidden) if args.hidden else None,
                             weight_decay=args.weight_decay,
                             goodness_layers=tuple(args.goodness_layers) if args.goodness_layers else None,
                             train_acc_rows=args.train_acc_rows, seed=seed,
                             device=args.device, val_fraction=args.val_fraction, train_limit=args.train_limit,
                             val_limit=args.val_limit, data_root=str(root),
                             progress=not args.quiet)
            lr_grid = [args.lr] if args.lr is not None else (args.lr_grid or DEFAULT_LR_GRID[method])
            theta_grid: list[float | None] = [None] if method in LOGIT_METHODS else (
                [args.theta] if args.theta is not None else args.theta_grid)
            carried_edges = None  # the edges of values reused from another run's selection
            if args.chosen_from is not None:
                chosen = chosen_values(Path(args.chosen_from), args.chosen_preset or preset, method)
                lr_grid = [args.lr if args.lr is not None else chosen["lr"]]
                theta_grid = [None] if method in LOGIT_METHODS else [
                    args.theta if args.theta is not None else chosen["theta"]]
                fixed = {"lr": args.lr, "theta": args.theta}
                carried_edges = [name for name in chosen["edges"] if fixed.get(name) is None]
            run_dir = out / preset / method / (f"seed{seed}" if len(seeds) > 1 else "")
            grid = {"lr": list(lr_grid), "theta": list(theta_grid), "epochs": args.grid_epochs,
                    "train_limit": args.grid_train_limit, "seeds": tune_seeds}
            # the search is identified by the settings of the runs it serves, before their lr / θ and seed
            search_identity = {key: value for key, value in run_identity(RunConfig(**{**asdict(base), "extra": {
                "grid": grid}})).items() if key not in ("lr", "theta", "epochs", "seed")}
            record, read_here = choices.get((preset, method)), None
            if record is None and not args.force:
                record = read_here = stored_grid(run_dir, search_identity)
            if record is None and not args.force and (run_dir / "config.json").exists() and (
                    (run_dir / "checkpoint.pt").exists() or (run_dir / "results.json").exists()):
                # a stored run without a grid record: keep the lr / θ chosen before (plan_run compares the rest)
                saved = json.loads((run_dir / "config.json").read_text())
                record = {"lr": saved["lr"], "theta": saved["theta"], "trials": [], "seconds": None}
            if record is None:
                started = time.perf_counter()
                lr, theta, trials, edges = select_hyperparameters(
                    base, lambda tune_seed: split_of(preset, tune_seed), lr_grid, theta_grid, args.grid_epochs,
                    args.grid_train_limit if args.grid_train_limit is not None else args.train_limit, tune_seeds)
                record = {"identity": search_identity, "lr": lr, "theta": theta, "trials": trials,
                          "edges": edges, "seconds": time.perf_counter() - started}
            choices[(preset, method)] = record
            if record.get("identity") == search_identity and record is not read_here:  # not rewritten unchanged
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json(run_dir / GRID_RECORD, record)
            lr, theta = record["lr"], record["theta"]
            config = RunConfig(**{**asdict(base), "lr": lr, "theta": theta, "resume": args.resume,
                                  "force": args.force, "extra": {"grid": grid}})
            result = final_run(config, split, run_dir, isolate=not args.no_isolate)
            result["grid"] = record["trials"]
            result["grid_edges"] = record.get("edges", []) if carried_edges is None else carried_edges
            if record["seconds"] is not None and len(record["trials"]) > 0:
                result["grid_seconds"] = record["seconds"]
            write_json(run_dir / "results.json", result)
            results.append(result)
            print(f"{preset} {method}: lr={lr:g} theta={theta} test_acc={result['test_acc']:.4f} "
                  f"time={result['train_time_s']:.1f}s peak={result['peak_mib']:.1f}MiB", file=sys.stderr,
                  flush=True)
            write_summary(out, results, args)
    return results


TABLE_COLUMNS = ("preset", "method", "seed", "lr", "theta", "epochs", "train_samples", "train_acc", "val_acc",
                 "test_acc", "goodness_layers", "train_time_s", "peak_mib", "peak_rss_mib")


def write_summary(out: Path, results: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [{column: result.get(column) for column in TABLE_COLUMNS} for result in results]
    write_json(out / "results.json", {"command": " ".join(sys.argv), "args": vars(args), "results": list(results)})
    (out / "results.md").write_text(markdown_table(rows, TABLE_COLUMNS) + "\n")


def run_and_print(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every preset, seed and method, write the outputs and print the table."""
    results = run(args)
    print(markdown_table([{c: r.get(c) for c in TABLE_COLUMNS} for r in results], TABLE_COLUMNS))
    return results


def locate_data(args: argparse.Namespace) -> None:
    """Every preset's data set is there (one clear error otherwise, before the output folder is touched)."""
    for preset in args.preset:
        locate_mnist(args.data_root, PRESETS[preset][1])


main, cli_main = cli.entry_points(parse_args, lambda args: run_and_print(args), check=locate_data)


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(cli_main())
