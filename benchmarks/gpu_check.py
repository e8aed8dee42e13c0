"""One-command GPU check: step times, the spiking table and one timed CIFAR-10 epoch, printed as one table.

    python benchmarks/gpu_check.py                       # CUDA machine, CIFAR-10 under $GHL_SNN_DATA: < 10 min
    python benchmarks/gpu_check.py --tiny                # a few seconds on a CPU (automatic without CUDA)
    python benchmarks/gpu_check.py --data-root DIR --json check.json

Sections (column ``check``):

* ``step``      ``benchmarks/step_time.py`` side by side on DeepHebb (width 1, batch 64; ``--tiny``: width 1/16,
                batch 8): BP, exact GHL and GHL with ``eligibility_fraction=0.25``, in fp32 and under bf16
                autocast, channels-last.  ``ratio`` is step time / BP's (CPU: CPU-time ratio).
* ``spiking``   the table printed by ``benchmarks/spiking_memory.py`` (run as a subprocess; a row says so when that
                script is absent, fails or times out).
* ``spiking-step`` time per step of one window of the 784-256-10 IF network (batch 32, T = 100): the plain
                PyTorch inference loop, ``SpikingNetwork.run`` eager, with the ``torch.compile``'d step and (CUDA) with
                the step replayed as a CUDA graph, and the ThreeFactor/FeedbackSign window (run + step), eager and
                with the compiled / CUDA-graph step; ``ratio`` is the time / the plain loop's; ``note`` gives the
                learning window's host reads (device synchronisations on CUDA) per window.
* ``epoch``     one epoch of the CIFAR-10 harness (``ghl_snn.experiments.cifar``: DeepHebb, batch 64, GHL's and
                the BP baseline's optimisers) on the real data, timed with the harness's own trainer: ``data ms``
                is the time to get a batch from the stream, ``step ms`` the rest of the step (both synchronised
                on CUDA), ``data %`` the share of data time (near 0: the GPU is not starved), ``100 epochs`` the
                projected time of the paper's 100-epoch run.  ``--tiny`` uses the embedded digits (or
                ``--data-root``), 256 images, width 1/16.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spiking_memory  # noqa: E402  (the sibling benchmark scripts)
import step_time  # noqa: E402

from ghl_snn.datasets.cifar import BatchStream, load_cifar, load_digits_as_cifar  # noqa: E402
from ghl_snn.experiments.cifar_presets import PRESETS, build_rule, optimiser_for  # noqa: E402
from ghl_snn.comparison.common import markdown_table, select_device  # noqa: E402
from ghl_snn.comparison.runner import Trainer  # noqa: E402
from ghl_snn.models import DeepHebb  # noqa: E402
from ghl_snn.modulators import FeedbackSign  # noqa: E402
from ghl_snn.spiking import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor  # noqa: E402

COLUMNS = ("check", "setting", "variant", "step ms", "ratio", "data ms", "data %", "epoch s", "100 epochs",
           "peak MiB", "note")
SPIKING_SCRIPT = Path(__file__).resolve().parent / "spiking_memory.py"
STEP_VARIANTS = ("bp", "ghl", "ghl-f0.25")


def row(**values: Any) -> dict[str, str]:
    """A table row with every column (missing ones blank)."""
    unknown = set(values) - {c.replace(" ", "_").replace("%", "pct") for c in COLUMNS}
    if unknown:
        raise KeyError(f"unknown columns {sorted(unknown)}")
    return {c: str(values.get(c.replace(" ", "_").replace("%", "pct"), "")) for c in COLUMNS}


# ---------------------------------------------------------------- step time
def step_rows(device: torch.device, tiny: bool) -> list[dict[str, str]]:
    width, batch, repeats = (1 / 16, 8, 2) if tiny else (1.0, 64, 20)
    rows = []
    for amp in (None, "bf16"):
        table = step_time.step_table(STEP_VARIANTS, width, batch, device, repeats, amp=amp, channels_last=True,
                                     memory=not tiny)
        ratio_column = "cpu time / bp" if device.type == "cpu" else "time / bp"
        clock = ", ratio of CPU time" if device.type == "cpu" else ""
        for entry in table:
            rows.append(row(check="step", setting=f"DeepHebb w{width:g} b{batch} {amp or 'fp32'} channels-last{clock}",
                            variant=entry["variant"], step_ms=entry["median step (ms)"], ratio=entry[ratio_column],
                            peak_MiB=entry.get("peak memory (MiB)", ""),
                            note=f"target {entry['target']}" if entry["target"] else ""))
    return rows


# ---------------------------------------------------------------- spiking
def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The first markdown table in ``text`` as a list of ``{header: cell}`` rows."""
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1]):
            header = [cell.strip() for cell in line.strip("|").split("|")]
            rows = []
            for body in lines[index + 2:]:
                if not body.startswith("|"):
                    break
                rows.append(dict(zip(header, (cell.strip() for cell in body.strip("|").split("|")))))
            return rows
    return []


