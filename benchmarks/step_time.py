"""Step time and peak memory of a BP step, a GHL step and a naive unfold-based GHL step, side by side.

    python benchmarks/step_time.py [--width-divisor 4] [--batch-size 64] [--repeats 10] [--device auto]

All three variants train the same DeepHebb network (GHL paper Table 1) on the same random batch:

* ``bp``          forward, cross-entropy, backward, SGD step.
* ``ghl``         the same plus ``ghl_snn.GHL.step()`` (weight-gradient convolution for E; DESIGN.md §4).
* ``ghl-unfold``  the naive way: E computed inside the forward with ``F.unfold`` (im2col) patches.

Timings are interleaved (bp, ghl, unfold, bp, ...) so background load hits every variant alike; the table reports
medians and the ratios GHL/BP and unfold/GHL.  Peak memory is measured for each variant in a fresh process
(CUDA: max allocated; CPU: peak RSS during the first three steps above the RSS after building the model).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL
from ghl_snn.experiments.common import PeakMemory, markdown_table, select_device
from ghl_snn.models import DeepHebb

VARIANTS = ("bp", "ghl", "ghl-unfold")


class UnfoldGHL:
    """The naive GHL: SWTA-Oja eligibility from im2col patches, computed in a forward hook."""

    def __init__(self, model: nn.Module) -> None:
        self.taus = model.plastic_taus
        self.modules = {name: module for name, module in model.named_modules() if name in self.taus}
        self.eligibility: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(module: nn.Conv2d, args, output):
            x, weight = args[0].detach(), module.weight.detach()
            patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
            y = output.detach().flatten(2)
            u = torch.softmax(y / self.taus[name], dim=1)
            hebbian = torch.einsum("nkl,ncl->kc", u, patches).view_as(weight)
            forgetting = (u * y).sum(dim=(0, 2))[:, None, None, None] * weight
            self.eligibility[name] = (hebbian - forgetting) / x.shape[0]
        return hook

    def step(self) -> None:
        for name, module in self.modules.items():
            eligibility = self.eligibility.pop(name)
            eligibility = eligibility / eligibility.abs().amax().clamp_min(1e-30)
            module.weight.grad.copy_(module.weight.grad.sign() * eligibility.abs())


def build(variant: str, width: float, batch_size: int, device: torch.device):
    torch.manual_seed(0)
    model = DeepHebb(width=width).to(device)
    rule = {"bp": None, "ghl": lambda m: GHL(m, tau=m.plastic_taus, layers=list(m.plastic_taus)),
            "ghl-unfold": UnfoldGHL}[variant]
    rule = rule(model) if rule else None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        if rule is not None:
            rule.step()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def peak_memory(variant: str, width: float, batch_size: int, device: str, queue) -> None:
    step = build(variant, width, batch_size, torch.device(device))
    with PeakMemory(device, interval=0.0005) as memory:  # from the built model, through the first steps
        for _ in range(3):
            step()
    queue.put(max(memory.peak_mib, 0.0))


def measure_memory(variant: str, width: float, batch_size: int, device: torch.device) -> float:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=peak_memory, args=(variant, width, batch_size, str(device), queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width-divisor", type=float, default=4.0, help="DeepHebb width = 1 / divisor (1 = paper)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    width = 1.0 / args.width_divisor
    steps = {variant: build(variant, width, args.batch_size, device) for variant in VARIANTS}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    del steps
    memory = {variant: measure_memory(variant, width, args.batch_size, device) for variant in VARIANTS}
    median = {variant: statistics.median(values) for variant, values in times.items()}
    rows = [{"variant": v, "median step (ms)": f"{1000 * median[v]:.1f}", "peak memory (MiB)": f"{memory[v]:.0f}",
             "time / bp": f"{median[v] / median['bp']:.2f}", "memory / bp": f"{memory[v] / max(memory['bp'], 1e-9):.2f}"}
            for v in VARIANTS]
    print(f"DeepHebb width {width:g}, batch {args.batch_size}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(markdown_table(rows))
    print(f"\nGHL/BP = {median['ghl'] / median['bp']:.2f}   unfold/GHL = {median['ghl-unfold'] / median['ghl']:.2f}   "
          f"GHL memory/BP = {memory['ghl'] / max(memory['bp'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
