"""Hebbian alignment of SGD updates vs weight decay and injected noise (Koplow, Poggio & Ziyin 2025).

Two parts, both measured with [`ghl_snn.diagnostics.AlignmentMonitor`][ghl_snn.AlignmentMonitor]:

* **SCE** (Standard Classification Experiment): MLP 3072-128-128-10, tanh, cross-entropy on CIFAR-10 (a stratified
  subset for CPU runs), SGD lr 0.01, batch 256, weight decay ``γ`` swept (``torch.optim.SGD(weight_decay=γ)``, so
  ``.grad`` is the loss gradient and the full update ``ΔW = -η(∇ℓ + γW)`` of Eq. 4).
* **SRE** (Standard Regression Experiment): student and teacher MLPs 32-128-128-32, tanh, different random inits,
  20k / 2k Gaussian inputs, MSE, SGD batch 256, grid weight decay ``γ`` × injected noise ``σ``: at the start of each
  iteration every parameter receives ``N(0, σ²)`` noise (paper Eq. 14, persistent), then the gradient is taken at
  the noisy weights.  Claim checked: alignment rises with ``γ``, falls with ``σ``, zero crossing at ``γ ∝ σ²``
  (Eq. 20).

"Alignment at convergence" = mean (± SD) over the last ``--window`` recorded steps of ``cos(-∇_W ℓ, H)``
(learning signal) and ``cos(ΔW, H)`` (full update), per layer; the paper's headline numbers use the 2nd layer
(``"2"``, the 128×128 hidden-to-hidden weight).

    python -m ghl_snn.experiments.alignment --data-root "$GHL_SNN_DATA" --out runs/alignment
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..diagnostics import AlignmentMonitor
from ..datasets.cifar import find_cifar, load_image_folder, standardized_vectors
from ..comparison import cli
from ..comparison.common import markdown_table, seed_everything, write_json
from ..comparison.runner import write_metrics_csv

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LAYERS = ("0", "2", "4")
MAIN_LAYER = "2"


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """Two tanh hidden layers; Linear layers named "0", "2", "4"."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, out_features))


