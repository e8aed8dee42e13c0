"""``python -m ghl_snn.experiments.cifar``: the GHL paper's CIFAR experiments (Tables 1 and 5) in one harness.

Methods (all on the same network, data, batch size, epochs and per-iteration cosine schedule):

* ``ghl``      GHL (GradSign ⊙ |SWTA-Oja|) on the hidden convolutions, backprop for the rest (paper).
* ``sign``     sign-only ablation (Table 5): ``.grad = sign(dL/dW)`` on the hidden convolutions.
* ``hebb``     local SWTA-Oja only (no global sign) on the hidden convolutions; the classifier learns by backprop.
* ``bp``       end-to-end backprop with a standard recipe: SGD momentum 0.9, its own learning rate, weight decay 5e-4.
* ``bp-same``  end-to-end backprop with exactly GHL's optimiser settings.
* ``softhebb`` the DeepHebb protocol (Fig. 2 baseline): one unsupervised SoftHebb epoch per plastic layer, then the
  classifier by backprop (:func:`ghl_snn.rules.softhebb.train_softhebb`; single process).

Presets: Table 1/5 rows ``<deephebb|fasthebb>-<cifar10|cifar100>-<method>``; Table 2/4 rows
``<vgg16|vgg14|resnet20|...|resnet1202>-cifar10-<ghl|bp>``; Fig. 2 ``fig2-d<depth>-x<growth>-<relu|triangle>-
<ghl|softhebb>``.  ``torchrun --nproc_per_node N -m ghl_snn.experiments.cifar ...`` trains with
DistributedDataParallel (:mod:`ghl_snn.experiments.distributed`); ``--amp bf16|fp16`` and ``--channels-last``.

``--preset quickstart`` needs no download: scikit-learn's embedded 8×8 digits, upsampled to 32×32 RGB.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets.cifar import BatchStream, ImageData, load_cifar, load_digits_as_cifar
from ..modulators import GradSign, Ones, SignOnly
from ..models import MODELS
from ..plasticity import GHL
from ..diagnostics.monitors import make_monitors, parse_monitor_spec, write_monitors
from .common import markdown_table, seed_everything, select_device, write_json
from .distributed import cleanup_distributed, init_distributed, launched_by_torchrun
from .runner import Trainer, TrainingDiverged, fit

METHODS = ("ghl", "sign", "hebb", "bp", "bp-same", "softhebb")
MODULATORS = {"ghl": GradSign, "sign": SignOnly, "hebb": Ones}


@dataclass(frozen=True)
class OptimiserSettings:
    """SGD settings of the two parameter groups: plastic convolutions and everything else."""

    conv_lr: float
    conv_weight_decay: float
    rest_lr: float
    rest_weight_decay: float = 0.0
    momentum: float = 0.0


# the GHL reference hyper-parameters (issue #3): SGD without momentum, two parameter groups
GHL_SETTINGS = {
    "deephebb": OptimiserSettings(conv_lr=1e-2, conv_weight_decay=5e-2, rest_lr=5e-3),
    "fasthebb": OptimiserSettings(conv_lr=5e-2, conv_weight_decay=1e-2, rest_lr=1e-4),
}
# the standard backprop recipe ("bp"): one learning rate for everything, momentum 0.9, weight decay 5e-4
BP_SETTINGS = OptimiserSettings(conv_lr=0.02, conv_weight_decay=5e-4, rest_lr=0.02, rest_weight_decay=5e-4,
                                momentum=0.9)
# Tables 2/4 (VGG, ResNet): the paper gives no GHL hyper-parameters for them; this package's choice
DEEP_GHL_SETTINGS = OptimiserSettings(conv_lr=1e-2, conv_weight_decay=5e-4, rest_lr=1e-2, rest_weight_decay=5e-4,
                                      momentum=0.9)
TABLE4_MODELS = ("vgg14", "vgg16", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")
#: paper accuracy (%) of the GHL rows of Tables 2 and 4 (CIFAR-10)
TABLE4_GHL_ACC = {"vgg14": 89.29, "vgg16": 89.48, "resnet20": 86.72, "resnet32": 86.86, "resnet44": 87.09,
                  "resnet56": 87.17, "resnet110": 87.21, "resnet1202": 86.97}
GHL_SETTINGS.update({model: DEEP_GHL_SETTINGS for model in TABLE4_MODELS})
GHL_SETTINGS.update({model: GHL_SETTINGS["deephebb"] for model in MODELS if model.startswith("plain-")})


@dataclass(frozen=True)
class Preset:
    """One row of a paper table (or the quick start): network, data, methods and schedule."""

    model: str
    dataset: str
    methods: tuple[str, ...]
    epochs: int = 100
    batch_size: int = 64
    width: float = 1.0
    description: str = ""
    bp_lr: float = BP_SETTINGS.conv_lr
    augment: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    eligibility_fraction: float = 1.0


def _paper_presets() -> dict[str, Preset]:
    presets = {}
    tables = {"ghl": "Table 1 GHL", "bp": "Table 1 E2E BP (standard recipe)", "bp-same": "E2E BP with GHL's "
              "optimiser settings", "sign": "Table 5 sign-only ablation", "hebb": "local SWTA-Oja only",
              "softhebb": "Table 1 SoftHebb (layer-wise unsupervised, then classifier)"}
    for model in ("deephebb", "fasthebb"):
        for dataset in ("cifar10", "cifar100"):
            for method in METHODS:
                if method == "softhebb" and model != "deephebb":  # Table 1 has SoftHebb on DeepHebb only
                    continue
                presets[f"{model}-{dataset}-{method}"] = Preset(model, dataset, (method,),
                                                                 description=f"{tables[method]}, {model}, {dataset}")
    for model in TABLE4_MODELS:  # Tables 2 and 4 (He et al. recipe: crop + flip augmentation, batch 128)
        for method in ("ghl", "bp"):
            presets[f"{model}-cifar10-{method}"] = Preset(
                model, "cifar10", (method,), batch_size=128, augment=True,
                description=f"Table 2/4 {'GHL' if method == 'ghl' else 'E2E BP'}, {model}, cifar10"
                            + (f" (paper {TABLE4_GHL_ACC[model]}%)" if method == "ghl" else ""))
    for model in MODELS:  # Fig. 2: depth x width growth x activation, SoftHebb vs GHL
        if model.startswith("plain-"):
            for method in ("ghl", "softhebb"):
                presets[f"fig2-{model[len('plain-'):]}-{method}"] = Preset(
                    model, "cifar10", (method,), description=f"Fig. 2 {method}, {model}, cifar10")
    presets["quickstart"] = Preset("deephebb", "digits", ("ghl", "bp"), epochs=4, batch_size=32, width=0.125,
                                   description="embedded scikit-learn digits upsampled to 32x32, no download")
    return presets


PRESETS = _paper_presets()


def optimiser_for(method: str, preset: Preset, model: nn.Module, plastic: set[str]) -> torch.optim.SGD:
    """SGD with the method's parameter groups: ``bp`` uses the standard recipe, all others GHL's settings."""
    settings = replace(BP_SETTINGS, conv_lr=preset.bp_lr, rest_lr=preset.bp_lr) if method == "bp" \
        else GHL_SETTINGS[preset.model]
    conv_params = [p for name, m in model.named_modules() if name in plastic for p in m.parameters()]
    conv_ids = {id(p) for p in conv_params}
    rest_params = [p for p in model.parameters() if id(p) not in conv_ids]
    return torch.optim.SGD([
        {"params": conv_params, "lr": settings.conv_lr, "weight_decay": settings.conv_weight_decay},
        {"params": rest_params, "lr": settings.rest_lr, "weight_decay": settings.rest_weight_decay},
    ], momentum=settings.momentum)


def build_rule(method: str, model: nn.Module, eligibility_fraction: float = 1.0) -> GHL | None:
    """The plasticity rule of ``method`` on the model's hidden convolutions (``None`` for the backprop baselines)."""
    if method not in MODULATORS:
        return None
    plastic_taus = model.plastic_taus
    return GHL(model, tau=plastic_taus, layers=list(plastic_taus), modulator=MODULATORS[method](),
               eligibility_fraction=eligibility_fraction)


