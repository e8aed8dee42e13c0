"""GHL with default settings on the classification models of torchvision: construction, one step, coverage, time.

    python benchmarks/model_zoo.py                      # the smallest builder of every family (CPU, batch 2)
    python benchmarks/model_zoo.py --all                # every classification builder of torchvision.models
    python benchmarks/model_zoo.py --models resnet18,vit_b_16 --repeats 5 --out table.md

For every model (``torchvision.models.get_model(name, weights=None)``, default construction) on a random batch
at the model's minimum input size (the ``min_size`` of its weights' metadata, at least 32 x 32; 299 for Inception v3,
whose auxiliary head needs it in training mode):

* ``GHL(model)`` with defaults (every Linear / ConvNd / attention layer; GradSign; SWTA-Oja, tau = 1);
* one training step: forward, cross-entropy on every output head (GoogLeNet / Inception auxiliary heads
  included), backward, ``rule.step()``, SGD step;
* ``E received``: the fraction of the plastic weights' elements whose layer recorded an eligibility in that step,
  and ``silent``: the plastic weights that recorded nothing (``GHL.step()`` warns about them);
* ``skipped``: synapse-like layers the default selection left out (with a warning);
* the step time of GHL and of plain backprop on an identical copy of the model, interleaved (bp, ghl, bp, ...),
  medians over ``--repeats`` after one warm-up step each, their ratio, and the range of the ratios of the
  repeats' pairs (the run-to-run spread of that row).  Times are the CPU time of the one
  torch thread (``time.thread_time``), not wall-clock time, so load from other processes does not distort them.

``--image-size`` overrides the input side (e.g. 224 for the ImageNet size; Inception v3 keeps its training minimum
of 299); ``--min-side`` raises each model's minimum input side to at least that value (a small input that every
model accepts, e.g. 64: ViT, MaxViT and Swin-V2 keep their larger minimum).  The table is printed as markdown
(and written to ``--out``).

``--allocator retain`` reruns the script with glibc's ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set
so that freed memory stays with the process (what PyTorch's CPU performance guide gets from jemalloc or tcmalloc).
With the default allocator every large tensor freed is returned to the system, and the next one of its size is
page-faulted in again; on small inputs that first-touch cost is a large and erratic part of both sides' step.
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ghl_snn import GHL, PlasticityWarning
from ghl_snn.comparison.common import markdown_table

#: The smallest builder of every family (the default run).
SMALLEST = ("alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
            "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf",
            "regnet_y_400mf", "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t",
            "swin_v2_t", "vgg11", "vgg11_bn", "vit_b_16", "wide_resnet50_2")
COLUMNS = ("model", "input", "plastic weights", "plastic % of params", "skipped", "step", "E received %",
           "silent", "BP CPU s", "GHL CPU s", "GHL/BP", "GHL/BP range")


#: glibc malloc settings that keep freed memory in the process (``--allocator retain``): 4 GiB thresholds
RETAIN = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}

#: Training-mode minimum sides larger than the weights' ``min_size`` (which is for inference): Inception v3's
#: auxiliary head, active in training mode, needs a 17 x 17 map before it.
TRAINING_MIN_SIZE = {"inception_v3": 299}


def min_input_size(name: str) -> int:
    """The model's minimum training input side (its weights' ``min_size``, at least 32)."""
    weights = torchvision.models.get_model_weights(name)
    return max(32, TRAINING_MIN_SIZE.get(name, 0), *list(weights)[0].meta.get("min_size", (32, 32)))


def outputs(out: Any) -> list[Tensor]:
    """Every logits tensor of a model's output (main and auxiliary heads)."""
    if isinstance(out, Tensor):
        return [out]
    return [o for o in out if isinstance(o, Tensor)]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, target: Tensor,
               rule: GHL | None = None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = sum(F.cross_entropy(logits, target) for logits in outputs(model(x)))
    loss.backward()
    if rule is not None:
        rule.step()
    optimizer.step()


