"""Draw the spike-timing figure of the spiking concept page (run from the repository root; writes
``docs/images/stdp-traces.png``).

    python docs/_tools/timing_figure.py

One synapse, given pre- and post-synaptic spike trains: the raster, the pre trace ``x`` and the post trace ``y`` of
[`STDP`][ghl_snn.STDP], the pair-STDP eligibility ``E_t`` (the running sum of ``e_t``) and the decaying eligibility
trace of [`RewardSTDP`][ghl_snn.RewardSTDP] that a late reward reads.  Every curve is the library's own state.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ghl_snn import STDP, RewardSTDP  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "images" / "stdp-traces.png"
STEPS = 80
PRE = [5, 22, 41, 47, 63]
POST = [9, 25, 37, 44, 68]


def record(rule: STDP) -> dict[str, list[float]]:
    pre = torch.zeros(STEPS, 1, 1, dtype=torch.float64)
    post = torch.zeros_like(pre)
    pre[PRE] = 1.0
    post[POST] = 1.0
    state = rule.new_state()
    curves: dict[str, list[float]] = {"x": [], "y": [], "E": []}
    for t in range(STEPS):
        rule.step(state, pre[t], post[t], (1, 1))
        curves["x"].append(float(state.traces["pre"]))
        curves["y"].append(float(state.traces["post"]))
        curves["E"].append(float(state.eligibility))
    return curves


def main() -> None:
    stdp = record(STDP(a_plus=1.0, a_minus=1.0, tau_plus=8.0, tau_minus=8.0))
    reward = record(RewardSTDP(tau_e=15.0, a_plus=1.0, a_minus=1.0, tau_plus=8.0, tau_minus=8.0))
    fig, axes = plt.subplots(4, 1, figsize=(7.5, 6.2), sharex=True, gridspec_kw={"height_ratios": [1, 1.3, 1.3, 1.5]})
    axes[0].eventplot([PRE, POST], lineoffsets=[1, 0], linelengths=0.7, colors=["#1f77b4", "#d62728"])
    axes[0].set_yticks([1, 0], ["pre", "post"])
    axes[0].set_title("One synapse: spikes, traces and the STDP eligibility", fontsize=11)
    axes[1].plot(stdp["x"], color="#1f77b4")
    axes[1].set_ylabel("pre trace x")
    axes[2].plot(stdp["y"], color="#d62728")
    axes[2].set_ylabel("post trace y")
    axes[3].plot(stdp["E"], color="#333333", label="STDP: E_t = sum of e_t")
    axes[3].plot(reward["E"], color="#2ca02c", label="R-STDP: E_t = λ E_{t-1} + e_t (τ_e = 15)")
    axes[3].axhline(0.0, color="#999999", lw=0.8)
    axes[3].set_ylabel("eligibility")
    axes[3].set_xlabel("time step")
    axes[3].legend(fontsize=8, loc="lower left")
    for t in PRE:
        for ax in axes[1:]:
            ax.axvline(t, color="#1f77b4", lw=0.4, alpha=0.4)
    for t in POST:
        for ax in axes[1:]:
            ax.axvline(t, color="#d62728", lw=0.4, alpha=0.4)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
