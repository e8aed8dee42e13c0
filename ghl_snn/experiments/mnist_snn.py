"""Spiking MLP on rate-coded MNIST: online three-factor rules with their controls, plain DFA, rate SGD and BPTT.

    python -m ghl_snn.experiments.mnist_snn [--data-root DIR] [--out DIR] [--methods ...] [--train-subset N]
        [--epochs E] [--seeds S] [--lrs-sign ...] [--lrs-grad ...]

Network: ``784 -> hidden IF (spiking) -> 10`` (non-spiking read-out: the time-averaged output current is the
logit), Bernoulli rate coding of the pixels for ``T`` steps.  Every method uses SGD with momentum 0.9 and a cosine
learning-rate schedule over all iterations; its learning rates are chosen by the comparison engine
([`ghl_snn.comparison.engine`][]) on a validation split held out of the training set (never the test set),
scored by the mean over ``--tune-seeds`` seeds; the chosen rates then run on every seed (``--seed``, ``--seeds``)
and each method is compared with its controls and baselines by the paired test difference with its 95 %
interval.  Methods (rows; any method of the registry [`ghl_snn.comparison.methods`][] runs too):

* ``grad_sign``: [`ThreeFactor`][ghl_snn.ThreeFactor] with GradSign of the rate surrogate (GHL; identical to
  NeuronSign's per-synapse sign, which is tested);
* ``feedback_sign``: FeedbackSign (direct feedback alignment per neuron, per-synapse sign, no backward pass);
* ``agr``: [`AttentionGatedReward`][ghl_snn.AttentionGatedReward] (Q-AGREL: one reward-prediction error per
  sample times the chosen output's attention tag, fed back through the transposed forward weights, times the
  presynaptic trace; no sign, no ``|E|``); ``agr_learned`` / ``agr_random``: the same with learned / fixed random
  feedback weights;
* ``reward_sign``: RewardSign (the sign of ``agr``'s credit times ``|E|``); ``reward_sign_random``: with the fixed
  random feedback;
* ``rstdp``: reward-modulated STDP (MSTDPET: Florian 2007; Izhikevich 2007): the pair-STDP eligibility trace of
  [`RewardSTDP`][ghl_snn.RewardSTDP] (per-layer ``E / max|E|``) times one signed reward for the whole batch,
  [`ScalarReward`][ghl_snn.ScalarReward] (``W <- W + eta (r - b) E``, ``b`` a running mean of the reward that
  starts at the chance reward 0.1, so that ``r - b`` has no systematic sign at initialisation); STDP
  needs post-synaptic spikes in every plastic layer, so these rows' read-out is a layer of spiking neurons of the
  same model (the logit is its spike rate); ``rstdp_readout`` is its read-out-only control;
* hybrids that locate the cost of the sign rule: ``grad_sign_unit`` (GradSign with ``|E| := 1``,
  [`UnitMagnitude`][ghl_snn.UnitMagnitude]), ``grad_sign_sgd_readout`` / ``feedback_sign_sgd_readout`` (the sign
  rule on the hidden layer, the plain gradient on the read-out, [`PlainReadout`][ghl_snn.PlainReadout]; their
  read-out-only control is ``readout_sgd``);
* ``dfa``: plain direct feedback alignment with the same feedback (no sign, no ``|E|``): FeedbackSign's baseline;
* ``rate_sgd``: plain SGD on the rate surrogate's gradient (no sign, no ``|E|``): GradSign's baseline;
* ``bptt``: surrogate-gradient BPTT through the ``T`` steps (fast-sigmoid surrogate);
* controls with the hidden layer frozen at its random initialisation (read-out only): ``readout_sign`` (the
  read-out of GradSign, NeuronSign and FeedbackSign receives the same signal, so one control serves all three),
  ``readout_sgd`` (of ``dfa``, ``rate_sgd`` and ``bptt``), ``reward_readout`` (of the RewardSign rows) and
  ``agr_readout`` (of the ``agr`` rows).

The reward rows choose one output per image (``--policy``: epsilon-greedy or softmax) and learn from the reward
``[choice == label]`` alone.  The learning rates are searched one after the other: first one rate for all layers
from ``--lrs-*`` (extended past whichever edge holds the best value), then, for methods with a plastic hidden
layer, the hidden layer's rate as a multiple of the read-out's from ``--lr-ratios`` (also extended past edges),
then both around the best point; every score is named by its split (``train_acc`` / ``val_acc`` / ``test_acc``,
measured after every epoch; the selection reads validation only).

Every run trains through [`SpikingTrainer`][ghl_snn.comparison.spiking.SpikingTrainer] (checkpoint every epoch,
``--resume``, stop on a non-finite loss) in a fresh process, so its peak memory (RSS increase on CPU) is its own.
Writes per run ``<out>/<method>/lr<lr>/seed<s>/`` (config, metrics.csv, results.json, curves.png, checkpoint.pt)
and the engine's ``<out>/results.json`` (every trial, chosen values, edge flags, comparisons), ``<out>/results.md`` (its
table, then the targets) and ``<out>/curves.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..datasets.mnist import load_mnist, locate_mnist, mnist_vectors
from ..spiking import RateCoded, SpikingNetwork, ThreeFactor, neuron_models
from ..spiking.architectures import neuron_mlp
from ..comparison import cli
from ..comparison import methods as registry
from ..comparison.common import atomic_path, markdown_table, seed_everything, select_device
from ..comparison.engine import Method, Param, compare_command
from ..comparison.processes import run_in_child
from ..comparison.runner import TrainingDiverged, fit, shuffled_batches
from ..comparison.spiking import SpikingTrainer
from .spiking_results import (BASELINES, CONTROLS, DEFAULT_METHODS, METHODS, SIGN_METHODS, hidden_learns, is_reward,
                              is_sign, targets)


def needs_spiking_readout(method: str) -> bool:
    """Whether ``method``'s eligibility is a spike-timing rule, whose read-out must spike."""
    return method != "bptt" and registry.spec(method).rule == "reward_stdp"