def timed(fn: Any) -> float:
    """CPU time of this thread spent in ``fn`` (one torch thread: all compute runs here), so that other processes
    on a shared machine do not inflate either side."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def measure(name: str, batch_size: int, repeats: int, image_size: int | None = None,
            min_side: int = 0) -> dict[str, Any]:
    """One row of the table (errors are reported in the row, not raised)."""
    if image_size:
        size = max(image_size, TRAINING_MIN_SIZE.get(name, 0))
    else:
        size = max(min_side, min_input_size(name))
    row: dict[str, Any] = {"model": name, "input": f"{batch_size}x3x{size}x{size}"}
    torch.manual_seed(0)
    try:
        model = torchvision.models.get_model(name, weights=None)
        reference = copy.deepcopy(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PlasticityWarning)
            rule = GHL(model)
        row["skipped"] = sum(1 for w in caught if issubclass(w.category, PlasticityWarning))
    except Exception as error:  # noqa: BLE001 - the table reports it
        row["step"] = f"construct failed: {type(error).__name__}: {error}"[:120]
        return row
    params = sum(p.numel() for p in model.parameters())
    plastic = sum(w.numel() for w in rule.parameters())
    row["plastic weights"] = len(rule.synapses)
    row["plastic % of params"] = 100.0 * plastic / params
    x = torch.randn(batch_size, 3, size, size)
    target = torch.randint(0, 1000, (batch_size,))
    ghl_optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    bp_optimizer = torch.optim.SGD(reference.parameters(), lr=1e-3)
    try:
        ghl_optimizer.zero_grad(set_to_none=True)
        sum(F.cross_entropy(logits, target) for logits in outputs(model(x))).backward()
        recorded = set(rule.recorded())
        row["E received %"] = 100.0 * sum(rule.synapses[n].weight.numel() for n in recorded) / plastic
        row["silent"] = len(rule.synapses) - len(recorded)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PlasticityWarning)  # counted in "silent"
            rule.step()
        ghl_optimizer.step()
        row["step"] = "ok"
    except Exception as error:  # noqa: BLE001
        row["step"] = f"failed: {type(error).__name__}: {error}"[:120]
        return row
    train_step(reference, bp_optimizer, x, target)  # warm-up of the BP copy
    bp_times, ghl_times = [], []
    for _ in range(repeats):
        bp_times.append(timed(lambda: train_step(reference, bp_optimizer, x, target)))
        ghl_times.append(timed(lambda: train_step(model, ghl_optimizer, x, target, rule)))
    row["BP CPU s"], row["GHL CPU s"] = statistics.median(bp_times), statistics.median(ghl_times)
    row["GHL/BP"] = row["GHL CPU s"] / row["BP CPU s"]
    pairs = [ghl / bp for bp, ghl in zip(bp_times, ghl_times)]  # each repeat's interleaved pair
    row["GHL/BP range"] = f"{min(pairs):.2f}–{max(pairs):.2f}"
    rule.remove()
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated builder names (default: smallest per family)")
    parser.add_argument("--all", action="store_true", help="every classification builder of torchvision.models")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-side", type=int, default=0,
                        help="input side at least this, and at least each model's minimum")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side (default: each model's minimum; never below a training minimum)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--allocator", choices=("system", "retain"), default="system",
                        help="retain: rerun with glibc's malloc keeping freed memory (see the module docstring)")
    args = parser.parse_args(argv)
    retained = os.environ.get("MALLOC_TRIM_THRESHOLD_") == RETAIN["MALLOC_TRIM_THRESHOLD_"]
    if args.allocator == "retain" and not retained:
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                  {**os.environ, **RETAIN})
    torch.set_num_threads(1)
    if args.all:
        names = torchvision.models.list_models(module=torchvision.models)
    elif args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        names = list(SMALLEST)
    rows = []
    for name in names:
        start = time.perf_counter()
        rows.append(measure(name, args.batch_size, args.repeats, args.image_size, args.min_side))
        print(f"{name}: {rows[-1].get('step')} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        gc.collect()
    ok = [r for r in rows if r.get("step") == "ok"]
    ratios = [r["GHL/BP"] for r in ok]
    allocator = "retain" if retained else "system"
    summary = (f"\n{len(ok)}/{len(rows)} builders construct and step with defaults; "
               f"{sum(1 for r in ok if r['silent'] == 0)}/{len(rows)} without a silent layer; "
               f"GHL/BP median {statistics.median(ratios):.2f}, max {max(ratios):.2f} "
               f"({sum(1 for q in ratios if q <= 1.5)}/{len(ratios)} rows <= 1.5); allocator: {allocator}"
               if ratios else "")
    table = markdown_table(rows, COLUMNS) + summary
    print(table, flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
