"""``python -m ghl_snn.experiments.cifar``: the GHL paper's CIFAR experiments (Tables 1 and 5) in one harness.

Methods (all on the same network, data, batch size, epochs and per-iteration cosine schedule):

* ``ghl``      GHL (GradSign ⊙ |SWTA-Oja|) on the hidden convolutions, backprop for the rest (paper).
* ``sign``     sign-only ablation (Table 5): ``.grad = sign(dL/dW)`` on the hidden convolutions.
* ``hebb``     local SWTA-Oja only (no global sign) on the hidden convolutions; the classifier learns by backprop.
* ``bp``       end-to-end backprop with a standard recipe: SGD momentum 0.9, its own learning rate, weight decay 5e-4.
* ``bp-same``  end-to-end backprop with exactly GHL's optimiser settings.
* ``softhebb`` the DeepHebb protocol (Fig. 2 baseline): one unsupervised SoftHebb epoch per plastic layer, then the
  classifier by backprop ([`ghl_snn.learners.softhebb.train_softhebb`][]; single process).

Presets: Table 1/5 rows ``<deephebb|fasthebb>-<cifar10|cifar100>-<method>``; Table 2/4 rows
``<vgg16|vgg14|resnet20|...|resnet1202>-cifar10-<ghl|bp>``; Fig. 2 ``fig2-d<depth>-x<growth>-<relu|triangle>-
<ghl|softhebb>`` ([`ghl_snn.experiments.cifar_presets`][]).  ``torchrun --nproc_per_node N -m
ghl_snn.experiments.cifar ...`` trains with DistributedDataParallel ([`ghl_snn.comparison.distributed`][]);
``--amp bf16|fp16`` and ``--channels-last``.

``--preset quickstart`` needs no download: scikit-learn's embedded 8×8 digits, upsampled to 32×32 RGB.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets.cifar import (BatchStream, ImageData, check_cifar, find_cifar, load_cifar, load_digits_as_cifar,
                              split_validation)
from ..models import MODELS
from ..rules.base import SUPPORTED_NORMALIZATIONS
from ..diagnostics.monitors import make_monitors, parse_monitor_spec, write_monitors
from ..comparison import cli
from .cifar_presets import PRESETS, Preset, build_rule, methods, optimiser_for, plastic_taus
from ..comparison.common import atomic_path, markdown_table, seed_everything, select_device, write_json
from ..comparison.distributed import AmpTrainer, DistContext, ShardedStream, finish_rank, rank_out_dir, wrap_model
from ..comparison.runner import SKIP, TrainingDiverged, fit, plan_run
from ..comparison.stats import mean_sd

def load_data(preset: Preset, data_root: str | None, download: bool, seed: int = 0,
              test_seed: int = 12345) -> tuple[ImageData, ImageData]:
    """(train, test) of the preset's data set; ``preset.train_subset`` / ``test_subset`` images drawn with
    ``seed`` / ``test_seed`` (only those are decoded)."""
    if preset.dataset == "digits":
        return (load_digits_as_cifar(train=True).subset(preset.train_subset, seed=seed),
                load_digits_as_cifar(train=False).subset(preset.test_subset, seed=test_seed))
    return (load_cifar(preset.dataset, data_root, train=True, download=download, subset=preset.train_subset,
                       seed=seed),
            load_cifar(preset.dataset, data_root, train=False, download=download, subset=preset.test_subset,
                       seed=test_seed))


def check_data(preset: Preset, data_root: str | None, download: bool) -> None:
    """Before anything is decoded: the preset's data set is there and fits it (class count, image size)."""
    if preset.dataset == "digits" or download:
        return
    check_cifar(find_cifar(preset.dataset, data_root), preset.dataset)


