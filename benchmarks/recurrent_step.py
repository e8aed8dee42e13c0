"""Time per batch and peak memory of e-prop's online step against BPTT on a recurrent LIF network.

    python benchmarks/recurrent_step.py [--steps 28 100 200] [--batches 5] [--batch-size 64] [--hidden 100]
                                        [--loss-steps 10] [--readout-decay 0] [--adaptation 0]

Network ``Linear(28, n) -> RecurrentLIF(n) -> Linear(n, 10)`` (the row-wise MNIST network of
``ghl_snn.experiments.recurrent``; ``--adaptation``: the adaptive LIF), random input currents, loss on the last
``K = --loss-steps`` steps (``0``: every step), the read-out leaky with ``kappa = --readout-decay``, Adam step
included.  Rows:

* ``e-prop symmetric`` / ``e-prop random``: [`EProp`][ghl_snn.EProp], per step the forward pass (one matrix product
  over ``[x_t, 1, z_{t-1}]``) and the neuron-sized eligibility vectors; per chunk of steps the learning signals of
  all its loss steps and one matrix product that adds them to the weight gradient (the leaky read-out's filtered
  traces also advance once per chunk; the ALIF's per-synapse traces advance at every step);
* ``BPTT``: the same forward pass under autograd and ``loss.backward()`` through all ``T`` steps.

**Time**: median per batch, the methods interleaved batch by batch in one process (machine load affects all
alike), as the ratio to BPTT at the same ``T``.  **Peak memory**: per method and ``T`` in a fresh process, the RSS
increase over the state before the batch (``MALLOC_MMAP_THRESHOLD_`` set so freed blocks leave the RSS).
Target: e-prop's step <= 0.6x BPTT's at T = 100; e-prop's memory flat in T.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
from torch.nn import functional as F

from ghl_snn.comparison.common import PeakMemory, markdown_table
from ghl_snn.experiments.recurrent import readout_steps, recurrent_network
from ghl_snn.spiking.eprop import EProp

LOSS_STEPS = {"K": 10}
NEURON = {"readout_decay": 0.0, "adaptation": 0.0}
METHODS = ("e-prop symmetric", "e-prop random", "BPTT")


def loss_steps() -> int | None:
    return LOSS_STEPS["K"] or None


def make(method: str, hidden: int) -> tuple:
    net = recurrent_network(hidden, 0.95, seed=0, adaptation=NEURON["adaptation"])
    learner = None if method == "BPTT" else EProp(net, feedback="random" if "random" in method else "symmetric",
                                                  loss_steps=loss_steps(), readout_decay=NEURON["readout_decay"])
    return net, learner, torch.optim.Adam(net.parameters(), lr=1e-3)


def one_batch(method: str, net, learner, optimizer, rows: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    if learner is None:
        outputs = readout_steps(net, rows, loss_steps() or rows.shape[0], NEURON["readout_decay"])
        (sum(F.cross_entropy(y, labels) for y in outputs) / len(outputs)).backward()
    else:
        learner.run(rows, lambda y: F.cross_entropy(y, labels))
        learner.step()
    optimizer.step()


def batch_data(steps: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, 28, generator=generator), torch.randint(10, (batch,), generator=generator)


def timings(steps: int, args: argparse.Namespace) -> dict[str, float]:
    setups = {m: make(m, args.hidden) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for b in range(args.batches + 1):
        rows, labels = batch_data(steps, args.batch_size, b)
        for method, (net, learner, optimizer) in setups.items():
            began = time.perf_counter()
            one_batch(method, net, learner, optimizer, rows, labels)
            if b:  # the first batch warms up
                times[method].append(time.perf_counter() - began)
    return {m: statistics.median(v) for m, v in times.items()}


def memory_worker(method: str, steps_list: list[int], args: argparse.Namespace, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    LOSS_STEPS["K"] = args.loss_steps
    NEURON.update(readout_decay=args.readout_decay, adaptation=args.adaptation)
    net, learner, optimizer = make(method, args.hidden)
    one_batch(method, net, learner, optimizer, *batch_data(1, args.batch_size, 0))
    result = {}
    for steps in steps_list:
        rows, labels = batch_data(steps, args.batch_size, 1)
        with PeakMemory() as peak:
            one_batch(method, net, learner, optimizer, rows, labels)
        result[steps] = peak.peak_mib
    queue.put(result)


def peak_memory(method: str, steps_list: list[int], args: argparse.Namespace) -> dict[int, float]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=memory_worker, args=(method, steps_list, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[28, 100, 200])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--loss-steps", type=int, default=10, help="K (0: the loss on every step)")
    parser.add_argument("--readout-decay", type=float, default=0.0, help="kappa of the leaky read-out")
    parser.add_argument("--adaptation", type=float, default=0.0, help="ALIF threshold adaptation (0: plain LIF)")
    args = parser.parse_args()
    LOSS_STEPS["K"] = args.loss_steps
    NEURON.update(readout_decay=args.readout_decay, adaptation=args.adaptation)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    torch.set_num_threads(1)
    memory = {m: peak_memory(m, sorted(args.steps), args) for m in METHODS}
    rows = []
    for steps in args.steps:
        median = timings(steps, args)
        load = f"{os.getloadavg()[0]:.2f}"
        for method in METHODS:
            rows.append({"T": steps, "method": method, "ms / batch": f"{1000 * median[method]:.1f}",
                         "x BPTT": f"{median[method] / median['BPTT']:.2f}",
                         "peak MiB": f"{memory[method][steps]:.1f}", "load (1 min)": load})
    print(f"batch {args.batch_size}, hidden {args.hidden}, loss steps {args.loss_steps or 'all'}, "
          f"readout decay {args.readout_decay:g}, adaptation {args.adaptation:g}, {args.batches} timed batches, load "
          f"{os.getloadavg()[0]:.2f}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
