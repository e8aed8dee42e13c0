"""Peak memory and time per step against T: the online three-factor rule vs snntorch surrogate-gradient BPTT.

    python benchmarks/spiking_memory.py [--steps 10 25 50 100 200] [--batches 5] [--batch-size 32]

Same network for both (784 -> 256 snntorch.Leaky(beta=0.95) -> 10 read-out, bias-free, Bernoulli input):

* online (batch traces): :class:`ghl_snn.spiking.ThreeFactor` with GradSign of the rate surrogate (one backward
  pass through the rate network at the end of the window, no BPTT), state ``O(#weights + #neurons)``;
* online (per-sample traces): ThreeFactor with FeedbackSign and per-sample traces (no backward pass at all),
  state ``O(N #weights + #neurons)``;
* BPTT: ``loss.backward()`` through all ``T`` steps of the snntorch neurons (graph grows with ``T``).

Every (method, T) runs in a fresh process; peak memory is the RSS increase over the process state after building
the network (CPU) or ``max_memory_allocated`` (CUDA).  Prints a markdown table with BPTT/online ratios.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn.experiments.common import PeakMemory, markdown_table, select_device
from ghl_snn.modulators.feedback_sign import FeedbackSign
from ghl_snn.modulators.grad_sign import GradSign
from ghl_snn.spiking import BernoulliEncoder, SpikingNetwork, ThreeFactor


def measure(method: str, steps: int, batches: int, batch_size: int, device_name: str) -> dict[str, Any]:
    import snntorch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = select_device(device_name)
    net = SpikingNetwork(nn.Linear(784, 256, bias=False), snntorch.Leaky(beta=0.95),
                         nn.Linear(256, 10, bias=False)).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    learner = None
    if method == "online_batch":
        learner = ThreeFactor(net, modulator=GradSign())
    elif method == "online_per_sample":
        learner = ThreeFactor(net, modulator=FeedbackSign(), per_sample=True)
    encoder = BernoulliEncoder(generator=torch.Generator(device).manual_seed(0))
    x = torch.rand(batch_size, 784, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    times = []
    with PeakMemory(device) as memory:
        for _ in range(batches + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            if learner is None:
                out = net.run(x, steps, encoder, record=False)
                F.cross_entropy(out, y).backward()
            else:
                learner.run(x, steps, encoder)
                learner.step(loss_fn=lambda o: F.cross_entropy(o, y))
            optimizer.step()
            times.append(time.perf_counter() - start)
    per_step = sum(times[1:]) / (batches * steps)  # first batch is warm-up
    return {"method": method, "T": steps, "peak_mib": memory.peak_mib, "ms_per_step": 1000 * per_step}


def run_isolated(*args: Any) -> dict[str, Any]:
    # large blocks through mmap, returned to the OS on free: RSS then tracks live memory, not allocator caching
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(measure, args)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.steps) or args.batches < 1 or args.batch_size < 1:
        parser.error("--steps, --batches and --batch-size must be >= 1")
    rows = []
    for steps in args.steps:
        batch = run_isolated("online_batch", steps, args.batches, args.batch_size, args.device)
        sample = run_isolated("online_per_sample", steps, args.batches, args.batch_size, args.device)
        bptt = run_isolated("bptt", steps, args.batches, args.batch_size, args.device)
        rows.append({"T": steps, "online batch MiB": batch["peak_mib"], "online per-sample MiB": sample["peak_mib"],
                     "BPTT MiB": bptt["peak_mib"],
                     "mem BPTT/online-batch": bptt["peak_mib"] / max(batch["peak_mib"], 1e-9),
                     "mem BPTT/online-per-sample": bptt["peak_mib"] / max(sample["peak_mib"], 1e-9),
                     "online batch ms/step": batch["ms_per_step"],
                     "online per-sample ms/step": sample["ms_per_step"], "BPTT ms/step": bptt["ms_per_step"],
                     "time BPTT/online-batch": bptt["ms_per_step"] / batch["ms_per_step"]})
        print(f"T={steps}: online-batch {batch['peak_mib']:.1f} MiB {batch['ms_per_step']:.2f} ms/step | "
              f"online-per-sample {sample['peak_mib']:.1f} MiB {sample['ms_per_step']:.2f} ms/step | "
              f"BPTT {bptt['peak_mib']:.1f} MiB {bptt['ms_per_step']:.2f} ms/step", flush=True)
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
