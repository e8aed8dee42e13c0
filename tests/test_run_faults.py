"""A run's identity, --resume / --force, orphaned workers and divergence in every training command.

* ``--resume`` and the finished-run skip compare the stored settings first: a changed run is refused with one line
  naming every differing setting (exit 2), ``--force`` retrains it; ``--resume`` starts what has no checkpoint.
* ``kill -9`` of a command leaves no worker behind (the spawned training process dies with its parent), at three
  moments of each training command; ``--resume`` then finishes with the uninterrupted run's results (weights,
  per-epoch metrics, hebbff's grid record).
* Divergence is one behaviour: exit 3, one line naming the last good checkpoint.

Every command runs on tiny data the test writes itself.  Run alone with ``pytest -m faults``.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ghl_snn.datasets.events import encode_nmnist
from ghl_snn.comparison import guard
from ghl_snn.experiments import cifar, events, hebbff, mnist_snn
from ghl_snn.comparison.runner import RunExists, plan_run

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]
CIFAR = ["--preset", "quickstart", "--methods", "ghl,bp", "--epochs", "2", "--width", "0.0625", "--batch-size", "64",
         "--train-subset", "192", "--test-subset", "64", "--device", "cpu"]


# ---------------------------------------------------------------------------------------------- tiny data
def _write_idx(path: Path, array: torch.Tensor, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.numpy().astype("uint8").tobytes())


def fake_mnist(root: Path, n_train: int = 120, n_test: int = 30) -> Path:
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = (torch.rand(n, 28, 28, generator=generator) * 60).to(torch.uint8)
        for k in range(n):  # class-dependent bright rows: learnable
            images[k, 2 * int(labels[k]):2 * int(labels[k]) + 3] = 255
        _write_idx(root / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", images, 0x803)
        _write_idx(root / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", labels, 0x801)
    return root


def fake_nmnist(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, per_digit in (("Train", 3), ("Test", 1)):
        for digit in range(3):
            for index in range(per_digit):
                n = 300
                x = 3 * digit + 4 + rng.integers(0, 2, n)
                path = root / "NMNIST-small" / "NMNIST" / split / str(digit) / f"{index}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_nmnist(x, rng.integers(4, 30, n), np.sort(rng.integers(0, 90_000, n)),
                                               rng.integers(0, 2, n)))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    fake_mnist(root)
    fake_nmnist(root)
    return root


def mnist_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(data), "--out", str(out), "--methods", "grad_sign", "--hidden", "16", "--steps", "3",
            "--epochs", "2", "--train-subset", "64", "--val-size", "32", "--test-subset", "30", "--batch-size", "16",
            "--eval-batch-size", "32", "--lrs-sign", "0.01", "0.03", "--lr-ratios", "1", "--max-extensions", "1",
            "--seeds", "1", "--quiet", *extra]


def events_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--preset", "nmnist-small", "--data-root", str(data), "--out", str(out), "--methods",
            "grad_sign", "feedback_sign", "--batch-size", "3", "--feedback-batch-size", "3",
            "--time-bins", "2", "--epochs", "2", "--quiet", *extra]


def hebbff_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--preset", "deep-mnist", "--methods", "hebbff", "--epochs", "2", "--batch-size", "20", "--lr-grid",
            "0.01", "0.03", "--theta-grid", "0.05", "--hidden", "16", "--data-root", str(data), "--out", str(out),
            "--quiet", *extra]


def one_error_line(text: str) -> str:
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    lines = [line for line in lines if line.strip() and not line.startswith(("grid", "deep-mnist"))]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


# ---------------------------------------------------------------------------------------------- identity
def test_identity_changes_name_every_nested_setting():
    from ghl_snn.comparison.runner import identity_changes

    stored = {"method": "ghl", "preset": {"lr": 0.1, "tau": 1.0, "sizes": (1, 2)}}
    assert identity_changes(stored, {"method": "ghl", "preset": {"lr": 0.1, "tau": 1.0, "sizes": [1, 2]}}) == []
    changes = identity_changes(stored, {"method": "ghl", "preset": {"lr": 0.5, "tau": 0.1, "sizes": [1, 2]}})
    assert changes == ["preset.lr: 0.1 -> 0.5", "preset.tau: 1.0 -> 0.1"]


def test_plan_run_refuses_a_changed_run_with_and_without_resume(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"run_identity": {"lr": 0.1, "momentum": 0.9}}))
    torch.save({"epoch": 1}, tmp_path / "checkpoint.pt")
    for resume in (False, True):
        with pytest.raises(RunExists, match=r"lr: 0.1 -> 0.5; momentum: 0.9 -> 0.5"):
            plan_run(tmp_path, 2, {"lr": 0.5, "momentum": 0.5}, resume=resume)
    assert plan_run(tmp_path, 2, {"lr": 0.1, "momentum": 0.9}, resume=True) == "resume"
    assert plan_run(tmp_path, 2, {"lr": 0.5, "momentum": 0.5}, force=True) == "fresh"


def test_cifar_resume_refuses_changed_settings_naming_each(tmp_path, capsys, one_thread):
    out = str(tmp_path / "q")
    assert cifar.cli_main([*CIFAR, "--methods", "ghl", "--epochs", "1", "--out", out]) == 0
    capsys.readouterr()
    for extra in (["--resume"], []):
        assert cifar.cli_main([*CIFAR, "--methods", "ghl", "--epochs", "1", "--out", out, "--lr", "0.5", "--tau", "0.1",
                           *extra]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "preset.lr" in line and "-> 0.5" in line and "preset.tau" in line and "--force" in line, line
    assert cifar.cli_main([*CIFAR, "--methods", "ghl", "--epochs", "1", "--out", out, "--lr", "0.5", "--tau", "0.1",
                       "--force"]) == 0
    config = json.loads((tmp_path / "q" / "quickstart" / "ghl" / "seed0" / "config.json").read_text())
    assert config["run_identity"]["preset"]["lr"] == 0.5


def test_cifar_divergence_is_exit_3_in_one_line(tmp_path, capsys, one_thread):
    assert cifar.cli_main([*CIFAR, "--methods", "ghl", "--out", str(tmp_path), "--lr", "1e6"]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "checkpoint" in line and ("non-finite" in line or "exploded" in line or "loss became" in line), line


def test_a_learner_guard_during_training_stops_the_run_with_exit_3_and_the_last_good_checkpoint(tmp_path, capsys):
    """A learner's ``FloatingPointError`` (non-finite dL/dW, eligibility or modulator signal with a finite loss) is
    divergence like a non-finite loss: one line naming the last good checkpoint, exit 3."""
    from torch import nn

    from ghl_snn.comparison.runner import Trainer, fit

    class Poisoned:  # a learner whose guard fires in the second epoch
        calls = 0

        def step(self) -> None:
            self.calls += 1
            if self.calls == 3:
                raise FloatingPointError("GHL.step(): non-finite modulator signal for plastic weight '0'")

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), rule=Poisoned(), progress=False)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))

    def train(epoch):
        return [(x[:4], y[:4]), (x[4:], y[4:])]

    code = guard.run_guarded(lambda: fit(trainer, train, lambda: [(x, y)], 3, tmp_path, {}) and 0, out=tmp_path)
    line = one_error_line(capsys.readouterr().err)
    assert code == guard.EXIT_DIVERGED and "non-finite modulator signal" in line and "epoch 2, step 1" in line
    assert "last good checkpoint" in line and torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1


@pytest.mark.slow
def test_mnist_snn_identity_force_and_divergence(data, tmp_path, capsys):
    out = tmp_path / "m"
    args = mnist_args(data, out, "--lrs-sign", "0.01", "--epochs", "1")
    assert mnist_snn.cli_main(args) == 0
    capsys.readouterr()
    for change in (["--momentum", "0.5"], ["--hidden", "8"], ["--tau", "1.0"]):
        assert mnist_snn.cli_main(args + change + ["--resume"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert change[0].lstrip("-") in line and "--force" in line, line
    assert mnist_snn.cli_main(args + ["--momentum", "0.5", "--force"]) == 0
    capsys.readouterr()
    # a sweep whose every learning rate diverges stops the command: exit 3, one line
    assert mnist_snn.cli_main(mnist_args(data, tmp_path / "d", "--methods", "rate_sgd", "--lrs-grad", "1e12",
                                         "--epochs", "1")) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "diverged" in line and "rate_sgd" in line


def test_events_resume_starts_methods_without_a_checkpoint_and_refuses_changed_ones(data, tmp_path, capsys):
    out = tmp_path / "e"
    rows = events.main(events_args(data, out, "--methods", "grad_sign", "--epochs", "1", "--resume") + ["--no-isolate"])
    assert len(rows[0]["metrics"]) == 1
    assert events.cli_main(events_args(data, out, "--methods", "grad_sign", "--epochs", "1", "--resume",
                                       "--lr-grad", "0.5")) == 2
    assert "lr_grad" in one_error_line(capsys.readouterr().err)


def test_every_training_command_has_the_common_options_and_one_methods_spelling(capsys):
    """One grammar: every training command's ``--help`` lists the common options and ``--methods``, and
    ``--methods`` takes space-separated names (commas accepted too) checked against the method registry."""
    from ghl_snn.experiments import (cifar_compare, competition, events_cv, ghl_vs_sign, imagenet,
                                     mnist_snn_compare, recurrent, reward)
    common = ("--data-root", "--out", "--device", "--seeds", "--epochs", "--resume", "--force", "--threads",
              "--quiet", "--methods")
    for module in (cifar, imagenet, mnist_snn, events, events_cv, hebbff, recurrent, ghl_vs_sign, reward,
                   competition, cifar_compare, mnist_snn_compare):
        assert module.cli_main(["--help"]) == 0, module.__name__
        text = capsys.readouterr().out
        missing = [option for option in common if option not in text]
        assert not missing, f"{module.__name__} lacks {missing}"
    assert cifar.parse_args(["--methods", "ghl", "bp,sign_only"]).methods == ["ghl", "bp", "sign_only"]
    assert cifar.cli_main(["--methods", "ghl", "adam"]) == 2
    assert "--methods: unknown method(s) ['adam']" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- kill -9
def child_env() -> dict[str, str]:
    # the weight-gradient kernel is timed per process: off, so that every process computes to the same bit
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "GHL_SNN_AUTOTUNE": "0"}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def kill_when(command: list[str], ready: Callable[[], bool], timeout: float = 240, grace: float = 30.0) -> int:
    """Start ``command``, ``kill -9`` it as soon as ``ready()`` holds, and check that none of its processes
    outlives it by more than ``grace`` seconds; returns how many child processes it had.  (A worker that is still
    starting when its parent dies stops as soon as its start-up reaches the parent check, which on a busy machine
    can take seconds; one that is training dies at once: ``test_a_killed_command_leaves_no_worker_training``.)"""
    # stderr into a file, not a pipe: a surviving worker must not be stopped by a broken pipe when this test stops
    # reading (as its terminal would not stop it)
    errors = tempfile.TemporaryFile("w+")
    victim = subprocess.Popen([sys.executable, "-m", *command], env=child_env(), stdout=subprocess.DEVNULL,
                              stderr=errors, text=True)
    deadline = time.monotonic() + timeout
    while not ready():
        if victim.poll() is not None:
            errors.seek(0)
            pytest.fail(f"finished before the moment to kill it: {errors.read()[-2000:]}")
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    workers = children_of(victim.pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    errors.close()
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "a worker outlived its killed parent"
    return len(workers)


#: how long a spawned worker may outlive its killed parent (it dies with it; this is the time to be reaped)
ORPHAN_SECONDS = 3.0


@pytest.mark.parametrize("command", ["mnist_snn", "events", "hebbff"])
def test_a_killed_command_leaves_no_worker_training(data, tmp_path, command):
    """``kill -9`` of a command whose run has many epochs left: its spawned worker dies with it (an orphan would
    go on training and writing the checkpoint beside the next run)."""
    out = tmp_path / "out"
    args, checkpoint = {
        "mnist_snn": (mnist_args(data, out, "--epochs", "600", "--lrs-sign", "0.01"),
                      out / "grad_sign" / "lr0.01" / "seed0" / "checkpoint.pt"),
        "events": (events_args(data, out, "--epochs", "60", "--methods", "grad_sign"),
                   out / "grad_sign" / "checkpoint.pt"),
        "hebbff": (hebbff_args(data, out, "--epochs", "200", "--lr", "0.01"),
                   out / "deep-mnist" / "hebbff" / "checkpoint.pt"),
    }[command]
    assert kill_when([f"ghl_snn.experiments.{command}", *args], checkpoint.exists, grace=ORPHAN_SECONDS) > 0
    written = checkpoint.stat().st_mtime_ns
    time.sleep(2.0)  # a worker that survived would have written the next epoch's checkpoint by now
    assert checkpoint.stat().st_mtime_ns == written


def run_command(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *command], env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr


#: keys whose values legitimately differ between two runs (timing, memory, paths, flags of the command)
VOLATILE = ("time", "seconds", "peak", "per_s", "mib", "wall", "command", "args", "argv", "out", "run_dir",
            "resume", "force", "cache", "root", "elapsed")


def comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if not any(word in k for word in VOLATILE)}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"  # NaN equals NaN here (a metric that is undefined in both runs)
    return value


def assert_same_runs(straight: Path, resumed: Path) -> None:
    """Every checkpoint's weights and history, and every results file, equal (timing and paths aside)."""
    checkpoints = sorted(p.relative_to(straight) for p in straight.rglob("checkpoint.pt"))
    assert checkpoints and checkpoints == sorted(p.relative_to(resumed) for p in resumed.rglob("checkpoint.pt"))
    for path in checkpoints:
        a = torch.load(straight / path, weights_only=False)
        b = torch.load(resumed / path, weights_only=False)
        assert a["epoch"] == b["epoch"], path
        for key, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][key]), (path, key)
        assert comparable(a["history"]) == comparable(b["history"]), path
    results = sorted(p.relative_to(straight) for p in straight.rglob("results.json"))
    assert results == sorted(p.relative_to(resumed) for p in resumed.rglob("results.json"))
    for path in results:
        a, b = (json.loads((folder / path).read_text()) for folder in (straight, resumed))
        assert comparable(a) == comparable(b), path


