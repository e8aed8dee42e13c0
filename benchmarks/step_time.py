"""Step time and peak memory of a BP step, exact and stochastic GHL steps and a naive unfold GHL step, side by side.

    python benchmarks/step_time.py [--widths 0.25,0.5] [--batch-size 64] [--repeats 10] [--device auto]
    python benchmarks/step_time.py --amp bf16 --channels-last          # on a GPU
    python benchmarks/step_time.py --model resnet18,resnet50 [--image-size 64] [--variants bp,ghl]

Every variant trains the same DeepHebb network (GHL paper Table 1) on the same random batch:

* ``bp``          forward, cross-entropy, backward, SGD step.
* ``ghl``         the same plus ``ghl_snn.GHL.step()`` (exact rule: one extra weight-gradient convolution per
                  plastic layer for E, GHL Eq. 4-6).
* ``ghl-f0.5``, ``ghl-f0.25``, ``ghl-f0.125``  ``GHL(eligibility_fraction=f)``: E estimated from a random
                  fraction f of each batch's samples (unbiased for the batch mean), so the extra convolution
                  shrinks by f.
* ``ghl-unfold``  the naive way: E computed inside the forward with ``F.unfold`` (im2col) patches.

``--model resnet18`` / ``resnet50`` times the torchvision ImageNet networks of GHL Table 3 instead (GHL on every
conv, classifier by backprop; ``--image-size`` default 64 on CPU, use 224 on a GPU); several models may be given,
comma-separated, each gets its own table.

Timings are interleaved (bp, ghl, ..., bp, ghl, ...) so background load hits every variant alike; the table reports
medians and the ratios to BP.  On a CPU it also reports the ratio of the process's CPU time (``time.process_time``),
which other processes' load barely affects (wall-clock ratios on a loaded machine are noisy); read that column
when the machine is shared.  Peak memory is measured for each variant in a fresh process (CUDA: max allocated;
CPU: peak RSS during the first three steps above the RSS after building the model); ``--no-memory`` skips it.
Targets: exact GHL/BP <= 1.38 (the floor is about 4/3: one extra weight-gradient convolution per plastic layer
beside BP's forward, input-gradient and weight-gradient convolutions); GHL(f=0.25)/BP <= 1.15.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL
from ghl_snn.comparison.common import PeakMemory, markdown_table, select_device
from ghl_snn.models import DeepHebb
from ghl_snn.models.imagenet import IMAGENET_MODELS

FRACTIONS = (0.5, 0.25, 0.125)
VARIANTS = ("bp", "ghl", *(f"ghl-f{f:g}" for f in FRACTIONS), "ghl-unfold")
TARGETS = {"ghl": 1.38, "ghl-f0.25": 1.15}


def fraction_of(variant: str) -> float:
    """The eligibility fraction of a ``ghl-f<fraction>`` variant (1.0 for ``ghl``)."""
    return float(variant[len("ghl-f"):]) if variant.startswith("ghl-f") else 1.0


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
          image_size: int = 32, amp: str | None = None, channels_last: bool = False):
    """One training step of ``variant`` as a closure (model, rule, optimiser and batch built once)."""
    torch.manual_seed(0)
    if model_name == "deephebb":
        model = DeepHebb(width=width).to(device)
    else:
        model = IMAGENET_MODELS[model_name]().to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    taus = model.plastic_taus
    if variant == "bp":
        rule = None
    elif variant == "ghl-unfold":
        rule = UnfoldGHL(model)
    elif variant == "ghl" or variant.startswith("ghl-f"):
        rule = GHL(model, tau=taus, layers=list(taus), eligibility_fraction=fraction_of(variant))
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        if rule is not None:
            rule.step()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def peak_memory(variant: str, width: float, batch_size: int, device: str, queue, model_name: str = "deephebb",
                image_size: int = 32, amp: str | None = None, channels_last: bool = False) -> None:
    step = build(variant, width, batch_size, torch.device(device), model_name, image_size, amp, channels_last)
    with PeakMemory(device, interval=0.0005) as memory:  # from the built model, through the first steps
        for _ in range(3):
            step()
    queue.put(max(memory.peak_mib, 0.0))


def measure_memory(variant: str, width: float, batch_size: int, device: torch.device, model_name: str = "deephebb",
                   image_size: int = 32, amp: str | None = None, channels_last: bool = False) -> float:
    """Peak memory (MiB) of three steps of ``variant``, measured in a fresh process."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=peak_memory, args=(variant, width, batch_size, str(device), queue, model_name,
                                                        image_size, amp, channels_last))
    process.start()
    value = queue.get()
    process.join()
    return value


