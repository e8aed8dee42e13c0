"""Time per batch and peak memory of the online three-factor step (every modulator) against snntorch BPTT and a
plain inference loop; one learning window against the plain loop in each execution choice.

    python benchmarks/spiking_memory.py [--steps 10 100] [--batches 5] [--batch-size 32] [--device auto]
                                        [--window-steps 100] [--windows 15] [--density 0.13] [--chunk 25]

Same network for every row: ``784 -> 256 snntorch.Leaky(beta=0.95) -> 10`` non-spiking read-out, bias-free,
Bernoulli input, batch 32, SGD step included.

* online rows: `ghl_snn.spiking.ThreeFactor` (end-of-window eligibility, default) with GradSign,
  NeuronSign, FeedbackSign, RewardSign (forward and random feedback), AttentionGatedReward, plain DFA
  (FeedbackAlignment) and rate-surrogate SGD (PlainGradient):
  per time step only the forward pass and ``O(N (in + out))`` trace updates; the weight-sized products once per
  window; ``online GradSign (E per step)`` is the ``eligibility="step"`` option (one weight-sized product per step);
* ``BPTT``: ``loss.backward()`` through all ``T`` steps of the snntorch neurons (graph grows with ``T``);
* ``plain inference loop``: the same network as a bare PyTorch loop, no learning ([`plain_inference`][]); the
  ``time / plain`` columns divide by it.

The second table times one presentation window of a 784-256-10 **IF** network ([`window_variants`][]): the plain
loop with the dense input product, with event-driven input (gather-sum over the active inputs) and layer-wise
multi-step ([`multi_step_inference`][]), the library's inference ``run`` and the ThreeFactor/FeedbackSign learning
window (run + step; dense, event-driven, and ``SpikingNetwork.multi_step``); wall clock and CPU time, ratios to the
plain dense loop and to the plain loop with the same execution choice (ratios of the medians), and the median with
quartiles of each window's ratio to the plain dense window of the same round (paired: drifts of the machine cancel).
Target: the learning window <= 1.10x the plain loop.

**Time** (median per batch) is measured in one process, the methods interleaved batch by batch (so machine
load affects all alike), and reported as the ratio to BPTT at the same ``T``.  **Peak memory** is measured per
method in a fresh process (after one warm-up batch at T = 1, the T values one after the other, smallest first):
the RSS increase over the state before the batches (CPU, with ``MALLOC_MMAP_THRESHOLD_`` so freed blocks leave
the RSS) or ``max_memory_allocated`` (CUDA).  A second table gives the accuracy of ``E`` from end-of-window traces
vs accumulated per step, against the rate network's ``E`` at the same input rates.
Targets: time ratio <= 0.6 at T = 100 and <= 1.0 at T = 10; memory flat in T (T = 100 vs T = 10 within 10 %) and
<= BPTT's at T = 10.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn.equivalence import compare, rate_eligibilities
from ghl_snn.comparison.common import PeakMemory, markdown_table, select_device
from ghl_snn.modulators import (AttentionGatedReward, FeedbackAlignment, FeedbackSign, GradSign, NeuronSign,
                                PlainGradient, RewardSign, choose_actions)
from ghl_snn.spiking import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor
from ghl_snn.spiking.synapses import event_current

PLAIN = "plain inference loop"
METHODS: dict[str, Callable[[], Any]] = {
    PLAIN: lambda: None, "GradSign": GradSign, "NeuronSign": NeuronSign, "FeedbackSign": FeedbackSign,
    "RewardSign": RewardSign,
    "plain DFA": FeedbackAlignment, "rate SGD": PlainGradient, "GradSign (E per step)": GradSign,
    "AttentionGatedReward": AttentionGatedReward, "RewardSign (random B)": lambda: RewardSign(feedback="random"),
    "BPTT": lambda: None,
}


def build(method: str, device: torch.device) -> tuple[SpikingNetwork, ThreeFactor | None, torch.optim.Optimizer]:
    import snntorch
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(784, 256, bias=False), snntorch.Leaky(beta=0.95),
                         nn.Linear(256, 10, bias=False)).to(device)
    modulator = METHODS[method]()
    learner = None if modulator is None else ThreeFactor(
        net, modulator=modulator, eligibility="step" if "per step" in method else "window")
    return net, learner, torch.optim.SGD(net.parameters(), lr=0.01)


Encode = Callable[[], torch.Tensor]


def plain_inference(weights: tuple[torch.Tensor, torch.Tensor], encode: Encode, steps: int, beta: float | None = None,
                    threshold: float = 1.0, product: Callable[..., torch.Tensor] | None = None,
                    readout_once: bool = False) -> torch.Tensor:
    """The two-layer network as a bare PyTorch loop, no learning: per step the input spikes (``encode()``), the
    input product, the membrane update, the hidden spikes' product and a running sum of the read-out.

    ``beta=None``: IF, ``v += I; s = [v >= theta]; v -= theta s``; a float: snntorch's ``Leaky`` (reset by
    subtraction one step late: ``v = beta v + I - theta [v_prev > theta]; s = [v > theta]``).  ``product(s, W)``
    computes the first layer's current (default ``F.linear``).  ``readout_once``: sum the hidden spikes instead and
    apply the (linear) read-out once to the sum at the end, ``W2 sum_t s_t = sum_t W2 s_t`` (the trick the
    library's run uses; a stricter reference)."""
    first, second = weights
    product = product if product is not None else F.linear
    v = total = None
    for _ in range(steps):
        current = product(encode(), first)
        if v is None:
            v = torch.zeros_like(current)
        if beta is None:
            v.add_(current)
            spikes = torch.ge(v, threshold).float()
            v.sub_(spikes, alpha=threshold)
        else:
            reset = torch.gt(v, threshold).float()
            v.mul_(beta).add_(current).sub_(reset, alpha=threshold)
            spikes = torch.gt(v, threshold).float()
        out = spikes if readout_once else F.linear(spikes, second)
        total = out if total is None else total.add_(out)
    return (F.linear(total, second) if readout_once else total).div_(steps)


def multi_step_inference(weights: tuple[torch.Tensor, torch.Tensor], encode_chunk: Callable[[int], torch.Tensor],
                         steps: int, chunk: int, threshold: float = 1.0) -> torch.Tensor:
    """The IF network of [`plain_inference`][] layer by layer over chunks of ``chunk`` steps (SpikingJelly's
    multi-step mode): ``encode_chunk(L)`` gives ``L`` steps of input spikes ``(L, N, in)``, one product gives all
    their currents, an elementwise scan over the ``L`` steps gives the hidden spikes, one product their read-out.
    Memory is bounded by the chunk (``L x N x in``), not by ``T``."""
    first, second = weights
    v = total = None
    for start in range(0, steps, chunk):
        length = min(chunk, steps - start)
        currents = F.linear(encode_chunk(length), first)
        if v is None:
            v = torch.zeros_like(currents[0])
        hidden = torch.empty_like(currents)
        for t in range(length):
            v.add_(currents[t])
            torch.ge(v, threshold, out=hidden[t])
            v.sub_(hidden[t], alpha=threshold)
        out = F.linear(hidden, second).sum(0)
        total = out if total is None else total.add_(out)
    return total.div_(steps)


def train_step(net: SpikingNetwork, learner: ThreeFactor | None, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, steps: int, encoder: BernoulliEncoder, method: str = "") -> None:
    if method == PLAIN:
        with torch.no_grad():
            plain_inference((net[0].weight, net[2].weight), lambda: torch.bernoulli(x), steps,
                            beta=net[1].module.beta.item(), threshold=net[1].threshold)
        return
    optimizer.zero_grad(set_to_none=True)
    if learner is None:
        F.cross_entropy(net.run(x, steps, encoder, record=False), y).backward()
    else:
        out = learner.run(x, steps, encoder)
        action = choose_actions(out, 0.05)
        learner.step(loss_fn=lambda o: F.cross_entropy(o, y), reward=(action == y).float(), action=action)
    optimizer.step()


def measure_memory(method: str, steps_list: list[int], batches: int, batch_size: int,
                   device_name: str) -> list[float]:
    """Peak memory of ``method`` at each T (in this order, in one process: smallest T first)."""
    torch.set_num_threads(1)
    device = select_device(device_name)
    net, learner, optimizer = build(method, device)
    encoder = BernoulliEncoder()
    x = torch.rand(batch_size, 784, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    train_step(net, learner, optimizer, x, y, 1, encoder, method)  # warm-up: one-time allocations are not the method's
    peaks = []
    for steps in steps_list:
        with PeakMemory(device) as memory:
            for _ in range(batches):
                train_step(net, learner, optimizer, x, y, steps, encoder, method)
        peaks.append(memory.peak_mib)
    return peaks


def memory_isolated(*args: Any) -> list[float]:
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(measure_memory, args)


def measure_time(steps: int, batches: int, batch_size: int, device: torch.device) -> dict[str, float]:
    """Median seconds per batch of every method, interleaved batch by batch in this process (first batch:
    warm-up; the median resists the load spikes of a shared machine)."""
    built = {method: build(method, device) for method in METHODS}
    encoder = BernoulliEncoder()
    x = torch.rand(batch_size, 784, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for batch in range(batches + 1):
        for method, (net, learner, optimizer) in built.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            train_step(net, learner, optimizer, x, y, steps, encoder, method)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if batch > 0:
                times[method].append(time.perf_counter() - start)
    return {method: statistics.median(values) for method, values in times.items()}


def window_variants(steps: int, batch_size: int, density: float, chunk: int,
                    device: torch.device) -> dict[str, Callable[[], Any]]:
    """One presentation window of the 784-256-10 IF network (bias-free, threshold 1) in each execution choice:
    the plain inference loop (dense input product, event-driven input, layer-wise multi-step), the library's
    inference run and the ThreeFactor/FeedbackSign learning window (run + step; dense product, the default, and
    event-driven input, ``net.event_driven = True``).  Input: images with mean intensity ``density``."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(784, 256, bias=False), IF(), nn.Linear(256, 10, bias=False)).to(device)
    with torch.no_grad():
        net[0].weight.mul_(3.0)  # a hidden layer that spikes (about 10 % per step at MNIST's input density)
    weights = (net[0].weight.detach(), net[2].weight.detach())
    first_t = weights[0].t().contiguous()
    x = torch.rand(batch_size, 784, device=device) * (torch.rand(batch_size, 784, device=device) < 2 * density)
    y = torch.randint(0, 10, (batch_size,), device=device)
    encoder = BernoulliEncoder()
    learner = ThreeFactor(net, modulator=FeedbackSign())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: every window sees the same network

    def learning_window(event_driven: bool, multi_step: int | None = None) -> Callable[[], Any]:
        def window() -> None:
            net.event_driven, net.multi_step = event_driven, multi_step
            optimizer.zero_grad(set_to_none=True)
            learner.run(x, steps, encoder)
            learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
            optimizer.step()
        return window

    def library_inference() -> None:
        net.event_driven, net.multi_step = False, None
        with torch.no_grad():
            net.run(x, steps, encoder, record=False)

    with torch.no_grad():
        return {
            "plain loop, dense product": lambda: plain_inference(weights, lambda: torch.bernoulli(x), steps),
            "plain loop, read-out summed once": lambda: plain_inference(
                weights, lambda: torch.bernoulli(x), steps, readout_once=True),
            "plain loop, event-driven input": lambda: plain_inference(
                weights, lambda: torch.bernoulli(x), steps, product=lambda s, _: event_current(s, first_t)),
            f"plain loop, multi-step (chunk {chunk})": lambda: multi_step_inference(
                weights, lambda n: torch.bernoulli(x.expand(n, *x.shape)), steps, chunk),
            "SpikingNetwork.run (inference)": library_inference,
            "ThreeFactor FeedbackSign run + step": learning_window(False),
            "ThreeFactor FeedbackSign run + step, event-driven input": learning_window(True),
            f"ThreeFactor FeedbackSign run + step, multi-step (chunk {chunk})": learning_window(False, chunk),
        }


HEADLINE = ("plain loop, dense product", "SpikingNetwork.run (inference)", "ThreeFactor FeedbackSign run + step")
"""The variants of the target's comparison, timed also by themselves (see [`window_overhead`][])."""


def window_overhead(steps: int, windows: int, batch_size: int, density: float, chunk: int,
                    device: torch.device, only: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Median ms per window of every [`window_variants`][] entry, interleaved window by window (first: warm-up),
    and the ratio to the plain loop with the dense product and with the same product as the row; in wall-clock
    time and in this process's CPU time (which a loaded machine disturbs less).  ``only``: time just these
    variants (e.g. [`HEADLINE`][]: the learning window as a training loop runs it, without the other execution
    choices' windows in between, whose large chunks change what the allocator and the caches hold)."""
    variants = window_variants(steps, batch_size, density, chunk, device)
    if only is not None:
        variants = {name: run for name, run in variants.items() if name in only}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for window in range(windows + 1):
        for name, run in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if window > 0:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    rows = []
    for clock, times in (("wall", wall), ("CPU", cpu)):
        median = {name: statistics.median(values) for name, values in times.items()}
        dense = median["plain loop, dense product"]
        events = median.get("plain loop, event-driven input", math.nan)
        multi = median.get(f"plain loop, multi-step (chunk {chunk})", math.nan)
        plain = times["plain loop, dense product"]
        for name, value in median.items():
            same = events if "event-driven" in name else multi if "multi-step" in name else dense
            # each window against the plain window of the same round: slow drifts of the machine cancel
            paired = sorted(mine / theirs for mine, theirs in zip(times[name], plain))
            quarter = len(paired) // 4
            rows.append({"window (784-256-10 IF)": name, "clock": clock, f"T={steps} ms": 1000 * value,
                         "time / plain dense": value / dense, "time / plain, same product": value / same,
                         "paired / plain dense, median [quartiles]":
                             f"{statistics.median(paired):.3f} [{paired[quarter]:.3f}, {paired[-1 - quarter]:.3f}]"})
    return rows


def eligibility_accuracy(steps_list: list[int]) -> list[dict[str, Any]]:
    """Relative error of the spiking E (window vs per step) against the rate E at the same input rates."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(64, 32, bias=False), IF(), nn.Linear(32, 10, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    rates = torch.rand(16, 64)
    reference = rate_eligibilities(net, rates)
    rows = []
    for steps in steps_list:
        row: dict[str, Any] = {"T": steps}
        for mode in ("window", "step"):
            learner = ThreeFactor(net, modulator=GradSign(), normalize=None, eligibility=mode)
            start = time.perf_counter()
            learner.run(rates, steps, BernoulliEncoder(generator=torch.Generator().manual_seed(1)))
            estimates = {name: learner.eligibility(name) for name in learner.layers}
            row[f"{mode}: ms"] = 1000 * (time.perf_counter() - start)
            learner.remove()
            for name in estimates:
                row[f"{mode}: rel. error {name}"] = compare(estimates[name], reference[name])["relative_error"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accuracy-steps", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--window-steps", type=int, default=100, help="T of the window-overhead table (0: skip)")
    parser.add_argument("--windows", type=int, default=15, help="timed windows per variant in that table")
    parser.add_argument("--density", type=float, default=0.13, help="mean input intensity there (MNIST: 0.13)")
    parser.add_argument("--chunk", type=int, default=25, help="chunk of the multi-step window")
    parser.add_argument("--skip-methods", action="store_true", help="print only the window-overhead table")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.steps) or args.batches < 1 or args.batch_size < 1:
        parser.error("--steps, --batches and --batch-size must be >= 1")
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"device: {device}, batch {args.batch_size}, {args.threads} thread(s), {os.cpu_count()} CPUs visible, "
          f"load average at start: {'n/a' if load is None else ', '.join(f'{v:.2f}' for v in load)}")
    rows = [] if args.skip_methods else method_table(args, device)
    if rows:
        print(f"\nEvery method, {args.batches} timed batches (interleaved):")
        print(markdown_table(rows))
    window = (window_overhead(args.window_steps, args.windows, args.batch_size, args.density, args.chunk, device)
              if args.window_steps > 0 else [])
    if window:
        print(f"\nOne window against the plain inference loop, input density {args.density:g}, {args.windows} timed "
              "windows (interleaved):")
        print(markdown_table(window))
        headline = window_overhead(args.window_steps, args.windows, args.batch_size, args.density, args.chunk,
                                   device, only=HEADLINE)
        print(f"\nThe target's comparison by itself ({', '.join(HEADLINE)}; {args.windows} timed windows, "
              "interleaved):")
        print(markdown_table([row for row in headline if row["clock"] == "CPU"]))
        window = window + [dict(row, timing="by itself") for row in headline]
    accuracy = eligibility_accuracy(args.accuracy_steps) if args.accuracy_steps and not args.skip_methods else []
    if accuracy:
        print()
        print(markdown_table(accuracy))
    if load is not None:
        print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return {"rows": rows, "window": window, "accuracy": accuracy}


def method_table(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Time (interleaved, in this process) and peak memory (a fresh process per method) of every method."""
    times = {steps: measure_time(steps, args.batches, args.batch_size, device) for steps in args.steps}
    steps_list = sorted(args.steps)
    memory = {}
    for method in METHODS:
        for steps, peak in zip(steps_list, memory_isolated(method, steps_list, args.batches, args.batch_size,
                                                            args.device)):
            memory[(method, steps)] = peak
    rows = []
    first, last = min(args.steps), max(args.steps)
    for method in METHODS:
        row: dict[str, Any] = {"method": method}
        for steps in args.steps:
            row[f"T={steps} ms/batch"] = 1000 * times[steps][method]
            row[f"T={steps} time / BPTT"] = times[steps][method] / times[steps]["BPTT"]
            row[f"T={steps} time / plain"] = times[steps][method] / times[steps][PLAIN]
        for steps in args.steps:
            row[f"T={steps} MiB"] = memory[(method, steps)]
        row[f"MiB T={last} / T={first}"] = memory[(method, last)] / max(memory[(method, first)], 1e-9)
        row[f"MiB / BPTT at T={first}"] = memory[(method, first)] / max(memory[("BPTT", first)], 1e-9)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