def make_learner(method: str, net: SpikingNetwork, tau: float, seed: int, normalize: str = "max",
                 magnitude: str = "eligibility") -> ThreeFactor | None:
    """The method's learner from the registry ([`ghl_snn.comparison.methods`][]; ``None`` for BPTT); read-out-only
    methods freeze the hidden synapses.  ``normalize="none"`` keeps the raw ``E``; ``magnitude="ones"`` replaces
    ``|E|`` by 1 in the sign rules (ablation)."""
    if method == "bptt":
        return None
    sign_rule = registry.spec(method).modulator in SIGN_METHODS
    return registry.build_learner(method, net, seed=seed, spiking=True, readout=["2"], tau=tau,
                                  normalize=None if normalize == "none" else "max",
                                  magnitude=magnitude if sign_rule else "eligibility")


def split_data(config: dict[str, Any]) -> dict[str, tuple[Tensor, Tensor]]:
    """Training subset and validation split (disjoint, from the training set; fixed by ``data_seed``) and test."""
    train_x, train_y = load_mnist(config["data_root"], train=True)
    test_x, test_y = load_mnist(config["data_root"], train=False)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(config["data_seed"]))
    val_index = order[:config["val_size"]]
    train_index = order[config["val_size"]:config["val_size"] + config["train_subset"]]
    test_index = torch.arange(min(config["test_subset"], len(test_x)))
    return {"train": (mnist_vectors(train_x[train_index]), train_y[train_index]),
            "val": (mnist_vectors(train_x[val_index]), train_y[val_index]),
            "test": (mnist_vectors(test_x[test_index]), test_y[test_index])}


def train_run(config: dict[str, Any]) -> dict[str, Any]:
    """Train one (method, lr, seed) through the runner and return its results (validation and test accuracy)."""
    started = time.perf_counter()
    torch.set_num_threads(config["threads"])
    seed_everything(config["seed"])
    device = select_device(config["device"])
    data = {k: (x.to(device), y.to(device)) for k, (x, y) in split_data(config).items()}
    net = neuron_mlp(784, config["hidden"], 10, config["neuron"], config["init_scale"],
                     needs_spiking_readout(config["method"])).to(device)
    learner = make_learner(config["method"], net, config["tau"], config["seed"], config.get("normalize", "max"),
                           config.get("magnitude", "eligibility"))
    model = RateCoded(net, config["steps"])
    hidden = [p for p in net[0].parameters() if p.requires_grad]
    readout = [p for p in net[2].parameters() if p.requires_grad]
    groups = [{"params": readout, "lr": config["lr"]}]
    if hidden:  # per-layer learning rates: the hidden layer's is a multiple of the read-out's
        groups.append({"params": hidden, "lr": config["lr"] * config.get("lr_ratio", 1.0)})
    optimizer = torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"])
    train_x, train_y = data["train"]
    per_epoch = (len(train_x) + config["batch_size"] - 1) // config["batch_size"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"] * per_epoch)
    trainer = SpikingTrainer(model=model, optimizer=optimizer, scheduler=scheduler, rule=learner,
                             learner=learner, epsilon=config["epsilon"], policy=config.get("policy", "epsilon"),
                             temperature=config.get("temperature", 0.05), progress=config.get("progress", True))

    def evaluation(split: str) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = data[split]
        return ((x[i:i + config["eval_batch_size"]], y[i:i + config["eval_batch_size"]])
                for i in range(0, len(x), config["eval_batch_size"]))

    identity = {key: value for key, value in config.items() if key not in NOT_IDENTITY}
    try:
        results = fit(trainer,
                      lambda epoch: shuffled_batches(train_x, train_y, config["batch_size"], config["seed"], epoch),
                      {"val": lambda: evaluation("val"), "test": lambda: evaluation("test")}, config["epochs"],
                      config["run_dir"], {**config, "run_identity": identity}, resume=config["resume"],
                      steps_per_epoch=per_epoch, device=device, force=config.get("force", False),
                      desc=f"{config['method']} lr={config['lr']:g} seed={config['seed']}")
    except TrainingDiverged as error:  # a rate of the sweep that diverges loses the selection (the engine)
        return {"diverged": True, "error": str(error), "history": [], "run_seconds": time.perf_counter() - started}
    with torch.no_grad():  # mean hidden firing rate on the first validation images (dead or saturated layer?)
        net.run(data["val"][0][:500], config["steps"], model.encoder, record=True)
    return {"history": trainer.history, "hidden_rate": float(net.mean_outputs["1"].mean()),
            "train_seconds": results["wall_time_s"], "run_seconds": time.perf_counter() - started,
            "peak_memory_mib": results["peak_memory_mib"], "run_dir": config["run_dir"]}


