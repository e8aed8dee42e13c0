"""Rate-vs-spiking equivalence check on your own layers (``ghl_snn.equivalence``).

Build any :class:`~ghl_snn.spiking.SpikingNetwork` -- here a strided ``Conv2d`` with IF neurons, then a read-out
``Linear`` -- and ask whether its online spiking eligibility and update match the rate network's:

1. :func:`~ghl_snn.equivalence.to_rate_network` gives the rate network: the *same* synapse modules (shared
   weights), every IF neuron replaced by ``clamp(I / θ, 0, 1)``.  For a constant current the IF spike count over
   ``T`` steps is ``clamp(floor(T I / θ), 0, T)`` (:func:`~ghl_snn.equivalence.if_spike_count`).
2. :func:`~ghl_snn.equivalence.spiking_eligibilities` runs ``T`` steps of Bernoulli rate-coded input through the
   online :class:`~ghl_snn.spiking.ThreeFactor` learner and returns ``e_T / T``;
   :func:`~ghl_snn.equivalence.rate_eligibilities` the rate network's SWTA-Oja ``E``.  The error should shrink
   roughly like ``1 / sqrt(T)``.
3. :func:`~ghl_snn.equivalence.spiking_updates` vs :func:`~ghl_snn.equivalence.rate_updates`: the update
   ``M ⊙ |E|`` with ``M = GradSign`` (of the rate surrogate for the spiking side), compared by cosine and sign
   agreement (:func:`~ghl_snn.equivalence.compare`).

    python examples/05_equivalence_check.py [--steps 10 100 1000] [--seeds 1]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn.equivalence import (compare, if_spike_count, rate_eligibilities, rate_updates, spiking_eligibilities,
                                 spiking_updates, to_rate_network)
from ghl_snn.spiking import IF, ConstantCurrent, SpikingNetwork


def my_network() -> SpikingNetwork:
    """Your own layers: Conv2d(1 -> 4, 3x3, stride 2, padding 1) + IF, flatten, Linear(64 -> 5) read-out."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False), IF(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 5, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(3.0)   # enough current for the IF neurons to sit inside (0, 1) rate
    return net


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000], help="window lengths T")
    parser.add_argument("--seeds", type=int, default=1, help="Bernoulli spike-train seeds averaged per T")
    args = parser.parse_args(argv)
    net = my_network()
    rates = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target)

    # 1. the IF neuron: simulated spike count == closed form, and the rate network
    current = torch.linspace(-0.5, 1.5, 9)
    neuron = IF()
    spikes = sum(neuron(current) for _ in range(50))
    assert torch.equal(spikes, if_spike_count(current, 50)), "IF spike count differs from the closed form"
    rate_net = to_rate_network(net)
    assert rate_net[0] is net[0], "the rate network shares the synapse modules"
    with torch.no_grad():
        constant = net.run(rates, 200, ConstantCurrent(), record=False)
        print(f"rate network vs 200-step spiking read-out (constant current): "
              f"{compare(constant, rate_net(rates))}")

    # 2. and 3. eligibility and GHL update against T
    reference_e = rate_eligibilities(net, rates)
    reference_update = rate_updates(net, rates, loss_fn)
    rows: list[dict[str, float | int | str]] = []
    print(f"{'layer':>9} {'T':>5} {'E rel. err':>10} {'E cos':>7} {'update cos':>10} {'sign agr.':>9}")
    for steps in args.steps:
        for name in reference_e:
            metrics = {"E rel. err": 0.0, "E cos": 0.0, "update cos": 0.0, "sign agr.": 0.0}
            for seed in range(args.seeds):
                generator = torch.Generator().manual_seed(seed)
                e = spiking_eligibilities(net, rates, steps, generator=generator)[name]
                generator = torch.Generator().manual_seed(seed)
                update = spiking_updates(net, rates, steps, loss_fn, generator=generator)[name]
                e_metrics, u_metrics = compare(e, reference_e[name]), compare(update, reference_update[name])
                metrics["E rel. err"] += e_metrics["relative_error"] / args.seeds
                metrics["E cos"] += e_metrics["cosine"] / args.seeds
                metrics["update cos"] += u_metrics["cosine"] / args.seeds
                metrics["sign agr."] += u_metrics["sign_agreement"] / args.seeds
            rows.append({"layer": name, "T": steps, **metrics})
            print(f"{name:>9} {steps:>5} {metrics['E rel. err']:>10.4f} {metrics['E cos']:>7.4f} "
                  f"{metrics['update cos']:>10.4f} {metrics['sign agr.']:>9.4f}")

    for name in reference_e:
        errors = [float(r["E rel. err"]) for r in rows if r["layer"] == name]
        assert errors[-1] < errors[0], f"layer {name}: eligibility error did not shrink with T ({errors})"
        last = [r for r in rows if r["layer"] == name][-1]
        assert float(last["E cos"]) > 0.99, f"layer {name}: E cosine {last['E cos']:.4f} at T = {last['T']}"
        assert float(last["update cos"]) > 0.5, f"layer {name}: update cosine {last['update cos']:.3f}"
    print("OK: the spiking eligibility converges to the rate eligibility as T grows")
    return {"rows": rows}


if __name__ == "__main__":
    main()
