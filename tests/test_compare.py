"""The comparison engine: Student-t quantiles against closed forms and a float64 integral of the density, paired
intervals, grid extension past each edge, selection on validation only, and the table / JSON it writes."""
from __future__ import annotations

import json
import math

import pytest

from ghl_snn.comparison.runner import RunExists
from ghl_snn.comparison.engine import (Method, Param, check_record, compare, results_table,
                                         tune)
from ghl_snn.comparison.stats import mean_sd, paired_interval, t_quantile


# ------------------------------------------------------------------------------------------------ statistics
def closed_form_quantile(p: float, df: int) -> float:
    """Student-t quantiles with closed forms: df = 1 (Cauchy), 2 and 4."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    alpha = 4 * p * (1 - p)
    q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
    return math.copysign(2 * math.sqrt(q - 1), p - 0.5)


@pytest.mark.parametrize("df", [1, 2, 4])
@pytest.mark.parametrize("p", [0.975, 0.9, 0.6])
def test_t_quantile_matches_closed_forms(p, df):
    assert t_quantile(p, df) == pytest.approx(closed_form_quantile(p, df), rel=1e-9)


def density_integral(t: float, df: int, steps: int = 20000) -> float:
    """P(0 <= T <= t) by Simpson's rule on the Student-t density in float64."""
    const = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    h = t / steps
    f = [const * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
    return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


@pytest.mark.parametrize("df", [3, 5, 7, 10, 29])
def test_t_quantile_inverts_the_integrated_density(df):
    t = t_quantile(0.975, df)
    assert 0.5 + density_integral(t, df) == pytest.approx(0.975, abs=1e-9)


def test_t_quantile_rejects_bad_input():
    with pytest.raises(ValueError, match="p must"):
        t_quantile(0.3, 3)
    with pytest.raises(ValueError, match="df must"):
        t_quantile(0.975, 0)


def test_paired_interval_by_hand():
    a, b = [0.80, 0.83, 0.85], [0.79, 0.81, 0.81]  # differences 1, 2, 4 points
    result = paired_interval(a, b)
    diffs = [0.01, 0.02, 0.04]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = closed_form_quantile(0.975, 2) * sd / math.sqrt(3)  # 4.3027 for 2 degrees of freedom
    assert result["mean"] == pytest.approx(mean, abs=1e-12)
    assert result["low"] == pytest.approx(mean - half, abs=1e-12)
    assert result["high"] == pytest.approx(mean + half, abs=1e-12)
    assert result["excludes_zero"] is (mean - half > 0)
    assert result["diffs"] == pytest.approx(diffs)
    with pytest.raises(ValueError, match="same seeds"):
        paired_interval([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_interval([1], [2])


# ------------------------------------------------------------------------------------------------ records
def record(val: float, test: float | None = None, train: float = 0.5, epochs: int = 2) -> dict:
    rows = [{"epoch": e + 1, "train_acc": train, "val_acc": val * (e + 1) / epochs} for e in range(epochs)]
    if test is not None:
        for e, row in enumerate(rows):
            row["test_acc"] = test * (e + 1) / epochs
    return {"history": rows, "wall_time_s": 1.0}


def test_check_record_names_the_problem():
    with pytest.raises(ValueError, match="history"):
        check_record({"val_acc": 0.5})
    with pytest.raises(ValueError, match="'acc' does not name its split"):
        check_record({"history": [{"epoch": 1, "acc": 0.5, "val_acc": 0.5}]})
    with pytest.raises(ValueError, match="'val_acc' missing"):
        check_record({"history": [{"epoch": 1, "train_acc": 0.5}]})
    with pytest.raises(ValueError, match="not a finite"):
        check_record({"history": [{"epoch": 1, "val_acc": float("nan")}]})
    assert check_record(record(0.7, 0.6))[-1]["val_acc"] == 0.7


# ------------------------------------------------------------------------------------------------ tuning
def peaked(optimum: float):
    """A callback whose validation accuracy peaks at lr = ``optimum`` (log scale), same for every seed."""
    calls = []

    def run(method, hparams, seed):
        calls.append((method, dict(hparams), seed))
        return record(1 - 0.01 * math.log10(hparams["lr"] / optimum) ** 2)
    return run, calls


@pytest.mark.parametrize("optimum", [1e-5, 1.0])
def test_grid_is_extended_past_either_edge_until_the_best_is_interior(optimum):
    run, calls = peaked(optimum)
    chosen = tune(Method("m", (Param("lr", (1e-3, 1e-2, 1e-1)),)), run, seeds=(0, 1))
    assert chosen["hparams"]["lr"] == pytest.approx(optimum)
    assert chosen["edges"] == {"lr": None}
    values = chosen["values"]["lr"]
    assert values[0] < optimum < values[-1]  # one step past the optimum was tried
    assert {seed for _, _, seed in calls} == {0, 1}


def test_grid_stops_at_a_bound_and_flags_the_edge():
    run, _ = peaked(1e-9)
    chosen = tune(Method("m", (Param("lr", (1e-3, 1e-2), lower=1e-5),)), run, seeds=(0, 1))
    assert chosen["hparams"]["lr"] == pytest.approx(1e-5)
    assert chosen["edges"] == {"lr": "lower"}
    run, _ = peaked(1e3)
    chosen = tune(Method("m", (Param("lr", (1e-3, 1e-2)),)), run, seeds=(0, 1), max_extend=2)
    assert chosen["hparams"]["lr"] == pytest.approx(1.0) and chosen["edges"] == {"lr": "upper"}


def test_two_parameter_groups_are_extended_independently():
    def run(method, hparams, seed):
        return record(1 - 0.01 * (math.log10(hparams["lr_hidden"] / 1e-4) ** 2
                                  + math.log10(hparams["lr_readout"] / 10.0) ** 2))
    chosen = tune(Method("m", (Param("lr_hidden", (1e-2, 1e-1)), Param("lr_readout", (1e-2, 1e-1))),
                         fixed={"momentum": 0.9}), run, seeds=(0, 1), max_extend=6)
    assert chosen["hparams"] == pytest.approx({"lr_hidden": 1e-4, "lr_readout": 10.0, "momentum": 0.9})
    assert chosen["edges"] == {"lr_hidden": None, "lr_readout": None}


def test_one_parameter_after_the_other_costs_the_sum_of_the_grids_and_reaches_the_same_optimum():
    """``joint=False``: the lr grid at ratio's start, then the ratio grid at the best lr (3 + 2 new points, not
    3 x 3), then the refinement around the best point finds the optimum of a separable score, as the joint search
    does."""
    calls = []

    def run(method, hparams, seed):
        calls.append(dict(hparams))
        return record(1 - 0.01 * (math.log10(hparams["lr"] / 1e-2) ** 2 + math.log10(hparams["ratio"] / 3.0) ** 2))
    grid = (Param("lr", (1e-3, 1e-2, 1e-1)), Param("ratio", (0.3, 1.0, 3.0), start=1.0))
    chosen = tune(Method("m", grid, joint=False), run, seeds=(0, 1))
    first = [(c["lr"], c["ratio"]) for c in calls[::2][:5]]  # every point runs on seeds 0 and 1
    assert first == [(1e-3, 1.0), (1e-2, 1.0), (1e-1, 1.0), (1e-2, 0.3), (1e-2, 3.0)]
    assert chosen["hparams"] == pytest.approx({"lr": 1e-2, "ratio": 3.0})
    assert len(calls) < 2 * 9 + 2 * 4  # fewer runs than the full product and its refinement
    joint = tune(Method("m", grid), run, seeds=(0, 1))
    assert joint["hparams"] == pytest.approx(chosen["hparams"])
    with pytest.raises(ValueError, match="start 2.0 is not a value"):
        Param("ratio", (1.0, 3.0), start=2.0)


def test_one_final_seed_gives_the_difference_without_an_interval(tmp_path):
    def run(method, hparams, seed):
        return record(0.6, 0.7 if method == "a" else 0.5)
    results = compare([Method("a", controls=("b",)), Method("b")], run, out=tmp_path, seeds=(0,))
    gap = results["comparisons"][0]
    assert gap["n"] == 1 and gap["mean"] == pytest.approx(0.2) and gap["low"] is None and gap["excludes_zero"] is None
    assert "(1 seed, no interval)" in (tmp_path / "results.md").read_text()


def test_selection_reads_validation_never_test():
    """Test accuracy prefers lr = 0.1 by a wide margin, validation prefers 0.01: the engine picks 0.01."""
    def run(method, hparams, seed):
        lr = hparams["lr"]
        return record(val=0.9 if lr == pytest.approx(0.01) else 0.8,
                      test=0.99 if lr == pytest.approx(0.1) else 0.5)
    results = compare([Method("m", (Param("lr", (1e-3, 1e-2, 1e-1), lower=1e-3, upper=1e-1),))], run,
                      seeds=(0, 1, 2))
    assert results["chosen"]["m"]["hparams"]["lr"] == pytest.approx(0.01)


def test_selection_averages_the_tuning_seeds():
    """lr = 0.1 wins on seed 0 alone, lr = 0.01 on the mean of seeds 0 and 1."""
    def run(method, hparams, seed):
        wins = {0: 0.1, 1: 0.01}[seed] if seed in (0, 1) else 0.01
        gap = 0.01 if seed == 0 else 0.05
        return record(val=0.8 + (gap if hparams["lr"] == pytest.approx(wins) else 0.0), test=0.5)
    chosen = tune(Method("m", (Param("lr", (1e-2, 1e-1), lower=1e-2, upper=1e-1),)), run, seeds=(0, 1))
    assert chosen["hparams"]["lr"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        tune(Method("m", (Param("lr", (1e-2, 1e-1)),)), run, seeds=(0,))


# ------------------------------------------------------------------------------------------------ outputs
def test_table_and_json_hold_the_comparison(tmp_path):
    tests = {"rule": [0.81, 0.84, 0.84], "readout": [0.78, 0.80, 0.81], "chance": [0.1, 0.1, 0.1]}
    calls = []

    def run(method, hparams, seed):
        calls.append((method, seed))
        if method == "chance":
            return record(0.1, 0.1)
        val = 0.7 + 0.01 * math.log10(hparams["lr"])  # increases with lr: the upper bound is hit
        return record(val, tests[method][seed])

    methods = [Method("rule", (Param("lr", (0.01, 0.1), upper=0.1),), controls=("readout", "chance")),
               Method("readout", (Param("lr", (0.01, 0.1, 1.0)),), controls=("chance",)), Method("chance")]
    results = compare(methods, run, out=tmp_path, seeds=(0, 1, 2), title="synthetic", identity={"epochs": 2})
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["chosen"]["rule"]["edges"] == {"lr": "upper"}
    assert stored["chosen"]["readout"]["hparams"]["lr"] == pytest.approx(1000.0)  # extended to upper bound
    assert stored["final"]["rule"]["test"] == pytest.approx(tests["rule"])
    gap = next(c for c in stored["comparisons"] if c["method"] == "rule" and c["control"] == "readout")
    assert gap["diffs"] == pytest.approx([0.03, 0.04, 0.03])
    assert gap["excludes_zero"] is True
    assert {t["phase"] for t in stored["trials"]} == {"tune", "final"}
    assert all(set(row) <= {"epoch", "train_acc", "val_acc", "test_acc"} for t in stored["trials"]
               for row in t["history"])
    table = (tmp_path / "results.md").read_text()
    assert table == results_table(results) + "\n"
    rule_line = next(line for line in table.splitlines() if line.startswith("| rule "))
    assert "lr=0.1 (upper edge)" in rule_line
    assert "83.00 ± 1.73" in rule_line  # test_acc mean ± sd over the 3 seeds, in %
    assert "vs readout: +3.33 [+1.90, +4.77]" in rule_line
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # a re-run reuses every stored trial; other settings refuse the folder
    before = len(calls)
    compare(methods, run, out=tmp_path, seeds=(0, 1, 2), title="synthetic", identity={"epochs": 2})
    assert len(calls) == before
    with pytest.raises(RunExists, match=r"other settings \(epochs: 2 -> 3\); pass --force"):
        compare(methods, run, out=tmp_path, seeds=(0, 1, 2), identity={"epochs": 3})


def test_compare_rejects_bad_set_ups():
    run, _ = peaked(0.01)
    with pytest.raises(ValueError, match="at least 1 seed"):
        compare([Method("m")], run, seeds=())
    with pytest.raises(ValueError, match="not among"):
        compare([Method("m", controls=("x",))], run)
    with pytest.raises(ValueError, match="unique"):
        compare([Method("m"), Method("m")], run)
    with pytest.raises(ValueError, match="step"):
        Param("lr", (0.1,))
    with pytest.raises(ValueError, match="positive"):
        Param("lr", (0.0, 0.1))


def test_a_diverged_trial_loses_the_selection():
    """lr = 1 would score best but diverges: the engine picks the best run that finished."""
    def run(method, hparams, seed):
        if hparams["lr"] > 0.5:
            return {"diverged": True, "history": [{"epoch": 1, "train_loss": float("nan")}]}
        return record(0.5 + 0.1 * math.log10(hparams["lr"] / 1e-3), 0.5)
    chosen = tune(Method("m", (Param("lr", (1e-2, 1e-1, 1.0), upper=1.0),)), run, seeds=(0, 1))
    assert chosen["hparams"]["lr"] == pytest.approx(0.1)


def test_mean_sd_cell_by_hand():
    assert mean_sd([0.5, 0.6], 100) == f"55.00 ± {100 * math.sqrt(0.005):.2f}"  # sample sd of {50, 60}: 7.07
    assert mean_sd([0.5, float("nan")], 100, 1) == "50.0"  # one finite value: no spread
    assert mean_sd([float("nan")]) == "–"
