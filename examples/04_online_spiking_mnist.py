"""Online spiking learning on rate-coded MNIST, first with snntorch neurons, then with norse neurons.

Network ``784 -> hidden spiking neurons -> 10`` (non-spiking read-out whose time-averaged current is the logit),
Bernoulli rate coding of the pixels for ``T`` steps.  :class:`~ghl_snn.spiking.ThreeFactor` keeps per-neuron
pre- and post-synaptic traces online (memory independent of ``T``, no backprop through time) and, at the end of
each window, writes ``M ⊙ |E|`` into ``weight.grad``.  The third factor here is
:class:`~ghl_snn.modulators.feedback_sign.FeedbackSign`: each hidden neuron receives a fixed random projection of
the output error (direct feedback alignment) and each synapse takes the sign of that signal times its own
presynaptic trace, summed over the batch -- no backward pass at all.

The neurons are the libraries' own, unchanged: ``snntorch.Leaky`` and ``norse.torch.LIFBoxCell``;
:class:`~ghl_snn.spiking.SpikingNetwork` wraps them through :func:`~ghl_snn.spiking.as_neuron`.

Data: MNIST from ``$GHL_SNN_DATA/MNIST`` (torchvision layout) when present; otherwise a **synthetic fallback**
(noisy 28x28 bar-and-blob prototypes of 10 classes), clearly labelled in the output.

    python examples/04_online_spiking_mnist.py [--train 2048] [--test 500] [--steps 10] [--data-root DIR] [--plot P]

``--plot P`` saves ``P-curve.png`` (test accuracy while learning, per library) and ``P-raster.png`` (the hidden
spikes of the trained network for one test image, with the pre-synaptic traces the learner keeps).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ghl_snn.modulators.feedback_sign import FeedbackSign
from ghl_snn.spiking import BernoulliEncoder, SpikingNetwork, ThreeFactor


def synthetic_digits(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """SYNTHETIC stand-in for MNIST: 10 fixed random 28x28 prototypes (strokes), pixel noise, values in [0, 1]."""
    prototype_generator = torch.Generator().manual_seed(1234)
    prototypes = torch.zeros(10, 28, 28)
    for c in range(10):
        for _ in range(3):   # three random horizontal or vertical strokes per class
            row, col = torch.randint(4, 24, (2,), generator=prototype_generator).tolist()
            if torch.rand(1, generator=prototype_generator) < 0.5:
                prototypes[c, row - 1:row + 2, 4:24] = 1.0
            else:
                prototypes[c, 4:24, col - 1:col + 2] = 1.0
    labels = torch.randint(10, (count,), generator=generator)
    images = prototypes[labels] * (torch.rand(count, 28, 28, generator=generator) < 0.8)
    images = images + 0.15 * torch.rand(count, 28, 28, generator=generator)
    return images.clamp(0, 1).reshape(count, 784), labels


def load_data(data_root: str | None, train: int, test: int, generator: torch.Generator
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """``(train_x, train_y, test_x, test_y, source)`` with pixels in [0, 1] as (N, 784) float32."""
    root = data_root or os.environ.get("GHL_SNN_DATA")
    if root and (Path(root) / "MNIST").is_dir():
        from ghl_snn.datasets.mnist import load_mnist, mnist_vectors
        train_images, train_labels = load_mnist(root, train=True)
        test_images, test_labels = load_mnist(root, train=False)
        order = torch.randperm(len(train_images), generator=generator)[:train]
        return (mnist_vectors(train_images[order]), train_labels[order],
                mnist_vectors(test_images[:test]), test_labels[:test], f"MNIST from {root}")
    train_x, train_y = synthetic_digits(train, generator)
    test_x, test_y = synthetic_digits(test, generator)
    return train_x, train_y, test_x, test_y, "SYNTHETIC fallback (no MNIST found: set GHL_SNN_DATA)"


def make_neuron(library: str) -> nn.Module:
    if library == "snntorch":
        import snntorch
        return snntorch.Leaky(beta=0.95)            # reset by subtraction, threshold 1
    from norse.torch import LIFBoxCell
    return LIFBoxCell()                             # norse's default parameters (dt = 1 ms)


def record_spikes(net: SpikingNetwork, image: Tensor, steps: int, encoder: BernoulliEncoder) -> Tensor:
    """Hidden spikes of ``net`` for one image over ``steps`` steps, shaped (steps, hidden)."""
    spikes: list[Tensor] = []
    handle = net[1].register_forward_hook(lambda module, args, out: spikes.append(out.detach()[0]))
    try:
        with torch.no_grad():
            net.run(image[None], steps, encoder, record=False)
    finally:
        handle.remove()
    return torch.stack(spikes)


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=120)
    for library, points in curves.items():
        ax.plot([w for w, _ in points], [100 * a for _, a in points], marker="o", label=f"{library} neurons")
    ax.axhline(10, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("training windows (one update each)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_raster(spikes: Tensor, path: str, shown: int = 48) -> None:
    """Spike raster of the first ``shown`` hidden neurons and the running-mean traces x̄_t of four irregular ones."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = spikes.shape[0]
    trace = spikes.cumsum(0) / torch.arange(1, steps + 1, dtype=spikes.dtype)[:, None]   # x̄_t, the learner's trace
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), dpi=120, sharex=True, height_ratios=[2, 1])
    t, n = torch.nonzero(spikes[:, :shown] > 0, as_tuple=True)
    top.scatter((t + 1).tolist(), n.tolist(), marker="|", s=40, color="black")
    top.set_ylabel("hidden neuron")
    top.set_title("hidden spikes for one test image")
    rates = spikes.mean(0)
    irregular = (rates - 0.5).abs().argsort()[:4]          # the four neurons firing closest to every other step
    for k in irregular.tolist():
        bottom.plot(range(1, steps + 1), trace[:, k].tolist(), label=f"neuron {k}")
    bottom.set_xlabel("time step t")
    bottom.set_ylabel(r"trace $\bar{x}_t$")
    bottom.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def train_once(library: str, data: tuple[Tensor, Tensor, Tensor, Tensor], args: argparse.Namespace) -> dict[str, float]:
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    net = SpikingNetwork(nn.Linear(784, args.hidden, bias=False), make_neuron(library),
                         nn.Linear(args.hidden, 10, bias=False))
    with torch.no_grad():   # scale the first layer by the neuron's drive so the hidden layer spikes
        net[0].weight.mul_(args.init_scale / net[1].gain)
    learner = ThreeFactor(net, modulator=FeedbackSign(seed=args.seed), tau=1.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    encoder = BernoulliEncoder(generator=generator)

    def accuracy() -> float:
        with torch.no_grad():
            out = net.run(test_x, args.steps, encoder, record=False)
        return (out.argmax(1) == test_y).float().mean().item()

    initial = accuracy()
    windows = args.epochs * -(-len(train_x) // args.batch_size)
    every = max(1, windows // 8)
    curve = [(0, initial)]
    losses: list[float] = []
    for epoch in range(args.epochs):
        permutation = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(train_x), args.batch_size):
            index = permutation[start:start + args.batch_size]
            x, y = train_x[index], train_y[index]
            optimizer.zero_grad(set_to_none=True)
            out = learner.run(x, args.steps, encoder)                      # T steps, online traces
            loss = F.cross_entropy(out, y)
            learner.step(loss_fn=lambda logits, y=y: F.cross_entropy(logits, y))   # error -> FeedbackSign
            optimizer.step()
            losses.append(loss.item())
            if args.plot and len(losses) % every == 0 and len(losses) < windows:
                curve.append((len(losses), accuracy()))
    final = accuracy()
    curve.append((len(losses), final))
    window = max(1, len(losses) // 4)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"[{library}] loss {first:.3f} -> {last:.3f}   test accuracy {initial:.3f} -> {final:.3f} (chance 0.100)")
    learner.remove()
    if args.plot and library == args.libraries[0]:
        plot_raster(record_spikes(net, test_x[0], 40, encoder), f"{args.plot}-raster.png")
    return {"initial_accuracy": initial, "final_accuracy": final, "first_loss": first, "last_loss": last,
            "curve": curve}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/ (default: $GHL_SNN_DATA)")
    parser.add_argument("--train", type=int, default=2048, help="training images")
    parser.add_argument("--test", type=int, default=500, help="test images")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="time steps T per image")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--init-scale", type=float, default=4.0)
    parser.add_argument("--libraries", nargs="+", default=["snntorch", "norse"], choices=["snntorch", "norse"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save PLOT-curve.png and PLOT-raster.png")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    *data, source = load_data(args.data_root, args.train, args.test, generator)
    print(f"data: {source}; {len(data[0])} train / {len(data[2])} test images, T = {args.steps}")
    results: dict[str, object] = {"source": source}
    for library in args.libraries:
        result = train_once(library, tuple(data), args)
        assert result["final_accuracy"] > 0.2, f"{library}: accuracy {result['final_accuracy']:.3f} near chance"
        assert result["last_loss"] < result["first_loss"], f"{library}: loss did not decrease"
        results[library] = result
    if args.plot:
        plot_curves({library: results[library]["curve"] for library in args.libraries}, f"{args.plot}-curve.png")
    return results


if __name__ == "__main__":
    main()