def spiking_rows(device: torch.device, tiny: bool, script: Path = SPIKING_SCRIPT,
                 timeout: float | None = None) -> list[dict[str, str]]:
    """Run the spiking benchmark script in a subprocess and fold its table into rows; never raises."""
    setting = "tiny" if tiny else "T = 10, 100"
    if not script.is_file():
        return [row(check="spiking", setting=setting, note=f"not run: {script.name} not found")]
    args = (["--steps", "2", "4", "--batches", "1", "--batch-size", "4", "--window-steps", "4", "--windows", "1"]
            if tiny else ["--steps", "10", "100"])
    command = [sys.executable, str(script), *args, "--device", str(device)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()),
                                                                            os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout or (120 if tiny else 240),
                              env=environment)
    except subprocess.TimeoutExpired:
        return [row(check="spiking", setting=setting, note=f"not run: {script.name} timed out")]
    table = parse_markdown_table(done.stdout)
    if done.returncode != 0 or not table:
        last = (done.stderr.strip().splitlines() or ["no table printed"])[-1][:120]
        return [row(check="spiking", setting=setting, note=f"not run: exit {done.returncode}: {last}")]
    rows = []
    for entry in table:
        cells = list(entry.items())
        rows.append(row(check="spiking", setting=setting, variant=cells[0][1],
                        note="; ".join(f"{key} {value}" for key, value in cells[1:])))
    return rows


