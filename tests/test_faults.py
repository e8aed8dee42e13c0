"""Fault injection: damaged files, kill -9 and --resume, two runs on one folder, SIGTERM, unwritable or full output
folders, non-finite numbers in results.  Each case asserts a clear one-line error (or an identical result) within
a bounded time and that no file is lost, half-written or left behind.  Run alone with ``pytest -m faults``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ghl_snn.datasets.events import NMNIST, EventDataError, MissingEventData, encode_nmnist, frame_transform
from ghl_snn.comparison import guard
from ghl_snn.experiments import cifar
from ghl_snn.comparison.common import write_json
from ghl_snn.comparison.runner import FRESH, RESUME, SKIP, RunExists, plan_run, plot_curves, save_checkpoint

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]
#: a quick-start-like multi-method run: digits, two methods, two epochs, a narrow network
TINY = ["--preset", "quickstart", "--methods", "ghl,bp", "--epochs", "2", "--width", "0.0625", "--batch-size", "64",
        "--train-subset", "256", "--test-subset", "64", "--device", "cpu"]


def child_env() -> dict[str, str]:
    # the weight-gradient kernel is timed per process: off, so that two processes compute to the same bit
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "GHL_SNN_AUTOTUNE": "0"}


def start_cifar(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ghl_snn.experiments.cifar", *TINY, "--out", str(out), *extra],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_error_line(text: str) -> str:
    """The one line left on a terminal (progress bars end in a carriage return and are overwritten)."""
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


# ---------------------------------------------------------------------------------------------- damaged files
def nmnist_folder(root: Path) -> Path:
    for digit in range(2):
        path = root / "NMNIST" / "Train" / str(digit) / "00000.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_nmnist(np.arange(6) % 34, np.arange(6) % 34, np.arange(6) * 100, np.arange(6) % 2))
    return root


def _raise_event_error(path: str) -> None:
    raise EventDataError(path, "truncated N-MNIST recording")


def test_event_errors_pickle_and_cross_a_process_pool():
    for error in (EventDataError("/d/1.bin", "truncated"), MissingEventData("/d", "folder not found")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.path == error.path
    # a process pool pickles the worker's exception; an unpicklable one used to leave the caller waiting forever
    with mp.get_context("fork").Pool(1) as pool:
        pending = pool.apply_async(_raise_event_error, ("/data/NMNIST/Train/3/00042.bin",))
        with pytest.raises(EventDataError, match="00042.bin: truncated"):
            pending.get(timeout=60)


@pytest.mark.parametrize("damage", [b"", b"\x01\x02\x03", b"\xff" * 10])
def test_corrupt_event_file_in_a_dataloader_worker_is_one_named_line(tmp_path, damage):
    root = nmnist_folder(tmp_path)
    dataset = NMNIST(root, train=True, transform=frame_transform(NMNIST.sensor_size, n_time_bins=2))
    bad = root / "NMNIST" / "Train" / "1" / "00000.bin"
    bad.write_bytes(damage)  # damaged after indexing, so the worker meets it
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1, timeout=60)
    started = time.monotonic()
    with pytest.raises(EventDataError) as caught:
        list(loader)
    assert time.monotonic() - started < 60
    line = guard.one_line(caught.value)
    assert str(bad) in line and "\n" not in line
    assert any(word in line for word in ("empty", "truncated", "outside the sensor"))


def write_digits_tree(root: Path, per_class: int = 2) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for label in range(10):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = np.full((32, 32, 3), 20 * label + k, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.jpg", quality=90)
    return root


def test_truncated_jpeg_is_named_in_one_line(tmp_path, capsys):
    root = write_digits_tree(tmp_path / "cifar10-jpeg")
    bad = root / "train" / "c3" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    code = cifar.cli_main(["--preset", "deephebb-cifar10-ghl", "--epochs", "1", "--width", "0.05", "--batch-size", "4",
                       "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(bad) in line and "cannot decode" in line


def write_idx(path: Path, magic: int, dims: list[int], payload: bytes) -> None:
    import struct

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_idx_file_is_named(tmp_path, damage):
    from ghl_snn.datasets.mnist import load_mnist

    raw = tmp_path / "MNIST" / "raw"
    for prefix, count in (("train", 4), ("t10k", 2)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, [count, 28, 28], bytes(count * 784))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, [count], bytes(count))
    bad = raw / "train-images-idx3-ubyte"
    bad.write_bytes(b"" if damage == "empty" else bad.read_bytes()[:100])
    with pytest.raises((ValueError, OSError)) as caught:
        load_mnist(tmp_path, train=True)
    assert "train-images-idx3-ubyte" in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- runs and resume
def run_state(out: Path) -> dict[str, object]:
    """Everything that must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    state = {}
    for method in ("ghl", "bp"):
        run = out / "quickstart" / method / "seed0"
        checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
        state[method] = {"weights": checkpoint["model"], "epoch": checkpoint["epoch"],
                         "accs": [row["test_acc"] for row in checkpoint["history"]],
                         "final": json.loads((run / "results.json").read_text())["final_test_acc"]}
    return state




