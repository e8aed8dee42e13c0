"""A comparison run in parts (one folder per method) and merged: the finished comparison reruns nothing and equals
the one run in a single folder; parts of other settings, a non-comparison folder and an occupied output are refused."""
from __future__ import annotations

import json
import math

import pytest

from ghl_snn.comparison.engine import Method, Param, compare
from ghl_snn.comparison.guard import CliError
from ghl_snn.comparison.merge import main, merge_trials


def run(method: str, hparams: dict, seed: int) -> dict:
    """Accuracies that depend on method, learning rate and seed (so that a wrong merge shows)."""
    if method == "chance":
        return {"history": [{"epoch": 1, "train_acc": 0.1, "val_acc": 0.1, "test_acc": 0.1}]}
    peak = {"rule": 1e-2, "readout": 1e-1}[method]
    val = 0.9 - 0.02 * math.log10(hparams["lr"] / peak) ** 2 + 0.003 * seed
    test = val - 0.01 + 0.002 * seed * (method == "rule")
    return {"history": [{"epoch": 1, "train_acc": val, "val_acc": val, "test_acc": test}]}


def never(method: str, hparams: dict, seed: int) -> dict:
    raise AssertionError(f"{method} {hparams} seed {seed} was run again")


def methods(*names: str) -> list[Method]:
    lr = (Param("lr", (1e-3, 1e-2, 1e-1)),)
    every = {"rule": Method("rule", lr, controls=("readout", "chance")),
             "readout": Method("readout", lr, controls=("chance",)), "chance": Method("chance")}
    chosen = [every[n] for n in names]
    return [Method(m.name, m.tuned, fixed=m.fixed, controls=tuple(c for c in m.controls if c in names))
            for m in chosen]


def test_parts_merged_and_finished_equal_the_comparison_run_in_one_folder(tmp_path):
    whole = compare(methods("rule", "readout", "chance"), run, out=tmp_path / "whole", identity={"epochs": 1})
    for name in ("rule", "readout", "chance"):
        compare(methods(name), run, out=tmp_path / name, identity={"epochs": 1})
    merged = merge_trials(tmp_path / "all", [tmp_path / n for n in ("rule", "readout", "chance")])
    assert "final" not in merged  # unfinished: the experiment's --resume finishes it
    assert len(merged["trials"]) == len(whole["trials"])
    finished = compare(methods("rule", "readout", "chance"), never, out=tmp_path / "all", identity={"epochs": 1})
    assert finished["chosen"] == whole["chosen"]
    assert finished["final"] == whole["final"]
    assert finished["comparisons"] == whole["comparisons"]
    assert (tmp_path / "all" / "results.md").read_text() == (tmp_path / "whole" / "results.md").read_text()


def test_a_trial_in_two_parts_is_taken_once_from_the_first(tmp_path):
    compare(methods("rule"), run, out=tmp_path / "a", identity={"epochs": 1})
    compare(methods("rule"), run, out=tmp_path / "b", identity={"epochs": 1})
    stored = json.loads((tmp_path / "a" / "results.json").read_text())
    merged = merge_trials(tmp_path / "all", [tmp_path / "a", tmp_path / "b"])
    assert merged["trials"] == stored["trials"]


def test_merge_refuses_what_it_cannot_merge(tmp_path, capsys):
    compare(methods("rule"), run, out=tmp_path / "one", identity={"epochs": 1})
    compare(methods("readout"), run, out=tmp_path / "three", identity={"epochs": 3})
    with pytest.raises(CliError, match=r"three was run with other settings than .*one \(epochs: 1 -> 3\)"):
        merge_trials(tmp_path / "all", [tmp_path / "one", tmp_path / "three"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError, match="empty holds no results.json"):
        merge_trials(tmp_path / "all", [tmp_path / "empty"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text('{"rows": []}')
    with pytest.raises(CliError, match="no 'identity' and 'trials'"):
        merge_trials(tmp_path / "all", [tmp_path / "other"])
    before = (tmp_path / "one" / "results.json").read_text()
    assert main([str(tmp_path / "one"), str(tmp_path / "one")]) == 2  # the output already holds a comparison
    assert "already holds a comparison" in capsys.readouterr().err
    assert (tmp_path / "one" / "results.json").read_text() == before
    assert not (tmp_path / "all").exists()
