"""Temporal benchmarks in a recurrent LIF network: e-prop (random and symmetric feedback), e-prop's eligibility with
FeedbackSign as the third factor, BPTT, the read-out-only control (a reservoir) and chance.

Row-wise MNIST (``--dataset mnist-rows``): each image is presented row by row, ``T = 28`` steps of 28 input currents
(pixel intensity in [0, 1]).  N-MNIST (``--dataset nmnist-small``): each recording as ``--time-bins`` event frames
(tonic ``ToFrame`` after ``Denoise``), ``--pool`` x ``--pool`` average-pooled and flattened (2 x 17 x 17 inputs per
step by default), in 5 folds of the 1,100 recordings (fold 0 validates, run ``s`` tests on fold ``s + 1``).  The
network is ``Linear(in, n) -> RecurrentLIF(n) -> Linear(n, 10)`` (``--adaptation``: the adaptive LIF), the read-out
optionally leaky (``--readout-decay``: ``y_t = kappa y_{t-1} + W_out z_t + b``).  Every method minimises the same
loss, the cross-entropy of the read-out at each of the last ``K`` steps (averaged; ``--loss-steps 0``: every step),
and predicts with the read-out averaged over those steps; every method uses Adam (``--lr-schedule cosine``: annealed
to 0 over the run), its learning rate chosen on the validation split ([`ghl_snn.comparison.engine`][]: grid extended
past its edges, 2 tuning seeds, 3 final seeds, paired 95 % intervals against the controls).  Rows:

* ``eprop_symmetric`` / ``eprop_random``: [`EProp`][ghl_snn.EProp], learning signal through ``W_out`` or a fixed
  random matrix;
* ``feedback_sign``: e-prop's eligibility with [`FeedbackSign`][ghl_snn.FeedbackSign] replacing the learning signal
  (``M ⊙ |E|``);
* ``bptt``: surrogate-gradient backprop through time of the same network and loss (the baseline e-prop
  approximates);
* ``reservoir``: only the read-out trained (input and recurrent weights frozen), the control every rule must beat;
* ``chance``: the most frequent training class.

Each record also stores the training wall time per batch.  Usage (with ``GHL_SNN_DATA`` pointing at the data
folder)::

    python -m ghl_snn.experiments.recurrent --out runs/recurrent
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..datasets.mnist import load_mnist
from ..modulators.feedback_sign import FeedbackSign
from ..spiking.eprop import EProp
from ..spiking.network import SpikingNetwork
from ..spiking.recurrent import RecurrentLIF
from ..comparison.cli import (add_common_arguments, add_methods_argument, entry_points, list_of, nonnegative_float,
                  nonnegative_int, parser, positive_float, positive_int)
from ..comparison.common import seed_everything, select_device
from ..comparison.engine import Method, Param, compare_command

METHODS = ("eprop_symmetric", "eprop_random", "feedback_sign", "bptt", "reservoir", "chance")
CONTROLS = {"eprop_symmetric": ("bptt", "reservoir"), "eprop_random": ("reservoir", "chance"),
            "feedback_sign": ("reservoir",), "bptt": ("reservoir",), "reservoir": ("chance",)}


def row_sequences(images: Tensor) -> Tensor:
    """``(N, 28, 28)`` uint8 images -> ``(28, N, 28)`` float rows in [0, 1] (one row per time step)."""
    return images.float().div(255.0).permute(1, 0, 2).contiguous()


def recurrent_network(hidden: int, beta: float, seed: int, adaptation: float = 0.0, rho: float = 0.95,
                      inputs: int = 28, classes: int = 10) -> SpikingNetwork:
    """``Linear(inputs, hidden) -> RecurrentLIF(hidden) -> Linear(hidden, classes)`` with weights drawn from
    ``seed`` (``adaptation > 0``: the adaptive LIF, threshold ``1 + adaptation a_t``, ``a`` decaying by ``rho``)."""
    torch.manual_seed(seed)
    neuron = RecurrentLIF(hidden, beta=beta, threshold=1.0, slope=5.0, adaptation=adaptation, rho=rho)
    net = SpikingNetwork(nn.Linear(inputs, hidden), neuron, nn.Linear(hidden, classes))
    with torch.no_grad():
        net[0].weight.normal_(0.0, 2.0 / inputs ** 0.5)
        net[1].recurrent.weight.normal_(0.0, 1.0 / hidden ** 0.5).fill_diagonal_(0.0)
    return net


def readout_steps(net: SpikingNetwork, rows: Tensor, loss_steps: int, readout_decay: float = 0.0,
                  spikes: list[Tensor] | None = None) -> list[Tensor]:
    """The read-outs ``y_t`` of the last ``loss_steps`` steps (autograd as enabled by the caller); with
    ``readout_decay = kappa > 0`` the leaky read-out ``y_t = kappa y_{t-1} + W_out z_t + b`` (as in
    [`EProp`][ghl_snn.EProp]).  ``spikes``: a list that receives the hidden spikes ``z_t`` of every step."""
    net.reset()
    outputs, y = [], 0.0
    for t in range(rows.shape[0]):
        z = net[1](net[0](rows[t]))
        if spikes is not None:
            spikes.append(z)
        y = readout_decay * y + net[2](z)
        if t >= rows.shape[0] - loss_steps:
            outputs.append(y)
    return outputs


@torch.no_grad()
def accuracy(net: SpikingNetwork, rows: Tensor, labels: Tensor, loss_steps: int, batch: int = 1000,
             readout_decay: float = 0.0) -> float:
    """Accuracy of the read-out averaged over the last ``loss_steps`` steps."""
    correct = 0
    for start in range(0, labels.shape[0], batch):
        outputs = readout_steps(net, rows[:, start:start + batch], loss_steps, readout_decay)
        correct += int((torch.stack(outputs).mean(0).argmax(1) == labels[start:start + batch]).sum())
    return correct / labels.shape[0]


def rate_penalty(spikes: list[Tensor], cost: float, target: float) -> Tensor:
    """The firing-rate regulariser ``(c / 2) sum_j (f_j - f_target)^2`` of the spikes ``z_t`` (``(N, n)`` each),
    ``f_j`` the rate of neuron ``j`` over steps and batch (as in [`EProp`][ghl_snn.EProp])."""
    return 0.5 * cost * (torch.stack(spikes).mean((0, 1)) - target).square().sum()


def train_step(method: str, net: SpikingNetwork, learner: EProp | None, optimizer: torch.optim.Optimizer,
               rows: Tensor, labels: Tensor, loss_steps: int, readout_decay: float = 0.0, rate_cost: float = 0.0,
               rate_target: float = 0.02) -> float:
    """One batch of ``method``; returns the loss (with the firing-rate regulariser when ``rate_cost > 0``; e-prop
    learners carry their own)."""
    def loss_fn(y: Tensor) -> Tensor:
        return F.cross_entropy(y, labels)

    optimizer.zero_grad(set_to_none=True)
    if method == "bptt":
        spikes: list[Tensor] = []
        outputs = readout_steps(net, rows, loss_steps, readout_decay, spikes)
        loss = sum(loss_fn(y) for y in outputs) / loss_steps
        if rate_cost:
            loss = loss + rate_penalty(spikes, rate_cost, rate_target)
        loss.backward()
        value = float(loss.detach())
    else:
        learner.run(rows, loss_fn)
        learner.step()
        value = learner.loss
    optimizer.step()
    return value


def make_learner(method: str, net: SpikingNetwork, loss_steps: int, seed: int,
                 readout_decay: float = 0.0, rate_cost: float = 0.0, rate_target: float = 0.02) -> EProp | None:
    """The e-prop learner of ``method`` (``None`` for BPTT); the firing-rate regulariser joins e-prop's learning
    signal (``feedback_sign``, whose third factor replaces it, and the reservoir go without)."""
    if method == "bptt":
        return None
    if method == "feedback_sign":
        return EProp(net, modulator=FeedbackSign(seed=seed), loss_steps=loss_steps, readout_decay=readout_decay)
    feedback = "random" if method == "eprop_random" else "symmetric"
    return EProp(net, feedback=feedback, loss_steps=loss_steps, seed=seed, train_recurrent=method != "reservoir",
                 readout_decay=readout_decay, rate_cost=rate_cost, rate_target=rate_target)


def make_optimizer(net: nn.Module, lr: float, schedule: str, total_steps: int
                   ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LRScheduler | None]:
    """Adam at ``lr`` and its schedule, stepped once per batch: ``"constant"`` (no scheduler) or ``"cosine"``
    (``lr_k = lr (1 + cos(pi k / total_steps)) / 2`` after ``k`` batches, 0 after the last one; the same for every
    method)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    if schedule == "constant":
        return optimizer, None
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