def test_kill_9_at_a_random_point_then_resume_gives_the_uninterrupted_result(tmp_path, one_thread, no_autotune,
                                                                             capsys):
    started = time.monotonic()
    assert cifar.cli_main([*TINY, "--out", str(tmp_path / "straight")]) == 0
    training = time.monotonic() - started
    delay = random.Random().uniform(0.5, 4.0 + 1.5 * training)  # the child also imports torch first
    victim = start_cifar(tmp_path / "killed")
    try:
        victim.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    capsys.readouterr()
    assert cifar.cli_main([*TINY, "--out", str(tmp_path / "killed"), "--resume"]) == 0, \
        f"resume after kill -9 at {delay:.1f}s failed: {capsys.readouterr().err}"
    a, b = run_state(tmp_path / "straight"), run_state(tmp_path / "killed")
    for method in ("ghl", "bp"):
        assert a[method]["accs"] == b[method]["accs"] and a[method]["final"] == b[method]["final"], delay
        assert all(torch.equal(a[method]["weights"][k], b[method]["weights"][k]) for k in a[method]["weights"])
    assert not leftovers(tmp_path / "killed"), f"temporary files left after kill -9 at {delay:.1f}s"
    # a finished run is neither retrained nor overwritten without --force
    capsys.readouterr()
    assert cifar.cli_main([*TINY, "--out", str(tmp_path / "killed")]) == 0
    assert capsys.readouterr().out.count("not retrained") == 2
    assert run_state(tmp_path / "killed")["ghl"]["final"] == b["ghl"]["final"]


def test_second_run_on_one_folder_is_refused_and_sigterm_keeps_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    first = start_cifar(out, "--epochs", "200")
    lock = out / "quickstart" / guard.LOCK_NAME
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert lock.is_file(), first.communicate()[1]
    started = time.monotonic()
    assert cifar.cli_main([*TINY, "--epochs", "200", "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"pid {first.pid}" in line and "in use" in line and time.monotonic() - started < 30
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "SIGTERM" in err and "--resume" in err
    checkpoint = out / "quickstart" / "ghl" / "seed0" / "checkpoint.pt"
    if checkpoint.is_file():  # whatever epoch it reached, the checkpoint is whole
        assert torch.load(checkpoint, weights_only=False)["epoch"] >= 1
    assert not leftovers(out) and not lock.exists()
    # the lock is free again; a rerun without --resume refuses to overwrite a half-finished run
    if checkpoint.is_file():
        assert cifar.cli_main([*TINY, "--epochs", "200", "--out", str(out)]) == 2
        assert "--resume" in one_error_line(capsys.readouterr().err)


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / guard.LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "started": "long ago"}))
    with guard.RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / guard.LOCK_NAME).exists()


def test_unwritable_output_folder_is_refused_before_any_decoding(tmp_path, capsys, monkeypatch):
    decoded = []
    monkeypatch.setattr(cifar, "load_data", lambda *a, **k: decoded.append(1))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cifar.cli_main([*TINY, "--out", str(blocker / "out")]) == 2
    assert "not writable" in one_error_line(capsys.readouterr().err)
    if os.geteuid() != 0:  # root ignores permissions
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o555)
        assert cifar.cli_main([*TINY, "--out", str(readonly)]) == 2
        assert "not writable" in one_error_line(capsys.readouterr().err)
    monkeypatch.setattr(guard.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1024})())
    assert cifar.cli_main([*TINY, "--out", str(tmp_path / "full")]) == 2
    assert "MiB free" in one_error_line(capsys.readouterr().err)
    assert not decoded