# ---------------------------------------------------------------------------------------------------- training
def train_with_monitor(model: nn.Module, train: tuple[Tensor, Tensor], loss_fn, epochs: int, lr: float,
                       weight_decay: float, batch_size: int, noise_std: float, every: int, seed: int,
                       desc: str) -> AlignmentMonitor:
    """SGD (optionally with persistent Gaussian weight noise before every step) under an AlignmentMonitor."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    monitor = AlignmentMonitor(model, optimizer, every=every)
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = train
    model.train()
    for _ in tqdm(range(epochs), desc=desc, mininterval=30, leave=False):
        order = torch.randperm(inputs.shape[0], generator=generator)
        for start in range(0, inputs.shape[0] - batch_size + 1, batch_size):  # full batches only
            index = order[start:start + batch_size]
            if noise_std > 0:
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.add_(torch.randn(parameter.shape, generator=generator) * noise_std)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs[index]), targets[index]).backward()
            optimizer.step()
    monitor.remove()
    return monitor


def converged_alignment(monitor: AlignmentMonitor, window: int) -> dict[str, float]:
    """Flat dict ``<layer>/<column>_{mean,std}`` over the last ``window`` recorded steps."""
    out: dict[str, float] = {}
    for layer, stats in monitor.summary(last=window).items():
        for key, value in stats.items():
            if key != "n":
                out[f"L{layer}/{key}"] = value
    return out


@torch.no_grad()
def evaluate(model: nn.Module, inputs: Tensor, targets: Tensor, kind: str) -> float:
    model.eval()
    outputs = model(inputs)
    model.train()
    if kind == "classification":
        return float((outputs.argmax(1) == targets).float().mean())
    return float(F.mse_loss(outputs, targets))


def load_cifar10_jpeg(root: Path, train: bool, per_class: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """CIFAR-10's JPEG tree: ``(uint8 [N, 3, 32, 32], int64 [N])``, ``per_class`` images of every class drawn with
    ``seed`` ([`load_image_folder`][ghl_snn.datasets.cifar.load_image_folder]; None: all)."""
    data = load_image_folder(root, train, per_class=per_class, seed=seed)
    if tuple(data.classes) != CIFAR_CLASSES:
        raise ValueError(f"unexpected class folders under {root}: {data.classes}")
    return data.images, data.labels


def locate_cifar10(data_root: str | None) -> Path:
    """The CIFAR-10 JPEG tree under the data root (or the root itself); one-line error naming the layouts."""
    source = find_cifar("cifar10", data_root)
    if not source.image_folder:
        raise FileNotFoundError(f"{source.path}: the SCE part reads the JPEG ImageFolder tree cifar10-jpeg/"
                                "{train,test}/<class>/*.jpg, not torchvision's format")
    return source.path


def run_sce(args: argparse.Namespace, out: Path, cifar_root: Path | None = None) -> list[dict[str, Any]]:
    cifar_root = cifar_root if cifar_root is not None else locate_cifar10(args.data_root)
    train_images, train_labels = load_cifar10_jpeg(cifar_root, True, args.sce_per_class, args.seed)
    test_images, test_labels = load_cifar10_jpeg(cifar_root, False, args.sce_test_per_class, args.seed)
    train_x, mean, std = standardized_vectors(train_images)
    test_x, _, _ = standardized_vectors(test_images, mean, std)
    rows = []
    for gamma in tqdm(args.sce_weight_decays, desc="SCE weight decays"):
        seed_everything(args.seed)
        model = mlp(3072, 128, 10)
        start = time.perf_counter()
        monitor = train_with_monitor(model, (train_x, train_labels), F.cross_entropy, args.sce_epochs, args.lr,
                                     gamma, args.batch_size, 0.0, args.every, args.seed, f"SCE γ={gamma:g}")
        monitor.to_csv(out / "sce_traces" / f"wd{gamma:g}.csv")
        row = {"weight_decay": gamma, "steps": monitor.step, "seconds": time.perf_counter() - start,
               "train_acc": evaluate(model, train_x, train_labels, "classification"),
               "test_acc": evaluate(model, test_x, test_labels, "classification"),
               "weight_norm_L2": float(model[2].weight.detach().norm()),
               **converged_alignment(monitor, args.window)}
        rows.append(row)
        tqdm.write(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                               if "std" not in k}))
    write_metrics_csv(out / "sce.csv", rows)
    return rows


def run_sre(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    seed_everything(args.seed)
    teacher = mlp(32, 128, 32)
    generator = torch.Generator().manual_seed(args.seed + 1)
    train_x = torch.randn(args.sre_train, 32, generator=generator)
    val_x = torch.randn(args.sre_val, 32, generator=generator)
    with torch.no_grad():
        train_y, val_y = teacher(train_x), teacher(val_x)
    rows = []
    grid = [(g, s) for g in args.sre_weight_decays for s in args.sre_noises]
    for gamma, sigma in tqdm(grid, desc="SRE weight decay x noise"):
        seed_everything(args.seed + 100)  # every student starts from the same init, different from the teacher
        student = mlp(32, 128, 32)
        start = time.perf_counter()
        monitor = train_with_monitor(student, (train_x, train_y), F.mse_loss, args.sre_epochs, args.sre_lr, gamma,
                                     args.batch_size, sigma, args.every, args.seed, f"SRE γ={gamma:g} σ={sigma:g}")
        row = {"weight_decay": gamma, "noise_std": sigma, "steps": monitor.step,
               "seconds": time.perf_counter() - start, "val_mse": evaluate(student, val_x, val_y, "regression"),
               "weight_norm_L2": float(student[2].weight.detach().norm()), **converged_alignment(monitor, args.window)}
        rows.append(row)
        tqdm.write(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                               if "std" not in k or k == "noise_std"}))
    write_metrics_csv(out / "sre.csv", rows)
    return rows


# ---------------------------------------------------------------------------------------------------- analysis
def zero_crossings(rows: list[dict[str, Any]], column: str) -> dict[float, float]:
    """For each noise level: the weight decay where the alignment first turns from < 0 to >= 0 as γ grows
    (log-linear interpolation between grid points; γ = 0 is placed one decade below the smallest positive γ)."""
    crossings: dict[float, float] = {}
    for sigma in sorted({r["noise_std"] for r in rows}):
        line = sorted((r["weight_decay"], r[column]) for r in rows if r["noise_std"] == sigma)
        positive = [g for g, _ in line if g > 0]
        if not positive:
            continue
        floor = min(positive) / 10
        for (g0, a0), (g1, a1) in zip(line, line[1:]):
            if a0 < 0 <= a1 and not (math.isnan(a0) or math.isnan(a1)):
                l0, l1 = math.log10(max(g0, floor)), math.log10(max(g1, floor))
                crossings[sigma] = 10 ** (l0 + (l1 - l0) * (-a0) / (a1 - a0))
                break
    return crossings


def plot_sce(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gammas = [r["weight_decay"] for r in rows]
    positions = range(len(gammas))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, column, title in ((axes[0], "signal_alignment", "gradient update  cos(-∇ℓ, H)"),
                                (axes[1], "update_alignment", "full update  cos(ΔW, H)")):
        for layer in LAYERS:
            axis.errorbar(positions, [r[f"L{layer}/{column}_mean"] for r in rows],
                          yerr=[r[f"L{layer}/{column}_std"] for r in rows], marker="o", capsize=3,
                          label=f"layer {layer}")
        axis.axhline(0, color="k", lw=0.5)
        axis.set_title(title)
        axis.set_ylabel("Hebbian alignment at end")
    axes[2].plot(positions, [r["test_acc"] for r in rows], marker="o", label="test")
    axes[2].plot(positions, [r["train_acc"] for r in rows], marker="o", label="train")
    axes[2].set_title("accuracy")
    for axis in axes:
        axis.set_xticks(list(positions), [f"{g:g}" for g in gammas], rotation=30)
        axis.set_xlabel("weight decay γ")
        axis.legend(fontsize=7)
    fig.suptitle("SCE: MLP 2×128 tanh, CIFAR-10 subset, SGD lr 0.01, batch 256")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_sre(rows: list[dict[str, Any]], path: Path, layer: str = MAIN_LAYER) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gammas = sorted({r["weight_decay"] for r in rows})
    sigmas = sorted({r["noise_std"] for r in rows})
    lookup = {(r["weight_decay"], r["noise_std"]): r for r in rows}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, column, title in ((axes[0], f"L{layer}/signal_alignment_mean", f"gradient update, layer {layer}"),
                                (axes[1], f"L{layer}/update_alignment_mean", f"full update, layer {layer}"),
                                (axes[2], "val_mse", "validation MSE")):
        grid = torch.tensor([[lookup[(g, s)][column] for s in sigmas] for g in gammas], dtype=torch.float64)
        if column == "val_mse":
            image = axis.imshow(grid.log10().numpy(), cmap="viridis", origin="lower", aspect="auto")
            fig.colorbar(image, ax=axis, label="log10 MSE")
        else:
            image = axis.imshow(grid.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", aspect="auto")
            fig.colorbar(image, ax=axis, label="Hebbian alignment")
        for i in range(len(gammas)):
            for j in range(len(sigmas)):
                value = float(grid[i, j])
                axis.text(j, i, f"{value:.2f}" if column != "val_mse" else f"{value:.1e}", ha="center",
                          va="center", fontsize=6)
        axis.set_xticks(range(len(sigmas)), [f"{s:g}" for s in sigmas], rotation=30)
        axis.set_yticks(range(len(gammas)), [f"{g:g}" for g in gammas])
        axis.set_xlabel("injected noise σ")
        axis.set_ylabel("weight decay γ")
        axis.set_title(title)
    fig.suptitle("SRE student-teacher 32-128-128-32 tanh: Hebbian alignment at the end of training")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(sce: list[dict[str, Any]] | None, sre: list[dict[str, Any]] | None, out: Path) -> dict[str, Any]:
    lines, results = [], {}
    if sce:
        columns = ["weight_decay", "test_acc", "train_acc", "weight_norm_L2"]
        for layer in LAYERS:
            columns += [f"L{layer}/signal_alignment_mean", f"L{layer}/update_alignment_mean"]
        lines += ["## SCE", markdown_table(sce, columns), ""]
        plot_sce(sce, out / "sce_alignment.png")
        results["sce"] = sce
    if sre:
        columns = ["weight_decay", "noise_std", "val_mse", "weight_norm_L2", f"L{MAIN_LAYER}/signal_alignment_mean",
                   f"L{MAIN_LAYER}/signal_alignment_std", f"L{MAIN_LAYER}/update_alignment_mean"]
        lines += ["## SRE", markdown_table(sre, columns), ""]
        plot_sre(sre, out / "sre_heatmap.png")
        crossings = zero_crossings(sre, f"L{MAIN_LAYER}/signal_alignment_mean")
        fit = None
        points = [(math.log10(s), math.log10(g)) for s, g in crossings.items() if s > 0]
        if len(points) >= 2:
            mx = sum(p[0] for p in points) / len(points)
            my = sum(p[1] for p in points) / len(points)
            fit = (sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points))
        lines += ["zero crossing γ*(σ) of the layer-2 gradient alignment: "
                  + ", ".join(f"σ={s:g}: γ*={g:.3g}" for s, g in crossings.items())
                  + (f"; slope d log γ* / d log σ = {fit:.2f} (theory: 2)" if fit is not None else ""), ""]
        results.update(sre=sre, zero_crossings={str(k): v for k, v in crossings.items()}, crossing_slope=fit)
    (out / "tables.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return results


def build_parser() -> argparse.ArgumentParser:
    nonnegative_list, positive = cli.list_of(cli.nonnegative_float), cli.positive_int
    parser = cli.parser("python -m ghl_snn.experiments.alignment", __doc__.split("\n\n")[0], raw=False)
    cli.add_common_arguments(parser, out_default="runs/alignment", study=True,
                             data_help="the folder holding cifar10-jpeg/ (SCE part only)")
    parser.add_argument("--parts", default="sce,sre", help="comma list of sce, sre")
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, help="SCE learning rate")
    parser.add_argument("--sre-lr", type=cli.positive_float, default=0.01, help="SRE learning rate")
    parser.add_argument("--batch-size", type=positive, default=256, help="mini-batch size of both parts")
    parser.add_argument("--every", type=positive, default=1, help="record alignment every k-th step")
    parser.add_argument("--window", type=positive, default=200, help="recorded steps averaged 'at convergence'")
    parser.add_argument("--sce-per-class", type=positive, default=1000, help="train images per class (5000 = all)")
    parser.add_argument("--sce-test-per-class", type=positive, default=200, help="test images per class")
    parser.add_argument("--sce-epochs", type=positive, default=50, help="SCE training epochs per weight decay")
    parser.add_argument("--sce-weight-decays", type=nonnegative_list, default=[0.0, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1],
                        help="SCE weight decays γ (comma list)")
    parser.add_argument("--sre-train", type=positive, default=20000, help="SRE training inputs")
    parser.add_argument("--sre-val", type=positive, default=2000, help="SRE validation inputs")
    parser.add_argument("--sre-epochs", type=positive, default=50, help="SRE training epochs per grid point")
    parser.add_argument("--sre-weight-decays", type=nonnegative_list, default=[0.0, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
                        help="SRE weight decays γ (comma list)")
    parser.add_argument("--sre-noises", type=nonnegative_list, default=[0.0, 1e-4, 3e-4, 1e-3, 3e-3],
                        help="SRE injected noise levels σ (comma list)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - {"sce", "sre"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from sce, sre")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts as chosen by ``args``; a finished run with the same settings in ``--out`` is reused."""
    done = cli.finished_run(args)
    if done is not None:
        return done
    out = Path(args.out)
    parts = args.parts.split(",")
    cifar_root = locate_cifar10(args.data_root) if "sce" in parts else None  # before any work
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    write_json(out / "config.json", {**vars(args), "run_identity": cli.run_identity(args),
                                     "torch": torch.__version__,
                                     "threads": torch.get_num_threads(),
                                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    start = time.perf_counter()
    sce = run_sce(args, out, cifar_root) if "sce" in parts else None
    sre = run_sre(args, out) if "sre" in parts else None
    results = report(sce, sre, out)
    results["seconds"] = time.perf_counter() - start
    write_json(out / "results.json", results)
    return results


#: ``main(argv) -> results`` (Python; errors raise) and ``cli_main(argv) -> exit code`` (the command line)
main, cli_main = cli.entry_points(parse_args, lambda args: run(args))


if __name__ == "__main__":
    sys.exit(cli_main())
