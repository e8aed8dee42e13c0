"""One run of one method of the row-wise MNIST experiment at one learning rate and seed 0 (as probe.py), then, on
the first 1,000 validation images, the hidden firing rate (spikes per step: mean, the fraction of silent neurons
under 0.005 and of neurons over 0.5) and the cosine between e-prop symmetric's update and BPTT's gradient of the
same loss (mean over 4 batches of 256; with the norm ratio e-prop / BPTT), at the initial and the trained weights.
From the root of a clone, with ``GHL_SNN_DATA`` set:

    python experiments/recurrent-mnist/diagnose.py METHOD LR [options of python -m ghl_snn.experiments.recurrent]
"""
from __future__ import annotations

import sys

import torch
from torch.nn import functional as F

from ghl_snn.experiments import recurrent
from ghl_snn.spiking.eprop import EProp
from ghl_snn.spiking.network import SpikingNetwork


def firing(net: SpikingNetwork, rows: torch.Tensor) -> str:
    spikes: list[torch.Tensor] = []
    with torch.no_grad():
        recurrent.readout_steps(net, rows, 1, spikes=spikes)
    rate = torch.stack(spikes).mean((0, 1))
    return (f"rate {float(rate.mean()):.3f}, silent {float((rate < 0.005).float().mean()):.2f}, "
            f"over 0.5 {float((rate > 0.5).float().mean()):.2f}")


def alignment(net: SpikingNetwork, rows: torch.Tensor, labels: torch.Tensor, kappa: float) -> str:
    scores: dict[str, list[tuple[float, float]]] = {}
    for start in range(0, 1024, 256):
        batch, target = rows[:, start:start + 256], labels[start:start + 256]
        learner = EProp(net, loss_steps=1, readout_decay=kappa)
        learner.run(batch, lambda y: F.cross_entropy(y, target))
        net.zero_grad()
        F.cross_entropy(recurrent.readout_steps(net, batch, 1, kappa)[-1], target).backward()
        for name in ("input.weight", "recurrent.weight"):
            exact, approx = learner.parameters()[name].grad.flatten(), learner.grads[name].flatten()
            scores.setdefault(name, []).append((float(F.cosine_similarity(approx, exact, dim=0)),
                                                float(approx.norm() / exact.norm())))
    return ", ".join(f"{name}: cos {sum(c for c, _ in v) / len(v):.2f}, norm ratio {sum(r for _, r in v) / len(v):.2f}"
                     for name, v in scores.items())


def main(argv: list[str]) -> None:
    method, lr = argv[0], float(argv[1])
    args = recurrent.parse_args(argv[2:])
    data = {name: split for name, split in recurrent.load_data(args).items() if name != "test"}
    trained: list[SpikingNetwork] = []
    build = recurrent.recurrent_network

    def keep(*a, **k) -> SpikingNetwork:
        trained.append(build(*a, **k))
        return trained[-1]

    rows, labels = data["val"][0][:, :1024], data["val"][1][:1024]
    initial = build(args.hidden, args.beta, 0, args.adaptation, args.rho)
    print("initial weights:", alignment(initial, rows, labels, args.readout_decay), flush=True)
    recurrent.recurrent_network = keep
    record = recurrent.make_run(args, data)(method, {"lr": lr}, 0)
    net = trained[-1]
    print(method, lr, " ".join(argv[2:]), "val", [round(100 * row["val_acc"], 1) for row in record["history"]],
          "|", firing(net, rows[:, :1000]), "|", alignment(net, rows, labels, args.readout_decay), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