def kill_three_times_then_resume(command: list[str], out: Path, straight: Path,
                                 moments: list[Callable[[], bool]], workers: bool = True) -> None:
    """``kill -9`` at each moment in turn (each later start with ``--resume``), then finish with ``--resume``;
    ``workers``: the command trains in spawned processes (some of which were killed with it)."""
    killed = [kill_when(command + (["--resume"] if index else []), moment) for index, moment in enumerate(moments)]
    assert not workers or sum(killed) > 0, "no worker was running at any of the moments"
    run_command(command + ["--resume"])
    assert not list(out.rglob(".*.tmp")), "temporary files of the killed runs left behind"
    assert_same_runs(straight, out)


def exists(path: Path) -> Callable[[], bool]:
    return path.exists


@pytest.mark.slow
def test_kill_9_at_three_moments_of_cifar_then_resume(tmp_path):
    out = tmp_path / "killed"
    run_command(["ghl_snn.experiments.cifar", *CIFAR, "--out", str(tmp_path / "straight")])
    run = out / "quickstart"
    kill_three_times_then_resume(
        ["ghl_snn.experiments.cifar", *CIFAR, "--out", str(out)], run, tmp_path / "straight" / "quickstart",
        [exists(run / guard.LOCK_NAME), exists(run / "ghl" / "seed0" / "checkpoint.pt"),
         exists(run / "ghl" / "seed0" / "results.json")], workers=False)


