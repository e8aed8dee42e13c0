"""benchmarks/model_zoo.py measures what it reports: a torchvision model with grouped / depthwise convolutions
constructs, steps, and every plastic weight receives an eligibility; a model that cannot step is reported."""
import importlib.util
import pathlib

import pytest

pytest.importorskip("torchvision")
SPEC = importlib.util.spec_from_file_location(
    "model_zoo", pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "model_zoo.py")
model_zoo = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(model_zoo)


def test_mobilenet_row_covers_every_plastic_weight():
    row = model_zoo.measure("mobilenet_v3_small", batch_size=2, repeats=1)
    assert row["step"] == "ok" and row["skipped"] == 0 and row["silent"] == 0
    assert row["E received %"] == 100.0 and row["plastic weights"] == 54
    assert 99.0 < row["plastic % of params"] < 100.0  # biases and BatchNorm stay on backprop
    assert row["GHL/BP"] > 0


def test_failures_are_reported_in_the_row():
    row = model_zoo.measure("squeezenet1_1", batch_size=2, repeats=1, image_size=8)  # too small for its pooling
    assert row["step"].startswith("failed: RuntimeError")


def test_inception_uses_its_training_minimum():
    assert model_zoo.min_input_size("inception_v3") == 299
    assert model_zoo.min_input_size("resnet18") == 32


def test_retain_allocator_reruns_the_script_with_the_glibc_settings():
    """``--allocator retain`` re-executes the script with the malloc settings, and the summary says which ran."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, SPEC.origin, "--models", "squeezenet1_1", "--repeats", "1",
                           "--allocator", "retain"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "allocator: retain" in done.stdout and "| squeezenet1_1 |" in done.stdout


def test_min_side_raises_the_input_but_keeps_larger_minimums():
    small = model_zoo.measure("squeezenet1_1", batch_size=1, repeats=1, min_side=48)
    assert small["input"] == "1x3x48x48" and small["step"] == "ok"
    assert model_zoo.measure("inception_v3", batch_size=1, repeats=1, image_size=64)["input"].endswith("299x299")


def test_ratio_is_of_the_medians_and_the_range_spans_the_repeats(monkeypatch):
    """GHL/BP is median(GHL) / median(BP); the range column holds the smallest and largest ratio of one repeat's
    interleaved pair (timings scripted here: BP 1, 2, 4 and GHL 1.5, 2.4, 4.4 CPU seconds)."""
    times = iter([1.0, 1.5, 2.0, 2.4, 4.0, 4.4])
    monkeypatch.setattr(model_zoo, "timed", lambda fn: next(times))
    row = model_zoo.measure("squeezenet1_1", batch_size=1, repeats=3)
    assert row["BP CPU s"] == 2.0 and row["GHL CPU s"] == 2.4 and row["GHL/BP"] == pytest.approx(1.2)
    assert row["GHL/BP range"] == "1.10–1.50"
