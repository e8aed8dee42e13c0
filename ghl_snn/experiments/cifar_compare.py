"""The CIFAR-10 rows of the GHL paper's Tables 1 and 5 ([`ghl_snn.experiments.cifar`][]) through the comparison
engine: every learning rate chosen on a validation split, the read-out-only control, chance, paired seeds.

    python -m ghl_snn.experiments.cifar_compare [--data-root DIR] [--out DIR] [--methods ghl sign bp hebb]
        [--width 0.125] [--pool 5000] [--epochs 3] [--seeds 3] [--tune-seeds 2]

Data: ``--pool`` training images (seeded), of which ``--val-fraction`` (stratified) is the validation split and
the rest the training set of every run; the test split is ``--test-subset`` images of the CIFAR-10 test set.  Rows
(all on DeepHebb of width ``--width``, batch 64, cosine schedule annealed to 0 over all steps):

* ``ghl``: GHL (``sign(dL/dW) ⊙ |E|/max|E|``, GHL paper Eq. 6) on the hidden convolutions, backprop on the head;
  ``ghl-channel``: the same with ``E`` normalised per output channel (``normalize="channel"``); ``ghl-mean``:
  ``E / mean|E|`` over the layer (``normalize="mean"``: the mean step of sign-only, the Hebbian shape of GHL);
* ``sign``: the sign-only ablation (``|E| := 1``, Table 5); ``hebb``: the local SWTA-Oja rule alone (no global
  sign); these three use GHL's optimiser settings (SGD without momentum, the paper's weight decays);
* ``bp``: end-to-end backprop, SGD momentum 0.9, weight decay 5e-4;
* ``readout``: the convolutions frozen at their random initialisation (learning rate 0), the head by ``bp``'s
  recipe: the control that tells whether the hidden layers learn;
* ``chance``: uniformly random guesses.

Tuned (grids extended past their edges by [`compare`][ghl_snn.comparison.engine.compare], scored by the last
epoch's validation accuracy averaged over ``--tune-seeds`` seeds; the test split is never read for a choice): the
convolutions' learning rate ``conv_lr`` of every row with plastic convolutions, from the method's default × {1/3,
1, 3}, and the head's ``head_lr`` of ``readout``; the other rows' head keeps the method's default rate, or, with
``--tune-head``, is tuned too (default × {1/3, 1, 3}, searched at the best ``conv_lr``, then both neighbours of
the best pair).  The test
split is evaluated after every epoch for the curves only.  Outputs in ``--out``: the engine's ``results.json``,
``results.md`` and ``curves.png``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

import torch

from ..datasets.cifar import BatchStream, ImageData, find_cifar, load_cifar, split_validation
from ..models import MODELS
from ..comparison import cli
from .cifar_presets import BP_SETTINGS, GHL_SETTINGS, PRESETS, Preset, build_rule, optimiser_for
from ..comparison.common import seed_everything, select_device
from ..comparison.engine import Method, Param, compare_command
from ..comparison.runner import Trainer, trial_history

#: row -> (training recipe of ``cifar_presets``, normalisation of E) where they differ from (row, "max")
RECIPES: dict[str, tuple[str, str]] = {"readout": ("bp", "max"), "ghl-channel": ("ghl", "channel"),
                                       "ghl-mean": ("ghl", "mean")}
BATCH_SIZE = 64
#: row -> the rows it is compared with
CONTROLS: dict[str, tuple[str, ...]] = {
    "ghl": ("readout", "sign", "bp", "hebb"), "ghl-channel": ("readout", "sign", "ghl"),
    "ghl-mean": ("readout", "sign", "ghl"), "sign": ("readout", "bp"),
    "bp": ("readout",), "hebb": ("readout",),
    "readout": ("chance",), "chance": (),
}


def row_recipe(method: str, hparams: dict[str, Any], epochs: int, width: float) -> tuple[str, Preset]:
    """The training recipe (a ``cifar_presets`` method) and the preset of row ``method`` at the rates ``hparams``:
    DeepHebb of ``width``, batch 64, ``epochs`` epochs, the row's normalisation of E; ``readout``'s convolutions
    frozen (rate 0); a head rate not in ``hparams`` is the recipe's default."""
    harness, normalize = RECIPES.get(method, (method, "max"))
    return harness, replace(PRESETS[f"deephebb-cifar10-{harness}"], epochs=epochs, width=width,
                            batch_size=BATCH_SIZE, conv_lr=0.0 if method == "readout" else hparams["conv_lr"],
                            head_lr=hparams.get("head_lr"), normalize=normalize)


def train_val_split(data_root: str | None, pool: int, val_fraction: float) -> tuple[ImageData, ImageData]:
    """``pool`` seeded CIFAR-10 training images split (stratified, seed 0) into training and validation parts: the
    same for every run of a comparison."""
    return split_validation(load_cifar("cifar10", data_root, train=True, subset=pool, seed=0), val_fraction, seed=0)


