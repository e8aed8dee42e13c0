"""``python -m ghl_snn.experiments.imagenet --preset resnet50-ghl --data-root DIR``: GHL paper Table 3 (ImageNet).

One preset per row of Table 3 (``--list-presets``); ``<model>-<method>`` with model ``deephebb``, ``fasthebb``,
``vgg16``, ``resnet18``, ``resnet50`` and method

* ``ghl``       GradSign ⊙ |SWTA-Oja| on every hidden conv / linear layer, backprop for the classifier, BN, biases;
* ``bp``        end-to-end backprop (torchvision reference recipe: SGD momentum 0.9, lr 0.1 per 256 images,
                weight decay 1e-4, cosine schedule);
* ``swta``      local SWTA-Oja only (the SWTA-FH row: no global sign), classifier by backprop;
* ``softhebb``  the DeepHebb protocol ([`ghl_snn.learners.softhebb.train_softhebb`][]): one unsupervised SoftHebb
                epoch per layer, then the classifier by backprop (single process only);
* ``sign``      the sign-only ablation (``.grad = sign(dL/dW)``).

* ``hpca``      local Hebbian PCA only (the HPCA-FH row, [`ghl_snn.rules.softhebb.HPCA`][]), classifier by
                backprop.

Data: [`ghl_snn.datasets.imagenet`][] (ImageFolder ``<root>/{train,val}/<class>/``).  Multi-GPU /
multi-node: launch with ``torchrun`` ([`ghl_snn.comparison.distributed`][]); ``--amp bf16|fp16`` and
``--channels-last`` for speed.  Outputs (rank 0): ``<out>/<preset>/seed<k>/{config.json, metrics.csv (with top-5),
results.json (final/best top-1 and top-5), curves.png, checkpoint.pt}``; ``--resume`` continues from the checkpoint.

The paper gives no ImageNet hyper-parameters for GHL; the defaults below (plastic layers: SGD lr 0.01 with
momentum 0.9, weight decay 5e-5) are this package's choice, not the paper's, and are overridable.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets.imagenet import imagenet_loaders
from ..models.imagenet import IMAGENET_MODELS
from ..plasticity import GHL
from ..datasets.imagenet import check_imagenet_root
from ..comparison import cli
from ..comparison import methods as registry
from ..comparison.common import seed_everything, select_device, write_json
from ..comparison.distributed import AmpTrainer, DistContext, finish_rank, rank_out_dir, wrap_model
from ..comparison.runner import SKIP, fit, plan_run

#: this experiment's rows without a plastic rule; every registry method that learns from the loss runs too
ROWS = ("bp", "softhebb")
METHODS = tuple(registry.method_names(("ghl", "swta", "sign", "hpca", *ROWS), reward=False))


@dataclass(frozen=True)
class ImageNetPreset:
    """One row of Table 3: network, method, schedule and optimiser settings (batch size is the global one)."""

    model: str
    method: str
    epochs: int = 90
    batch_size: int = 256
    image_size: int = 224
    lr: float = 0.1              # backprop parameters (classifier, BN, biases; everything for "bp"), per 256 images
    weight_decay: float = 1e-4
    plastic_lr: float = 0.01     # GHL-plastic weights
    plastic_weight_decay: float = 5e-5
    momentum: float = 0.9
    width: float = 1.0
    amp: str | None = "bf16"
    paper_top1: float | None = None
    paper_top5: float | None = None
    description: str = ""


#: (model, method) -> paper Table 3 (top-1, top-5)
TABLE3 = {
    ("deephebb", "softhebb"): (26.08, 41.05), ("deephebb", "ghl"): (53.71, 76.02), ("deephebb", "bp"): (58.84, 80.48),
    ("fasthebb", "swta"): (4.75, 12.49), ("fasthebb", "hpca"): (19.42, 42.22), ("fasthebb", "ghl"): (50.80, 74.56),
    ("fasthebb", "bp"): (56.64, 79.64),
    ("vgg16", "ghl"): (65.58, 86.49), ("vgg16", "bp"): (71.50, 90.10),
    ("resnet18", "ghl"): (65.78, 86.45), ("resnet18", "bp"): (69.57, 89.24),
    ("resnet50", "ghl"): (73.14, 91.04), ("resnet50", "bp"): (75.99, 92.98),
}


def _presets() -> dict[str, ImageNetPreset]:
    presets = {}
    for (model, method), (top1, top5) in TABLE3.items():
        presets[f"{model}-{method}"] = ImageNetPreset(
            model, method, paper_top1=top1, paper_top5=top5,
            description=f"Table 3: {model} {method} (paper top-1 {top1}, top-5 {top5})")
    return presets


PRESETS = _presets()


def optimiser(preset: ImageNetPreset, model: nn.Module, plastic: set[str], global_batch: int) -> torch.optim.SGD:
    """SGD with two groups: plastic weights (``plastic_lr``) and the rest (``lr`` scaled by batch / 256)."""
    named = dict(model.named_modules())
    plastic_params = [named[name].weight for name in plastic] if preset.method != "bp" else []
    ids = {id(p) for p in plastic_params}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": preset.lr * global_batch / 256, "weight_decay": preset.weight_decay}]
    if plastic_params:
        groups.insert(0, {"params": plastic_params, "lr": preset.plastic_lr,
                          "weight_decay": preset.plastic_weight_decay})
    return torch.optim.SGD(groups, momentum=preset.momentum)


def build_rule(method: str, model: nn.Module) -> GHL | None:
    """The registry's learner of ``method`` ([`ghl_snn.comparison.methods`][]: ``ghl``, ``sign``, ``swta``,
    ``hpca``, any modulator) on the model's ``plastic_taus`` layers; ``None`` for ``bp`` and ``softhebb``."""
    if method in ROWS:
        return None
    taus = model.plastic_taus
    return registry.build_learner(method, model, tau=taus, layers=list(taus))


