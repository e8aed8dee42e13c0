"""Every script in examples/ runs (with small sizes) and reaches its documented outcome, so none can rot.

Each example is loaded with ``runpy`` (not as ``__main__``) and its ``main(argv)`` is called in this process, which
shares one torch import across the five scripts.  The scripts assert their own outcome too; the checks here
repeat the essential ones on the returned values.
"""
from __future__ import annotations

import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_main(name: str) -> Callable[[list[str]], Any]:
    namespace = runpy.run_path(str(EXAMPLES / name), run_name=f"example_{Path(name).stem}")
    return namespace["main"]


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_example_is_tested() -> None:
    tested = {"01_resnet18_plugin.py", "02_custom_rule.py", "03_custom_modulator.py",
              "04_online_spiking_mnist.py", "05_equivalence_check.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_resnet18_plugin_rewrites_only_selected_layers() -> None:
    result = load_main("01_resnet18_plugin.py")(["--steps", "2", "--batch-size", "4"])
    assert result["rewritten"] == ["layer4.0.conv1.weight", "layer4.0.conv2.weight", "layer4.1.conv1.weight",
                                   "layer4.1.conv2.weight"]
    assert len(result["losses"]) == 2


def test_custom_oja_rule_trains() -> None:
    result = load_main("02_custom_rule.py")(["--epochs", "2"])
    assert result["last_loss"] < result["first_loss"]
    assert result["final_accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_custom_reward_modulator_learns_in_spiking_network() -> None:
    result = load_main("03_custom_modulator.py")(["--batches", "100"])
    assert result["final_accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert 0.3 < result["baseline"] <= 1.0  # the running baseline tracked the reward


def test_online_spiking_mnist_snntorch_then_norse() -> None:
    result = load_main("04_online_spiking_mnist.py")(
        ["--train", "512", "--test", "200", "--hidden", "64", "--steps", "8"])
    for library in ("snntorch", "norse"):
        assert result[library]["final_accuracy"] > 0.2, result  # 10 classes: chance is 0.1
        assert result[library]["last_loss"] < result[library]["first_loss"]


def test_equivalence_check_converges_with_T() -> None:
    rows = load_main("05_equivalence_check.py")(["--steps", "10", "200"])["rows"]
    for layer in {r["layer"] for r in rows}:
        short, long = [r for r in rows if r["layer"] == layer]
        assert long["E rel. err"] < short["E rel. err"]
        assert long["E cos"] > 0.99
