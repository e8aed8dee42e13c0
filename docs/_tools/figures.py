"""Draw the documentation's explanatory figures (run from the repository root; writes ``docs/images/*.png``).

    python docs/_tools/figures.py

``three-factors.png``: how one plastic synapse learns -- pre- and post-synaptic activity form the eligibility E
(factors 1 and 2), a global signal (loss gradient, feedback of the output error, or a reward) forms the sign
neuromodulator M (factor 3), and ``M ⊙ |E|`` is written into ``weight.grad`` for any ``torch.optim`` optimiser.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "images"

LOCAL, GLOBAL, WRITE = "#d8ecf8", "#fbe3c8", "#dff2dc"


def _box(ax: plt.Axes, x: float, y: float, w: float, h: float, text: str, color: str) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#444444",
                                lw=1.2))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10.5, linespacing=1.35)


def _arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], label: str = "",
           dashed: bool = False) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, lw=1.4, color="#333333",
                                 linestyle="--" if dashed else "-"))
    if label:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, label, fontsize=9, color="#333333",
                ha="center", bbox={"fc": "white", "ec": "none", "pad": 1})


def three_factors(path: Path) -> None:
    """The three factors of one synapse, from activity and global signal to the optimiser step."""
    fig, ax = plt.subplots(figsize=(11.5, 4.6), dpi=130)
    ax.set_xlim(0, 11.5)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    _box(ax, 0.2, 3.1, 2.7, 1.1, "factor 1\npre-synaptic activity\n$x_i$ (rate or spike trace)", LOCAL)
    _box(ax, 0.2, 1.6, 2.7, 1.1, "factor 2\npost-synaptic activity\n$y_k$ (rate or current trace)", LOCAL)
    _box(ax, 3.8, 2.4, 3.0, 1.3, "eligibility $E_{ik}$\nsynapse-local rule\n(SWTA-Oja, HebbFF, STDP, ...)", LOCAL)
    _box(ax, 0.2, 0.1, 2.7, 1.1, "global signal\nloss gradient, output-error\nfeedback, or a reward", GLOBAL)
    _box(ax, 3.8, 0.1, 3.0, 1.6, "factor 3: neuromodulator\n$M_{ik} = \\pm 1$, the sign of the\ncredit that meets the\n"
         "synapse's pre-synaptic trace", GLOBAL)
    _box(ax, 7.7, 1.3, 1.8, 1.3, "weight.grad\n$= M \\odot |E|$", WRITE)
    _box(ax, 10.0, 1.3, 1.4, 1.3, "any\ntorch.optim\noptimiser", WRITE)
    _arrow(ax, (2.9, 3.65), (3.8, 3.25))
    _arrow(ax, (2.9, 2.15), (3.8, 2.85))
    _arrow(ax, (2.9, 0.65), (3.8, 0.75))
    _arrow(ax, (1.55, 3.1), (3.8, 1.45), "$\\bar x_i$", dashed=True)
    _arrow(ax, (6.8, 3.05), (7.7, 2.4), "|E|: size")
    _arrow(ax, (6.8, 0.9), (7.7, 1.5), "M: sign")
    _arrow(ax, (9.5, 1.95), (10.0, 1.95))
    ax.text(10.7, 0.85, "$W \\leftarrow W - \\eta\\,\\mathrm{grad}$", ha="center", fontsize=10)
    ax.text(5.75, 4.35, "$\\Delta W = -\\eta\\, M \\odot |E|$", ha="center", fontsize=13)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    three_factors(OUT / "three-factors.png")
    print(f"wrote {OUT / 'three-factors.png'}")
