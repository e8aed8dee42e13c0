"""The spiking MNIST rows ([`ghl_snn.experiments.mnist_snn`][]) through the comparison engine, with the hybrids
that locate where a sign rule loses accuracy.

    python -m ghl_snn.experiments.mnist_snn_compare [--data-root DIR] [--out DIR] [--methods ...]
        [--train-subset N] [--val-size N] [--epochs E] [--tau TAU] [--seeds 3] [--tune-seeds 2]

Every row with a plastic hidden layer gets two learning rates tuned together, ``lr_hidden`` and ``lr_readout``
(the read-out-only controls tune ``lr_readout`` alone); each starts from the grid of the rule that updates that
layer (``--sign-grid`` for ``M ⊙ |E|`` updates, ``--grad-grid`` for gradient-magnitude ones) and is extended past
any edge by [`compare`][ghl_snn.comparison.engine.compare], which scores a point by the last epoch's
validation accuracy averaged over ``--tune-seeds`` seeds (the test split is never read for a choice), runs the
chosen values on ``--seeds`` seeds paired across rows and compares each row with its controls and baselines by the
paired test difference with a 95 % interval.  The test split is evaluated after every epoch for the curves only.

The decomposition that locates the sign rule's cost (``CONTROLS``):
``grad_sign - rate_sgd = (grad_sign - grad_sign_sgd_readout) + (grad_sign_sgd_readout - rate_sgd)``: the first
term is the cost of the sign rule on the read-out, the second its cost on the hidden layer; the same with
FeedbackSign and plain DFA; ``grad_sign_unit - grad_sign`` is what the eligibility's magnitude ``|E|`` adds.
``chance`` guesses uniformly at random.

The reward rows (``REWARD_ROWS``, listed with ``--methods``) learn from one number per image, the reward
``[a == y]`` of an output ``a`` chosen epsilon-greedily (epsilon 0.05) from the read-out, never from the label:
``agr`` (Q-AGREL, [`AttentionGatedReward`][ghl_snn.AttentionGatedReward], tag through the forward weights),
``agr_learned`` / ``agr_random`` (tag through learned / fixed random feedback), ``reward_sign`` /
``reward_sign_random`` ([`RewardSign`][ghl_snn.RewardSign]: the sign of that credit ⊙ ``|E|``), ``rstdp``
(reward-modulated STDP with a spiking read-out), each compared with its read-out-only control (``agr_readout``,
``reward_readout``, ``rstdp_readout``) and with the supervised rule of the same form (``dfa``, ``rate_sgd``,
``feedback_sign``).  Their rates start from ``--grad-grid`` (gradient-magnitude credit: ``agr*``, ``rstdp``) or
``--sign-grid`` (``M ⊙ |E|``: ``reward_sign*``), extended past any edge like every other row's.

Outputs in ``--out``: the engine's ``results.json``, ``results.md`` and ``curves.png``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ..datasets.mnist import locate_mnist
from ..comparison import cli
from ..comparison import methods as registry
from ..comparison.common import seed_everything, select_device
from ..comparison.engine import Method, Param, compare_command
from ..comparison.runner import shuffled_batches, trial_history
from ..comparison.spiking import SpikingTrainer
from ..spiking import RateCoded
from ..spiking.architectures import neuron_mlp
from .mnist_snn import make_learner, needs_spiking_readout, split_data

#: row -> (update of the hidden layer, update of the read-out): "sign" (M ⊙ |E|), "grad" (gradient magnitude) or
#: None (frozen)
LAYERS: dict[str, tuple[str | None, str]] = {
    "grad_sign": ("sign", "sign"), "feedback_sign": ("sign", "sign"), "grad_sign_unit": ("sign", "sign"),
    "grad_sign_sgd_readout": ("sign", "grad"), "feedback_sign_sgd_readout": ("sign", "grad"),
    "rate_sgd": ("grad", "grad"), "dfa": ("grad", "grad"), "bptt": ("grad", "grad"),
    "readout_sign": (None, "sign"), "readout_sgd": (None, "grad"),
    # reward rows: one number per image, the reward [choice == label] of the output the network chooses
    "agr": ("grad", "grad"), "agr_learned": ("grad", "grad"), "agr_random": ("grad", "grad"),
    "reward_sign": ("sign", "sign"), "reward_sign_random": ("sign", "sign"), "rstdp": ("grad", "grad"),
    "agr_readout": (None, "grad"), "reward_readout": (None, "sign"), "rstdp_readout": (None, "grad"),
}
#: the rows that learn from a reward instead of a label (not in the default rows)
REWARD_ROWS = tuple(name for name in LAYERS if name != "bptt" and registry.needs_reward(name))
#: row -> the rows it is compared with (its read-out-only control, the baseline it approximates, the hybrids)
CONTROLS: dict[str, tuple[str, ...]] = {
    "grad_sign": ("readout_sign", "rate_sgd", "grad_sign_sgd_readout"),
    "feedback_sign": ("readout_sign", "dfa", "feedback_sign_sgd_readout"),
    "grad_sign_unit": ("grad_sign", "readout_sign"),
    "grad_sign_sgd_readout": ("readout_sgd", "rate_sgd"),
    "feedback_sign_sgd_readout": ("readout_sgd", "dfa"),
    "rate_sgd": ("readout_sgd",), "dfa": ("readout_sgd",), "bptt": ("readout_sgd", "rate_sgd"),
    "readout_sign": ("readout_sgd", "chance"), "readout_sgd": ("chance",), "chance": (),
    "agr": ("agr_readout", "dfa", "rate_sgd"), "agr_learned": ("agr_readout", "agr"),
    "agr_random": ("agr_readout", "agr"), "reward_sign": ("reward_readout", "agr", "feedback_sign"),
    "reward_sign_random": ("reward_readout", "reward_sign"), "rstdp": ("rstdp_readout",),
    "agr_readout": ("readout_sgd", "chance"), "reward_readout": ("readout_sign", "chance"),
    "rstdp_readout": ("chance",),
}


def make_run(settings: dict[str, Any]):
    """The engine's callback: one (row, learning rates, seed) trained with the spiking MNIST set-up, a history row
    per epoch with the train (running), val and test accuracies."""
    device = select_device(settings["device"])
    data = {k: (x.to(device), y.to(device)) for k, (x, y) in split_data(settings).items()}

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        if method == "chance":
            generator = torch.Generator().manual_seed(seed)
            row = {f"{split}_acc": float((torch.randint(10, (len(y),), generator=generator) == y.cpu())
                                         .float().mean()) for split, (_, y) in data.items()}
            return {"history": [{"epoch": e + 1, **row} for e in range(settings["epochs"])]}
        seed_everything(seed)
        net = neuron_mlp(784, settings["hidden"], 10, "if", settings["init_scale"],
                         needs_spiking_readout(method)).to(device)
        learner = make_learner(method, net, settings["tau"], seed)
        model = RateCoded(net, settings["steps"])
        groups = [{"params": list(net[2].parameters()), "lr": hparams["lr_readout"]}]
        if "lr_hidden" in hparams:
            groups.append({"params": list(net[0].parameters()), "lr": hparams["lr_hidden"]})
        optimizer = torch.optim.SGD(groups, momentum=settings["momentum"])
        train_x, train_y = data["train"]
        per_epoch = -(-len(train_x) // settings["batch_size"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings["epochs"] * per_epoch)
        trainer = SpikingTrainer(model=model, optimizer=optimizer, scheduler=scheduler, rule=learner,
                                 learner=learner, progress=False)
        evaluations = {split: (lambda x=data[split][0], y=data[split][1]:
                               ((x[i:i + 1000], y[i:i + 1000]) for i in range(0, len(x), 1000)))
                       for split in ("val", "test")}
        label = None if settings["quiet"] else \
            f"{method} {' '.join(f'{k}={v:.3g}' for k, v in hparams.items())} seed {seed}"
        return trial_history(trainer,
                             lambda epoch: shuffled_batches(train_x, train_y, settings["batch_size"], seed, epoch),
                             evaluations, settings["epochs"], per_epoch, label)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.mnist_snn_compare", __doc__.split("\n\n")[0])
    cli.add_common_arguments(parser, out_default="runs/mnist-snn-compare", seeds_default=3, epochs_default=2,
                             threads_default=1, seeds_help="final seeds (paired)",
                             data_help="the folder holding MNIST/")
    default_rows = [m for m in CONTROLS if m != "bptt" and m not in REWARD_ROWS]
    cli.add_methods_argument(parser, list(CONTROLS), default_rows,
                             help="rows (controls not listed are added)")
    parser.add_argument("--listed-only", action="store_true", help="run the listed rows only, each compared with "
                        "those of its controls that are listed (by default every control joins)")
    parser.add_argument("--train-subset", type=cli.positive_int, default=6000, help="training images")
    parser.add_argument("--val-size", type=cli.positive_int, default=2000, help="validation images held out of the "
                        "training set")
    parser.add_argument("--test-subset", type=cli.positive_int, default=10000, help="test images")
    parser.add_argument("--tau", type=cli.positive_float, default=10.0, help="SWTA softmax temperature of E")
    parser.add_argument("--steps", type=cli.positive_int, default=10, help="time steps T per image")
    parser.add_argument("--hidden", type=cli.positive_int, default=256, help="hidden IF neurons")
    parser.add_argument("--batch-size", type=cli.positive_int, default=32, help="mini-batch size")
    parser.add_argument("--momentum", type=cli.nonnegative_float, default=0.9, help="SGD momentum")
    parser.add_argument("--init-scale", type=cli.positive_float, default=4.0, help="first-layer weight scale")
    parser.add_argument("--data-seed", type=cli.nonnegative_int, default=0, help="seed of the train/val split")
    parser.add_argument("--sign-grid", type=cli.positive_float, nargs="+", default=[0.001, 0.003, 0.01],
                        help="starting grid of a layer updated by M ⊙ |E|")
    parser.add_argument("--grad-grid", type=cli.positive_float, nargs="+", default=[0.03, 0.1, 0.3],
                        help="starting grid of a layer updated by a gradient magnitude")
    parser.add_argument("--tune-seeds", type=cli.positive_int, default=2, help="seeds averaged in the tuning")
    return parser


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Tune and run every row, write the engine's outputs."""
    grids = {"sign": tuple(args.sign_grid), "grad": tuple(args.grad_grid)}
    methods = list(dict.fromkeys(args.methods))
    for name in [] if args.listed_only else methods:  # every control of a row, and its controls', join
        methods += [c for c in CONTROLS[name] if c not in methods]
    rows = []
    for name in methods:
        hidden, readout = LAYERS.get(name, (None, None))
        tuned = [Param("lr_readout", grids[readout], step=10 ** 0.5)] if readout else []
        if hidden:
            tuned.insert(0, Param("lr_hidden", grids[hidden], step=10 ** 0.5))
        rows.append(Method(name, tuple(tuned), controls=tuple(c for c in CONTROLS[name] if c in methods)))
    run = make_run({**vars(args), "data_root": str(locate_mnist(args.data_root))})
    return compare_command(args, rows, run, ignore=("listed_only",),
                           title=f"spiking MNIST: {args.train_subset} images x {args.epochs} epochs, "
                                 f"tau = {args.tau:g}")


main, cli_main = cli.entry_points(lambda argv: build_parser().parse_args(argv), run_comparison,
                                  check=lambda args: locate_mnist(args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
