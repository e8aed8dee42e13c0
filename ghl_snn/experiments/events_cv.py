"""Event data by k-fold cross-validation through the comparison engine: online three-factor rules on a spiking conv
net against plain DFA, BPTT, the read-out-only control and chance.

    python -m ghl_snn.experiments.events_cv [--preset nmnist-small] [--data-root DIR] [--out DIR]
        [--methods grad_sign feedback_sign dfa bptt readout_sign chance] [--folds 5] [--epochs 8] [--seeds 4]
        [--tune-seeds 2] [--lrs 0.003 0.01 0.03] [--group-lrs METHOD ...] [--resume | --force]

Data ([`EventFolds`][ghl_snn.datasets.events.folds.EventFolds]): every recording of the preset's training and test
splits (1,100 for ``nmnist-small``) pooled, denoised once (tonic ``Denoise``) and split into ``--folds`` folds;
fold 0 is the validation fold of every run, run ``s`` tests on fold ``s + 1`` and trains on the other folds, so
``--seeds k-1`` tests every non-validation recording exactly once and no selection ever sees a test recording.
Training recordings are augmented at every epoch (tonic ``DropEvent``, ``SpatialJitter``) before ``ToFrame``.
Network: the preset's ([`ghl_snn.experiments.events.build_network`][]).  Every row trains with SGD (momentum 0.9,
cosine schedule over all steps, batch 32); its learning rate is tuned by
[`compare`][ghl_snn.comparison.engine.compare] (grid extended past its edges, validation accuracy of the last
epoch averaged over ``--tune-seeds`` runs), then run on ``--seeds`` runs paired across rows; ``--group-lrs`` gives
the named rows one learning rate for the hidden synapses and one for the read-out, tuned together.  Rows (``METHODS``):

* ``grad_sign``: [`ThreeFactor`][ghl_snn.ThreeFactor] with SWTA-Oja traces and [`GradSign`][ghl_snn.GradSign] of
  the rate surrogate, every layer plastic;
* ``feedback_sign``: ThreeFactor with [`FeedbackSign`][ghl_snn.FeedbackSign] (no backward pass);
* ``dfa``: plain direct feedback alignment with the same feedback matrices (FeedbackSign's baseline);
* ``bptt``: surrogate-gradient BPTT through the ``T`` steps (the baseline GradSign approximates);
* ``readout_sign``: the read-out alone learns by GradSign (its read-out signal is FeedbackSign's too), the convolutions
  stay at their random initialisation: the control that tells whether the hidden layers learn;
* ``chance``: uniformly random guesses.

Outputs in ``--out``: the engine's ``results.json`` (every trial with its per-epoch train / val / test scores,
chosen learning rates, edge flags, paired differences), ``results.md`` and ``curves.png``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..datasets.events import DATASETS
from ..datasets.events.folds import EventFolds
from ..spiking import SpikingNetwork
from ..comparison import cli
from ..comparison import methods as registry
from ..comparison.engine import Method, Param, compare_command
from ..comparison.common import seed_everything, select_device
from .events import PRESETS, build_network, find_root, make_learner
from ..comparison.runner import TrainingDiverged
from ..comparison.spiking import SpikingTrainer, spike_scores

#: row -> the rows it is compared with (controls and the baseline it approximates); any other registry method
#: ([`ghl_snn.comparison.methods`][]) runs with the read-out-only control and chance
CONTROLS: dict[str, tuple[str, ...]] = {
    "grad_sign": ("readout_sign", "bptt", "chance"), "feedback_sign": ("readout_sign", "dfa", "chance"),
    "dfa": ("readout_sign", "chance"), "bptt": ("readout_sign", "chance"), "readout_sign": ("chance",),
    "chance": (),
}
METHODS = tuple(registry.method_names(tuple(CONTROLS), reward=False, spiking=True))


def controls(method: str) -> tuple[str, ...]:
    """The rows ``method`` is compared with."""
    if method in CONTROLS:
        return CONTROLS[method]
    return ("chance",) if registry.spec(method).plastic == "readout" else ("readout_sign", "chance")


def chance_record(folds: EventFolds, seed: int, epochs: int, classes: int) -> dict[str, Any]:
    """Accuracy of uniformly random guesses on the run's train / val / test recordings (drawn from ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    row: dict[str, Any] = {}
    for split, indices in zip(("train", "val", "test"), folds.split(seed)):
        guesses = torch.randint(classes, (len(indices),), generator=generator)
        row[f"{split}_acc"] = float((guesses == folds.labels[indices]).float().mean())
    return {"history": [{"epoch": e + 1, **row} for e in range(epochs)]}