def run_softhebb(model: nn.Module, trainer: AmpTrainer, train_loader: Any, val_loader: Any, out_dir: Path,
                 config: dict[str, Any], classifier_epochs: int, max_steps: int | None) -> dict[str, Any]:
    """The DeepHebb protocol (layer-wise SoftHebb, then the classifier by backprop) and one evaluation."""
    from ..learners.softhebb import train_softhebb

    device = trainer.device

    def batches(epoch: int):
        for images, labels in train_loader.epoch(epoch):
            yield images.to(device), labels.to(device)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", config)
    history = train_softhebb(model, model.plastic_taus, batches, classifier_epochs=classifier_epochs,
                             max_steps=max_steps)
    metrics = trainer.evaluate(val_loader.epoch(0))
    results = {"final_test_acc": metrics["test_acc"], "best_test_acc": metrics["test_acc"],
               "final_top5": metrics["test_top5"], "best_top5": metrics["test_top5"], "phases": history}
    write_json(out_dir / "results.json", results)
    return results


def run(preset: ImageNetPreset, data_root: str | None, out_dir: Path, seed: int, ctx: DistContext, workers: int,
        resume: bool = False, channels_last: bool = False, sync_bn: bool = False, max_steps: int | None = None,
        config: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Train and evaluate one preset on this process; rank 0 writes the outputs and gets the results dict.

    An existing run in ``out_dir`` is skipped when finished, continued with ``resume``, replaced with ``force``
    ([`ghl_snn.comparison.runner.plan_run`][])."""
    if preset.method == "softhebb" and ctx.distributed:
        raise NotImplementedError("the SoftHebb protocol runs in a single process (its phases freeze parameters, "
                                  "which DistributedDataParallel does not allow); launch without torchrun")
    if preset.batch_size % ctx.world_size:
        raise ValueError(f"global batch {preset.batch_size} must divide evenly over {ctx.world_size} processes")
    train_loader, val_loader, classes = imagenet_loaders(
        data_root, preset.batch_size // ctx.world_size, workers, preset.image_size, seed, ctx.rank, ctx.world_size,
        pin_memory=ctx.device.type == "cuda")
    seed_everything(seed)
    model = IMAGENET_MODELS[preset.model](num_classes=len(classes), width=preset.width).to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    plastic = set(model.plastic_taus)
    rule = build_rule(preset.method, model)
    optimizer = optimiser(preset, model, plastic, preset.batch_size)
    steps = len(train_loader) if max_steps is None else min(len(train_loader), max_steps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, preset.epochs * steps))
    wrapped = wrap_model(model, ctx, sync_bn)
    trainer = AmpTrainer(wrapped, optimizer, scheduler, rule, amp=preset.amp, channels_last=channels_last,
                         max_steps=max_steps, shard_eval=True)
    identity = {"preset": asdict(preset), "seed": seed, "world_size": ctx.world_size, "max_steps": max_steps,
                "channels_last": channels_last, "sync_bn": sync_bn}
    run_config = {**(config or {}), "run_identity": identity, "seed": seed, "preset": asdict(preset),
                  "world_size": ctx.world_size,
                  "plastic_layers": sorted(plastic) if rule else [], "classes": len(classes),
                  "optimizer": repr(optimizer), "device": str(ctx.device), "torch": torch.__version__}
    run_dir = rank_out_dir(out_dir, ctx, resume, force)
    try:
        if preset.method == "softhebb":
            if plan_run(run_dir, None, identity, resume or not (run_dir / "results.json").is_file(), force) == SKIP:
                return json.loads((run_dir / "results.json").read_text())
            return run_softhebb(model, trainer, train_loader, val_loader, run_dir, run_config,
                                classifier_epochs=preset.epochs, max_steps=max_steps)
        results = fit(trainer, train_loader.epoch, lambda: val_loader.epoch(0), preset.epochs, run_dir, run_config,
                      resume=resume, steps_per_epoch=steps, device=ctx.device,
                      desc=f"{preset.model}-{preset.method}", force=force)
        if "final_top5" in results:  # a finished run that was skipped
            return results
        top5 = [row["test_top5"] for row in trainer.history]
        results.update({"final_top5": top5[-1], "best_top5": max(top5), "paper_top1": preset.paper_top1,
                        "paper_top5": preset.paper_top5})
        if ctx.is_main:
            write_json(run_dir / "results.json", results)
        return results
    finally:
        finish_rank(run_dir, out_dir)
        if rule is not None:
            rule.remove()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.imagenet", __doc__)
    cli.add_preset_arguments(parser, PRESETS, "resnet50-ghl", lambda name, preset: (
        f"{name:20s} epochs={preset.epochs} batch={preset.batch_size} amp={preset.amp}  {preset.description}"),
        help="Table 3 row <model>-<method> (see --list-presets)")
    cli.add_methods_argument(parser, lambda: registry.method_names(METHODS, reward=False), None,
                             help="methods to train on the preset's network instead of its own (each writes into "
                                  "DIR/<model>-<method>/)")
    parser.add_argument("--batch-size", type=cli.positive_int, help="global batch size over all processes "
                        "(default 256)")
    parser.add_argument("--image-size", type=cli.positive_int, help="training crop size (default 224)")
    parser.add_argument("--lr", type=cli.positive_float, help="backprop learning rate per 256 images (default 0.1)")
    parser.add_argument("--plastic-lr", type=cli.positive_float, help="learning rate of the GHL-plastic weights "
                        "(default 0.01)")
    parser.add_argument("--weight-decay", type=cli.nonnegative_float, help="weight decay of the backprop "
                        "parameters (default 1e-4)")
    parser.add_argument("--plastic-weight-decay", type=cli.nonnegative_float, help="weight decay of the "
                        "GHL-plastic weights (default 5e-5)")
    parser.add_argument("--width", type=cli.positive_float, help="channel multiplier (VGG / DeepHebb / FastHebb "
                        "only; default 1)")
    parser.add_argument("--amp", choices=("bf16", "fp16", "none"), help="mixed precision (default bf16)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convs on GPUs)")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA only)")
    parser.add_argument("--workers", type=cli.nonnegative_int, default=8, help="DataLoader worker processes per "
                        "GPU (default 8)")
    parser.add_argument("--max-steps", type=cli.positive_int, help="cap train and val batches per epoch (smoke "
                        "runs)")
    cli.add_common_arguments(parser, out_default="runs/imagenet", epochs_help="epochs (the paper: 90)",
                             out_layout=" (a run writes into DIR/<model>-<method>/seed<k>/)",
                             data_help="the folder holding imagenet/{train,val}/<class>/")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options with ``args.settings``: one preset per method, the command line's overrides applied."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, key) for key in ("epochs", "batch_size", "image_size", "lr", "plastic_lr",
                                                     "weight_decay", "plastic_weight_decay", "width")
                 if getattr(args, key) is not None}
    if args.amp is not None:
        overrides["amp"] = None if args.amp == "none" else args.amp
    preset = replace(PRESETS[args.preset], **overrides)
    args.settings = [replace(preset, method=method) for method in (args.methods or [preset.method])]
    if args.sync_bn and not args.device.startswith("cuda") and not (args.device == "auto"
                                                                     and torch.cuda.is_available()):
        parser.error("--sync-bn needs CUDA")
    return args


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (method, seed) of ``args.settings``; rank 0 prints and returns the results."""
    ctx = getattr(args, "dist", None) or DistContext(device=select_device(args.device))
    if args.settings[0].batch_size % ctx.world_size:
        raise cli.CliError(f"global batch {args.settings[0].batch_size} must divide evenly over {ctx.world_size} "
                           "processes")
    check_imagenet_root(args.data_root)  # before any work: the data is there
    results = []
    for preset in args.settings:
        for seed in cli.seeds_of(args):
            out = Path(args.out) / f"{preset.model}-{preset.method}" / f"seed{seed}"
            if ctx.is_main:
                print(f"{preset.model} / {preset.method}, {preset.epochs} epochs, global batch {preset.batch_size}, "
                      f"{ctx.world_size} process(es) on {ctx.device}, amp {preset.amp} -> {out}")
            result = run(preset, args.data_root, out, seed, ctx, args.workers, resume=args.resume,
                         channels_last=args.channels_last, sync_bn=args.sync_bn, max_steps=args.max_steps,
                         config={"argv": sys.argv}, force=args.force)
            if ctx.is_main:
                print(f"top-1 {100 * result['final_test_acc']:.2f}%  top-5 {100 * result['final_top5']:.2f}%"
                      + (f"  (paper: {preset.paper_top1} / {preset.paper_top5})" if preset.paper_top1 else ""))
            results.append(result)
    return results


main, cli_main = cli.entry_points(parse_args, run_all, distributed=True,
                                  check=lambda args: check_imagenet_root(args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