#: run settings that do not change its results (left out of its identity)
NOT_IDENTITY = ("resume", "force", "threads", "device", "run_dir", "data_root", "quiet", "progress")


def run_isolated(config: dict[str, Any]) -> dict[str, Any]:
    """Run ``train_run`` in a fresh (spawned) process, which dies with this one, so its peak memory is measured on
    its own."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))  # freed large blocks leave the RSS
    return run_in_child(train_run, config)


def build_parser() -> argparse.ArgumentParser:
    pos, posf, nonneg = cli.positive_int, cli.positive_float, cli.nonnegative_int
    parser = cli.parser("python -m ghl_snn.experiments.mnist_snn", __doc__.split("\n\n")[0] + "\n\n"
                        + __doc__.split("\n\n")[2])
    cli.add_common_arguments(parser, out_default="runs/mnist-snn", data_help="the folder holding MNIST/",
                             seeds_default=3, seeds_help="seeds at the chosen learning rates",
                             epochs_default=5, threads_default=1,
                             out_layout=" (runs in DIR/<method>/lr<lr>/seed<s>/)")
    cli.add_methods_argument(parser, lambda: registry.method_names(METHODS, spiking=True), DEFAULT_METHODS)
    parser.add_argument("--neuron", default="if", choices=tuple(neuron_models()),
                        help="hidden neuron model")
    parser.add_argument("--hidden", type=pos, default=256, help="hidden spiking neurons")
    parser.add_argument("--steps", type=pos, default=10, help="time steps T per presentation")
    parser.add_argument("--train-subset", type=pos, default=55000, help="training images (after the validation "
                        "split)")
    parser.add_argument("--val-size", type=pos, default=5000, help="validation images held out of the train set")
    parser.add_argument("--test-subset", type=pos, default=10000, help="test images evaluated")
    parser.add_argument("--batch-size", type=pos, default=32, help="mini-batch size")
    parser.add_argument("--eval-batch-size", type=pos, default=500, help="batch size of the evaluation")
    parser.add_argument("--lrs-sign", type=posf, nargs="+", default=[0.003, 0.01, 0.03],
                        help="learning-rate grid of the sign rules (M ⊙ |E|)")
    parser.add_argument("--lrs-grad", type=posf, nargs="+", default=[0.03, 0.1, 0.3],
                        help="learning-rate grid of the gradient-magnitude rules (DFA, rate SGD, BPTT)")
    parser.add_argument("--lrs-reward", type=posf, nargs="+", default=[0.0003, 0.001, 0.003],
                        help="learning-rate grid of the reward sign rules (RewardSign rows; the plain reward rules "
                        "use --lrs-grad)")
    parser.add_argument("--lr-ratios", type=posf, nargs="+", default=[0.3, 1.0, 3.0],
                        help="grid of the hidden layer's learning rate as a multiple of the read-out's (chosen on "
                        "validation after the common rate; one value: no per-layer search)")
    parser.add_argument("--max-extensions", type=nonneg, default=3, help="how often a grid is extended past the "
                        "edge that holds its best value")
    parser.add_argument("--tune-seeds", type=cli.positive_int, default=2, help="seeds whose mean validation "
                        "accuracy chooses the learning rates (the first ones of the run; at least 2)")
    parser.add_argument("--momentum", type=cli.nonnegative_float, default=0.9, help="SGD momentum")
    parser.add_argument("--tau", type=posf, default=10.0, help="SWTA softmax temperature of E (10: see the |E| "
                        "study in experiments/mnist-snn)")
    parser.add_argument("--normalize", default="max", choices=("max", "none"), help="per-layer E / max|E| or raw E")
    parser.add_argument("--magnitude", default="eligibility", choices=("eligibility", "ones"),
                        help="ablation: 'ones' replaces |E| by 1 in the sign rules")
    parser.add_argument("--epsilon", type=cli.nonnegative_float, default=0.05, help="exploration of the reward "
                        "rules (probability of a random choice)")
    parser.add_argument("--policy", default="epsilon", choices=("epsilon", "softmax"),
                        help="action selection of the reward rules: epsilon-greedy or softmax (Boltzmann)")
    parser.add_argument("--temperature", type=posf, default=0.05, help="softmax temperature of --policy softmax")
    parser.add_argument("--init-scale", type=posf, default=4.0, help="first-layer weight scale (hidden activity)")
    parser.add_argument("--data-seed", type=nonneg, default=0, help="seed of the train/validation split")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options: a bad value exits with one line and exit code 2 before anything is read."""
    return build_parser().parse_args(argv)