def test_disk_full_during_a_save_keeps_the_last_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    save_checkpoint(target, {"epoch": 1})

    def full(state, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="cannot write .*checkpoint.pt"):
        save_checkpoint(target, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(target, weights_only=False) == {"epoch": 1}
    assert not leftovers(tmp_path)


def test_plan_run_decides_skip_resume_fresh_or_refuses(tmp_path):
    identity = {"lr": 0.1}
    assert plan_run(tmp_path, 2, identity) == FRESH
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    write_json(tmp_path / "config.json", {"run_identity": identity})
    with pytest.raises(RunExists, match="unfinished .*--resume"):
        plan_run(tmp_path, 2, identity)
    assert plan_run(tmp_path, 2, identity, resume=True) == RESUME
    assert plan_run(tmp_path, 2, identity, force=True) == FRESH
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 2})
    write_json(tmp_path / "results.json", {"final_test_acc": 0.5})
    assert plan_run(tmp_path, 2, identity) == SKIP and plan_run(tmp_path, 2, identity, resume=True) == SKIP
    with pytest.raises(RunExists, match=r"other settings \(lr: 0.1 -> 0.2\)"):
        plan_run(tmp_path, 2, {"lr": 0.2})
    assert plan_run(tmp_path / "elsewhere", 2, identity, resume=True) == FRESH  # --resume starts what has none


def test_results_are_strict_json_and_one_epoch_curves_are_visible(tmp_path):
    write_json(tmp_path / "results.json", {"acc": float("nan"), "rows": [1.0, float("inf")]})
    text = (tmp_path / "results.json").read_text()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}")) == \
        {"acc": None, "rows": [1.0, None]}
    plot_curves(tmp_path / "curves.png", [{"epoch": 1, "train_acc": 0.5, "test_acc": 0.4, "train_loss": 1.0,
                                           "test_loss": 1.2}])
    import matplotlib.image

    pixels = matplotlib.image.imread(tmp_path / "curves.png")[..., :3]
    blue = np.array([31, 119, 180]) / 255  # matplotlib's first line colour: the one-point curve's marker
    assert (np.abs(pixels - blue).max(axis=-1) < 0.05).sum() > 10


def test_event_data_sets_accept_their_own_folder_as_root(tmp_path):
    root = nmnist_folder(tmp_path)
    assert NMNIST(root / "NMNIST", train=True).data == NMNIST(root, train=True).data
    with pytest.raises(MissingEventData, match="NMNIST/, or NMNIST/ itself"):
        NMNIST(tmp_path / "elsewhere", train=True)


def test_exploding_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    from ghl_snn.comparison.runner import Trainer, TrainingDiverged, fit

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = Trainer(model, optimizer)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(4)]

    def epochs(epoch):
        if epoch == 1:  # the second epoch blows the weights up while the loss stays finite
            optimizer.param_groups[0]["lr"] = 1e9
        return iter(batches)

    with pytest.raises(TrainingDiverged, match=r"exploded .*bound 1e\+06.*epoch 2.*last good checkpoint"):
        fit(trainer, epochs, lambda: iter(batches), 3, tmp_path, {})
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and all(v.abs().max() < 10 for v in state["model"].values())


def test_scratch_folders_of_killed_ranks_are_removed_by_the_next_run(tmp_path):
    import tempfile

    from ghl_snn.comparison.distributed import DistContext, finish_rank, rank_out_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = Path(tempfile.mkdtemp(prefix=f"ghl_rank1_{int(dead.stdout)}_"))
    (orphan / "checkpoint.pt").write_bytes(b"x")
    scratch = rank_out_dir(tmp_path, DistContext(rank=1, world_size=2))
    try:
        assert not orphan.exists() and scratch.is_dir() and scratch != tmp_path
    finally:
        finish_rank(scratch, tmp_path)
    assert not scratch.exists()