# ---------------------------------------------------------------- spiking time step
def spiking_step_rows(device: torch.device, tiny: bool, compile_on_cpu: bool = False) -> list[dict[str, str]]:
    """Time per time step of one presentation window of the 784-256-10 IF network (batch 32, T = 100; ``--tiny``:
    T = 10): the plain PyTorch inference loop, the library's eager inference run, the same run with the compiled
    step (``torch.compile``; on CUDA also ``mode="reduce-overhead"``, CUDA graphs) and the ThreeFactor/FeedbackSign
    learning window (run + step).  ``ratio``: time / the plain loop's.  A variant that fails says why in ``note``."""
    steps, repeats = (10, 3) if tiny else (100, 10)
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(784, 256, bias=False), IF(), nn.Linear(256, 10, bias=False)).to(device)
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    weights = (net[0].weight.detach(), net[2].weight.detach())
    x = torch.rand(32, 784, device=device) * (torch.rand(32, 784, device=device) < 0.26)
    y = torch.randint(0, 10, (32,), device=device)
    encoder = BernoulliEncoder()
    learner = ThreeFactor(net, modulator=FeedbackSign())

    def inference() -> None:
        with torch.no_grad():
            net.run(x, steps, encoder, record=False)

    def learning() -> None:
        learner.run(x, steps, encoder)
        learner.step(loss_fn=lambda out: F.cross_entropy(out, y))

    variants: list[tuple[str, Any, str | None]] = [
        ("plain loop", lambda: spiking_memory.plain_inference(weights, lambda: torch.bernoulli(x), steps), None),
        ("SpikingNetwork.run, eager", inference, None),
    ]
    compiled = [("compiled step", "default")] if device.type == "cuda" or compile_on_cpu else []
    compiled += [("CUDA graph step", "reduce-overhead")] if device.type == "cuda" else []
    variants += [(f"SpikingNetwork.run, {kind}", inference, mode) for kind, mode in compiled]
    variants.append(("ThreeFactor FeedbackSign run + step", learning, None))
    variants += [(f"ThreeFactor FeedbackSign run + step, {kind}", learning, mode) for kind, mode in compiled]
    rows, reference = [], None
    for name, window, mode in variants:
        note = ""
        try:
            net.compile_step(None if mode == "default" else mode, enable=mode is not None)
            with torch.no_grad():
                for _ in range(2):  # warm-up (and compilation)
                    window()
            if window is learning:
                note = f"host reads per window: {host_reads(window, device)}"
            times = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                window()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            per_step = 1000 * sorted(times)[len(times) // 2] / steps
        except Exception as error:  # a variant that does not work here is reported, not fatal
            rows.append(row(check="spiking-step", setting=f"784-256-10 IF, batch 32, T = {steps}", variant=name,
                            note=f"failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}"))
            continue
        finally:
            net.compile_step(enable=False)
        reference = per_step if reference is None else reference
        rows.append(row(check="spiking-step", setting=f"784-256-10 IF, batch 32, T = {steps}", variant=name,
                        step_ms=f"{per_step:.4f}", ratio=f"{per_step / reference:.2f}", note=note))
    return rows


def host_reads(window: Any, device: torch.device) -> int:
    """How often one call of ``window`` reads a value back to the host: on CUDA the device synchronisations that
    ``torch.cuda.set_sync_debug_mode`` reports, elsewhere the scalar reads and list transfers seen by a dispatch
    mode (the reads that would synchronise a GPU)."""
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                window()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)
    from torch.utils._python_dispatch import TorchDispatchMode

    reads = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
             torch.ops.aten.item.default}

    class Count(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in reads:
                Count.count += 1
            return func(*args, **(kwargs or {}))

    tolist = torch.Tensor.tolist

    def counted(tensor: torch.Tensor, *args: Any) -> Any:
        Count.count += 1
        return tolist(tensor, *args)

    torch.Tensor.tolist = counted  # type: ignore[method-assign]
    try:
        with Count():
            window()
    finally:
        torch.Tensor.tolist = tolist  # type: ignore[method-assign]
    return Count.count


# ---------------------------------------------------------------- one CIFAR epoch
class TimedStream:
    """Wraps a batch iterator and adds up the time spent waiting for each batch (synchronised on CUDA)."""

    def __init__(self, batches: Iterator, device: torch.device) -> None:
        self.batches, self.device, self.seconds, self.count = batches, device, 0.0, 0

    def __iter__(self) -> Iterator:
        while True:
            start = time.perf_counter()
            try:
                batch = next(self.batches)
            except StopIteration:
                return
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - start
            self.count += 1
            yield batch


def epoch_rows(device: torch.device, tiny: bool, data_root: str | None) -> list[dict[str, str]]:
    preset = PRESETS["deephebb-cifar10-ghl"]
    if tiny and data_root is None:
        train, source = load_digits_as_cifar(train=True).subset(256, seed=0), "digits (no CIFAR in --tiny)"
    else:
        try:
            train, source = load_cifar("cifar10", data_root, train=True), "CIFAR-10"
        except FileNotFoundError as error:
            return [row(check="epoch", note=f"not run: {str(error).splitlines()[0][:120]}")]
        if tiny:
            train = train.subset(256, seed=0)
    width = 1 / 16 if tiny else preset.width
    rows = []
    for method in ("ghl", "bp"):
        torch.manual_seed(0)
        model = DeepHebb(num_classes=len(train.classes), width=width).to(device)
        rule = build_rule(method, model)
        optimizer = optimiser_for(method, preset, model, set(model.plastic_taus))
        stream = BatchStream(train, preset.batch_size, device, shuffle=True, seed=0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(stream))
        trainer = Trainer(model, optimizer, scheduler, rule)
        timed = TimedStream(iter(stream.epoch(0)), device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        metrics = trainer.train_epoch(timed, 0, total=len(stream), desc=f"gpu-check {method}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total = time.perf_counter() - start
        steps = max(timed.count, 1)
        data_ms, step_ms = 1000 * timed.seconds / steps, 1000 * (total - timed.seconds) / steps
        setting = f"{source} {len(train)} images, DeepHebb w{width:g} b{preset.batch_size}"
        rows.append(row(check="epoch", setting=setting,
                        variant=method, step_ms=f"{step_ms:.1f}", data_ms=f"{data_ms:.2f}",
                        data_pct=f"{100 * timed.seconds / max(total, 1e-9):.1f}", epoch_s=f"{total:.1f}",
                        **{"100_epochs": f"{100 * total / 3600:.2f} h"},
                        note=f"train acc {metrics['train_acc']:.3f}"))
    if len(rows) == 2:
        ratio = float(rows[0]["step ms"]) / max(float(rows[1]["step ms"]), 1e-9)
        rows[0]["ratio"] = f"{ratio:.2f}"
        rows[1]["ratio"] = "1.00"
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="seconds-long version (automatic without CUDA)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda:0', ...")
    parser.add_argument("--data-root", help="CIFAR-10 folder (default: $GHL_SNN_DATA)")
    parser.add_argument("--skip", default="",
                        help="comma-separated sections to skip: step, spiking, spiking-step, epoch")
    parser.add_argument("--compile-on-cpu", action="store_true",
                        help="also time the compiled spiking step on a CPU (compilation takes a minute)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    tiny = args.tiny or device.type != "cuda"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"step", "spiking", "spiking-step", "epoch"}
    if unknown:
        parser.error(f"unknown section(s) in --skip: {sorted(unknown)}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    rows: list[dict[str, str]] = []
    if "step" not in skip:
        rows += step_rows(device, tiny)
    if "spiking" not in skip:
        rows += spiking_rows(device, tiny)
    if "spiking-step" not in skip:
        rows += spiking_step_rows(device, tiny, args.compile_on_cpu)
    if "epoch" not in skip:
        rows += epoch_rows(device, tiny, args.data_root)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"GPU check{' (tiny)' if tiny else ''}: {name}, torch {torch.__version__}, "
          f"{time.perf_counter() - started:.0f} s in all")
    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "tiny": tiny, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
