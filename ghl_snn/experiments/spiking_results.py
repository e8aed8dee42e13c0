"""Per-run outputs named by split, and the results tables of the spiking MNIST comparison
([`ghl_snn.experiments.mnist_snn`][]): one row per method, the paired comparisons with controls and baselines,
and the targets."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .common import write_json
from .compare import paired_interval
from .runner import write_metrics_csv

#: method -> (third factor, plastic layers); "bptt" has no learner
METHODS: dict[str, tuple[str, str]] = {
    "grad_sign": ("grad_sign", "all"), "feedback_sign": ("feedback_sign", "all"),
    "reward_sign": ("reward_sign", "all"), "neuron_sign": ("neuron_sign", "all"),
    "dfa": ("dfa", "all"), "rate_sgd": ("rate_sgd", "all"), "bptt": ("bptt", "all"),
    "readout_sign": ("grad_sign", "readout"), "readout_sgd": ("rate_sgd", "readout"),
    "reward_readout": ("reward_sign", "readout"), "agr": ("agr", "all"), "agr_learned": ("agr_learned", "all"),
    "agr_random": ("agr_random", "all"), "reward_sign_random": ("reward_sign_random", "all"),
    "agr_readout": ("agr", "readout"), "rstdp": ("rstdp", "all"), "rstdp_readout": ("rstdp", "readout"),
    "grad_sign_unit": ("grad_sign_unit", "all"), "grad_sign_sgd_readout": ("grad_sign_sgd_readout", "all"),
    "feedback_sign_sgd_readout": ("feedback_sign_sgd_readout", "all"),
}
DEFAULT_METHODS = ("grad_sign", "feedback_sign", "agr", "reward_sign", "dfa", "rate_sgd", "bptt", "readout_sign",
                   "readout_sgd", "agr_readout", "reward_readout")
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
SIGN_METHODS = {"grad_sign", "feedback_sign", "reward_sign", "neuron_sign", "reward_sign_random", "grad_sign_unit"}
REWARD_KINDS = {"reward_sign", "reward_sign_random", "agr", "agr_learned", "agr_random", "rstdp"}
#: third factors whose eligibility is a spike-timing rule: their network has a spiking read-out (STDP needs the
#: post-synaptic spikes of every plastic layer)
TIMING_KINDS = {"rstdp"}

def name_splits(run_dir: Path, results: dict[str, Any], history: list[dict[str, float]], test_acc: float,
                hidden_rate: float, run_seconds: float) -> dict[str, Any]:
    """Rewrite the runner's per-run outputs with each score named by its split: the per-epoch evaluation is the
    validation split (``val_acc`` / ``val_loss`` in ``metrics.csv``, "val" in ``curves.png``), the test split is
    evaluated once at the end; ``train_seconds`` is the training epochs' time, ``run_seconds`` the whole run's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{key.replace("test_", "val_"): value for key, value in row.items()} for row in history]
    write_metrics_csv(run_dir / "metrics.csv", rows)
    fig, axis = plt.subplots(figsize=(4.5, 3.5))
    epochs = [row["epoch"] for row in rows]
    for split in ("train", "val"):
        axis.plot(epochs, [row[f"{split}_acc"] for row in rows], marker="o", label=split)
    axis.axhline(test_acc, color="gray", linestyle="--", label="test (end)")
    axis.set(xlabel="epoch", ylabel="accuracy")
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)
    named = {"val_acc": results["final_test_acc"], "best_val_acc": results["best_test_acc"],
             "best_val_epoch": results["best_epoch"], "test_acc": test_acc,
             "train_acc": history[-1]["train_acc"], "epochs": results["epochs"], "hidden_rate": hidden_rate,
             "train_seconds": results["wall_time_s"], "run_seconds": run_seconds,
             "images_per_s": results["images_per_s"], "peak_memory_mib": results["peak_memory_mib"]}
    write_json(run_dir / "results.json", named)
    return named

def summarise(method: str, runs: list[dict[str, Any]], lr_search: dict[str, Any],
              ratio_search: dict[str, Any] | None) -> dict[str, Any]:
    """One row of the results table (mean over the seeds of the chosen learning rates; each score's split named)."""
    tests = [100 * r["test_acc"] for r in runs]
    vals = [100 * r["val_acc"] for r in runs]

    def sweep(search: dict[str, Any] | None) -> str:
        if search is None:
            return "-"
        text = " / ".join(f"{k}: {100 * v:.1f}" for k, v in search["scores"].items())
        return text + (f" (best on the {search['on_edge']} edge)" if search["on_edge"] in ("low", "high") else "")

    return {"method": method, "control of": ", ".join(m for m, c in CONTROLS.items() if c == method) or "-",
            "lr (val)": lr_search["best"], "hidden/read-out lr (val)": ratio_search["best"] if ratio_search else "-",
            "lr sweep: val acc (%)": sweep(lr_search), "ratio sweep: val acc (%)": sweep(ratio_search),
            "seeds": len(runs), "val acc (%)": statistics.mean(vals), "test acc (%)": statistics.mean(tests),
            "test std": statistics.stdev(tests) if len(tests) > 1 else 0.0, "test accs (%)": tests,
            "hidden rate": statistics.mean(r["hidden_rate"] for r in runs),
            "train seconds/run": statistics.mean(r["train_seconds"] for r in runs),
            "run seconds": statistics.mean(r["run_seconds"] for r in runs),
            "peak MiB": max(r["peak_memory_mib"] for r in runs)}

def comparisons(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every method against its read-out-only control and its baselines: the paired difference of test accuracy
    over the seeds (same seed: same initialisation and data order) with its 95 % interval; "real" only where the
    interval excludes 0."""
    rows = []
    for method, row in summary.items():
        for reference in (CONTROLS.get(method), *BASELINES.get(method, ())):
            if reference is None or reference not in summary:
                continue
            values, controls = row["test accs (%)"], summary[reference]["test accs (%)"]
            pairs = min(len(values), len(controls))
            entry = {"method": method, "reference": reference,
                     "kind": "control" if reference == CONTROLS.get(method) else "baseline", "seeds": pairs}
            if pairs < 2:
                mean = sum(values[:pairs]) / max(pairs, 1) - sum(controls[:pairs]) / max(pairs, 1)
                rows.append({**entry, "paired diff, test (points)": round(mean, 2), "95 % interval": "n/a",
                             "real": "n/a"})
                continue
            interval = paired_interval(values[:pairs], controls[:pairs])
            rows.append({**entry, "paired diff, test (points)": round(interval["mean"], 2),
                         "95 % interval": f"[{interval['low']:.2f}, {interval['high']:.2f}]",
                         "real": "yes" if interval["excludes_zero"] else "no"})
    return rows

def targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of the spiking results: each gap measured (points of mean test accuracy)."""
    acc = {m: s["test acc (%)"] for m, s in summary.items()}
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
    rewards = [m for m in acc if METHODS[m][0] in REWARD_KINDS and METHODS[m][1] == "all"]
    if rewards:
        best = max(rewards, key=lambda m: acc[m])
        control = CONTROLS[best]
        add(f"best reward rule ({best}) test acc", acc[best], ">= 90 %", acc[best] >= 90)
        add(f"{best} test std", summary[best]["test std"], "<= 2", summary[best]["test std"] <= 2)
        if control in acc:
            gap = acc[best] - acc[control]
            add(f"{best} - {control}", gap, ">= +3", gap >= 3)
    return rows
