"""Spike-vs-rate equivalence against the number of time steps T, for a Linear and a Conv2d spiking network.

    python -m ghl_snn.experiments.equivalence [--steps 10 30 100 300 1000] [--seeds 3] [--out DIR]

For every T and seed the online [`ThreeFactor`][ghl_snn.ThreeFactor] learner (IF neurons, running-mean
pre-synaptic traces, ``E`` from the end-of-window traces, Bernoulli rate-coded input) runs one window and receives
``M = GradSign`` of its rate surrogate.  Comparisons per plastic layer against the rate network
([`to_rate_network`][ghl_snn.to_rate_network], same weights, the neurons' f-I curves), with two references:
*true* (input = the rates, the ``T -> inf`` limit; includes the input's Bernoulli sampling noise) and *empirical*
(input = the time-averaged spikes the network actually received; only the neurons' quantisation remains):

* eligibility: spiking ``E`` vs the rate SWTA-Oja ``E`` (relative error, cosine; true reference);
* update: spiking ``M ⊙ |E|`` vs the GHL plug-in update of the rate network (cosine, sign agreement; both).

Prints a markdown table (mean over seeds) and writes ``equivalence.png`` (error and cosine against T with a
``1/sqrt(T)`` guide), ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..equivalence import compare, rate_eligibilities, rate_updates
from ..modulators.grad_sign import GradSign
from ..spiking import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor
from ..comparison import cli
from ..comparison.common import markdown_table, seed_everything, write_json


def linear_network(seed: int) -> tuple[SpikingNetwork, torch.Tensor, torch.Tensor]:
    """64 -> 32 (IF) -> 10 network, input rates (16, 64), targets."""
    torch.manual_seed(seed)
    net = SpikingNetwork(nn.Linear(64, 32, bias=False), IF(), nn.Linear(32, 10, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return net, torch.rand(16, 64), torch.randint(0, 10, (16,))


def conv_network(seed: int) -> tuple[SpikingNetwork, torch.Tensor, torch.Tensor]:
    """Conv2d(2 -> 8, 3x3, pad 1) (IF) -> flatten -> 10 network, input rates (8, 2, 8, 8), targets."""
    torch.manual_seed(seed)
    net = SpikingNetwork(nn.Conv2d(2, 8, 3, padding=1, bias=False), IF(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 10, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return net, torch.rand(8, 2, 8, 8), torch.randint(0, 10, (8,))


NETWORKS = {"linear": linear_network, "conv": conv_network}


def measure(kind: str, steps: int, seed: int, tau: float) -> list[dict[str, Any]]:
    net, rates, target = NETWORKS[kind](0)  # fixed network and input; the seed only changes the spikes

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target)

    reference_e = rate_eligibilities(net, rates, tau=tau)
    reference_update = rate_updates(net, rates, loss_fn, tau=tau, modulator=GradSign())
    learner = ThreeFactor(net, modulator=GradSign(), tau=tau)
    learner.run(rates, steps, BernoulliEncoder(generator=torch.Generator().manual_seed(seed)))
    net.zero_grad(set_to_none=True)
    learner.step(loss_fn=loss_fn)
    empirical_update = rate_updates(net, net.mean_input, loss_fn, tau=tau, modulator=GradSign())
    rows = []
    for name, module in learner.layers.items():
        eligibility = compare(learner.eligibility(name), reference_e[name])
        update = compare(module.weight.grad, reference_update[name])
        empirical = compare(module.weight.grad, empirical_update[name])
        rows.append({"network": kind, "layer": f"{name}:{type(module).__name__}", "T": steps, "seed": seed,
                     "E rel. error": eligibility["relative_error"], "E cosine": eligibility["cosine"],
                     "update cosine (true)": update["cosine"], "sign agreement (true)": update["sign_agreement"],
                     "update cosine (empirical)": empirical["cosine"],
                     "sign agreement (empirical)": empirical["sign_agreement"]})
    learner.remove()
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = sorted({(r["network"], r["layer"], r["T"]) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    metrics = ("E rel. error", "E cosine", "update cosine (true)", "sign agreement (true)",
               "update cosine (empirical)", "sign agreement (empirical)")
    summary = []
    for network, layer, steps in keys:
        group = [r for r in rows if (r["network"], r["layer"], r["T"]) == (network, layer, steps)]
        present = [m for m in metrics if all(m in r for r in group)]  # e.g. HebbFF has no true-rate reference
        summary.append({"network": network, "layer": layer, "T": steps,
                        **{m: sum(r[m] for r in group) / len(group) for m in present}})
    return summary


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for network, layer in sorted({(r["network"], r["layer"]) for r in summary}):
        group = [r for r in summary if (r["network"], r["layer"]) == (network, layer)]
        steps = [r["T"] for r in group]
        left.plot(steps, [r["E rel. error"] for r in group], marker="o", label=f"{network} {layer}")
        right.plot(steps, [r.get("update cosine (true)", float("nan")) for r in group], marker="o",
                   label=f"{network} {layer} update, true")
        right.plot(steps, [r.get("update cosine (empirical)", float("nan")) for r in group], marker="s", linestyle=":",
                   label=f"{network} {layer} update, empirical")
        right.plot(steps, [r["E cosine"] for r in group], marker="x", linestyle="--", label=f"{network} {layer} E")
    all_steps = sorted({r["T"] for r in summary})
    first = max(r["E rel. error"] for r in summary if r["T"] == all_steps[0])
    left.plot(all_steps, [first * (all_steps[0] / t) ** 0.5 for t in all_steps], "k:", label="1/sqrt(T)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("time steps T")
    left.set_ylabel("relative error of E/T vs rate E")
    left.legend(fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("time steps T")
    right.set_ylabel("cosine similarity to rate")
    right.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.equivalence", __doc__.split("\n\n")[0], raw=False)
    parser.add_argument("--steps", type=cli.positive_int, nargs="+", default=[10, 30, 100, 300, 1000],
                        help="window lengths T (time steps) to measure")
    parser.add_argument("--seeds", type=cli.positive_int, default=3, help="seeds 0 .. S-1 per network and T")
    parser.add_argument("--tau", type=cli.positive_float, default=1.0, help="SWTA softmax temperature of E")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS),
                        help="spiking networks to measure (a Linear and a Conv2d network)")
    parser.add_argument("--out", default="runs/equivalence", metavar="DIR",
                        help="output folder (results.md, results.json, equivalence.png)")
    parser.add_argument("--threads", type=cli.positive_int, default=1, help="torch CPU threads")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options: a bad value exits with one line and exit code 2 before anything runs."""
    return build_parser().parse_args(argv)


