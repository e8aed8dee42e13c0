"""Spiking HebbFF vs rate HebbFF against the number of time steps T, beside GHL's spike-vs-rate equivalence.

    python -m ghl_snn.experiments.hebbff_equivalence [--steps 10 30 100 300 1000] [--seeds 3] [--with-ghl] [--out DIR]

For every T and seed a fixed label-conditioned 64-32-16 MLP ([`SpikingHebbFF`][ghl_snn.SpikingHebbFF], IF
neurons, Bernoulli rate-coded input, one positive and one negative window) accumulates its spike-rate traces; the
HebbFF eligibility from the spike rates (HebbFF paper Eq. 1-3, goodness from the spike rates) is compared per layer
with the HebbFF eligibility of the rate network at the empirical input rates (``a = clamp(W x̄ + b, 0, 1)``).  The
update is ``η E`` in both forms, so the update cosine equals the eligibility cosine.  Rows have the columns of
``ghl_snn.experiments.equivalence``; ``--with-ghl`` also runs its GHL networks and draws all curves in one
figure (``equivalence.png``), with ``results.json`` and ``results.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ..equivalence import compare
from ..models.mlp import ForwardForwardMLP
from ..rules.hebbff import hebbff_eligibility, random_wrong_labels
from ..spiking.encoders import BernoulliEncoder
from ..spiking.hebbff import SpikingHebbFF
from ..comparison import cli
from . import equivalence as ghl_equivalence

THETA = 0.2


def hebbff_case() -> tuple[ForwardForwardMLP, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed 64-32-16 label-conditioned MLP (4 labels), input rates (16, 64), true and wrong labels."""
    torch.manual_seed(0)
    model = ForwardForwardMLP(64, (32, 16), num_classes=4, init_gain=None)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.normal_(0.0, 0.3)
            layer.bias.fill_(0.1)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (16,), generator=gen)
    return model, torch.rand(16, 64, generator=gen), labels, random_wrong_labels(labels, 4, gen)


def measure_hebbff(steps: int, seed: int) -> list[dict[str, Any]]:
    """One positive and one negative window of ``steps`` steps; per-layer spike-vs-rate comparison rows."""
    model, rates, labels, wrong = hebbff_case()
    spiking = SpikingHebbFF(model, lr=1.0, theta=THETA, input_scale=0.3,
                            encoder=BernoulliEncoder(generator=torch.Generator().manual_seed(seed)))
    positive, negative = spiking.run(rates, labels, steps), spiking.run(rates, wrong, steps)
    rate_positive, rate_negative = spiking.rate_traces(positive), spiking.rate_traces(negative)
    rows = []
    for index, ((xp, rp), (xn, rn), (xpr, ap), (xnr, an)) in enumerate(
            zip(positive, negative, rate_positive, rate_negative)):
        spike_e = hebbff_eligibility(xp, rp, xn, rn, THETA, "mean").weight
        rate_e = hebbff_eligibility(xpr, ap, xnr, an, THETA, "mean").weight
        result = compare(spike_e, rate_e)
        rows.append({"network": "hebbff", "layer": f"layers.{index}:Linear", "T": steps, "seed": seed,
                     "E rel. error": result["relative_error"], "E cosine": result["cosine"],
                     "update cosine (empirical)": result["cosine"],
                     "sign agreement (empirical)": result["sign_agreement"]})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m ghl_snn.experiments.hebbff_equivalence", __doc__.split("\n\n")[0], raw=False)
    parser.add_argument("--steps", type=cli.positive_int, nargs="+", default=[10, 30, 100, 300, 1000],
                        help="window lengths T (time steps) to measure")
    parser.add_argument("--seeds", type=cli.positive_int, default=3, help="seeds 0 .. S-1 per T")
    parser.add_argument("--with-ghl", action="store_true", help="also run GHL's linear network and plot both")
    parser.add_argument("--out", default="runs/hebbff-equivalence", metavar="DIR",
                        help="output folder (results.md, results.json, equivalence.png)")
    parser.add_argument("--threads", type=cli.positive_int, default=1, help="torch CPU threads")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options: a bad value exits with one line and exit code 2 before anything runs."""
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every (T, seed), write the tables and the plot into ``--out``; returns the summary."""

    def measure_job(steps: int, seed: int) -> list[dict[str, Any]]:
        rows = measure_hebbff(steps, seed)
        return rows + ghl_equivalence.measure("linear", steps, seed, 1.0) if args.with_ghl else rows

    jobs = [(steps, seed) for steps in args.steps for seed in range(args.seeds)]
    return ghl_equivalence.run_measurements(args, jobs, measure_job, "hebbff equivalence")


#: ``main(argv)`` returns the summary; ``cli_main(argv)`` is the command line (checked options, the output folder
#: guarded, one-line errors with exit code 2; see [`ghl_snn.comparison.cli`][])
main, cli_main = cli.entry_points(parse_args, run, resumable=False)


if __name__ == "__main__":
    sys.exit(cli_main())