@pytest.mark.slow
def test_kill_9_at_three_moments_of_mnist_snn_then_resume(data, tmp_path):
    out = tmp_path / "killed"
    run_command(["ghl_snn.experiments.mnist_snn", *mnist_args(data, tmp_path / "straight")])
    first = out / "grad_sign" / "lr0.01" / "seed0"
    kill_three_times_then_resume(
        ["ghl_snn.experiments.mnist_snn", *mnist_args(data, out)], out, tmp_path / "straight",
        [exists(first / "config.json"), exists(first / "checkpoint.pt"), exists(first / "results.json")])


@pytest.mark.slow
def test_kill_9_at_three_moments_of_events_then_resume(data, tmp_path):
    out = tmp_path / "killed"
    run_command(["ghl_snn.experiments.events", *events_args(data, tmp_path / "straight")])
    first = out / "grad_sign"
    kill_three_times_then_resume(
        ["ghl_snn.experiments.events", *events_args(data, out)], out, tmp_path / "straight",
        [exists(first / "config.json"), exists(first / "checkpoint.pt"), exists(out / "results.json")])


@pytest.mark.slow
def test_kill_9_at_three_moments_of_hebbff_then_resume_keeps_the_grid_record(data, tmp_path):
    out = tmp_path / "killed"
    run_command(["ghl_snn.experiments.hebbff", *hebbff_args(data, tmp_path / "straight")])
    run = out / "deep-mnist" / "hebbff"
    kill_three_times_then_resume(
        ["ghl_snn.experiments.hebbff", *hebbff_args(data, out)], out, tmp_path / "straight",
        [exists(out / guard.LOCK_NAME), exists(run / hebbff.GRID_RECORD), exists(run / "checkpoint.pt")])
    grid = json.loads((run / "results.json").read_text())["grid"]
    # the grid record survives the kills: the same trials as the straight run (the two given, then the extension
    # past an edge the best value sits on)
    straight = json.loads((tmp_path / "straight" / "deep-mnist" / "hebbff" / "results.json").read_text())["grid"]
    assert {0.01, 0.03} <= {trial["lr"] for trial in grid} and grid == straight
