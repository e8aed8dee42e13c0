"""Spiking networks on event data (N-MNIST, DVS Gesture, SHD), trained online by the three-factor rule or by
surrogate-gradient BPTT.

    python -m ghl_snn.experiments.events --preset nmnist-small [--methods feedback_sign grad_sign bptt]
        [--data-root DIR] [--out DIR] [--epochs N] [--export-nir] [--lr-grad 0.01] [--lr-feedback 1e-3]

Data: a preset's loader (``ghl_snn.datasets.events``) reads the data set's own on-disk layout under the data
root (``--data-root`` or ``$GHL_SNN_DATA``; never downloaded), tonic turns each recording into ``T`` event frames
(``ToFrame``), clipped to binary spikes, and the frames are replayed one per time step
([`FrameSequence`][ghl_snn.spiking.encoders.FrameSequence]).  Network
([`ghl_snn.spiking.architectures`][]): for camera data ``conv5(C1) - LIF - sumpool2 - conv5(C2) - LIF - sumpool2 -
fc`` (``conv_network``), for SHD ``fc(H) - LIF - fc`` (``mlp_network``); the read-out is non-spiking and
the logit is its time-averaged current ``z = (1/T) sum_t W s_t``.  Methods (one table row each):

* ``feedback_sign``: [`ThreeFactor`][ghl_snn.ThreeFactor] with SWTA-Oja eligibility traces and the
  [`FeedbackSign`][ghl_snn.FeedbackSign] third factor (direct feedback alignment of the output error
  ``e = softmax(z) - y`` to every neuron and position, per-synapse sign of its product with the presynaptic
  trace): no backward pass at all, memory flat in ``T``;
* ``readout_feedback_sign``: the same FeedbackSign rule with only the Linear read-out plastic: the
  convolutions keep their random initial weights (the read-out-only control);
* ``grad_sign``: ThreeFactor with [`GradSign`][ghl_snn.GradSign] of the rate surrogate at the window
  means (one backward pass through the rate network at the end of the window, no BPTT);
* ``bptt``: plain surrogate-gradient BPTT through the ``T`` steps (Adam), the usual SNN baseline.

Every run writes ``config.json``, ``metrics.csv``, ``results.json``, ``results.md`` and ``curves.png`` (all
methods) into ``--out``, and per method, in ``<out>/<method>/``, the runner's outputs
([`ghl_snn.comparison.runner`][]: ``checkpoint.pt`` after every epoch, from which ``--resume`` continues
bit-identically, ``metrics.csv``, ``results.json``, ``curves.png``) and ``model.nir`` (with ``--export-nir``).  A
method that already finished with the same settings is not retrained (``--force`` retrains it); a training loss
that turns non-finite stops the method.  Each method runs in a fresh process so its peak memory is its own.
One run per method at the given rates, last epoch's test accuracy (smoke runs, memory, NIR); tuned comparisons
with seeds and paired intervals: [`ghl_snn.experiments.events_cv`][].
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..datasets.events import DATASETS, downsampled_size, event_loader, find_event_root
from ..spiking import SpikingNetwork, ThreeFactor
from ..spiking.architectures import conv_network, mlp_network
from ..comparison import cli, runner
from ..comparison import methods as registry
from ..comparison.common import markdown_table, seed_everything, select_device, write_json
from ..comparison.processes import run_in_child
from ..comparison.spiking import SpikingTrainer

__all__ = ["PRESETS", "METHODS", "Preset", "find_root", "make_loader", "input_shape",
           "build_network", "make_learner", "frames_to_input",
           "train_method", "run_methods", "main", "cli_main"]

#: the rows of the recorded runs, then every registry method trained from the loss ([`ghl_snn.comparison.methods`][])
METHODS = tuple(registry.method_names(("feedback_sign", "readout_feedback_sign", "grad_sign", "bptt"), reward=False,
                                      spiking=True))
DEFAULT_METHODS = ("feedback_sign", "readout_feedback_sign", "grad_sign", "bptt")


@dataclass(frozen=True)
class Preset:
    """Data set, frame binning and network of one experiment row (sizes as commonly used for each data set)."""

    dataset: str
    subdirs: tuple[str, ...]  # candidate folders under the data root holding the data set's own folder
    n_time_bins: int
    model: str  # "conv" or "mlp"
    spatial_factor: float | None = None
    denoise_time: float | None = None
    channels: tuple[int, int] = (12, 32)
    hidden: int = 256
    epochs: int = 1
    batch_size: int = 32
    feedback_batch_size: int = 32  # batch size of the FeedbackSign rows
    train_subset: int | None = None
    test_subset: int | None = None
    cache: str = "memory"


PRESETS: dict[str, Preset] = {
    # 1,000 train / 100 test N-MNIST recordings (an NMNIST-small folder under the data root); 10 bins of ~30 ms
    "nmnist-small": Preset("nmnist", ("NMNIST-small", "."), n_time_bins=10, model="conv", epochs=2),
    # full N-MNIST: 60,000 / 10,000, 34x34x2, 10 bins, disk cache of the frames
    "nmnist": Preset("nmnist", (".", "NMNIST-full"), n_time_bins=10, model="conv", epochs=5, cache="disk"),
    # DVS Gesture: 128x128 downsampled 4x to 32x32, 20 bins over each ~6 s recording, 11 classes
    "dvs-gesture": Preset("dvs-gesture", (".",), n_time_bins=20, model="conv", spatial_factor=0.25,
                          channels=(16, 32), epochs=20, batch_size=16, cache="disk"),
    # SHD: 700 cochlear channels, 100 bins (~10 ms each over ~1 s), fc 700-256-20
    "shd": Preset("shd", (".",), n_time_bins=100, model="mlp", hidden=256, epochs=20, cache="memory"),
}


# ---------------------------------------------------------------------------------------------- data
def find_root(preset: Preset, data_root: str | os.PathLike[str] | None) -> Path:
    """The folder holding the preset's data-set folder (tonic's ``save_to``), see
    [`find_event_root`][ghl_snn.datasets.events.loaders.find_event_root]."""
    return find_event_root(preset.dataset, preset.subdirs, data_root)


def input_shape(preset: Preset) -> tuple[int, ...]:
    """Per-step input shape: ``(P, H, W)`` for camera data, ``(channels,)`` for SHD."""
    width, height, polarities = downsampled_size(DATASETS[preset.dataset].sensor_size, preset.spatial_factor)
    return (polarities, height, width) if preset.model == "conv" else (width * height * polarities,)


def make_loader(preset: Preset, root: Path, train: bool, batch_size: int, seed: int, cache_dir: Path,
                subset: int | None) -> DataLoader:
    """The preset's frames, see [`event_loader`][ghl_snn.datasets.events.loaders.event_loader]."""
    return event_loader(preset.dataset, root, train, batch_size, seed, cache_dir, preset.n_time_bins, subset,
                        preset.spatial_factor, preset.denoise_time, preset.cache)


