"""Row-wise MNIST in a recurrent LIF network: e-prop (random and symmetric feedback), e-prop's eligibility with
FeedbackSign as the third factor, BPTT, the read-out-only control (a reservoir) and chance.

Each image is presented row by row: ``T = 28`` steps of 28 input currents (pixel intensity in [0, 1]) into
``Linear(28, n) -> RecurrentLIF(n) -> Linear(n, 10)``.  Every method minimises the same loss, the cross-entropy of
the read-out at each of the last ``K`` steps (averaged), and predicts with the read-out averaged over those steps;
every method uses Adam, its learning rate chosen on a validation split held out of the training images
([`ghl_snn.experiments.compare`][]: grid extended past its edges, 2 tuning seeds, 3 final seeds, paired 95 %
intervals against the controls).  Rows:

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
from .cli import add_common_arguments, add_methods_argument, entry_points, list_of, parser, positive_float, positive_int
from .common import seed_everything, select_device
from .compare import Method, Param, compare_command

METHODS = ("eprop_symmetric", "eprop_random", "feedback_sign", "bptt", "reservoir", "chance")
CONTROLS = {"eprop_symmetric": ("bptt", "reservoir"), "eprop_random": ("reservoir", "chance"),
            "feedback_sign": ("reservoir",), "bptt": ("reservoir",), "reservoir": ("chance",)}


def row_sequences(images: Tensor) -> Tensor:
    """``(N, 28, 28)`` uint8 images -> ``(28, N, 28)`` float rows in [0, 1] (one row per time step)."""
    return images.float().div(255.0).permute(1, 0, 2).contiguous()


def recurrent_network(hidden: int, beta: float, seed: int) -> SpikingNetwork:
    """``Linear(28, hidden) -> RecurrentLIF(hidden) -> Linear(hidden, 10)`` with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    net = SpikingNetwork(nn.Linear(28, hidden), RecurrentLIF(hidden, beta=beta, threshold=1.0, slope=5.0),
                         nn.Linear(hidden, 10))
    with torch.no_grad():
        net[0].weight.normal_(0.0, 2.0 / 28 ** 0.5)
        net[1].recurrent.weight.normal_(0.0, 1.0 / hidden ** 0.5).fill_diagonal_(0.0)
    return net


def readout_steps(net: SpikingNetwork, rows: Tensor, loss_steps: int) -> list[Tensor]:
    """The read-outs ``y_t`` of the last ``loss_steps`` steps (autograd as enabled by the caller)."""
    net.reset()
    outputs = []
    for t in range(rows.shape[0]):
        y = net[2](net[1](net[0](rows[t])))
        if t >= rows.shape[0] - loss_steps:
            outputs.append(y)
    return outputs


@torch.no_grad()
def accuracy(net: SpikingNetwork, rows: Tensor, labels: Tensor, loss_steps: int, batch: int = 1000) -> float:
    correct = 0
    for start in range(0, labels.shape[0], batch):
        outputs = readout_steps(net, rows[:, start:start + batch], loss_steps)
        correct += int((torch.stack(outputs).mean(0).argmax(1) == labels[start:start + batch]).sum())
    return correct / labels.shape[0]


def train_step(method: str, net: SpikingNetwork, learner: EProp | None, optimizer: torch.optim.Optimizer,
               rows: Tensor, labels: Tensor, loss_steps: int) -> float:
    """One batch of ``method``; returns the loss."""
    def loss_fn(y: Tensor) -> Tensor:
        return F.cross_entropy(y, labels)

    optimizer.zero_grad(set_to_none=True)
    if method == "bptt":
        outputs = readout_steps(net, rows, loss_steps)
        loss = sum(loss_fn(y) for y in outputs) / loss_steps
        loss.backward()
        value = float(loss.detach())
    else:
        learner.run(rows, loss_fn)
        learner.step()
        value = learner.loss
    optimizer.step()
    return value