def run_measurements(args: argparse.Namespace, jobs: list[tuple[Any, ...]],
                     measure_job: Callable[..., list[dict[str, Any]]], desc: str) -> list[dict[str, Any]]:
    """Run ``measure_job(*job)`` for every job and write ``config.json``, ``results.md``, ``results.json`` and
    ``equivalence.png`` into ``args.out``; returns the summary (shared by the GHL and HebbFF equivalence CLIs)."""
    torch.set_num_threads(args.threads)
    seed_everything(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**vars(args), "machine": f"{os.cpu_count()}-core CPU"})
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for job in tqdm(jobs, desc=desc):
        rows += measure_job(*job)
    summary = summarise(rows)
    table = markdown_table(summary)
    print(table)
    print(f"total time {time.perf_counter() - start:.0f}s")
    (out / "results.md").write_text(table + "\n")
    write_json(out / "results.json", {"rows": rows, "summary": summary})
    plot(summary, out / "equivalence.png")
    return summary


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every (network, T, seed), write the tables and the plot into ``--out``; returns the summary."""
    jobs = [(kind, steps, seed) for kind in args.networks for steps in args.steps for seed in range(args.seeds)]
    return run_measurements(args, jobs, lambda kind, steps, seed: measure(kind, steps, seed, args.tau),
                            "equivalence")


#: ``main(argv)`` returns the summary; ``cli_main(argv)`` is the command line (checked options, the output folder
#: guarded, one-line errors with exit code 2; see [`ghl_snn.comparison.cli`][])
main, cli_main = cli.entry_points(parse_args, run, resumable=False)


if __name__ == "__main__":
    sys.exit(cli_main())