# ---------------------------------------------------------------------------------------------- networks
def build_network(preset: Preset, beta: float, init_scale: float, reset: str = "subtract") -> SpikingNetwork:
    """The preset's network; ``reset="zero"`` makes the NIR export exact (see [`ghl_snn.export.nir`][])."""
    classes = len(DATASETS[preset.dataset].classes) if preset.dataset != "shd" else 20
    shape = input_shape(preset)
    if preset.model == "conv":
        return conv_network(shape, classes, preset.channels, beta, init_scale, reset)  # type: ignore[arg-type]
    return mlp_network(shape[0], classes, preset.hidden, beta, init_scale, reset)


def make_learner(method: str, net: SpikingNetwork, tau: float, seed: int) -> ThreeFactor | None:
    """The registry's [`ThreeFactor`][ghl_snn.ThreeFactor] learner of ``method`` (``None`` for BPTT); a read-out-only
    method trains the Linear read-out alone, every other synapse frozen at its initialisation."""
    if method == "bptt":
        return None
    readout = [name for name, module in net.synapses().items() if isinstance(module, nn.Linear)]
    return registry.build_learner(method, net, seed=seed, spiking=True, readout=readout, tau=tau)


def frames_to_input(frames: Tensor, preset: Preset, device: torch.device) -> Tensor:
    """Collated frames ``(N, T, P, H, W)`` (camera) or ``(N, T, 1, C)`` (SHD) as float network input."""
    frames = frames.to(device=device, dtype=torch.float32)
    if preset.model == "mlp":
        frames = frames.reshape(frames.shape[0], frames.shape[1], -1)
    return frames


# ---------------------------------------------------------------------------------------------- training
#: options that do not change a method's results (left out of its run identity)
NOT_IDENTITY = ("out", "threads", "force", "resume", "device", "quiet", "cache", "cache_dir", "export_nir",
                "norse_samples")


