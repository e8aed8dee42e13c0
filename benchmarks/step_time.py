"""Step time and peak memory of a BP step, a GHL step and a naive unfold-based GHL step, side by side.

    python benchmarks/step_time.py [--width-divisor 4] [--batch-size 64] [--repeats 10] [--device auto]
    python benchmarks/step_time.py --model resnet18,resnet50 [--image-size 64] [--variants bp,ghl]

All three variants train the same DeepHebb network (GHL paper Table 1) on the same random batch:

* ``bp``          forward, cross-entropy, backward, SGD step.
* ``ghl``         the same plus ``ghl_snn.GHL.step()`` (weight-gradient convolution for E; DESIGN.md §4).
* ``ghl-unfold``  the naive way: E computed inside the forward with ``F.unfold`` (im2col) patches.

``--model resnet18`` / ``resnet50`` times the torchvision ImageNet networks of GHL Table 3 instead (GHL on every
conv, classifier by backprop; ``--image-size`` default 64 on CPU, use 224 on a GPU); several models may be given,
comma-separated, each gets its own table.

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
from ghl_snn.models.imagenet import IMAGENET_MODELS

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


def build(variant: str, width: float, batch_size: int, device: torch.device, model_name: str = "deephebb",
          image_size: int = 32):
    torch.manual_seed(0)
    if model_name == "deephebb":
        model = DeepHebb(width=width).to(device)
    else:
        model = IMAGENET_MODELS[model_name]().to(device)
    rule = {"bp": None, "ghl": lambda m: GHL(m, tau=m.plastic_taus, layers=list(m.plastic_taus)),
            "ghl-unfold": UnfoldGHL}[variant]
    rule = rule(model) if rule else None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
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


def peak_memory(variant: str, width: float, batch_size: int, device: str, queue, model_name: str = "deephebb",
                image_size: int = 32) -> None:
    step = build(variant, width, batch_size, torch.device(device), model_name, image_size)
    with PeakMemory(device, interval=0.0005) as memory:  # from the built model, through the first steps
        for _ in range(3):
            step()
    queue.put(max(memory.peak_mib, 0.0))


def measure_memory(variant: str, width: float, batch_size: int, device: torch.device, model_name: str = "deephebb",
                   image_size: int = 32) -> float:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=peak_memory, args=(variant, width, batch_size, str(device), queue, model_name,
                                                        image_size))
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
    parser.add_argument("--model", default="deephebb", help="deephebb (default), resnet18, resnet50, or several "
                        "comma-separated")
    parser.add_argument("--image-size", type=int, default=64, help="input size of the ResNets (DeepHebb: 32)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        f"{','.join(VARIANTS)} (must include bp)")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    variants = tuple(v for v in VARIANTS if v in args.variants.split(","))
    if "bp" not in variants or "ghl" not in variants:
        parser.error("--variants must include bp and ghl")
    for index, model_name in enumerate(m.strip() for m in args.model.split(",")):
        if model_name != "deephebb" and model_name not in IMAGENET_MODELS:
            parser.error(f"unknown model {model_name!r}")
        if index:
            print()
        benchmark(args, device, model_name, variants)


def benchmark(args: argparse.Namespace, device: torch.device, model_name: str, variants: tuple[str, ...]) -> None:
    """Time and measure every variant on one network and print its table."""
    width = 1.0 / args.width_divisor
    size = 32 if model_name == "deephebb" else args.image_size
    steps = {variant: build(variant, width, args.batch_size, device, model_name, size) for variant in variants}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.repeats):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    del steps
    memory = {variant: measure_memory(variant, width, args.batch_size, device, model_name, size)
              for variant in variants}
    median = {variant: statistics.median(values) for variant, values in times.items()}
    rows = [{"variant": v, "median step (ms)": f"{1000 * median[v]:.1f}", "peak memory (MiB)": f"{memory[v]:.0f}",
             "time / bp": f"{median[v] / median['bp']:.2f}", "memory / bp": f"{memory[v] / max(memory['bp'], 1e-9):.2f}"}
            for v in variants]
    network = f"DeepHebb width {width:g}" if model_name == "deephebb" else f"{model_name} {size}x{size}"
    print(f"{network}, batch {args.batch_size}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(markdown_table(rows))
    unfold = f"unfold/GHL = {median['ghl-unfold'] / median['ghl']:.2f}   " if "ghl-unfold" in median else ""
    print(f"\nGHL/BP = {median['ghl'] / median['bp']:.2f}   {unfold}"
          f"GHL memory/BP = {memory['ghl'] / max(memory['bp'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
