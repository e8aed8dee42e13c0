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
the learning rate is chosen on the validation split (seed 0, grid extended past its edges), then run with every
seed; test accuracy at the end.  ``--decays matched`` uses ``lambda = exp(-1 / D)`` (``lambda^D = 1/e``; ``0`` at
``D = 0``).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..modulators.actions import choose_actions
from ..modulators.attention_gated import AttentionGatedReward
from ..modulators.reward_sign import RewardSign
from ..spiking import BernoulliEncoder, ThreeFactor
from ..spiking.delayed_reward import DelayedReward, TagRecorder
from . import cli
from .common import markdown_table, seed_everything, write_json
from .compare import paired_interval
from .lr_search import extended_search
from .mnist_snn import batches, build_network, split_data


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def alignment(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Cosine of every reward rule's hidden update with the true chosen-unit gradient, at initialisation."""
    config = {"data_root": args.data_root, "data_seed": 0, "val_size": 1000, "train_subset": args.batch,
              "test_subset": 1}
    images, labels = split_data(config)["train"]
    rules = {"agr (forward)": lambda s: AttentionGatedReward(seed=s),
             "agr (random B)": lambda s: AttentionGatedReward(seed=s, feedback="random"),
             "agr (learned B, at init)": lambda s: AttentionGatedReward(seed=s, feedback="learned"),
             "reward_sign (forward: sign(gradient) ⊙ abs(E))": lambda s: RewardSign(seed=s),
             "reward_sign (random B)": lambda s: RewardSign(seed=s, feedback="random")}
    cosines: dict[str, list[float]] = {name: [] for name in rules}
    for seed in range(args.seeds):
        seed_everything(seed)
        net = build_network(256, "if", 4.0)
        learner = ThreeFactor(net, modulator=AttentionGatedReward(seed=seed), tau=args.tau)
        readout = learner.run(images, args.steps, BernoulliEncoder())
        action = choose_actions(readout, epsilon=0.0)
        context = {"action": action, "reward": (action == labels).float()}
        learner.step(**context)
        gradient = net[0].weight.grad.clone()  # the chosen unit's squared-RPE gradient (see the module docstring)
        for name, make in rules.items():
            learner.modulator = make(seed)
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
    net = build_network(256, "if", 4.0)
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
        for x, y in batches(train_x, train_y, config["batch_size"], config["seed"], epoch):
            if len(x) != config["batch_size"]:
                continue  # the streams keep their number: a short last batch is skipped
            readout = learner.run(x, config["steps"], encoder)
            action = choose_actions(readout, config["epsilon"])
            reward = (action == y).float()
            rpe = reward - readout.gather(1, action[:, None]).squeeze(1)
            if not torch.isfinite(rpe).all():  # a too-large learning rate of the sweep: recorded, not fatal
                return {**{k: config[k] for k in ("delay", "decay", "lr", "seed")}, "val_acc": 0.0, "test_acc": 0.0,
                        "history": history, "run_seconds": time.perf_counter() - started, "diverged": True}
            learner.step(action=action, reward=reward)  # records the tags, writes no update
            credits = delayed.end_window(recorder.tags, rpe)
            if config["protocol"] == "trials":  # the next image waits until the reward has arrived
                credits += delayed.advance(config["delay"])
            for credit in credits:
                net[0].weight.grad, net[2].weight.grad = credit["0"], credit["2"]
                optimizer.step()
            scheduler.step()
        history.append({"epoch": epoch + 1, "val_acc": accuracy("val")})
    return {**{k: config[k] for k in ("delay", "decay", "lr", "seed")}, "val_acc": history[-1]["val_acc"],
            "test_acc": accuracy("test"), "history": history, "run_seconds": time.perf_counter() - started}


def delayed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (delay, decay) of the protocol: learning rate chosen on validation (seed 0), then all seeds."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = {"data_root": args.data_root, "data_seed": 0, "val_size": args.val_size, "train_subset": args.train_subset,
            "test_subset": args.test_subset, "epochs": args.epochs, "steps": args.steps, "batch_size": 32,
            "epsilon": args.epsilon, "lr_ratio": args.lr_ratio, "protocol": args.protocol}
    settings = []
    for delay in args.delays:
        for decay in args.decays:
            value = (0.0 if delay == 0 else math.exp(-1.0 / delay)) if decay == "matched" else float(decay)
            settings.append((delay, value, decay))
    stored = json.loads((out / "runs.json").read_text()) if (out / "runs.json").is_file() else []
    runs: list[dict[str, Any]] = []
    rows = []
    for delay, decay, label in settings:
        def run(lr: float, seed: int) -> dict[str, Any]:
            key = (delay, round(decay, 8), round(lr, 10), seed)
            done = [r for r in stored if (r["delay"], round(r["decay"], 8), round(r["lr"], 10), r["seed"]) == key]
            result = done[0] if done else delayed_run({**base, "delay": delay, "decay": decay, "lr": lr,
                                                       "seed": seed})  # a run of this folder is not repeated
            runs.append(result)
            write_json(out / "runs.json", runs)
            print(f"D={delay} lambda={decay:.4g} lr={lr:g} seed={seed}: val {100 * result['val_acc']:.2f}% test "
                  f"{100 * result['test_acc']:.2f}% ({result['run_seconds']:.0f}s)", flush=True)
            return result

        tried: dict[float, dict[str, Any]] = {}
        search = extended_search(lambda lr: tried.setdefault(lr, run(lr, 0))["val_acc"], args.lrs,
                                 max_extensions=args.max_extensions)
        chosen = [tried[search.best]] + [run(search.best, seed) for seed in range(1, args.seeds)]
        tests = [100 * r["test_acc"] for r in chosen]
        rows.append({"D (steps)": delay, "lambda": f"{decay:.4g}" + (" (matched)" if label == "matched" else ""),
                     "lr (val)": search.best, "lr sweep: val acc (%)": " / ".join(
                         f"{k}: {100 * v:.1f}" for k, v in search.as_dict()["scores"].items()) + (
                         f" (best on the {search.on_edge} edge)" if search.on_edge in ("low", "high") else ""),
                     "seeds": len(chosen), "val acc (%)": statistics.mean(100 * r["val_acc"] for r in chosen),
                     "test acc (%)": statistics.mean(tests),
                     "test std": statistics.stdev(tests) if len(tests) > 1 else 0.0, "test accs (%)": tests})
    reference = next((r for r in rows if r["D (steps)"] == 0), None)
    for row in rows:
        if reference is not None and row is not reference and len(row["test accs (%)"]) > 1:
            interval = paired_interval(row["test accs (%)"], reference["test accs (%)"])
            row["vs D = 0 (paired, points)"] = (f"{interval['mean']:+.2f} [{interval['low']:.2f}, "
                                                f"{interval['high']:.2f}]")
    write_json(out / "results.json", {"rows": rows, "runs": runs, "config": vars(args)})
    return rows


def build_parser() -> argparse.ArgumentParser:
    pos, posf = cli.positive_int, cli.positive_float
    parser = argparse.ArgumentParser(prog="python -m ghl_snn.experiments.reward", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=("alignment", "delayed"))
    parser.add_argument("--data-root", default=None, help="the folder holding MNIST/ (default: GHL_SNN_DATA)")
    parser.add_argument("--out", default="runs/reward", help="output folder")
    parser.add_argument("--seeds", type=pos, default=3)
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
    parser.add_argument("--epochs", type=pos, default=5)
    parser.add_argument("--train-subset", type=pos, default=12000)
    parser.add_argument("--val-size", type=pos, default=2000)
    parser.add_argument("--test-subset", type=pos, default=10000)
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    from ..datasets.mnist import locate_mnist

    args.data_root = str(locate_mnist(args.data_root))
    rows = alignment(args) if args.study == "alignment" else delayed(args)
    shown = [{k: v for k, v in row.items() if k != "test accs (%)"} for row in rows]
    text = markdown_table(shown)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.study}.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
