"""Time per step and peak memory of HebbFF vs Forward-Forward vs back-propagation (HebbFF paper, Table 2).

    python benchmarks/hebbff_step.py [--preset deep wide] [--batch-size 128] [--repeats 20] [--device auto]

Every variant trains the paper's MLP (deep 784-2048-1024-512-256, wide 784-2000-2000; 10 labels) on the same random
MNIST-sized batch:

* ``hebbff``        `ghl_snn.learners.HebbFF.train_step`: positive and negative samples in one pass, each
  layer updated in place as soon as its activity is known (no autograd, first layer's image product shared).
* ``hebbff-trace``  the reference path: ``HebbFF.step(model.trace(x, y), model.trace(x, y'))`` (two separate
  passes, then one product per layer).
* ``ff``            Forward-Forward: the same two passes with autograd, the summed per-layer softplus loss,
  ``backward()`` and an SGD step (the cheapest FF optimiser; mathematically HebbFF's update, see
  `ghl_snn.rules.hebbff`).
* ``ff-adam``       the same with Adam (Hinton's choice; two more weight-sized state tensors).
* ``hebbff-adam``   `HebbFF(mode="grad")` + Adam: the fused pass writes ``.grad`` (no autograd) and Adam applies it;
  compared with ``ff-adam`` (the column ``/ FF-Adam``).
* ``bp``            the plain MLP with a soft-max head, cross-entropy, backward, SGD with momentum.

Timings are interleaved (one step of every variant in turn, repeated), so background load hits all of them alike;
the table reports medians and the ratios to FF.  Peak memory is measured for each variant in a fresh process
(CUDA: ``max_memory_allocated`` above the model; CPU: peak RSS during three steps above the RSS after building
the model and its optimiser).  Targets from the paper: HebbFF time ≤ 0.9 × FF, peak memory ≤ 0.7 × FF.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ghl_snn.comparison.common import PeakMemory, markdown_table, select_device
from ghl_snn.learners.hebbff import HebbFF
from ghl_snn.models.mlp import MLP_PRESETS, ForwardForwardMLP, backprop_mlp
from ghl_snn.rules.hebbff import ff_softplus_loss, random_wrong_labels

VARIANTS = ("hebbff", "hebbff-trace", "hebbff-adam", "ff", "ff-adam", "bp")
LR, THETA = 1.0, 1.0


def make_step(variant: str, preset: str, batch_size: int, device: torch.device) -> Callable[[], None]:
    """Build a model and learner for ``variant`` and return a closure performing one training step."""
    torch.manual_seed(0)
    hidden = MLP_PRESETS[preset]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    y_neg = random_wrong_labels(y.cpu(), 10, gen).to(device)
    if variant == "bp":
        model = backprop_mlp(784, hidden, 10).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def bp_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return bp_step
    model = ForwardForwardMLP(784, hidden, 10).to(device)
    if variant.startswith("hebbff"):
        model.requires_grad_(False)
        if variant == "hebbff-adam":
            learner = HebbFF(model.layers, theta=THETA, mode="grad")
            adam = torch.optim.Adam(model.parameters(), lr=1e-8)

            def adam_step() -> None:
                adam.zero_grad(set_to_none=True)
                learner.train_step(model, x, y, y_neg)
                adam.step()
            return adam_step
        learner = HebbFF(model.layers, lr=1e-6, theta=THETA)  # tiny lr: the weights stay comparable across steps
        if variant == "hebbff":
            def fused_step() -> None:
                learner.train_step(model, x, y, y_neg)
            return fused_step

        def trace_step() -> None:
            with torch.no_grad():
                learner.step(model.trace(x, y), model.trace(x, y_neg))
        return trace_step
    optimizer = (torch.optim.Adam(model.parameters(), lr=1e-8) if variant == "ff-adam"
                 else torch.optim.SGD(model.parameters(), lr=1e-6))

    def ff_step() -> None:
        positive, negative = model.trace(x, y), model.trace(x, y_neg)
        loss = sum(ff_softplus_loss(a_pos, a_neg, THETA, reduction="mean")
                   for (_, a_pos), (_, a_neg) in zip(positive, negative))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return ff_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(preset: str, variants: list[str], batch_size: int, repeats: int, device: torch.device
                  ) -> dict[str, float]:
    """Median seconds per step of every variant, interleaved."""
    steps = {v: make_step(v, preset, batch_size, device) for v in variants}
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def _memory_child(variant: str, preset: str, batch_size: int, device_name: str, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    step = make_step(variant, preset, batch_size, device)
    with PeakMemory(device) as memory:
        for _ in range(3):
            step()
    queue.put(memory.peak_mib)


def peak_memory(variant: str, preset: str, batch_size: int, device: torch.device) -> float:
    """Peak memory (MiB) of three steps of ``variant`` in a fresh process."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child,
                              args=(variant, preset, batch_size, str(device), torch.get_num_threads(), queue))
    process.start()
    value = queue.get()
    process.join()
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["deep", "wide"], choices=sorted(MLP_PRESETS))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if "ff" not in variants:
        parser.error("the ratios are relative to 'ff': keep it in --variants")
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, repeats {args.repeats}")
    for preset in args.preset:
        seconds = time_variants(preset, variants, args.batch_size, args.repeats, device)
        memory = {v: peak_memory(v, preset, args.batch_size, device) for v in variants}
        rows = [{"variant": v, "ms/step": 1e3 * seconds[v], "time / FF": seconds[v] / seconds["ff"],
                 "peak MiB": memory[v], "memory / FF": memory[v] / memory["ff"] if memory["ff"] > 0 else float("nan")}
                for v in variants]
        if "ff-adam" in variants:  # the Adam variants against FF with Adam
            for row in rows:
                row["time / FF-Adam"] = seconds[row["variant"]] / seconds["ff-adam"]
                row["memory / FF-Adam"] = memory[row["variant"]] / memory["ff-adam"] if memory["ff-adam"] > 0 \
                    else float("nan")
        print(f"\n{preset} MLP {MLP_PRESETS[preset]}")
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