def rows(args: argparse.Namespace) -> list[Method]:
    """The compared rows: every method's learning rate (``--lrs-*`` by family) and, where the hidden layer learns,
    its rate as a multiple of the read-out's (``--lr-ratios``), searched one after the other; each row compared
    with its read-out-only control and baselines among the rows run."""
    methods = []
    for method in args.methods:
        grid = (args.lrs_reward if is_sign(method) and is_reward(method) else
                args.lrs_sign if is_sign(method) else args.lrs_grad)
        tuned = [Param("lr", tuple(grid), step=None if len(grid) > 1 else 3.0, upper=math.inf)]
        if hidden_learns(method) and len(args.lr_ratios) > 1:
            tuned.append(Param("lr_ratio", tuple(args.lr_ratios), upper=math.inf,
                               start=1.0 if 1.0 in args.lr_ratios else None))
        controls = tuple(c for c in (CONTROLS.get(method), *BASELINES.get(method, ())) if c in args.methods)
        methods.append(Method(method, tuple(tuned), controls=controls, joint=False))
    return methods


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Tune every method's learning rates on the validation split (``--tune-seeds`` seeds, grids extended past
    their edges), run the chosen values on every seed, compare each method with its controls (the engine
    [`ghl_snn.comparison.engine`][]) and write the outputs."""
    data_root = locate_mnist(args.data_root)  # a wrong data root: one line, before any process starts
    out = Path(args.out)
    base = {k: v for k, v in vars(args).items()
            if k not in ("out", "methods", "lrs_sign", "lrs_grad", "lrs_reward", "lr_ratios", "seeds", "quiet",
                         "max_extensions", "dist", "tune_seeds")}
    base.update(data_root=str(data_root), progress=not args.quiet)

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        lr, ratio = hparams["lr"], hparams.get("lr_ratio", 1.0)
        leaf = f"lr{lr:g}" if ratio == 1.0 else f"lr{lr:g}_hidden{ratio:g}"
        record = run_isolated({**base, "method": method, "lr": lr, "lr_ratio": ratio, "seed": seed,
                               "run_dir": str(out / method / leaf / f"seed{seed}")})
        if not args.quiet and not record.get("diverged"):
            last = record["history"][-1]
            tqdm.write(f"{method} lr={lr:g} hidden x{ratio:g} seed={seed}: val_acc {last['val_acc']:.4f}  "
                       f"test_acc {last['test_acc']:.4f}  {record['run_seconds']:.0f}s")
        return record

    results = compare_command(args, rows(args), run, ignore=("lrs_sign", "lrs_grad", "lrs_reward", "lr_ratios"),
                              max_extend=args.max_extensions,
                              title=f"spiking MLP on MNIST, {args.epochs} epochs, T = {args.steps}")
    tests = {name: final["test"] for name, final in results["final"].items()}
    table = markdown_table(targets(tests))
    text = (out / "results.md").read_text() + ("\n" + table + "\n" if table else "")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    if table and not args.quiet:
        print(table)
    return results


main, cli_main = cli.entry_points(parse_args, lambda args: run_sweep(args),
                                  check=lambda args: locate_mnist(args.data_root))


if __name__ == "__main__":
    sys.exit(cli_main())