def param_groups(net: SpikingNetwork, hparams: dict[str, Any]) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: one at ``hparams["lr"]``, or the hidden synapses at ``lr_hidden`` and the
    Linear read-out at ``lr_readout``."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    if "lr" in hparams:
        return [{"params": trainable, "lr": hparams["lr"]}]
    readout = {id(p) for m in net.synapses().values() if isinstance(m, nn.Linear) for p in m.parameters()}
    return [{"params": [p for p in trainable if id(p) not in readout], "lr": hparams["lr_hidden"]},
            {"params": [p for p in trainable if id(p) in readout], "lr": hparams["lr_readout"]}]


def make_run(folds: EventFolds, settings: dict[str, Any]):
    """The engine's callback: train ``method`` at ``hparams["lr"]`` on run ``seed``'s folds, one history row per
    epoch with the train (running, augmented), val and test scores."""
    preset = replace(PRESETS[settings["preset"]], n_time_bins=settings["time_bins"])
    classes = len(DATASETS[preset.dataset].classes)

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        if method == "chance":
            return chance_record(folds, seed, settings["epochs"], classes)
        seed_everything(seed)
        train, val, test = folds.split(seed)
        device = select_device(settings["device"])
        net = build_network(preset, settings["beta"], settings["init_scale"]).to(device)
        learner = make_learner(method, net, settings["tau"], seed)
        loader = folds.train_loader(train, settings["batch_size"], seed)
        optimizer = torch.optim.SGD(param_groups(net, hparams), momentum=settings["momentum"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["epochs"] * len(loader))
        trainer = SpikingTrainer(net, optimizer, scheduler=scheduler, learner=learner, progress=False)
        history: list[dict[str, Any]] = []
        started = time.perf_counter()
        try:
            for epoch in range(settings["epochs"]):
                row = trainer.train_epoch(((x.to(device, torch.float32), y.to(device)) for x, y in loader), epoch,
                                          len(loader))
                trainer.check_weights(epoch)
                row.pop("train_samples")
                for split, indices in (("val", val), ("test", test)):
                    result = spike_scores(net, ((x.to(device), y.to(device)) for x, y in folds.eval_batches(indices)))
                    row.update({f"{split}_acc": result["test_acc"], f"{split}_loss": result["test_loss"]})
                row["hidden_rate"] = result["hidden_rate"]
                history.append({"epoch": epoch + 1, **row, "seconds": time.perf_counter() - started})
        except TrainingDiverged as error:
            return {"diverged": True, "history": history, "error": str(error)}
        if not settings["quiet"]:
            values = " ".join(f"{k}={v:.3g}" for k, v in hparams.items())
            print(f"{method} {values} run {seed}: val_acc {history[-1]['val_acc']:.3f}  "
                  f"test_acc {history[-1]['test_acc']:.3f}  ({history[-1]['seconds']:.0f} s)", flush=True)
        return {"history": history}

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.events_cv", __doc__.split("\n\n")[0])
    cli.add_common_arguments(parser, out_default="runs/events_cv/nmnist-small", seeds_default=None,
                             seeds_help="final runs per row, run s testing fold s+1 (default: folds - 1, every test "
                                        "fold)", epochs_default=8, threads_default=1,
                             data_help="the folder holding the data sets (e.g. NMNIST-small/)")
    parser.add_argument("--preset", default="nmnist-small", choices=sorted(p for p in PRESETS if
                                                                          PRESETS[p].model == "conv"))
    cli.add_methods_argument(parser, METHODS, CONTROLS, help="rows (controls not listed are added)")
    parser.add_argument("--folds", type=cli.positive_int, default=5, help="k of the k-fold split (default 5)")
    parser.add_argument("--tune-seeds", type=cli.positive_int, default=2,
                        help="runs averaged per learning rate in the tuning (default 2)")
    parser.add_argument("--lrs", type=cli.positive_float, nargs="+", default=[0.003, 0.01, 0.03],
                        help="starting learning-rate grid of every row, extended past its edges (log-spaced)")
    parser.add_argument("--group-lrs", action=cli.MethodsAction, default=[], metavar="METHOD",
                        choices_list=[m for m in METHODS if m != "chance"],
                        help="rows whose hidden synapses and read-out get separate learning rates (lr_hidden, "
                             "lr_readout), tuned together from the --group-grid grid")
    parser.add_argument("--group-grid", type=cli.positive_float, nargs="+", default=None,
                        help="starting grid of lr_hidden and of lr_readout (default: --lrs)")
    parser.add_argument("--time-bins", type=cli.positive_int, default=10, help="frames T per recording")
    parser.add_argument("--batch-size", type=cli.positive_int, default=32)
    parser.add_argument("--momentum", type=cli.nonnegative_float, default=0.9, help="SGD momentum")
    parser.add_argument("--denoise-us", type=cli.positive_float, default=10_000,
                        help="tonic Denoise filter time in µs, applied once (default 10000)")
    parser.add_argument("--drop", type=cli.nonnegative_float, default=0.1,
                        help="tonic DropEvent probability of the training augmentation (default 0.1)")
    parser.add_argument("--jitter", type=cli.nonnegative_float, default=0.5,
                        help="tonic SpatialJitter variance (pixels²) of the training augmentation (default 0.5)")
    parser.add_argument("--tau", type=cli.positive_float, default=1.0, help="SWTA softmax temperature")
    parser.add_argument("--beta", type=cli.open_fraction, default=0.9, help="LIF membrane decay per step")
    parser.add_argument("--init-scale", type=cli.positive_float, default=2.0,
                        help="scale of the spiking layers' initial weights")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options; ``--seeds`` defaults to one run per test fold (``folds - 1``)."""
    args = build_parser().parse_args(argv)
    args.seeds = args.seeds or args.folds - 1
    return args


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Load the folds, run the comparison; return the engine's results."""
    preset = PRESETS[args.preset]
    root = find_root(preset, args.data_root)
    splits = [DATASETS[preset.dataset](root, train=train) for train in (True, False)]
    folds = EventFolds(splits, k=args.folds, n_time_bins=args.time_bins, denoise_time=args.denoise_us,
                       drop=args.drop, jitter=args.jitter)
    methods = list(dict.fromkeys(args.methods + [c for m in args.methods for c in controls(m)]))
    grid = Param("lr", tuple(args.lrs), step=None if len(args.lrs) > 1 else 10 ** 0.5)
    group_grid = tuple(args.group_grid or args.lrs)
    groups = tuple(Param(name, group_grid, step=None if len(group_grid) > 1 else 10 ** 0.5)
                   for name in ("lr_hidden", "lr_readout"))
    rows = [Method(m, () if m == "chance" else groups if m in args.group_lrs else (grid,), controls=controls(m))
            for m in methods]
    return compare_command(args, rows, make_run(folds, vars(args)), ignore=("group_lrs", "group_grid"),
                           title=f"{args.preset}: {args.folds}-fold, {args.epochs} epochs")


main, cli_main = cli.entry_points(parse_args, run_comparison,
                                  check=lambda args: find_root(PRESETS[args.preset], args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
