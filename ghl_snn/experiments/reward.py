"""Reward rules on the spiking MNIST network: alignment of the hidden update at initialisation, and delayed reward.

    python -m ghl_snn.experiments.reward alignment [--seeds S] [--out DIR]
    python -m ghl_snn.experiments.reward delayed [--delays 0 5 20 50] [--decays ...] [--out DIR]

``alignment``: for one batch at initialisation (784-256-10 IF network of [`ghl_snn.experiments.mnist_snn`][],
greedy choice, reward ``[choice == label]``), the cosine between each reward rule's hidden-layer update and the
true gradient of the chosen unit's squared reward-prediction error, ``mean_n (r_n - Q_n,a)^2 / 2``, through the
rate surrogate (which [`AttentionGatedReward`][ghl_snn.AttentionGatedReward] with ``feedback="forward"`` computes
exactly; tested against autograd).

``delayed``: the protocols of [`DelayedReward`][ghl_snn.spiking.delayed_reward.DelayedReward]: each of the
batch's streams sees one image per window of ``T`` steps and chooses an output at the window's end; the reward
arrives ``D`` steps later, while the next images are shown (``--protocol stream``) or before the next image
(``--protocol trials``); per-stream synaptic tags decaying by ``lambda`` per step bridge the gap.  The plain
attention-gated rule with forward feedback, SGD with momentum and a cosine schedule;
the learning rate is chosen on the validation split (the mean over two seeds, grid extended past its edges; the
comparison engine, whose outputs are in ``<out>/delayed/``), then run with every seed; test accuracy at the
end, each delay against ``D = 0`` by the paired difference with its 95 % interval.  ``--decays matched`` uses
``lambda = exp(-1 / D)`` (``lambda^D = 1/e``; ``0`` at ``D = 0``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..datasets.mnist import locate_mnist
from ..modulators.actions import choose_actions
from ..modulators.attention_gated import AttentionGatedReward
from ..spiking import BernoulliEncoder, ThreeFactor
from ..spiking.delayed_reward import DelayedReward, TagRecorder
from ..comparison import cli
from ..comparison import methods as registry
from ..comparison.common import markdown_table, seed_everything
from ..comparison.engine import Method, Param, compare
from ..comparison.runner import shuffled_batches
from ..spiking.architectures import neuron_mlp
from .mnist_snn import split_data


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def alignment(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Cosine of every reward rule's hidden update with the true chosen-unit gradient, at initialisation."""
    config = {"data_root": args.data_root, "data_seed": 0, "val_size": 1000, "train_subset": args.batch,
              "test_subset": 1}
    images, labels = split_data(config)["train"]
    cosines: dict[str, list[float]] = {name: [] for name in args.methods}
    for seed in cli.seeds_of(args):
        seed_everything(seed)
        net = neuron_mlp(784, 256, 10, "if", 4.0)
        learner = ThreeFactor(net, modulator=AttentionGatedReward(seed=seed), tau=args.tau)
        readout = learner.run(images, args.steps, BernoulliEncoder())
        action = choose_actions(readout, epsilon=0.0)
        context = {"action": action, "reward": (action == labels).float()}
        learner.step(**context)
        gradient = net[0].weight.grad.clone()  # the chosen unit's squared-RPE gradient (see the module docstring)
        for name in args.methods:
            learner.modulator = registry.build_modulator(name, seed)
            learner.step(**context)
            cosines[name].append(cosine(net[0].weight.grad, gradient))
    return [{"hidden update": name, "cosine with the true gradient (mean)": statistics.mean(values),
             "std over seeds": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values)}
            for name, values in cosines.items()]