def load_data(preset: Preset, data_root: str | None, download: bool) -> tuple[ImageData, ImageData]:
    if preset.dataset == "digits":
        return load_digits_as_cifar(train=True), load_digits_as_cifar(train=False)
    return (load_cifar(preset.dataset, data_root, train=True, download=download),
            load_cifar(preset.dataset, data_root, train=False, download=download))


def run_method(method: str, preset: Preset, train: ImageData, test: ImageData, seed: int, out_dir: Path,
               device: torch.device, resume: bool = False, config: dict[str, Any] | None = None,
               ctx: Any | None = None, amp: str | None = None, channels_last: bool = False,
               monitor: str | None = None, monitor_every: int = 10) -> dict[str, Any]:
    """Train one method with one seed; returns its results dict (see :func:`ghl_snn.experiments.runner.fit`).

    ``ctx`` (a :class:`ghl_snn.experiments.distributed.DistContext`), ``amp`` and ``channels_last`` select the
    DDP / mixed-precision path of :mod:`ghl_snn.experiments.distributed`; by default the plain single-process loop.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    seed_everything(seed)
    model = MODELS[preset.model](num_classes=len(train.classes), width=preset.width).to(device)
    plastic_taus = model.plastic_taus
    if method == "softhebb":
        return run_softhebb_method(model, preset, train, test, seed, out_dir, device, config)
    if ctx is not None and ctx.distributed or amp is not None or channels_last:
        return _run_scaled(method, preset, model, train, test, seed, out_dir, device, resume, config, ctx, amp,
                           channels_last)
    rule = build_rule(method, model, preset.eligibility_fraction)
    optimizer = optimiser_for(method, preset, model, set(plastic_taus))
    train_stream = BatchStream(train, preset.batch_size, device, shuffle=True, augment=preset.augment, seed=seed)
    test_stream = BatchStream(test, 500, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=preset.epochs * len(train_stream),
                                                           eta_min=0.0)
    trainer = Trainer(model, optimizer, scheduler, rule)
    # diagnostics on the hidden convolutions, for every method alike (hooks on optimizer.step)
    monitors = make_monitors(monitor, model, optimizer, layers=list(plastic_taus), every=monitor_every)
    run_config = {**(config or {}), "method": method, "seed": seed, "preset": asdict(preset),
                  "optimizer": repr(optimizer), "plastic_layers": plastic_taus if rule else {},
                  "device": str(device), "train_samples": len(train), "test_samples": len(test),
                  "monitor": monitor, "monitor_every": monitor_every, "torch": torch.__version__}
    results = fit(trainer, train_stream.epoch, lambda: test_stream.epoch(0), preset.epochs, out_dir, run_config,
                  resume=resume, steps_per_epoch=len(train_stream), device=device, desc=f"{method} s{seed}")
    write_monitors(monitors, out_dir)
    return results


def run_softhebb_method(model: nn.Module, preset: Preset, train: ImageData, test: ImageData, seed: int,
                        out_dir: Path, device: torch.device, config: dict[str, Any] | None) -> dict[str, Any]:
    """Fig. 2's SoftHebb baseline: layer-wise unsupervised SoftHebb, then ``preset.epochs`` classifier epochs."""
    from ..rules.softhebb import train_softhebb
    from .distributed import AmpTrainer

    stream = BatchStream(train, preset.batch_size, device, shuffle=True, augment=preset.augment, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", {**(config or {}), "method": "softhebb", "seed": seed,
                                         "preset": asdict(preset), "plastic_layers": model.plastic_taus,
                                         "device": str(device), "torch": torch.__version__})
    history = train_softhebb(model, model.plastic_taus, stream.epoch, classifier_epochs=preset.epochs)
    trainer = AmpTrainer(model, torch.optim.SGD(model.parameters(), lr=0.0))
    metrics = trainer.evaluate(BatchStream(test, 500, device).epoch(0))
    results = {"final_test_acc": metrics["test_acc"], "best_test_acc": metrics["test_acc"], "best_epoch": 1,
               "epochs": preset.epochs, "wall_time_s": float("nan"), "images_per_s": float("nan"),
               "peak_memory_mib": float("nan"), "phases": history}
    write_json(out_dir / "results.json", results)
    return results