@dataclass
class Timing:
    """Median seconds per step of one variant: wall clock and (CPU only) this process's CPU time."""

    wall: float
    cpu: float


def time_variants(steps: dict, repeats: int) -> dict[str, Timing]:
    """Run every step once (warm-up), then ``repeats`` interleaved rounds; medians per variant."""
    for step in steps.values():
        step()
    wall: dict[str, list[float]] = {variant: [] for variant in steps}
    cpu: dict[str, list[float]] = {variant: [] for variant in steps}
    for _ in range(repeats):
        for variant, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            cpu[variant].append(time.process_time() - start_cpu)
            wall[variant].append(time.perf_counter() - start)
    return {v: Timing(statistics.median(wall[v]), statistics.median(cpu[v])) for v in steps}


def step_table(variants: tuple[str, ...], width: float, batch_size: int, device: torch.device, repeats: int,
               model_name: str = "deephebb", image_size: int = 32, amp: str | None = None,
               channels_last: bool = False, memory: bool = True) -> list[dict[str, str]]:
    """Time (and optionally measure) every variant on one network; one row per variant, ratios to ``bp``."""
    if "bp" not in variants:
        raise ValueError("the variants must include 'bp' (every ratio is to BP)")
    steps = {variant: build(variant, width, batch_size, device, model_name, image_size, amp, channels_last)
             for variant in variants}
    timing = time_variants(steps, repeats)
    del steps
    peaks = {variant: measure_memory(variant, width, batch_size, device, model_name, image_size, amp, channels_last)
             for variant in variants} if memory else {}
    bp = timing["bp"]
    rows = []
    for variant in variants:
        row = {"variant": variant, "fraction": "" if variant in ("bp", "ghl-unfold") else f"{fraction_of(variant):g}",
               "median step (ms)": f"{1000 * timing[variant].wall:.1f}",
               "time / bp": f"{timing[variant].wall / bp.wall:.2f}"}
        if device.type == "cpu":
            row["cpu time / bp"] = f"{timing[variant].cpu / bp.cpu:.2f}"
        if memory:
            row["peak memory (MiB)"] = f"{peaks[variant]:.0f}"
            row["memory / bp"] = f"{peaks[variant] / max(peaks['bp'], 1e-9):.2f}"
        row["target"] = f"<= {TARGETS[variant]:.2f}" if variant in TARGETS else ""
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="0.25,0.5", help="DeepHebb width multipliers, comma-separated "
                        "(1 = paper; default 0.25,0.5)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--model", default="deephebb", help="deephebb (default), resnet18, resnet50, or several "
                        "comma-separated")
    parser.add_argument("--image-size", type=int, default=64, help="input size of the ResNets (DeepHebb: 32)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        f"{','.join(VARIANTS)} (must include bp)")
    parser.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype of forward and backward")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and batch")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    requested = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in requested if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    variants = tuple(v for v in VARIANTS if v in requested)
    if "bp" not in variants:
        parser.error("--variants must include bp")
    try:
        widths = [float(w) for w in args.widths.split(",")]
    except ValueError:
        parser.error(f"--widths must be comma-separated numbers, got {args.widths!r}")
    models = [m.strip() for m in args.model.split(",")]
    for model_name in models:
        if model_name != "deephebb" and model_name not in IMAGENET_MODELS:
            parser.error(f"unknown model {model_name!r}")
    first = True
    for model_name in models:
        for width in (widths if model_name == "deephebb" else [1.0]):
            if not first:
                print()
            first = False
            size = 32 if model_name == "deephebb" else args.image_size
            rows = step_table(variants, width, args.batch_size, device, args.repeats, model_name, size, args.amp,
                              args.channels_last, memory=not args.no_memory)
            network = f"DeepHebb width {width:g}" if model_name == "deephebb" else f"{model_name} {size}x{size}"
            print(f"{network}, batch {args.batch_size}, device {device}, {args.amp or 'fp32'}"
                  f"{', channels-last' if args.channels_last else ''}, torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
            print(markdown_table(rows))
            column = "cpu time / bp" if device.type == "cpu" else "time / bp"
            ratios = "   ".join(f"{row['variant']}/BP = {row[column]}" for row in rows if row["variant"] != "bp")
            print(f"\n{column.replace(' / bp', '')} ratios: {ratios}")


if __name__ == "__main__":
    main()
