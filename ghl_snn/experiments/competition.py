"""Competition dynamics of Hebbian vs GHL learning in one-hidden-layer MLPs on MNIST (Liuson, "Learning dynamics in
competitive Hebbian learning", Tables 1-2).

Encoder ``Flatten -> LayerNorm(784, no affine) -> Linear(784, n, bias=False) -> ReLU`` for n in 32/128/512/2048
(the paper's layer normalisation before the fully-connected layer, no biases), trained for one epoch, batch 32,
SGD lr 0.05, by

* ``swta``:   the pure local soft-WTA Oja Hebbian rule, ``GHL(encoder, modulator=Ones())`` (``W <- W + η E``,
  E = SWTA-Oja, GHL Eq. 4, max-normalised, τ = 1): soft competition without anti-Hebbian losers, unsupervised;
* ``softhebb``: SoftHebb (the DeepHebb rule: SWTA-Oja with anti-Hebbian non-winners and the weight-norm-dependent
  learning rate, [`ghl_snn.learners.softhebb.SoftHebbLearner`][], ``--softhebb-lr``), which changes the weights in
  place without an optimizer -- the monitor brackets each update with ``monitor.observe()``;
* ``ghl``:    GHL (``M = sign(∂L/∂W)`` from a Dropout + Linear head trained by back-propagation with cross-entropy);
* ``bp``:     the same encoder and head trained by plain back-propagation (the baseline GHL approximates);
* ``random``: left at its initialisation (the same init every rule starts from).

Measured with [`ghl_snn.diagnostics.CompetitionMonitor`][ghl_snn.CompetitionMonitor] on the hidden layer: Gini of the
running average of per-neuron step sizes at the first and the last step (paper Table 2), the dead fraction (cosine to
the initial weights >= threshold), then a linear probe on the frozen ReLU features of each encoder next to the probe of
the random-init encoder (paper Table 1), and receptive-field grids of the first-layer weights.

    python -m ghl_snn.experiments.competition --data-root "$GHL_SNN_DATA" --out runs/competition
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..datasets.mnist import load_mnist, mnist_vectors
from ..diagnostics import CompetitionMonitor, extract_features, init_similarity, linear_probe
from ..diagnostics.plots import plot_gini, receptive_fields
from ..modulators import Ones
from ..plasticity import GHL
from ..learners.softhebb import SoftHebbLearner
from ..comparison import cli
from ..comparison.common import markdown_table, seed_everything, select_device, write_json

HIDDEN = "2"
METHODS = ("random", "swta", "softhebb", "ghl", "bp")


def encoder(width: int) -> nn.Sequential:
    """Flatten -> LayerNorm(784, no affine) -> Linear(784, width, bias=False) -> ReLU (hidden layer named "2")."""
    return nn.Sequential(nn.Flatten(), nn.LayerNorm(784, elementwise_affine=False), nn.Linear(784, width, bias=False),
                         nn.ReLU())


def train_encoder(method: str, net: nn.Sequential, train_x: Tensor, train_y: Tensor, args: argparse.Namespace,
                  seed: int) -> CompetitionMonitor:
    """Train ``net`` in place with ``method`` for ``args.epochs``; returns the monitor of its hidden layer."""
    generator = torch.Generator().manual_seed(seed)
    if method == "softhebb":
        return _train_softhebb(net, train_x, args, generator)
    if method == "swta":
        model, rule = net, GHL(net, tau=args.tau, layers=[HIDDEN], modulator=Ones())
        hidden_name = HIDDEN
    else:
        torch.manual_seed(seed)
        model = nn.Sequential(net, nn.Dropout(args.dropout), nn.Linear(net[2].out_features, 10))
        hidden_name = f"0.{HIDDEN}"
        rule = GHL(model, tau=args.tau, layers=[hidden_name]) if method == "ghl" else None
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    monitor = CompetitionMonitor(model, optimizer, layers=[hidden_name], threshold=args.dead_threshold,
                                 dead_every=args.dead_every)
    model.train()
    steps = (train_x.shape[0] // args.batch_size) * args.epochs
    progress = tqdm(total=steps, desc=f"{method} n={net[2].out_features}", mininterval=30, leave=False)
    for _ in range(args.epochs):
        order = torch.randperm(train_x.shape[0], generator=generator)
        for start in range(0, train_x.shape[0] - args.batch_size + 1, args.batch_size):
            index = order[start:start + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            output = model(train_x[index])
            if method != "swta":
                F.cross_entropy(output, train_y[index]).backward()
            if rule is not None:
                rule.step()
            optimizer.step()
            progress.update()
    progress.close()
    if rule is not None:
        rule.remove()
    monitor.remove()
    return monitor


def _train_softhebb(net: nn.Sequential, train_x: Tensor, args: argparse.Namespace,
                    generator: torch.Generator) -> CompetitionMonitor:
    """SoftHebb updates the weights itself (no optimizer): each update is bracketed by ``monitor.observe()``."""
    learner = SoftHebbLearner(net, {HIDDEN: args.tau}, lr=args.softhebb_lr)
    monitor = CompetitionMonitor(net, layers=[HIDDEN], threshold=args.dead_threshold, dead_every=args.dead_every)
    net.train()
    steps = (train_x.shape[0] // args.batch_size) * args.epochs
    progress = tqdm(total=steps, desc=f"softhebb n={net[2].out_features}", mininterval=30, leave=False)
    for _ in range(args.epochs):
        order = torch.randperm(train_x.shape[0], generator=generator)
        for start in range(0, train_x.shape[0] - args.batch_size + 1, args.batch_size):
            net(train_x[order[start:start + args.batch_size]])
            with monitor.observe():
                learner.step()
            progress.update()
    progress.close()
    learner.remove()
    monitor.remove()
    return monitor


def build_parser() -> argparse.ArgumentParser:
    positive, rate = cli.positive_int, cli.positive_float
    parser = cli.parser("python -m ghl_snn.experiments.competition", __doc__.split("\n\n")[0], raw=False)
    cli.add_common_arguments(parser, out_default="runs/competition", epochs_default=1,
                             epochs_help="training epochs of every rule", data_help="the folder holding MNIST/")
    parser.add_argument("--widths", type=cli.list_of(positive), default=[32, 128, 512, 2048],
                        help="hidden-layer widths (comma list)")
    cli.add_methods_argument(parser, METHODS, METHODS, help="rules; must include 'random' (the baseline)")
    parser.add_argument("--batch-size", type=positive, default=32, help="mini-batch size")
    parser.add_argument("--lr", type=rate, default=0.05, help="SGD learning rate of the swta and ghl runs")
    parser.add_argument("--tau", type=rate, default=1.0, help="SWTA / SoftHebb softmax temperature")
    parser.add_argument("--softhebb-lr", type=rate, default=0.05, help="SoftHebb learning rate")
    parser.add_argument("--dropout", type=cli.nonnegative_float, default=0.2,
                        help="dropout before the GHL run's linear head")
    parser.add_argument("--train-subset", type=positive, default=None, help="training images used by the rules "
                        "(default: all)")
    parser.add_argument("--probe-train", type=positive, default=20000,
                        help="first N images of the full training set used to fit the linear probe")
    parser.add_argument("--probe-epochs", type=positive, default=10, help="epochs of the linear probe")
    parser.add_argument("--probe-lr", type=rate, default=1e-2, help="Adam learning rate of the linear probe")
    parser.add_argument("--dead-threshold", type=cli.open_fraction, default=0.9,
                        help="cosine to the initial weights above which a neuron counts as dead")
    parser.add_argument("--dead-every", type=positive, default=25, help="record dead neurons every k-th step")
    parser.add_argument("--fields", type=positive, default=32, help="neurons shown per receptive-field panel")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dropout >= 1:
        parser.error(f"--dropout must be < 1, got {args.dropout}")
    if "random" not in args.methods:
        parser.error(f"--methods must include 'random' (the baseline), got {args.methods}")
    return args


#: ``main(argv) -> results`` (Python; errors raise) and ``cli_main(argv) -> exit code`` (the command line)
main, cli_main = cli.entry_points(parse_args, lambda args: run(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every (width, method) of ``args``; a finished run with the same settings in ``--out`` is reused."""
    done = cli.finished_run(args)
    if done is not None:
        return done
    out = Path(args.out)
    device = select_device(args.device)
    train_images, train_labels = load_mnist(args.data_root, train=True)  # before anything is written
    test_images, test_labels = load_mnist(args.data_root, train=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    write_json(out / "config.json", {**vars(args), "run_identity": cli.run_identity(args),
                                     "torch": torch.__version__,
                                     "threads": torch.get_num_threads(),
                                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    begin = time.perf_counter()
    train_x, test_x = mnist_vectors(train_images).to(device), mnist_vectors(test_images).to(device)
    train_labels, test_labels = train_labels.to(device), test_labels.to(device)
    probe_x, probe_y = train_x[:args.probe_train], train_labels[:args.probe_train]  # from the full training set
    if args.train_subset:
        train_x, train_labels = train_x[:args.train_subset], train_labels[:args.train_subset]
    rows: list[dict[str, Any]] = []
    traces: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for seed, width in itertools.product(cli.seeds_of(args), args.widths):
        seed_everything(seed + width)
        initial = encoder(width).to(device)
        weights: dict[str, Tensor] = {}
        for method in args.methods:
            net = copy.deepcopy(initial)
            start = time.perf_counter()
            row: dict[str, Any] = {"width": width, "method": method, "seed": seed}
            if method != "random":
                monitor = train_encoder(method, net, train_x, train_labels, args, seed + width)
                summary = next(iter(monitor.summary().values()))
                if seed == args.seed:
                    monitor.to_csv(out / "traces" / f"{method}_w{width}.csv")
                    traces[(width, method)] = [(r["step"], r["gini"]) for r in monitor.records]
                row.update(gini_start=summary["gini_start"], gini_end=summary["gini_end"],
                           gini_diff=summary["gini_end"] - summary["gini_start"], steps=int(summary["steps"]))
            rho = init_similarity(initial[2].weight, net[2].weight)
            row.update(dead_fraction=float((rho >= args.dead_threshold).double().mean()),
                       median_cos_to_init=float(rho.median()), train_seconds=time.perf_counter() - start)
            test_features = extract_features(net, test_x)
            probe = linear_probe(extract_features(net, probe_x), probe_y, test_features, test_labels,
                                 epochs=args.probe_epochs, lr=args.probe_lr, seed=seed)
            row.update(probe_test_acc=probe.final_accuracy, probe_best_test_acc=probe.best_accuracy,
                       active_fraction=float((test_features > 0).float().mean()))
            rows.append(row)
            weights[method] = net[2].weight.detach().cpu().clone()
            if not args.quiet:
                tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        random_acc = next(r["probe_test_acc"] for r in rows if r["width"] == width and r["seed"] == seed
                          and r["method"] == "random")
        for row in rows:
            if row["width"] == width and row["seed"] == seed:
                row["test_gain_vs_random"] = row["probe_test_acc"] - random_acc
        if seed == args.seed:
            receptive_fields(weights, out / f"receptive_fields_w{width}.png", min(args.fields, width),
                             f"first-layer weights, {width} hidden units (first {min(args.fields, width)} neurons)")
    plot_gini(traces, out / "gini.png")
    columns = ["width", "method", "seed", "gini_start", "gini_end", "gini_diff", "dead_fraction", "median_cos_to_init",
               "active_fraction", "probe_test_acc", "probe_best_test_acc", "test_gain_vs_random",
               "train_seconds"]
    table = markdown_table(rows, columns)
    (out / "tables.md").write_text(table + "\n")
    print(table)
    results = {"rows": rows, "seconds": time.perf_counter() - begin}
    write_json(out / "results.json", results)
    return results


if __name__ == "__main__":
    sys.exit(cli_main())
