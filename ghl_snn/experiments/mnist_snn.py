"""Spiking MLP on rate-coded MNIST, trained online by three-factor rules or by surrogate-gradient BPTT.

    python -m ghl_snn.experiments.mnist_snn [--data-root DIR] [--out DIR] [--steps 10] [--memory-steps 10 100]

Network: ``784 -> hidden (spiking) -> 10`` (non-spiking read-out: the time-averaged output current is the logit),
Bernoulli rate coding of the pixel intensities for ``T`` steps.  Methods (one table row each):

* ``feedback_sign`` / ``neuron_sign`` / ``reward_sign``: :class:`~ghl_snn.spiking.ThreeFactor` with per-sample
  traces and the broadcast sign of :class:`FeedbackSign` (no backprop at all), :class:`NeuronSign` (delta from one
  backward pass through the rate surrogate, no BPTT) or :class:`RewardSign` (reward = correct / not);
* ``grad_sign``: ThreeFactor with GradSign of the rate surrogate (batch GHL, no BPTT);
* ``ghl_bptt``: ThreeFactor with GradSign of the surrogate-gradient BPTT gradient (memory grows with T);
* ``bptt``: plain surrogate-gradient BPTT (no Hebbian term), the usual SNN baseline.

Each method runs in a fresh process (with ``MALLOC_MMAP_THRESHOLD_=1MiB`` so that freed large blocks leave the RSS)
so that its peak memory (RSS on CPU) is measured on its own; with
``--memory-steps`` the online rule and BPTT are also run for a few batches at each listed ``T`` to show how their
peak memory scales.  Writes ``config.json``, ``results.json``, ``results.md``, ``metrics.csv`` and ``curves.png``.
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..datasets.mnist import load_mnist, mnist_vectors
from ..modulators.feedback_sign import FeedbackSign
from ..modulators.grad_sign import GradSign
from ..modulators.neuron_sign import NeuronSign
from ..modulators.reward_sign import RewardSign
from ..spiking import IF, LIF, BernoulliEncoder, SpikingNetwork, ThreeFactor
from .common import PeakMemory, markdown_table, seed_everything, select_device, write_json

METHODS = ("feedback_sign", "neuron_sign", "grad_sign", "reward_sign", "ghl_bptt", "bptt")
MEMORY_METHODS = ("feedback_sign", "grad_sign", "bptt")


def build_network(hidden: int, neuron: str, init_scale: float) -> SpikingNetwork:
    """``784 -> hidden -> 10`` bias-free spiking MLP with the chosen neuron model."""
    if neuron == "if":
        cell: nn.Module = IF()
    elif neuron == "lif":
        cell = LIF(beta=0.95)
    elif neuron == "snntorch":
        import snntorch
        cell = snntorch.Leaky(beta=0.95)
    elif neuron == "norse":
        from norse.torch import LIFBoxCell
        cell = LIFBoxCell()
    else:
        raise ValueError(f"unknown neuron {neuron!r}")
    net = SpikingNetwork(nn.Linear(784, hidden, bias=False), cell, nn.Linear(hidden, 10, bias=False))
    gain = net[1].gain
    with torch.no_grad():
        net[0].weight.mul_(init_scale / gain)
    return net


def make_learner(method: str, net: SpikingNetwork, tau: float, seed: int) -> ThreeFactor | None:
    if method == "bptt":
        return None
    modulators = {"feedback_sign": FeedbackSign(seed=seed), "neuron_sign": NeuronSign(), "grad_sign": GradSign(),
                  "reward_sign": RewardSign(seed=seed), "ghl_bptt": GradSign()}
    return ThreeFactor(net, modulator=modulators[method], tau=tau,
                       global_signal="bptt" if method == "ghl_bptt" else "rate")


def evaluate(net: SpikingNetwork, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
             generator: torch.Generator) -> float:
    correct = 0
    encoder = BernoulliEncoder(generator=generator)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            out = net.run(x, steps, encoder, record=False)
            correct += int((out.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(images)


def train_method(config: dict[str, Any]) -> dict[str, Any]:
    """Train one method (in the current process) and return its results row and per-epoch metrics."""
    torch.set_num_threads(config["threads"])
    seed_everything(config["seed"])
    device = select_device(config["device"])
    method, steps = config["method"], config["steps"]
    train_x, train_y = load_mnist(config["data_root"], train=True)
    test_x, test_y = load_mnist(config["data_root"], train=False)
    generator = torch.Generator().manual_seed(config["seed"])
    order = torch.randperm(len(train_x), generator=generator)[:config["train_subset"]]
    train_x, train_y = mnist_vectors(train_x[order]).to(device), train_y[order].to(device)
    test_x, test_y = mnist_vectors(test_x[:config["test_subset"]]).to(device), test_y[:config["test_subset"]].to(device)
    net = build_network(config["hidden"], config["neuron"], config["init_scale"]).to(device)
    learner = make_learner(method, net, config["tau"], config["seed"])
    lr = config["lr_bptt"] if method == "bptt" else config["lr"]
    optimizer = (torch.optim.Adam(net.parameters(), lr=lr) if method == "bptt"
                 else torch.optim.SGD(net.parameters(), lr=lr, momentum=config["momentum"]))
    encoder = BernoulliEncoder(generator=generator)
    batches = config["max_batches"] or (len(train_x) + config["batch_size"] - 1) // config["batch_size"]
    metrics = []
    start_time = time.perf_counter()
    with PeakMemory(device) as memory:
        for epoch in range(config["epochs"]):
            permutation = torch.randperm(len(train_x), generator=generator)
            running_loss, seen = 0.0, 0
            bar = tqdm(range(batches), desc=f"{method} T={steps} epoch {epoch + 1}", leave=False,
                       disable=config["quiet"])
            for b in bar:
                index = permutation[b * config["batch_size"]:(b + 1) * config["batch_size"]]
                x, y = train_x[index], train_y[index]
                optimizer.zero_grad(set_to_none=True)

                def loss_fn(out: torch.Tensor, y: torch.Tensor = y) -> torch.Tensor:
                    return F.cross_entropy(out, y)

                if learner is None:  # plain BPTT
                    out = net.run(x, steps, encoder, record=False)
                    loss = loss_fn(out)
                    loss.backward()
                elif learner.global_signal == "bptt":
                    out = learner.run(x, steps, encoder)
                    loss = loss_fn(out)
                    loss.backward()
                    learner.step()
                else:
                    out = learner.run(x, steps, encoder)
                    loss = loss_fn(out)
                    reward = (out.argmax(1) == y).float()
                    learner.step(loss_fn=loss_fn, reward=reward)
                optimizer.step()
                running_loss += float(loss.detach()) * len(y)
                seen += len(y)
                bar.set_postfix(loss=f"{running_loss / seen:.3f}")
            accuracy = evaluate(net, test_x, test_y, steps, config["eval_batch_size"], generator)
            metrics.append({"epoch": epoch + 1, "train_loss": running_loss / max(seen, 1),
                            "test_accuracy": accuracy, "time_s": time.perf_counter() - start_time})
    wall = time.perf_counter() - start_time
    return {"method": method, "T": steps, "test_accuracy": metrics[-1]["test_accuracy"],
            "train_loss": metrics[-1]["train_loss"], "wall_time_s": wall, "peak_mem_mib": memory.peak_mib,
            "peak_rss_mib": memory.peak_rss_mib, "metrics": metrics}


def run_isolated(config: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`train_method` in a fresh (spawned) process so its peak memory is measured on its own."""
    # large blocks through mmap, returned to the OS on free: RSS then tracks live memory, not allocator caching
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    context = mp.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(train_method, (config,))


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    main = [r for r in rows if r.get("role") == "main"]
    left.bar([r["method"] for r in main], [100 * r["test_accuracy"] for r in main])
    left.axhline(10, color="grey", linestyle=":", label="chance")
    left.set_ylabel("test accuracy (%)")
    left.tick_params(axis="x", rotation=30)
    left.legend()
    memory_rows = [r for r in rows if r.get("role") == "memory"]
    for method in sorted({r["method"] for r in memory_rows}):
        points = sorted((r["T"], r["peak_mem_mib"]) for r in memory_rows if r["method"] == method)
        right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    right.set_xlabel("time steps T")
    right.set_ylabel("peak memory above baseline (MiB)")
    right.set_xscale("log")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/ (default: $GHL_SNN_DATA)")
    parser.add_argument("--out", default="runs/mnist-snn")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--neuron", default="if", choices=("if", "lif", "snntorch", "norse"))
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="time steps T per presentation")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--test-subset", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the three-factor rules")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--lr-bptt", type=float, default=1e-3, help="Adam learning rate of plain BPTT")
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--init-scale", type=float, default=4.0, help="first-layer weight scale (hidden activity)")
    parser.add_argument("--memory-steps", type=int, nargs="*", default=[10, 100],
                        help="T values of the memory-scaling runs (MEMORY_METHODS, --memory-batches each)")
    parser.add_argument("--memory-batches", type=int, default=20)
    parser.add_argument("--max-batches", type=int, default=0, help="limit batches per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1 or any(t < 1 for t in args.memory_steps):
        parser.error("time steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in vars(args).items() if k not in ("out", "methods", "memory_steps", "memory_batches")}
    base["data_root"] = args.data_root or os.environ.get("GHL_SNN_DATA")
    write_json(out / "config.json", {**vars(args), "machine": f"{os.cpu_count()}-core CPU, "
                                     f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}"})
    rows: list[dict[str, Any]] = []
    for method in tqdm(args.methods, desc="methods", disable=args.quiet):
        row = run_isolated({**base, "method": method})
        rows.append({**row, "role": "main"})
        print(f"{method}: test accuracy {100 * row['test_accuracy']:.2f}%  wall {row['wall_time_s']:.0f}s  "
              f"peak {row['peak_mem_mib']:.1f} MiB", flush=True)
    for steps in args.memory_steps:
        for method in MEMORY_METHODS:
            row = run_isolated({**base, "method": method, "steps": steps, "epochs": 1,
                                "max_batches": args.memory_batches, "test_subset": 500})
            rows.append({**row, "role": "memory"})
            print(f"memory {method} T={steps}: peak {row['peak_mem_mib']:.1f} MiB, "
                  f"{1000 * row['wall_time_s'] / args.memory_batches:.0f} ms/batch", flush=True)
    main_rows = [{"method": r["method"], "T": r["T"], "test acc (%)": 100 * r["test_accuracy"],
                  "train loss": r["train_loss"], "wall time (s)": r["wall_time_s"],
                  "peak mem (MiB)": r["peak_mem_mib"]} for r in rows if r["role"] == "main"]
    memory_rows = []
    for steps in args.memory_steps:
        entry: dict[str, Any] = {"T": steps}
        for method in MEMORY_METHODS:
            match = [r for r in rows if r["role"] == "memory" and r["method"] == method and r["T"] == steps]
            if match:
                entry[f"{method} peak (MiB)"] = match[0]["peak_mem_mib"]
                entry[f"{method} s/batch"] = match[0]["wall_time_s"] / args.memory_batches
        memory_rows.append(entry)
    table = markdown_table(main_rows) + "\n\n" + markdown_table(memory_rows) + "\n"
    print(table)
    (out / "results.md").write_text(table)
    write_json(out / "results.json", rows)
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "T", "epoch", "train_loss", "test_accuracy", "time_s"])
        for r in rows:
            for m in r["metrics"]:
                writer.writerow([r["method"], r["T"], m["epoch"], m["train_loss"], m["test_accuracy"], m["time_s"]])
    plot_curves(rows, out / "curves.png")
    return rows


if __name__ == "__main__":
    main()
