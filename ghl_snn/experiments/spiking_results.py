"""The methods of the spiking MNIST comparison ([`ghl_snn.experiments.mnist_snn`][]): which families they belong
to, the control and baselines each is compared with, and the targets table."""
from __future__ import annotations

import statistics
from typing import Any

from ..comparison import methods as registry

#: every method of the registry ([`ghl_snn.comparison.methods`][]) and BPTT (no learner)
METHODS = tuple(registry.method_names(("bptt",), spiking=True))
DEFAULT_METHODS = ("grad_sign", "feedback_sign", "agr", "reward_sign", "dfa", "rate_sgd", "bptt", "readout_sign",
                   "readout_sgd", "agr_readout", "reward_readout")
#: modulators whose update is a sign times |E| (the ``--magnitude ones`` ablation applies to them)
SIGN_METHODS = {"grad_sign", "feedback_sign", "reward_sign", "neuron_sign"}


def is_reward(method: str) -> bool:
    """Whether ``method`` learns from the reward of a chosen output."""
    return method != "bptt" and registry.needs_reward(method)


def is_sign(method: str) -> bool:
    """Whether ``method``'s update is a sign times ``|E|`` (on every layer: a plain-gradient read-out is not)."""
    spec = registry.spec(method) if method != "bptt" else None
    return spec is not None and spec.modulator in SIGN_METHODS and spec.wrap != "PlainReadout"


def hidden_learns(method: str) -> bool:
    """Whether ``method`` trains the hidden layer (not a read-out-only control)."""
    return method == "bptt" or registry.spec(method).plastic == "all"


#: the read-out-only control and the plain baseline of every modulator (for the targets table)
CONTROLS = {"grad_sign": "readout_sign", "neuron_sign": "readout_sign", "feedback_sign": "readout_sign",
            "reward_sign": "reward_readout", "dfa": "readout_sgd", "rate_sgd": "readout_sgd", "bptt": "readout_sgd",
            "reward_sign_random": "reward_readout", "agr": "agr_readout", "agr_learned": "agr_readout",
            "agr_random": "agr_readout", "rstdp": "rstdp_readout", "grad_sign_unit": "readout_sign",
            "grad_sign_sgd_readout": "readout_sgd", "feedback_sign_sgd_readout": "readout_sgd"}
#: further references each method is compared with (paired intervals in the summary)
BASELINES = {"reward_sign": ("agr",), "rstdp": ("agr",), "agr": ("agr_random", "feedback_sign", "dfa"),
             "feedback_sign": ("dfa",),
             "grad_sign": ("rate_sgd", "bptt"), "grad_sign_unit": ("grad_sign",),
             "grad_sign_sgd_readout": ("grad_sign", "rate_sgd"), "feedback_sign_sgd_readout": ("feedback_sign", "dfa")}


def targets(tests: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The targets of the spiking results from every method's final test accuracies (fractions, one per seed):
    each gap measured in points of mean test accuracy."""
    acc = {m: 100 * statistics.fmean(values) for m, values in tests.items()}
    spread = {m: 100 * statistics.stdev(values) if len(values) > 1 else 0.0 for m, values in tests.items()}
    rows = []

    def add(name: str, value: float | None, target: str, met: bool | None) -> None:
        rows.append({"target": name, "measured (points)": "n/a" if value is None else round(value, 2),
                     "wanted": target, "met": "n/a" if met is None else ("yes" if met else "no")})

    for method in ("grad_sign", "feedback_sign", "dfa", "rate_sgd", "bptt"):
        control = CONTROLS[method]
        if method in acc and control in acc:
            gap = acc[method] - acc[control]
            add(f"{method} - {control}", gap, ">= +2", gap >= 2)
    pairs = [("feedback_sign", "dfa", 1.0), ("grad_sign", "rate_sgd", 1.0), ("grad_sign", "bptt", 2.0)]
    for method, baseline, limit in pairs:
        if method in acc and baseline in acc:
            gap = acc[method] - acc[baseline]
            add(f"{method} - {baseline}", gap, f">= -{limit:g}", gap >= -limit)
    rewards = [m for m in acc if is_reward(m) and hidden_learns(m)]
    if rewards:
        best = max(rewards, key=lambda m: acc[m])
        control = CONTROLS[best]
        add(f"best reward rule ({best}) test acc", acc[best], ">= 90 %", acc[best] >= 90)
        add(f"{best} test std", spread[best], "<= 2", spread[best] <= 2)
        if control in acc:
            gap = acc[best] - acc[control]
            add(f"{best} - {control}", gap, ">= +3", gap >= 3)
    return rows