Splits = dict[str, tuple[Tensor, Tensor]]


def make_run(args: argparse.Namespace, data: Splits | Callable[[int], Splits]) -> Callable[..., dict[str, Any]]:
    """The engine's callback; ``data``: the ``train`` / ``val`` / ``test`` sequences ``((T, N, in), labels)``, or a
    function of the seed that returns them (N-MNIST: run ``s`` tests on fold ``s + 1``)."""
    device = select_device(args.device)
    splits_of = data if callable(data) else (lambda seed: data)

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        data = {split: (rows.to(device), labels.to(device)) for split, (rows, labels) in splits_of(seed).items()}
        if method == "chance":
            majority = int(torch.bincount(data["train"][1]).argmax())
            scores = {f"{split}_acc": float((labels == majority).float().mean()) for split, (_, labels) in
                      data.items()}
            return {"history": [{"epoch": 1, **scores}], "seconds_per_batch": 0.0}
        seed_everything(seed)
        rows, labels = data["train"]
        loss_steps, kappa = args.loss_steps or rows.shape[0], args.readout_decay
        net = recurrent_network(args.hidden, args.beta, seed, args.adaptation, args.rho,
                                inputs=rows.shape[-1]).to(device)
        rate = (args.rate_cost, args.rate_target)
        learner = make_learner(method, net, loss_steps, seed, kappa, *rate)
        batches = -(-labels.shape[0] // args.batch_size)
        optimizer, scheduler = make_optimizer(net, hparams["lr"], args.lr_schedule, args.epochs * batches)
        generator = torch.Generator().manual_seed(seed)
        history, batch_times = [], []
        for epoch in range(1, args.epochs + 1):
            order = torch.randperm(labels.shape[0], generator=generator).to(device)
            for start in range(0, labels.shape[0], args.batch_size):
                index = order[start:start + args.batch_size]
                began = time.perf_counter()
                loss = train_step(method, net, learner, optimizer, rows[:, index], labels[index], loss_steps, kappa,
                                  *rate)
                batch_times.append(time.perf_counter() - began)
                if scheduler is not None:
                    scheduler.step()
                if not torch.isfinite(torch.tensor(loss)):
                    return {"diverged": True, "history": history}
            history.append({"epoch": epoch, **{f"{split}_acc": accuracy(net, r, y, loss_steps, readout_decay=kappa)
                                               for split, (r, y) in data.items()}})
        batch_times.sort()
        return {"history": history, "seconds_per_batch": batch_times[len(batch_times) // 2]}
    return run


def event_frame_sequences(frames: Tensor, pool: int) -> Tensor:
    """``(N, T, 2, H, W)`` binary event frames -> ``(T, N, 2 H W / pool^2)`` float inputs (``pool x pool`` average
    pooling: the fraction of active pixels of each polarity per block)."""
    count, steps = frames.shape[:2]
    flat = frames.float().flatten(0, 1)
    if pool > 1:
        flat = F.avg_pool2d(flat, pool)
    return flat.reshape(count, steps, -1).transpose(0, 1).contiguous()


def load_event_folds(args: argparse.Namespace) -> Callable[[int], Splits]:
    """N-MNIST-small as event-frame sequences in 5 folds ([`EventFolds`][ghl_snn.datasets.events.folds.EventFolds],
    tonic ``Denoise`` 10 ms, ``--time-bins`` frames per recording): fold 0 validates every run, run ``s`` tests on
    fold ``s + 1`` and trains on the other three."""
    from ..datasets.events import DATASETS
    from ..datasets.events.folds import EventFolds
    from .events import PRESETS, find_root

    root = find_root(PRESETS["nmnist-small"], args.data_root)
    folds = EventFolds([DATASETS["nmnist"](root, train=train) for train in (True, False)], k=5,
                       n_time_bins=args.time_bins, denoise_time=10_000)
    sequences = event_frame_sequences(folds.frames, args.pool)
    cache: dict[int, Splits] = {}

    def splits(seed: int) -> Splits:
        if seed not in cache:
            cache[seed] = {name: (sequences[:, index], folds.labels[index])
                           for name, index in zip(("train", "val", "test"), folds.split(seed))}
        return cache[seed]
    return splits


def load_data(args: argparse.Namespace) -> Splits | Callable[[int], Splits]:
    """Row-wise MNIST: train / validation images from the MNIST training set (disjoint, drawn once from seed 0),
    test images from the test set.  N-MNIST: the folds of ``load_event_folds``."""
    if args.dataset == "nmnist-small":
        return load_event_folds(args)
    images, labels = load_mnist(args.data_root, train=True)
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    train, val = order[:args.train], order[args.train:args.train + args.val]
    test_images, test_labels = load_mnist(args.data_root, train=False)
    return {"train": (row_sequences(images[train]), labels[train]), "val": (row_sequences(images[val]), labels[val]),
            "test": (row_sequences(test_images[:args.test]), test_labels[:args.test])}


def methods(args: argparse.Namespace) -> list[Method]:
    grid = Param("lr", args.lr_grid)
    return [Method(name, tuned=() if name == "chance" else (grid,),
                   controls=tuple(c for c in CONTROLS.get(name, ()) if c in args.methods))
            for name in args.methods]


def run_experiment(args: argparse.Namespace) -> dict[str, Any]:
    title = "Row-wise MNIST" if args.dataset == "mnist-rows" else "N-MNIST-small event frames"
    return compare_command(args, methods(args), make_run(args, load_data(args)), title=f"{title}, recurrent LIF")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = parser("python -m ghl_snn.experiments.recurrent", __doc__)
    add_common_arguments(cli, out_default="runs/recurrent", seeds_default=3, seeds_help="final seeds per method",
                         epochs_default=2, data_help="the folder holding MNIST/ (or the N-MNIST subset)")
    add_methods_argument(cli, METHODS, METHODS)
    cli.add_argument("--dataset", choices=("mnist-rows", "nmnist-small"), default="mnist-rows",
                     help="MNIST row by row (28 steps of 28 pixels) or N-MNIST-small as event-frame sequences")
    cli.add_argument("--time-bins", type=positive_int, default=20, help="N-MNIST: frames per recording")
    cli.add_argument("--pool", type=positive_int, default=2, help="N-MNIST: average pooling of the 34x34 frames")
    cli.add_argument("--train", type=positive_int, default=5000, help="training images")
    cli.add_argument("--val", type=positive_int, default=1000, help="validation images (held out of training)")
    cli.add_argument("--test", type=positive_int, default=2000, help="test images")
    cli.add_argument("--batch-size", type=positive_int, default=64)
    cli.add_argument("--hidden", type=positive_int, default=100, help="recurrent LIF neurons")
    cli.add_argument("--beta", type=positive_float, default=0.95, help="membrane decay per step")
    cli.add_argument("--adaptation", type=nonnegative_float, default=0.0,
                     help="threshold adaptation beta_a of the ALIF neuron (0: plain LIF)")
    cli.add_argument("--rho", type=positive_float, default=0.95, help="decay per step of the adaptation")
    cli.add_argument("--readout-decay", type=nonnegative_float, default=0.0,
                     help="kappa of the leaky read-out y_t = kappa y_{t-1} + W_out z_t + b (0: no leak)")
    cli.add_argument("--loss-steps", type=nonnegative_int, default=10,
                     help="K: the loss is on the last K steps (0: on every step)")
    cli.add_argument("--lr-grid", type=list_of(positive_float), default=[1e-3, 3e-3, 1e-2],
                     help="Adam learning rates to start the grid from")
    cli.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                     help="Adam's learning rate per batch: constant, or cosine-annealed to 0 at the last batch")
    cli.add_argument("--rate-cost", type=nonnegative_float, default=0.0,
                     help="c of the firing-rate regulariser (c/2) sum_j (f_j - f_target)^2 (0: none; e-prop rows and "
                          "BPTT)")
    cli.add_argument("--rate-target", type=nonnegative_float, default=0.02,
                     help="f_target of the firing-rate regulariser, spikes per step")
    cli.add_argument("--tune-seeds", type=positive_int, default=2, help="seeds averaged in the tuning")
    args = cli.parse_args(argv)
    if not 0 < args.beta <= 1:
        cli.error(f"--beta must lie in (0, 1], got {args.beta}")
    if not args.rate_target <= 1:
        cli.error(f"--rate-target is spikes per step, in [0, 1], got {args.rate_target}")
    if not args.rho < 1 or not args.readout_decay < 1:
        cli.error(f"--rho and --readout-decay must lie below 1, got {args.rho} and {args.readout_decay}")
    return args


main, cli_main = entry_points(parse_args, run_experiment)

if __name__ == "__main__":
    raise SystemExit(cli_main())