def make_learner(method: str, net: SpikingNetwork, loss_steps: int, seed: int) -> EProp | None:
    if method == "bptt":
        return None
    if method == "feedback_sign":
        return EProp(net, modulator=FeedbackSign(seed=seed), loss_steps=loss_steps)
    feedback = "random" if method == "eprop_random" else "symmetric"
    return EProp(net, feedback=feedback, loss_steps=loss_steps, seed=seed, train_recurrent=method != "reservoir")


def make_run(args: argparse.Namespace, data: dict[str, tuple[Tensor, Tensor]]) -> Callable[..., dict[str, Any]]:
    device = select_device(args.device)
    data = {split: (rows.to(device), labels.to(device)) for split, (rows, labels) in data.items()}

    def run(method: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
        if method == "chance":
            majority = int(torch.bincount(data["train"][1]).argmax())
            scores = {f"{split}_acc": float((labels == majority).float().mean()) for split, (_, labels) in
                      data.items()}
            return {"history": [{"epoch": 1, **scores}], "seconds_per_batch": 0.0}
        seed_everything(seed)
        net = recurrent_network(args.hidden, args.beta, seed).to(device)
        learner = make_learner(method, net, args.loss_steps, seed)
        optimizer = torch.optim.Adam(net.parameters(), lr=hparams["lr"])
        rows, labels = data["train"]
        generator = torch.Generator().manual_seed(seed)
        history, batch_times = [], []
        for epoch in range(1, args.epochs + 1):
            order = torch.randperm(labels.shape[0], generator=generator).to(device)
            for start in range(0, labels.shape[0], args.batch_size):
                index = order[start:start + args.batch_size]
                began = time.perf_counter()
                loss = train_step(method, net, learner, optimizer, rows[:, index], labels[index], args.loss_steps)
                batch_times.append(time.perf_counter() - began)
                if not torch.isfinite(torch.tensor(loss)):
                    return {"diverged": True, "history": history}
            history.append({"epoch": epoch, **{f"{split}_acc": accuracy(net, r, y, args.loss_steps)
                                               for split, (r, y) in data.items()}})
        batch_times.sort()
        return {"history": history, "seconds_per_batch": batch_times[len(batch_times) // 2]}
    return run


def load_data(args: argparse.Namespace) -> dict[str, tuple[Tensor, Tensor]]:
    """Train / validation images from the MNIST training set (disjoint, drawn once from seed 0), test images from
    the test set."""
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
    return compare_command(args, methods(args), make_run(args, load_data(args)), title="Row-wise MNIST, recurrent LIF")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = parser("python -m ghl_snn.experiments.recurrent", __doc__)
    add_common_arguments(cli, out_default="runs/recurrent", seeds_default=3, seeds_help="final seeds per method",
                         epochs_default=2, data_help="the folder holding MNIST/")
    add_methods_argument(cli, METHODS, METHODS)
    cli.add_argument("--train", type=positive_int, default=5000, help="training images")
    cli.add_argument("--val", type=positive_int, default=1000, help="validation images (held out of training)")
    cli.add_argument("--test", type=positive_int, default=2000, help="test images")
    cli.add_argument("--batch-size", type=positive_int, default=64)
    cli.add_argument("--hidden", type=positive_int, default=100, help="recurrent LIF neurons")
    cli.add_argument("--beta", type=positive_float, default=0.95, help="membrane decay per step")
    cli.add_argument("--loss-steps", type=positive_int, default=10, help="K: the loss is on the last K steps")
    cli.add_argument("--lr-grid", type=list_of(positive_float), default=[1e-3, 3e-3, 1e-2],
                     help="Adam learning rates to start the grid from")
    cli.add_argument("--tune-seeds", type=positive_int, default=2, help="seeds averaged in the tuning")
    args = cli.parse_args(argv)
    if not 0 < args.beta <= 1:
        cli.error(f"--beta must lie in (0, 1], got {args.beta}")
    return args


main, cli_main = entry_points(parse_args, run_experiment)

if __name__ == "__main__":
    raise SystemExit(cli_main())