def run_identity(method: str, preset: Preset, seed: int, **options: Any) -> dict[str, Any]:
    """What identifies a run's configuration (stored in ``config.json``): a finished run with the same identity is
    not retrained ([`ghl_snn.comparison.runner.plan_run`][])."""
    # threads: speed only; methods: which runs the command makes, not how this one trains
    settings = {key: value for key, value in asdict(preset).items() if key not in ("threads", "methods")}
    return {"method": method, "seed": seed, "preset": settings, **options}


def run_method(method: str, preset: Preset, train: ImageData, test: ImageData, seed: int, out_dir: Path,
               device: torch.device, resume: bool = False, config: dict[str, Any] | None = None,
               ctx: Any | None = None, amp: str | None = None, channels_last: bool = False,
               monitor: str | None = None, monitor_every: int = 10, force: bool = False,
               identity: dict[str, Any] | None = None, quiet: bool = False, split: str = "test") -> dict[str, Any]:
    """Train one method with one seed; returns its results dict (see [`ghl_snn.comparison.runner.fit`][]).

    ``test`` is evaluated after every epoch and its scores are named by ``split`` (``"val"`` when it is a
    validation part: ``val_acc`` in ``metrics.csv``, ``final_val_acc`` in ``results.json``).
    An existing run in ``out_dir`` is skipped when finished, continued with ``resume``, replaced with ``force``
    ([`ghl_snn.comparison.runner.plan_run`][]).

    ``ctx`` (a [`ghl_snn.comparison.distributed.DistContext`][]: DistributedDataParallel under torchrun), ``amp``
    and ``channels_last`` select the scaled paths of [`ghl_snn.comparison.distributed`][] (rank 0 writes the
    outputs); by default one process in fp32.
    """
    if method not in methods():
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(methods())}")
    seed_everything(seed)
    model = MODELS[preset.model](num_classes=len(train.classes), width=preset.width).to(device)
    config = {**(config or {}), "run_identity": run_identity(method, preset, seed, **(identity or {}))}
    if method == "softhebb":
        return run_softhebb_method(model, preset, train, test, seed, out_dir, device, config, resume, force)
    ctx = ctx if ctx is not None else DistContext(device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    taus = plastic_taus(model, preset.tau)
    rule = build_rule(method, model, preset.eligibility_fraction, normalize=preset.normalize, tau=preset.tau)
    optimizer = optimiser_for(method, preset, model, set(taus))
    if preset.batch_size % ctx.world_size:
        raise ValueError(f"batch size {preset.batch_size} must divide evenly over {ctx.world_size} processes")
    train_stream = ShardedStream(BatchStream(train, preset.batch_size, device, shuffle=True, augment=preset.augment,
                                             seed=seed, drop_last=ctx.distributed), ctx)
    test_stream = BatchStream(test, 500, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=preset.epochs * len(train_stream),
                                                           eta_min=0.0)
    trainer = AmpTrainer(wrap_model(model, ctx), optimizer, scheduler, rule, amp=amp, channels_last=channels_last,
                         progress=not quiet)
    # diagnostics on the hidden convolutions, for every method alike (hooks on optimizer.step)
    monitors = make_monitors(monitor, model, optimizer, layers=list(taus), every=monitor_every)
    run_config = {**config, "method": method, "seed": seed, "preset": asdict(preset),
                  "optimizer": repr(optimizer), "plastic_layers": taus if rule else {},
                  "device": str(device), "world_size": ctx.world_size, "amp": amp, "channels_last": channels_last,
                  "train_samples": len(train), "test_samples": len(test),
                  "monitor": monitor, "monitor_every": monitor_every, "torch": torch.__version__}
    run_dir = rank_out_dir(out_dir, ctx, resume, force)
    try:
        results = fit(trainer, train_stream.epoch, {split: lambda: test_stream.epoch(0)}, preset.epochs, run_dir,
                      run_config, resume=resume, steps_per_epoch=len(train_stream), device=device,
                      desc=f"{method} s{seed}", force=force)
    finally:
        finish_rank(run_dir, out_dir)
        if rule is not None:
            rule.remove()
    write_monitors(monitors, out_dir)
    return results


def run_softhebb_method(model: nn.Module, preset: Preset, train: ImageData, test: ImageData, seed: int,
                        out_dir: Path, device: torch.device, config: dict[str, Any] | None, resume: bool = False,
                        force: bool = False) -> dict[str, Any]:
    """Fig. 2's SoftHebb baseline: layer-wise unsupervised SoftHebb, then ``preset.epochs`` classifier epochs.

    The protocol has no per-epoch checkpoint: a finished run (``results.json``) is skipped, an unfinished one
    starts again."""
    import time

    from ..learners.softhebb import train_softhebb

    config = config or {}
    if plan_run(out_dir, None, config.get("run_identity"), resume or not (out_dir / "results.json").is_file(),
                force) == SKIP:
        return json.loads((out_dir / "results.json").read_text())
    stream = BatchStream(train, preset.batch_size, device, shuffle=True, augment=preset.augment, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").unlink(missing_ok=True)
    write_json(out_dir / "config.json", {**config, "method": "softhebb", "seed": seed,
                                         "preset": asdict(preset), "plastic_layers": model.plastic_taus,
                                         "device": str(device), "torch": torch.__version__})
    started = time.perf_counter()
    history = train_softhebb(model, model.plastic_taus, stream.epoch, classifier_epochs=preset.epochs)
    seconds = time.perf_counter() - started
    trainer = AmpTrainer(model, torch.optim.SGD(model.parameters(), lr=0.0))
    metrics = trainer.evaluate(BatchStream(test, 500, device).epoch(0))
    images = len(train) * (len(model.plastic_taus) + preset.epochs)
    results = {"final_test_acc": metrics["test_acc"], "best_test_acc": metrics["test_acc"], "best_epoch": 1,
               "epochs": preset.epochs, "wall_time_s": seconds, "images_per_s": images / max(seconds, 1e-9),
               "peak_memory_mib": None, "phases": history}
    write_json(out_dir / "results.json", results)
    return results


def summarise(results: dict[str, list[dict[str, Any]]], split: str = "test") -> list[dict[str, Any]]:
    """Per method: mean ± std over seeds of the final and best accuracy on ``split``, time per epoch and peak
    memory."""
    rows = []
    for method, runs in results.items():
        rows.append({"method": method, "seeds": len(runs),
                     f"final {split} acc %": mean_sd([run[f"final_{split}_acc"] for run in runs], 100),
                     f"best {split} acc %": mean_sd([run[f"best_{split}_acc"] for run in runs], 100),
                     "s/epoch": _mean_text([r.get("wall_time_s") / r["epochs"] for r in runs
                                            if r.get("wall_time_s") is not None], ".1f"),
                     "images/s": _mean_text([r.get("images_per_s") for r in runs], ".0f"),
                     "peak MiB": _mean_text([r.get("peak_memory_mib") for r in runs], ".0f", max)})
    return rows


def _mean_text(values: list[float | None], spec: str, reduce: Any = statistics.mean) -> str:
    """``reduce`` of the finite values formatted with ``spec``; "n/a" when there are none (e.g. NaN in JSON)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return format(reduce(finite), spec) if finite else "n/a"


def plot_accuracy_per_epoch(out: Path, run_dirs: dict[str, list[Path]], title: str, split: str = "test") -> None:
    """Mean accuracy on ``split`` per epoch of every method (shaded min-max over seeds) -> ``accuracy.png``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for method, dirs in run_dirs.items():
        curves = []
        for run_dir in dirs:
            if not (run_dir / "metrics.csv").is_file():  # e.g. the SoftHebb protocol: one final evaluation only
                continue
            with open(run_dir / "metrics.csv") as handle:
                curves.append([100 * float(row[f"{split}_acc"]) for row in csv.DictReader(handle)])
        if not curves:
            continue
        length = min(len(c) for c in curves)
        epochs = range(1, length + 1)
        columns = list(zip(*(c[:length] for c in curves)))
        axis.plot(epochs, [statistics.mean(c) for c in columns], marker="o", ms=3, label=method)
        axis.fill_between(epochs, [min(c) for c in columns], [max(c) for c in columns], alpha=0.2)
    axis.set(xlabel="epoch", ylabel=f"{split}_acc (%)", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    with atomic_path(out / "accuracy.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def fraction_in_unit(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    value = cli.nonnegative_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def parse_tau(text: str) -> float | tuple[float, ...] | tuple[tuple[str, float], ...]:
    """``--tau``: ``0.5`` (every plastic layer), ``0.5,1,1`` (one per plastic layer, in order) or
    ``features.1=0.5,features.5=2`` (named layers; the others keep their default)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected a temperature, got nothing")
    if all("=" in part for part in parts):
        return tuple((name.strip(), cli.positive_float(value)) for name, value in (p.split("=", 1) for p in parts))
    if any("=" in part for part in parts):
        raise argparse.ArgumentTypeError(f"mix of named and positional temperatures in {text!r}")
    values = tuple(cli.positive_float(part) for part in parts)
    return values[0] if len(values) == 1 else values


def describe_preset(name: str, preset: Preset) -> str:
    """One ``--list-presets`` line."""
    return (f"{name:28s} {preset.model:9s} {preset.dataset:9s} methods={','.join(preset.methods):8s} "
            f"epochs={preset.epochs} batch={preset.batch_size} width={preset.width}  {preset.description}")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.cifar", __doc__)
    cli.add_preset_arguments(parser, PRESETS, "quickstart", describe_preset,
                             help="paper-table row <model>-<dataset>-<method> or 'quickstart' (see --list-presets)")
    cli.add_methods_argument(parser, methods, None, help="methods to run instead of the preset's")
    parser.add_argument("--width", type=cli.positive_float, help="channel multiplier of the network (default: the "
                        "preset's; 1.0 = the paper's)")
    parser.add_argument("--batch-size", type=cli.positive_int, help="mini-batch size (default: the preset's; "
                        "paper: 64)")
    parser.add_argument("--train-subset", type=cli.positive_int, help="train on a random subset of this many "
                        "images; only those are decoded (default: all)")
    parser.add_argument("--test-subset", type=cli.positive_int, help="evaluate on a fixed random subset of this "
                        "many test images (saves time on a CPU; default: the whole test set)")
    parser.add_argument("--eligibility-fraction", type=fraction_in_unit, help="GHL methods: estimate E from this "
                        "random fraction of each batch (0 < f <= 1; default 1 = exact)")
    parser.add_argument("--augment", action="store_true", help="random crop (padding 4) + horizontal flip "
                        "(off by default, as in the paper's code)")
    parser.add_argument("--lr", type=cli.positive_float, help="learning rate of every parameter group, any method "
                        "(default: the method's: GHL's two groups, or the 'bp' recipe)")
    parser.add_argument("--weight-decay", type=cli.nonnegative_float, help="weight decay of every parameter group, "
                        "any method (default: the method's: GHL 5e-2 on the convolutions and 0 on the head for "
                        "DeepHebb; 'bp' 5e-4)")
    parser.add_argument("--tau", type=parse_tau, help="SWTA softmax temperature of the plastic layers: one value, "
                        "one per plastic layer in order (0.5,1,1), or by name (features.1=0.5,features.5=2) "
                        "(default: the model's, 1)")
    parser.add_argument("--bp-lr", type=cli.positive_float, help="learning rate of the 'bp' baseline (default "
                        "0.02)")
    parser.add_argument("--conv-lr", type=cli.nonnegative_float, help="learning rate of the hidden convolutions, "
                        "any method, after --lr (default: the method's; 0 freezes them at initialisation: the "
                        "read-out-only control)")
    parser.add_argument("--head-lr", type=cli.nonnegative_float, help="learning rate of everything else (the "
                        "classifier head), any method, after --lr (default: the method's)")
    parser.add_argument("--normalize", choices=[str(n) for n in SUPPORTED_NORMALIZATIONS],
                        help="eligibility normalisation of ghl/hebb (default 'max', the paper's): 'mean' (E / "
                        "mean|E|), 'rms', 'channel' (per output channel max), 'channel-mean', 'None' (raw E)")
    parser.add_argument("--val-split", type=cli.open_fraction, metavar="FRACTION", help="hold this fraction of the "
                        "training images out (stratified per class, seeded by --split-seed) as a validation set; "
                        "runs then train on the rest and report validation accuracy (see --eval-on)")
    parser.add_argument("--split-seed", type=cli.nonnegative_int, default=0, help="seed of the validation split "
                        "(default 0)")
    parser.add_argument("--eval-on", choices=("val", "test"), help="what the per-epoch accuracy is measured on "
                        "(default: 'val' with --val-split, else 'test'); choose hyper-parameters on 'val', then "
                        "rerun only the chosen configuration with --eval-on test")
    cli.add_common_arguments(parser, out_default="runs/cifar", amp=True, epochs_help="epochs (the paper: 100)",
                             out_layout=" (a run writes into DIR/<preset>/<method>/seed<k>/)",
                             data_help="the folder holding cifar10-jpeg/ or cifar-10-batches-py/ (cifar100-jpeg/ "
                                       "or cifar-100-python/ for CIFAR-100)")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR when online")
    parser.add_argument("--monitor", help="diagnostics recorded on the hidden convolutions: 'alignment' (Hebbian "
                        "alignment of the updates), 'competition' (Gini of per-neuron update sizes, dead fraction) "
                        "or both, comma-separated; written as <run>/alignment.csv/.png, competition.csv/.png")
    parser.add_argument("--monitor-every", type=cli.positive_int, default=10, help="record the monitors every k-th "
                        "step (default 10)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for the convolutions")
    return parser


def preset_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Preset:
    """The chosen preset with the command line's overrides; ``parser.error`` (one line, exit 2) on bad input."""
    overrides = {key: getattr(args, key) for key in ("epochs", "width", "batch_size", "bp_lr", "train_subset",
                                                     "test_subset", "conv_lr", "head_lr", "lr", "weight_decay",
                                                     "tau", "eligibility_fraction", "threads")
                 if getattr(args, key) is not None}
    if args.normalize is not None:
        overrides["normalize"] = None if args.normalize == "None" else args.normalize
    if args.eval_on == "val" and args.val_split is None:
        parser.error("--eval-on val needs --val-split FRACTION")
    if args.augment:
        overrides["augment"] = True
    if args.methods:
        overrides["methods"] = tuple(args.methods)
    try:
        parse_monitor_spec(args.monitor)
    except ValueError as error:
        parser.error(str(error))
    preset = replace(PRESETS[args.preset], **overrides)
    with torch.device("meta"):  # layer names for --tau, without allocating the network
        model = MODELS[preset.model](num_classes=CLASS_COUNTS.get(preset.dataset, 10), width=preset.width)
    try:
        plastic_taus(model, preset.tau)
    except ValueError as error:
        parser.error(str(error))
    return preset


#: classes per data set (for the checks made before any data is decoded)
CLASS_COUNTS = {"digits": 10, "cifar10": 10, "cifar100": 100}


def checkpoint_bytes(preset: Preset) -> int:
    """Disk space the preset's runs need: per run a checkpoint (weights + optimiser state) and a temporary copy."""
    with torch.device("meta"):
        model = MODELS[preset.model](num_classes=CLASS_COUNTS.get(preset.dataset, 10), width=preset.width)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * weights + 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options with ``args.settings``, the chosen preset with the command line's overrides (a bad value
    exits with one line, exit code 2, before anything is read); ``--threads`` defaults to the preset's."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.settings = preset_from_args(parser, args)
    args.threads = args.settings.threads
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train every (seed, method) of the preset into ``<out>/<preset>/`` and write the summary; under torchrun
    (``args.dist``) each process trains its shard and rank 0 writes."""
    preset, out = args.settings, Path(args.out) / args.preset
    ctx = getattr(args, "dist", None)
    device = ctx.device if ctx is not None else select_device(args.device)
    return _main(args, preset, device, ctx, out)


main, cli_main = cli.entry_points(parse_args, run, out=lambda args: Path(args.out) / args.preset,
                                  need_bytes=lambda args: args.seeds * len(args.settings.methods)
                                  * checkpoint_bytes(args.settings), distributed=True)


def _main(args: argparse.Namespace, preset: Preset, device: torch.device, ctx: Any, out: Path) -> dict[str, Any]:
    main_rank = ctx is None or ctx.is_main
    eval_on = args.eval_on or ("val" if args.val_split is not None else "test")
    options = {"eval_on": eval_on, "val_split": args.val_split, "split_seed": args.split_seed, "amp": args.amp,
               "channels_last": args.channels_last, "world_size": ctx.world_size if ctx is not None else 1}
    runs = [(seed, method) for seed in range(args.seed, args.seed + args.seeds) for method in preset.methods]
    plans = {}
    for seed, method in runs:  # before any decoding: nothing is overwritten by surprise (RunExists -> exit 2)
        epochs = None if method == "softhebb" else preset.epochs
        plans[seed, method] = plan_run(out / method / f"seed{seed}", epochs,
                                       run_identity(method, preset, seed, **options), args.resume, args.force)
    todo = [run for run in runs if plans[run] != SKIP]
    train = test = None
    if todo:
        check_data(preset, args.data_root, args.download)
        train, test = load_data(preset, args.data_root, args.download, seed=args.seed)
        if args.val_split is not None:
            try:
                train, val = split_validation(train, args.val_split, seed=args.split_seed)
            except ValueError as error:
                raise cli.CliError(f"--val-split: {error}") from None
            if eval_on == "val":
                test = val
    if main_rank:
        sizes = f"{len(train)} train / {len(test)} {eval_on}" if train is not None else "all runs finished"
        print(f"{args.preset}: {preset.model} width {preset.width} on {preset.dataset} ({sizes}), methods "
              f"{', '.join(preset.methods)}, {preset.epochs} epochs, {args.seeds} seed(s), device {device} -> {out}")
    results: dict[str, list[dict[str, Any]]] = {}
    run_dirs: dict[str, list[Path]] = {}
    for seed, method in runs:
        run_dir = out / method / f"seed{seed}"
        if plans[seed, method] == SKIP:
            if main_rank:
                print(f"{method} seed {seed}: finished run in {run_dir}, not retrained (--force retrains)")
            result = json.loads((run_dir / "results.json").read_text())
        else:
            try:
                result = run_method(method, preset, train, test, seed, run_dir, device, resume=args.resume,
                                    config={"argv": sys.argv, **options}, ctx=ctx,
                                    amp=args.amp, channels_last=args.channels_last, monitor=args.monitor,
                                    monitor_every=args.monitor_every, force=args.force, identity=options,
                                    quiet=args.quiet, split=eval_on)
            except TrainingDiverged as error:
                raise TrainingDiverged(f"{method} seed {seed}: {error}") from None
        results.setdefault(method, []).append(result)
        run_dirs.setdefault(method, []).append(run_dir)
    if not main_rank:
        return {}
    rows = summarise(results, eval_on)
    table = markdown_table(rows)
    print(table)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(table + "\n")
    summary = {"preset": asdict(preset), "eval_on": eval_on, "rows": rows, "runs": results}
    write_json(out / "summary.json", summary)
    plot_accuracy_per_epoch(out, run_dirs, f"{args.preset} (width {preset.width})", eval_on)
    return summary


if __name__ == "__main__":
    sys.exit(cli_main())