def method_rows(history: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The runner's per-epoch rows with the firing rate and the cumulative training time."""
    rows, train_time = [], 0.0
    for row in history:
        train_time += row["epoch_seconds"]
        rows.append({"epoch": row["epoch"], "train_loss": row["train_loss"], "train_acc": row["train_acc"],
                     "test_acc": row["test_acc"], "test_loss": row["test_loss"],
                     "hidden_rate": row["hidden_rate"], "train_time_s": train_time})
    return rows


def train_method(config: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one method in the current process through the runner
    ([`fit`][ghl_snn.comparison.runner.fit]: checkpoint every epoch, ``resume``, divergence stop, a finished run
    with the same settings skipped unless ``force``); return its results row with per-epoch metrics."""
    torch.set_num_threads(config["threads"])
    seed_everything(config["seed"])
    device = select_device(config["device"])
    preset = replace(PRESETS[config["preset"]], **config["overrides"])
    method = config["method"]
    out = Path(config["out"]) / method
    out.mkdir(parents=True, exist_ok=True)
    root = find_root(preset, config["data_root"])
    cache_dir = Path(config["cache_dir"])
    started = time.perf_counter()
    batch_size = preset.feedback_batch_size if method == "feedback_sign" else preset.batch_size
    train_loader = make_loader(preset, root, True, batch_size, config["seed"], cache_dir, preset.train_subset)
    test_loader = make_loader(preset, root, False, config["eval_batch_size"], config["seed"], cache_dir,
                              preset.test_subset)
    net = build_network(preset, config["beta"], config["init_scale"], config.get("reset", "subtract")).to(device)
    learner = make_learner(method, net, config["tau"], config["seed"])
    if method == "bptt":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=config["lr_bptt"])
    else:
        lr = {"feedback_sign": config["lr_feedback"], "readout_feedback_sign": config["lr_readout"]}.get(
            method, config["lr_grad"])
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=config["momentum"])
    trainer = SpikingTrainer(net, optimizer, learner=learner, shuffle=train_loader.generator,
                           progress=not config["quiet"])

    def batches(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
        return ((frames_to_input(frames, preset, device), labels.to(device)) for frames, labels in loader)

    identity = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    results = runner.fit(trainer, lambda epoch: batches(train_loader), lambda: batches(test_loader), preset.epochs,
                         out, {**config, "preset_values": asdict(preset), "run_identity": identity},
                         resume=bool(config.get("resume")), steps_per_epoch=len(train_loader), device=device,
                         desc=method, force=bool(config.get("force")))
    metrics = method_rows(trainer.history)
    nir_check: dict[str, float] = {}
    if config["export_nir"]:
        import nir

        from ..export.nir import export_nir, norse_agreement
        nir.write(out / "model.nir", export_nir(net, input_shape(preset), dt=config["dt"]))
        if config.get("reset") == "zero":
            graph = export_nir(net, input_shape(preset), dt=config["dt"], fold_resistance=True)
            nir.write(out / "model_folded.nir", graph)
            inputs = ((frames_to_input(frames, preset, torch.device("cpu")), labels) for frames, labels in test_loader)
            nir_check = norse_agreement(net.cpu(), nir.read(out / "model_folded.nir"), inputs, config["dt"],
                                        config.get("norse_samples", 100))
            tqdm.write(f"{method} NIR -> norse: {nir_check}")
    return {"nir_check": nir_check, "method": method, "seed": config["seed"], "T": preset.n_time_bins,
            "batch_size": batch_size,
            "test_acc": metrics[-1]["test_acc"],
            "train_loss": metrics[-1]["train_loss"],
            "train_time_s": metrics[-1]["train_time_s"], "wall_time_s": time.perf_counter() - started,
            "peak_mem_mib": results["peak_memory_mib"], "peak_rss_mib": results["peak_rss_mib"],
            "metrics": metrics, "train_samples": len(train_loader.dataset),  # type: ignore[arg-type]
            "test_samples": len(test_loader.dataset)}  # type: ignore[arg-type]


def run_isolated(config: dict[str, Any]) -> dict[str, Any]:
    """``train_method`` in a fresh (spawned) process, which dies with this one, so that its peak memory is measured
    on its own."""
    return run_in_child(train_method, config)


def build_parser() -> argparse.ArgumentParser:
    pos, posf = cli.positive_int, cli.positive_float
    parser = cli.parser("python -m ghl_snn.experiments.events", __doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="data set and protocol")
    cli.add_methods_argument(parser, lambda: registry.method_names(METHODS, reward=False, spiking=True),
                             DEFAULT_METHODS)
    cli.add_common_arguments(parser, out_default="runs/events/<preset>", threads_default=1,
                             seeds_help="seeds per method (runs in DIR/<method>/seed<k>/ when more than one)",
                             data_help="the folder holding the data sets (e.g. NMNIST/)")
    parser.add_argument("--cache", default=None, choices=("none", "memory", "disk"),
                        help="tonic cache of the frames (default: the preset's)")
    parser.add_argument("--cache-dir", default=None, help="tonic disk cache (default: <out>/cache)")
    parser.add_argument("--batch-size", type=pos, default=None, help="mini-batch size (default: the preset's)")
    parser.add_argument("--train-subset", type=pos, default=None,
                        help="training recordings used (default: the preset's)")
    parser.add_argument("--test-subset", type=pos, default=None,
                        help="test recordings evaluated (default: the preset's)")
    parser.add_argument("--time-bins", type=pos, default=None,
                        help="frames T per recording (ToFrame n_time_bins; default: the preset's)")
    parser.add_argument("--eval-batch-size", type=pos, default=100, help="batch size of the evaluation")
    parser.add_argument("--feedback-batch-size", type=pos, default=None,
                        help="batch size of feedback_sign (default: the preset's, 32)")
    parser.add_argument("--lr-grad", type=posf, default=0.01, help="SGD learning rate of grad_sign and of every "
                        "method without its own option")
    parser.add_argument("--lr-feedback", type=posf, default=1e-3, help="SGD learning rate of feedback_sign")
    parser.add_argument("--lr-readout", type=posf, default=0.01, help="SGD learning rate of readout_feedback_sign")
    parser.add_argument("--momentum", type=cli.nonnegative_float, default=0.9, help="SGD momentum")
    parser.add_argument("--lr-bptt", type=posf, default=2e-3, help="Adam learning rate of BPTT")
    parser.add_argument("--tau", type=posf, default=1.0, help="SWTA softmax temperature")
    parser.add_argument("--beta", type=cli.open_fraction, default=0.9, help="LIF membrane decay per step, in (0, 1)")
    parser.add_argument("--reset", default="subtract", choices=("subtract", "zero"),
                        help="LIF reset; 'zero' is what NIR expresses, so --export-nir is then exact")
    parser.add_argument("--init-scale", type=posf, default=2.0, help="scale of the spiking layers' initial weights")
    parser.add_argument("--dt", type=posf, default=1e-3, help="time step (s) assumed by the NIR export")
    parser.add_argument("--export-nir", action="store_true", help="write <out>/<method>/model.nir after training")
    parser.add_argument("--no-isolate", action="store_true",
                        help="train in this process (by default every run has a fresh process: its own peak memory)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options: a bad value exits with one line and exit code 2 before anything is read."""
    args = build_parser().parse_args(argv)
    if args.out == "runs/events/<preset>":
        args.out = f"runs/events/{args.preset}"
    return args


def make_config(args: argparse.Namespace) -> tuple[dict[str, Any], Preset, Path]:
    """``(config for train_method without "method", preset with the CLI overrides, resolved data folder)``;
    exits with a clear message when the data set is not under the data root."""
    out = Path(args.out)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                   ("feedback_batch_size", args.feedback_batch_size),
                                   ("train_subset", args.train_subset), ("test_subset", args.test_subset),
                                   ("n_time_bins", args.time_bins), ("cache", args.cache)) if v is not None}
    preset = replace(PRESETS[args.preset], **overrides)
    root = find_root(preset, args.data_root)
    config = {k: v for k, v in vars(args).items() if k not in ("methods", "seeds", "no_isolate", "dist")}
    config.update(out=str(out), cache_dir=args.cache_dir or str(out / "cache"), overrides=overrides)
    return config, preset, root