def make_run(settings: dict[str, Any]):
    """The engine's callback: one (row, rates, seed) on DeepHebb, a history row per epoch with the train
    (running), val and test accuracies."""
    device = select_device(settings["device"])
    train, val = train_val_split(settings["data_root"], settings["pool"], settings["val_fraction"])
    test = load_cifar("cifar10", settings["data_root"], train=False, subset=settings["test_subset"], seed=12345)

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        if method == "chance":
            generator = torch.Generator().manual_seed(seed)
            row = {f"{split}_acc": float((torch.randint(10, (len(data.labels),), generator=generator)
                                          == data.labels).float().mean())
                   for split, data in (("train", train), ("val", val), ("test", test))}
            return {"history": [{"epoch": e + 1, **row} for e in range(settings["epochs"])]}
        harness, preset = row_recipe(method, hparams, settings["epochs"], settings["width"])
        seed_everything(seed)
        model = MODELS["deephebb"](num_classes=10, width=settings["width"]).to(device)
        rule = build_rule(harness, model, normalize=preset.normalize)
        optimizer = optimiser_for(harness, preset, model, set(model.plastic_taus))
        stream = BatchStream(train, BATCH_SIZE, device, shuffle=True, seed=seed)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings["epochs"] * len(stream))
        trainer = Trainer(model, optimizer, scheduler, rule, progress=False)
        evaluations = {split: (lambda data=data: BatchStream(data, 500, device).epoch(0))
                       for split, data in (("val", val), ("test", test))}
        label = None if settings["quiet"] else \
            f"{method} {' '.join(f'{k}={v:.3g}' for k, v in hparams.items())} seed {seed}"
        return trial_history(trainer, stream.epoch, evaluations, settings["epochs"], len(stream), label)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.cifar_compare", __doc__.split("\n\n")[0])
    cli.add_common_arguments(parser, out_default="runs/cifar-compare", seeds_default=3, epochs_default=3,
                             threads_default=1, seeds_help="final seeds (paired)",
                             data_help="the folder holding cifar10-jpeg/ (or the CIFAR-10 folder itself)")
    cli.add_methods_argument(parser, list(CONTROLS), ["ghl", "sign", "bp", "hebb"],
                             help="rows (controls not listed are added)")
    parser.add_argument("--listed-only", action="store_true", help="run the listed rows only, each compared with "
                        "those of its controls that are listed (by default every control joins)")
    parser.add_argument("--width", type=cli.positive_float, default=0.125, help="DeepHebb width multiplier")
    parser.add_argument("--pool", type=cli.positive_int, default=5000, help="training images drawn (train + val)")
    parser.add_argument("--val-fraction", type=cli.open_fraction, default=0.2, help="validation part of the pool")
    parser.add_argument("--test-subset", type=cli.positive_int, default=2000, help="test images")
    parser.add_argument("--tune-seeds", type=cli.positive_int, default=2, help="seeds averaged in the tuning")
    parser.add_argument("--tune-head", action="store_true", help="also tune the head's learning rate of every row "
                        "with plastic convolutions (its default x {1/3, 1, 3}), searched after the convolutions' rate")
    return parser


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Tune and run every row, write the engine's outputs."""
    methods = list(dict.fromkeys(args.methods))
    for name in [] if args.listed_only else methods:  # every control of a row, and its controls', join
        methods += [c for c in CONTROLS[name] if c not in methods]
    def grid(name: str, default: float) -> Param:  # the recipe's default x {1/3, 1, 3}
        return Param(name, tuple(default * f for f in (1 / 3, 1, 3)), step=3.0)

    rows = []
    for name in methods:
        recipe = RECIPES.get(name, (name, "max"))[0]
        defaults = BP_SETTINGS if recipe == "bp" else GHL_SETTINGS["deephebb"]
        if name == "chance":
            tuned: tuple[Param, ...] = ()
        elif name == "readout":
            tuned = (grid("head_lr", defaults.rest_lr),)
        else:
            tuned = (grid("conv_lr", defaults.conv_lr),) + ((grid("head_lr", defaults.rest_lr),) if args.tune_head
                                                             else ())
        rows.append(Method(name, tuned, controls=tuple(c for c in CONTROLS[name] if c in methods), joint=False))
    return compare_command(args, rows, make_run(vars(args)), ignore=("listed_only", "tune_head"),
                           title=f"CIFAR-10, DeepHebb x{args.width:g}: {args.pool} images, {args.epochs} epochs")


main, cli_main = cli.entry_points(lambda argv: build_parser().parse_args(argv), run_comparison,
                                  check=lambda args: find_cifar("cifar10", args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
