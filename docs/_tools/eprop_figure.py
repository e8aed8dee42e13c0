"""Draw the e-prop figure of the spiking concept page (run from the repository root; writes
``docs/images/eprop-traces.png``).

    python docs/_tools/eprop_figure.py

A small adaptive recurrent LIF population ([`RecurrentLIF`][ghl_snn.RecurrentLIF] with ``adaptation > 0``) driven by
random input spikes: the raster, one neuron's membrane ``u_t`` against its adaptive threshold ``A_t``, and for one of
its input synapses the eligibility vectors of [`EProp`][ghl_snn.EProp] (the membrane-filtered presynaptic trace
``eps_t`` and the threshold-adaptation vector ``eps^a_t``), the eligibility trace ``e_t`` and its leaky-read-out
filtered version ``e-bar_t``.  The spikes, membranes and thresholds are the neuron's own state.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import torch
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ghl_snn import RecurrentLIF  # noqa: E402
from ghl_snn.spiking.eprop import pseudo_derivative  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "images" / "eprop-traces.png"
STEPS, INPUTS, NEURONS = 120, 6, 10
BETA, ADAPT, RHO, KAPPA, SLOPE = 0.9, 0.6, 0.96, 0.9, 5.0


def main() -> None:
    torch.manual_seed(3)
    inputs = (torch.rand(STEPS, 1, INPUTS) < 0.12).double()
    synapse = nn.Linear(INPUTS, NEURONS, bias=False).double()
    nn.init.normal_(synapse.weight, 0.45, 0.25)
    neuron = RecurrentLIF(NEURONS, beta=BETA, threshold=1.0, slope=SLOPE, adaptation=ADAPT, rho=RHO).double()
    j, i = 0, 0
    curves: dict[str, list[float]] = {k: [] for k in ("u", "A", "eps", "epsa", "e", "ebar")}
    spikes = []
    eps = epsa = ebar = 0.0
    with torch.no_grad():
        for t in range(STEPS):
            adaptation = neuron.a if neuron.a is not None else torch.zeros(1, NEURONS, dtype=torch.float64)
            threshold = 1.0 + ADAPT * adaptation
            z = neuron(synapse(inputs[t]))
            u = neuron.v + threshold * z  # the membrane before the reset
            psi = float(pseudo_derivative(u, threshold, SLOPE)[0, j])
            eps = BETA * eps + float(inputs[t, 0, i])
            e = psi * (eps - ADAPT * epsa)
            epsa = psi * eps + (RHO - psi * ADAPT) * epsa
            ebar = KAPPA * ebar + e
            spikes.append(z[0].clone())
            for key, value in (("u", float(u[0, j])), ("A", float(threshold[0, j])), ("eps", eps), ("epsa", epsa),
                               ("e", e), ("ebar", ebar)):
                curves[key].append(value)
    raster = torch.stack(spikes)
    fig, axes = plt.subplots(4, 1, figsize=(7.5, 7.0), sharex=True,
                             gridspec_kw={"height_ratios": [1.6, 1.2, 1.2, 1.3]})
    axes[0].eventplot([torch.nonzero(inputs[:, 0, i]).flatten().tolist()]
                      + [torch.nonzero(raster[:, n]).flatten().tolist() for n in range(NEURONS)],
                      lineoffsets=list(range(NEURONS + 1)), linelengths=0.7,
                      colors=["#1f77b4"] + ["#d62728"] + ["#777777"] * (NEURONS - 1))
    axes[0].set_yticks([0, 1], [f"input {i}", f"neuron {j}"])
    axes[0].set_ylabel("spikes")
    axes[0].set_title("Adaptive recurrent LIF: spikes, threshold and the e-prop traces of one synapse", fontsize=11)
    axes[1].plot(curves["u"], color="#d62728", lw=1, label="membrane u_t")
    axes[1].plot(curves["A"], color="#333333", lw=1.2, label="threshold A_t = θ + β_a a_t")
    axes[1].legend(fontsize=8, loc="upper right")
    axes[2].plot(curves["eps"], color="#1f77b4", label="ε_t = β ε_{t-1} + x_t")
    axes[2].plot(curves["epsa"], color="#9467bd", label="ε^a_t (threshold adaptation)")
    axes[2].set_ylabel("eligibility vectors")
    axes[2].legend(fontsize=8, loc="upper right")
    axes[3].plot(curves["e"], color="#333333", label="e_t = ψ_t (ε_t − β_a ε^a_t)")
    axes[3].plot(curves["ebar"], color="#2ca02c", label=f"ē_t = κ ē_{{t-1}} + e_t (κ = {KAPPA})")
    axes[3].axhline(0.0, color="#999999", lw=0.8)
    axes[3].set_ylabel("eligibility trace")
    axes[3].set_xlabel("time step")
    axes[3].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