def run_methods(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every (method, seed), each in a fresh process unless ``--no-isolate``, and write the outputs."""
    config, preset, root = make_config(args)
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config, "methods": args.methods, "preset_values": asdict(preset),
                                     "resolved_root": str(root), "torch": torch.__version__,
                                     "machine": f"{os.cpu_count()}-core CPU ({platform.processor() or 'unknown'}), "
                                                f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}"})
    rows: list[dict[str, Any]] = []
    seeds = cli.seeds_of(args)
    for method in args.methods:
        for seed in seeds:
            run_out = str(out / f"seed{seed}") if len(seeds) > 1 else str(out)
            row = (train_method if args.no_isolate else run_isolated)({**config, "method": method, "seed": seed,
                                                                        "out": run_out})
            rows.append(row)
            print(f"{method} seed {seed}: test accuracy {100 * row['test_acc']:.1f}%  train "
                  f"{row['train_time_s']:.0f}s  peak {row['peak_mem_mib']:.0f} MiB", flush=True)
            write_json(out / "results.json", rows)
    table = markdown_table([{"method": r["method"], "seed": r["seed"], "T": r["T"], "batch": r["batch_size"],
                             "epochs": len(r["metrics"]), "test acc (%)": 100 * r["test_acc"],
                             "train loss": r["train_loss"], "train time (s)": r["train_time_s"],
                             "peak mem (MiB)": r["peak_mem_mib"]} for r in rows])
    print(table)
    (out / "results.md").write_text(table + "\n")
    runner.plot_curves(out / "curves.png", {f"{r['method']} s{r['seed']}": r["metrics"] for r in rows})
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        keys = list(rows[0]["metrics"][0])
        writer.writerow(["method", "seed", *keys])
        for r in rows:
            for m in r["metrics"]:
                writer.writerow([r["method"], r["seed"], *(m[k] for k in keys)])
    return rows


main, cli_main = cli.entry_points(parse_args, lambda args: run_methods(args), check=make_config)


if __name__ == "__main__":
    sys.exit(cli_main())