def _run_scaled(method: str, preset: Preset, model: nn.Module, train: ImageData, test: ImageData, seed: int,
                out_dir: Path, device: torch.device, resume: bool, config: dict[str, Any] | None, ctx: Any,
                amp: str | None, channels_last: bool) -> dict[str, Any]:
    """:func:`run_method` under DistributedDataParallel and/or AMP / channels_last (rank 0 writes the outputs)."""
    from .distributed import AmpTrainer, DistContext, ShardedStream, finish_rank, rank_out_dir, wrap_model

    ctx = ctx if ctx is not None else DistContext(device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    plastic_taus = model.plastic_taus
    rule = build_rule(method, model, preset.eligibility_fraction)
    optimizer = optimiser_for(method, preset, model, set(plastic_taus))
    if preset.batch_size % ctx.world_size:
        raise ValueError(f"batch size {preset.batch_size} must divide evenly over {ctx.world_size} processes")
    stream = BatchStream(train, preset.batch_size, device, shuffle=True, augment=preset.augment, seed=seed,
                         drop_last=ctx.distributed)
    train_stream = ShardedStream(stream, ctx)
    test_stream = BatchStream(test, 500, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=preset.epochs * len(train_stream),
                                                           eta_min=0.0)
    trainer = AmpTrainer(wrap_model(model, ctx), optimizer, scheduler, rule, amp=amp, channels_last=channels_last)
    run_config = {**(config or {}), "method": method, "seed": seed, "preset": asdict(preset),
                  "optimizer": repr(optimizer), "plastic_layers": plastic_taus if rule else {},
                  "device": str(device), "world_size": ctx.world_size, "amp": amp, "channels_last": channels_last,
                  "train_samples": len(train), "test_samples": len(test), "torch": torch.__version__}
    run_dir = rank_out_dir(out_dir, ctx, resume)
    try:
        return fit(trainer, train_stream.epoch, lambda: test_stream.epoch(0), preset.epochs, run_dir, run_config,
                   resume=resume, steps_per_epoch=len(train_stream), device=device, desc=f"{method} s{seed}")
    finally:
        finish_rank(run_dir, out_dir)
        if rule is not None:
            rule.remove()


def summarise(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per method: mean ± std over seeds of final and best test accuracy, time per epoch and peak memory."""
    rows = []
    for method, runs in results.items():
        def mean_std(key: str, scale: float = 1.0) -> str:
            values = [run[key] * scale for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.2f} ± {spread:.2f}" if len(values) > 1 else f"{values[0]:.2f}"
        rows.append({"method": method, "seeds": len(runs), "final acc %": mean_std("final_test_acc", 100),
                     "best acc %": mean_std("best_test_acc", 100),
                     "s/epoch": f"{statistics.mean(r['wall_time_s'] / r['epochs'] for r in runs):.1f}",
                     "images/s": f"{statistics.mean(r['images_per_s'] for r in runs):.0f}",
                     "peak MiB": f"{max(r['peak_memory_mib'] for r in runs):.0f}"})
    return rows


def plot_accuracy_per_epoch(out: Path, run_dirs: dict[str, list[Path]], title: str) -> None:
    """Mean test accuracy per epoch of every method (shaded min-max over seeds) -> ``accuracy.png``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for method, dirs in run_dirs.items():
        curves = []
        for run_dir in dirs:
            with open(run_dir / "metrics.csv") as handle:
                curves.append([100 * float(row["test_acc"]) for row in csv.DictReader(handle)])
        length = min(len(c) for c in curves)
        epochs = range(1, length + 1)
        columns = list(zip(*(c[:length] for c in curves)))
        axis.plot(epochs, [statistics.mean(c) for c in columns], marker="o", ms=3, label=method)
        axis.fill_between(epochs, [min(c) for c in columns], [max(c) for c in columns], alpha=0.2)
    axis.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ghl_snn.experiments.cifar", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quickstart",
                        help="paper-table row <model>-<dataset>-<method> or 'quickstart' (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print every preset with its settings and exit")
    parser.add_argument("--methods", help="comma-separated methods to run instead of the preset's, e.g. "
                        "ghl,bp,bp-same,sign,hebb")
    parser.add_argument("--epochs", type=int, help="number of epochs (default: the preset's; the paper uses 100)")
    parser.add_argument("--width", type=float, help="channel multiplier of the network (1.0 = the paper's)")
    parser.add_argument("--batch-size", type=int, help="mini-batch size (paper: 64)")
    parser.add_argument("--train-subset", type=int, help="train on a random subset of this many images")
    parser.add_argument("--test-subset", type=int, help="evaluate on a fixed random subset of this many test "
                        "images (saves time on a CPU; default: the whole test set)")
    parser.add_argument("--eligibility-fraction", type=float, help="GHL methods: estimate E from this random "
                        "fraction of each batch (0 < f <= 1; default 1 = exact)")
    parser.add_argument("--augment", action="store_true", help="random crop (padding 4) + horizontal flip "
                        "(off by default, as in the paper's code)")
    parser.add_argument("--bp-lr", type=float, help="learning rate of the 'bp' baseline (default 0.02)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the first run (default 0)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed+1, ...); reports "
                        "mean ± std")
    parser.add_argument("--data-root", help="CIFAR folder: ImageFolder tree <root>/{train,test}/<class>/* or "
                        "torchvision's official format (default: $GHL_SNN_DATA)")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR when online")
    parser.add_argument("--out", default="runs/cifar", help="output folder (default runs/cifar)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda:0', ...")
    parser.add_argument("--resume", action="store_true", help="continue every run from its checkpoint.pt")
    parser.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (autocast; fp16 with GradScaler)")
    parser.add_argument("--monitor", help="diagnostics recorded on the hidden convolutions: 'alignment' (Hebbian "
                        "alignment of the updates), 'competition' (Gini of per-neuron update sizes, dead fraction) "
                        "or both, comma-separated; written as <run>/alignment.csv/.png, competition.csv/.png")
    parser.add_argument("--monitor-every", type=int, default=10, help="record the monitors every k-th step "
                        "(default 10)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for the convolutions")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:28s} {preset.model:9s} {preset.dataset:9s} methods={','.join(preset.methods):8s} "
                  f"epochs={preset.epochs} batch={preset.batch_size} width={preset.width}  {preset.description}")
        return 0
    if args.preset not in PRESETS:
        print(f"error: unknown preset {args.preset!r}; available: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    overrides = {key: value for key, value in (("epochs", args.epochs), ("width", args.width),
                                               ("batch_size", args.batch_size), ("bp_lr", args.bp_lr),
                                               ("train_subset", args.train_subset),
                                               ("test_subset", args.test_subset),
                                               ("eligibility_fraction", args.eligibility_fraction))
                 if value is not None}
    if args.augment:
        overrides["augment"] = True
    if args.methods:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            print(f"error: unknown method(s) {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
            return 2
        overrides["methods"] = methods
    preset = replace(preset, **overrides)
    try:
        parse_monitor_spec(args.monitor)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    device = select_device(args.device)
    ctx = None
    if launched_by_torchrun():  # torchrun: DistributedDataParallel, rank 0 prints and writes
        ctx = init_distributed(device)
        device = ctx.device
    try:
        return _main(args, preset, device, ctx, argv)
    finally:
        if ctx is not None:
            cleanup_distributed()


def _main(args: argparse.Namespace, preset: Preset, device: torch.device, ctx: Any, argv: list[str] | None) -> int:
    main_rank = ctx is None or ctx.is_main
    try:
        train, test = load_data(preset, args.data_root, args.download)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train = train.subset(preset.train_subset, seed=args.seed)
    test = test.subset(preset.test_subset, seed=12345)
    out = Path(args.out) / args.preset
    if main_rank:
        print(f"{args.preset}: {preset.model} width {preset.width} on {preset.dataset} ({len(train)} train / "
              f"{len(test)} test), methods {', '.join(preset.methods)}, {preset.epochs} epochs, {args.seeds} "
              f"seed(s), device {device} -> {out}")
    results: dict[str, list[dict[str, Any]]] = {}
    run_dirs: dict[str, list[Path]] = {}
    for seed in range(args.seed, args.seed + args.seeds):
        for method in preset.methods:
            run_dir = out / method / f"seed{seed}"
            try:
                result = run_method(method, preset, train, test, seed, run_dir, device, resume=args.resume,
                                    config={"argv": sys.argv if argv is None else argv}, ctx=ctx, amp=args.amp,
                                    channels_last=args.channels_last, monitor=args.monitor,
                                    monitor_every=args.monitor_every)
            except TrainingDiverged as error:
                print(f"error: {method} seed {seed}: {error}", file=sys.stderr)
                return 3
            except KeyboardInterrupt:
                print(f"\ninterrupted: {run_dir / 'checkpoint.pt'} holds the last finished epoch; rerun the same "
                      "command with --resume to continue", file=sys.stderr)
                return 130
            results.setdefault(method, []).append(result)
            run_dirs.setdefault(method, []).append(run_dir)
    if not main_rank:
        return 0
    rows = summarise(results)
    table = markdown_table(rows)
    print(table)
    (out / "summary.md").write_text(table + "\n")
    write_json(out / "summary.json", {"preset": asdict(preset), "rows": rows, "runs": results})
    plot_accuracy_per_epoch(out, run_dirs, f"{args.preset} (width {preset.width})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