def delayed_run(config: dict[str, Any]) -> dict[str, Any]:
    """Train one (delay, decay, lr, seed) on the chosen protocol; validation accuracy per epoch, test at the end."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    seed_everything(config["seed"])
    data = split_data(config)
    net = neuron_mlp(784, 256, 10, "if", 4.0)
    recorder = TagRecorder(seed=config["seed"])
    learner = ThreeFactor(net, modulator=recorder)
    delayed = DelayedReward(config["decay"], config["delay"], config["steps"])
    encoder = BernoulliEncoder()
    groups = [{"params": [net[2].weight], "lr": config["lr"]},
              {"params": [net[0].weight], "lr": config["lr"] * config["lr_ratio"]}]
    optimizer = torch.optim.SGD(groups, lr=config["lr"], momentum=0.9)
    train_x, train_y = data["train"]
    per_epoch = math.ceil(len(train_x) / config["batch_size"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"] * per_epoch)

    def accuracy(split: str) -> float:
        x, y = data[split]
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x), 500):
                correct += int((net.run(x[i:i + 500], config["steps"], encoder).argmax(1) == y[i:i + 500]).sum())
        return correct / len(x)

    history = []
    for epoch in range(config["epochs"]):
        for x, y in shuffled_batches(train_x, train_y, config["batch_size"], config["seed"], epoch):
            if len(x) != config["batch_size"]:
                continue  # the streams keep their number: a short last batch is skipped
            readout = learner.run(x, config["steps"], encoder)
            action = choose_actions(readout, config["epsilon"])
            reward = (action == y).float()
            rpe = reward - readout.gather(1, action[:, None]).squeeze(1)
            if not torch.isfinite(rpe).all():  # a too-large learning rate of the sweep: loses the selection
                return {"history": history, "run_seconds": time.perf_counter() - started, "diverged": True}
            learner.step(action=action, reward=reward)  # records the tags, writes no update
            credits = delayed.end_window(recorder.tags, rpe)
            if config["protocol"] == "trials":  # the next image waits until the reward has arrived
                credits += delayed.advance(config["delay"])
            for credit in credits:
                net[0].weight.grad, net[2].weight.grad = credit["0"], credit["2"]
                optimizer.step()
            scheduler.step()
        history.append({"epoch": epoch + 1, "val_acc": accuracy("val")})
    history[-1]["test_acc"] = accuracy("test")  # the test split once, at the end
    return {"history": history, "run_seconds": time.perf_counter() - started}


def delayed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (delay, decay) of the protocol through the comparison engine ([`ghl_snn.comparison.engine`][]):
    the learning rate chosen on validation (``--lrs`` extended past its edges), then every seed; each delay
    compared with ``D = 0`` by the paired test difference."""
    base = {"data_root": args.data_root, "data_seed": 0, "val_size": args.val_size, "train_subset": args.train_subset,
            "test_subset": args.test_subset, "epochs": args.epochs, "steps": args.steps, "batch_size": 32,
            "epsilon": args.epsilon, "lr_ratio": args.lr_ratio, "protocol": args.protocol}
    settings = {}
    for delay in args.delays:
        for decay in args.decays:
            value = (0.0 if delay == 0 else math.exp(-1.0 / delay)) if decay == "matched" else float(decay)
            label = f"D={delay} lambda={value:.4g}" + (" (matched)" if decay == "matched" else "")
            settings[label] = {"delay": delay, "decay": value}
    reference = next((label for label, setting in settings.items() if setting["delay"] == 0), None)
    grid = Param("lr", tuple(args.lrs), step=None if len(args.lrs) > 1 else 3.0, upper=math.inf)
    rows = [Method(label, (grid,), controls=(reference,) if reference and label != reference else ())
            for label in settings]

    def run(label: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        record = delayed_run({**base, **settings[label], "lr": hparams["lr"], "seed": seed})
        if not args.quiet and not record.get("diverged"):
            print(f"{label} lr={hparams['lr']:g} seed={seed}: val_acc {record['history'][-1]['val_acc']:.4f} "
                  f"test_acc {record['history'][-1]['test_acc']:.4f} ({record['run_seconds']:.0f}s)", flush=True)
        return record

    identity = {k: v for k, v in cli.run_identity(args).items() if k not in ("methods", "delays", "decays", "lrs")}
    seeds = cli.seeds_of(args)
    results = compare(rows, run, Path(args.out) / "delayed", tune_seeds=tuple(seeds[:2]) if len(seeds) > 1 else
                      (args.seed, args.seed + 1), seeds=tuple(seeds), max_extend=args.max_extensions,
                      identity=identity, title=f"delayed reward, {args.protocol} protocol")
    return [{"setting": label, "lr (val)": results["chosen"][label]["hparams"]["lr"],
             "lr on an edge": results["chosen"][label]["edges"]["lr"] or "-",
             "val acc (%)": 100 * statistics.fmean(results["final"][label]["val"]),
             "test acc (%)": 100 * statistics.fmean(results["final"][label]["test"]),
             **{f"vs {c['control']} (paired, points)": f"{100 * c['mean']:+.2f}" + (
                 f" [{100 * c['low']:.2f}, {100 * c['high']:.2f}]" if c["low"] is not None else "")
                for c in results["comparisons"] if c["method"] == label}} for label in settings]


#: the reward rules whose hidden update the alignment study compares (forward, random and learned feedback)
ALIGNMENT_METHODS = ("agr", "agr_random", "agr_learned", "reward_sign", "reward_sign_random")


def build_parser() -> argparse.ArgumentParser:
    pos, posf = cli.positive_int, cli.positive_float
    parser = cli.parser("python -m ghl_snn.experiments.reward", __doc__)
    parser.add_argument("study", choices=("alignment", "delayed"))
    cli.add_methods_argument(parser, [m for m in registry.method_names() if registry.needs_reward(m)],
                             ALIGNMENT_METHODS, help="reward rules compared by the alignment study")
    cli.add_common_arguments(parser, out_default="runs/reward", seeds_default=3, epochs_default=5, threads_default=1,
                             data_help="the folder holding MNIST/")
    parser.add_argument("--steps", type=pos, default=10, help="time steps T per window")
    parser.add_argument("--tau", type=posf, default=10.0, help="SWTA temperature of E (RewardSign's |E|)")
    parser.add_argument("--batch", type=pos, default=256, help="alignment: images in the batch")
    parser.add_argument("--delays", type=cli.nonnegative_int, nargs="+", default=[0, 5, 20, 50])
    parser.add_argument("--decays", nargs="+", default=["matched"], help="lambda values, or 'matched'")
    parser.add_argument("--protocol", default="stream", choices=("stream", "trials"),
                        help="stream: the next images are shown while a reward is on its way; trials: the next "
                        "image waits until the reward has arrived")
    parser.add_argument("--lrs", type=posf, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--lr-ratio", type=posf, default=1.0, help="hidden / read-out learning rate")
    parser.add_argument("--max-extensions", type=cli.nonnegative_int, default=3)
    parser.add_argument("--epsilon", type=cli.nonnegative_float, default=0.05)
    parser.add_argument("--train-subset", type=pos, default=12000)
    parser.add_argument("--val-size", type=pos, default=2000)
    parser.add_argument("--test-subset", type=pos, default=10000)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options."""
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The chosen study into ``--out``; returns its table's rows."""
    args.data_root = str(locate_mnist(args.data_root))
    out = Path(args.out)
    if (out / f"{args.study}.md").is_file() and not (args.resume or args.force):
        raise cli.CliError(f"{out} holds the {args.study} study; pass --resume to continue it (stored runs are "
                           "reused) or --force to start again")
    if args.force:
        (out / "delayed" / "results.json").unlink(missing_ok=True)
    rows = alignment(args) if args.study == "alignment" else delayed(args)
    shown = [{k: v for k, v in row.items() if k != "test accs (%)"} for row in rows]
    text = markdown_table(shown)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.study}.md").write_text(text + "\n")
    return rows


main, cli_main = cli.entry_points(parse_args, run, check=lambda args: locate_mnist(args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
