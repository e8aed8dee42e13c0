"""Write your own eligibility rule: plain Oja (no competition) in one small class, then train with it.

An :class:`~ghl_snn.EligibilityRule` turns what a synapse sees locally -- input ``x``, bias-free pre-activation
``y = W x`` and the weight ``W`` -- into a tensor ``E`` shaped like ``W`` (batch mean, float32, before
normalisation).  Plain Oja (GHL paper Eq. 2-3, without the soft winner-take-all of Eq. 4)::

    E_ik = mean_n  y_k (x_i - y_k w_ik)      =   (yᵀx - diag(Σ_n y_k²) W) / N

For Conv2d the Hebbian term ``Σ y_k x_i`` over positions is the layer's weight-gradient convolution with ``y`` in
place of the output gradient (no unfold), and the forgetting term sums ``y_k²`` over batch and positions.

Training: ``GHL(model, rule=Oja(), layers=...)`` -- the plug-in combines it with the default neuromodulator
``GradSign`` into ``sign(dL/dW) * |E|``.  Data: scikit-learn's embedded 8x8 digits (no download).

    python examples/02_custom_rule.py [--epochs 4]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from ghl_snn import GHL, EligibilityRule


class Oja(EligibilityRule):
    """Plain Oja eligibility ``E_ik = mean_n y_k (x_i - y_k w_ik)`` (GHL paper Eq. 3 without competition)."""

    normalize = "max"   # the plug-in divides E by max|E| per layer after accumulation (None: keep raw)

    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        # x: (N, in), y: (N, out), weight: (out, in)
        return (y.t() @ x - (y * y).sum(dim=0)[:, None] * weight) / x.shape[0]

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> Tensor:
        hebbian = torch.nn.grad.conv2d_weight(x, weight.shape, y, stride=stride, padding=padding, dilation=dilation)
        forgetting = (y * y).sum(dim=(0, 2, 3))
        return (hebbian - forgetting[:, None, None, None] * weight) / x.shape[0]


def check_rule_against_loops() -> None:
    """The vectorised formula equals the per-synapse definition (float64, tiny sizes)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(5, 4, dtype=torch.float64, generator=generator)
    weight = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    y = x @ weight.t()
    reference = torch.zeros_like(weight)
    for n in range(5):
        for k in range(3):
            for i in range(4):
                reference[k, i] += y[n, k] * (x[n, i] - y[n, k] * weight[k, i]) / 5
    assert torch.allclose(Oja().linear(x, y, weight), reference)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False).double()
    images = torch.rand(2, 2, 5, 5, dtype=torch.float64, generator=generator)
    out = conv(images)
    e_conv = Oja().conv2d(images, out.detach(), conv.weight.detach(), conv.stride, conv.padding, conv.dilation)
    # Hebbian term = the weight gradient of the loss sum(y * y.detach()) / 2 ... i.e. conv2d_weight with y
    (grad,) = torch.autograd.grad((out * out.detach()).sum(), conv.weight)
    expected = (grad - (out.detach() ** 2).sum(dim=(0, 2, 3))[:, None, None, None] * conv.weight.detach()) / 2
    assert torch.allclose(e_conv, expected)


def plot_curve(curve: list[float], path: str) -> None:
    """Test accuracy (percent) against epoch, epoch 0 being the untrained network."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(range(len(curve)), [100 * a for a in curve], marker="o", label="GHL with the Oja rule (test split)")
    ax.axhline(10, color="grey", linestyle=":", label="chance")
    ax.set_xticks(range(len(curve)))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save the accuracy curve to this PNG file")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    check_rule_against_loops()

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x))
    train, test = order[:1400], order[1400:]

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    rule = GHL(model, rule=Oja(), layers=["0"])      # the hidden layer learns by GradSign * |E_Oja|
    print(rule)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    def accuracy(index: Tensor) -> float:
        model.eval()
        with torch.no_grad():
            correct = (model(x[index]).argmax(1) == labels[index]).float().mean().item()
        model.train()
        return correct

    initial = accuracy(test)
    curve = [initial]
    losses: list[float] = []
    for epoch in range(args.epochs):
        permutation = train[torch.randperm(len(train))]
        total = 0.0
        for start in range(0, len(permutation), args.batch_size):
            index = permutation[start:start + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[index]), labels[index])
            loss.backward()
            rule.step()                                  # hidden weight.grad <- sign(dL/dW) * |E_Oja|
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(total / len(train))
        curve.append(accuracy(test))
        print(f"epoch {epoch + 1}: train loss {losses[-1]:.3f}  test accuracy {curve[-1]:.3f}")
    final = curve[-1]
    if args.plot:
        plot_curve(curve, args.plot)
    print(f"test accuracy {initial:.3f} -> {final:.3f} (chance 0.100)")
    assert losses[-1] < losses[0], "training loss did not decrease"
    assert final > 0.5, f"accuracy {final:.3f} is not clearly above chance"
    return {"initial_accuracy": initial, "final_accuracy": final, "first_loss": losses[0], "last_loss": losses[-1]}


if __name__ == "__main__":
    main()
