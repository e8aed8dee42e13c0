"""Every experiment command line refuses bad input in one line with exit code 2, before any work.

For each CLI: bad counts (0 / negative), learning rates <= 0, an unknown device (and ``cuda`` without a GPU), and a
wrong data root give exactly one line on stderr (no traceback), exit code 2 and no output folder; every option has a
help text.  The CLIs are called in-process (``cli_main(argv) -> exit code``); one subprocess checks ``-m``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghl_snn.experiments import equivalence, events, ghl_vs_sign, hebbff, hebbff_equivalence, mnist_snn

#: name -> (module, command-line entry point, arguments every call needs, bad values, data set searched or None)
CLIS = {
    "mnist_snn": (mnist_snn, mnist_snn.cli_main, [],
                  [["--epochs", "0"], ["--hidden", "-3"], ["--seeds", "0"], ["--batch-size", "0"],
                   ["--train-subset", "0"], ["--lrs-sign", "0.01", "0"], ["--lrs-grad", "-0.1"], ["--tau", "0"],
                   ["--threads", "0"]], "MNIST"),
    "events": (events, events.cli_main, ["--preset", "nmnist-small"],
               [["--epochs", "0"], ["--batch-size", "-1"], ["--time-bins", "0"], ["--lr-grad", "0"],
                ["--lr-feedback", "-1e-3"], ["--lr-bptt", "nan"], ["--beta", "1.5"], ["--threads", "0"],
                ["--preset", "mnist"]], "nmnist"),
    "hebbff": (hebbff, hebbff.cli_main, ["--methods", "bp"],
               [["--epochs", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--lr-grid", "0.1", "-1"],
                ["--val-fraction", "1"], ["--hidden", "0"], ["--train-limit", "-5"], ["--init-gain", "-1"]],
               "MNIST"),
    "equivalence": (equivalence, equivalence.cli_main, [],
                    [["--steps", "10", "0"], ["--seeds", "0"], ["--tau", "-1"], ["--threads", "0"],
                     ["--networks", "mlp"]], None),
    "hebbff_equivalence": (hebbff_equivalence, hebbff_equivalence.cli_main, [],
                           [["--steps", "-10"], ["--seeds", "0"], ["--threads", "0"]], None),
    "ghl_vs_sign": (ghl_vs_sign, ghl_vs_sign.cli_main, [],
                    [["--epochs", "0"], ["--monitor-every", "-1"], ["--seeds", "0"],
                     ["--methods", "ghl,nope"]], "cifar10"),
}
HAS_DEVICE = ("mnist_snn", "events", "hebbff", "ghl_vs_sign")


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """Assert exit code 2 and exactly one line on stderr without a traceback; return that line."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err and "error" in lines[0]
    return lines[0]


def call(entry, argv: list[str]) -> int:
    try:
        return entry(argv)
    except SystemExit as stop:  # the Python entry points may exit instead of returning
        return stop.code if isinstance(stop.code, int) else 1


def bad_cases() -> list[tuple[str, list[str]]]:
    cases = [(name, bad) for name, spec in CLIS.items() for bad in spec[3]]
    for name in HAS_DEVICE:
        cases.append((name, ["--device", "tpu"]))
        if not torch.cuda.is_available():
            cases.append((name, ["--device", "cuda"]))
        else:
            cases.append((name, ["--device", f"cuda:{torch.cuda.device_count()}"]))
    return cases


@pytest.mark.parametrize("name,bad", bad_cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_value_is_one_line_and_exit_code_2(name: str, bad: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, entry, needed, _, _ = CLIS[name]
    out = tmp_path / "out"
    code = call(entry, [*needed, "--out", str(out), *bad])
    line = one_line_error(capsys, code)
    assert bad[0] in line  # the message names the option
    if bad[:2] == ["--device", "cuda"]:
        assert "CUDA requested but not available" in line
    assert not out.exists()  # refused before anything was written (or decoded)


@pytest.mark.parametrize("name", [n for n, spec in CLIS.items() if spec[4] is not None])
def test_wrong_data_root_names_the_folder_and_the_layouts(name: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, entry, needed, _, dataset = CLIS[name]
    wrong = tmp_path / "not-the-data"
    (wrong / "something-else").mkdir(parents=True)
    code = call(entry, [*needed, "--data-root", str(wrong), "--out", str(tmp_path / "out"), "--device", "cpu"])
    line = one_line_error(capsys, code)
    assert f"{dataset} data not found" in line or f"{dataset} not found" in line
    assert f"under {wrong}" in line  # the folder searched
    assert "holding the data sets" in line and "folder itself" in line  # both accepted layouts
    assert not (tmp_path / "out").exists()  # refused before the output folder was touched


@pytest.mark.parametrize("name", list(CLIS))
def test_every_option_has_help_text(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = CLIS[name][0]
    parser = module.build_parser()
    missing = [action.option_strings[0] for action in parser._actions
               if action.option_strings and not (action.help or "").strip()]
    assert not missing, f"options without help text: {missing}"
    assert isinstance(parser, argparse.ArgumentParser)
    assert call(CLIS[name][1], ["--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    for block in text.split("\n  -")[1:]:  # each option's help mentions its default at most once
        assert block.count("(default") <= 1, block
    description = parser.description.strip()
    assert description.endswith((".", ":", ")")), f"description cut mid-sentence: {description[-60:]!r}"


def test_module_entry_point_exits_2_with_one_line(tmp_path: Path) -> None:
    """``python -m ...`` goes through the same checks (exit code of the process, one line on stderr)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "ghl_snn.experiments.hebbff", "--epochs", "0",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--epochs" in done.stderr
    assert not (tmp_path / "out").exists()


def fake_data_root(root: Path) -> Path:
    """Folder names (and empty files) that pass every CLI's data-root check; nothing here can be decoded."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            (raw / f"{split}-{kind}").touch()
    (root / "NMNIST" / "Train" / "0").mkdir(parents=True)
    (root / "NMNIST" / "Test" / "0").mkdir(parents=True)
    for split in ("train", "test"):
        (root / "cifar10-jpeg" / split / "airplane").mkdir(parents=True)
    return root


@pytest.mark.parametrize("name", list(CLIS))
def test_output_folder_guard(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder in use by another run and an unwritable folder are refused in one line (exit code 2)."""
    from ghl_snn.comparison.guard import RunLock

    _, entry, needed, _, dataset = CLIS[name]
    data = ["--data-root", str(fake_data_root(tmp_path / "data"))] if dataset is not None else []
    out = tmp_path / "busy"
    with RunLock(out):
        code = call(entry, [*needed, *data, "--out", str(out)])
        line = one_line_error(capsys, code)
    assert "is in use by pid" in line and str(os.getpid()) in line
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written by the refused run (the lock is gone)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = call(entry, [*needed, *data, "--out", str(blocker / "out")])
    assert "not writable" in one_line_error(capsys, code)


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM during a run: exit code 130, one line saying what to do, the folder's lock released."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "ghl_snn.experiments.equivalence", "--steps", "1000",
                                "--seeds", "100", "--out", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert (out / "config.json").exists(), "the run did not start"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "SIGTERM" in err and "rerun the same command" in err and "Traceback" not in err
    assert "--resume" not in err  # this experiment keeps no checkpoints
    assert not (out / ".ghl_snn.lock").exists()


@pytest.mark.parametrize("name,work", [("mnist_snn", "run_sweep"), ("events", "run_methods"),
                                       ("hebbff", "run_and_print")])
def test_the_command_line_parses_its_options_once(name: str, work: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line checks the options and the data, then runs the work on the options it parsed (it does not
    parse them a second time)."""
    module, entry, needed, _, _ = CLIS[name]
    parsers, received = [], []
    build_parser = module.build_parser
    monkeypatch.setattr(module, "build_parser", lambda: parsers.append(1) or build_parser())
    monkeypatch.setattr(module, work, lambda args, *rest: received.append(args))
    out = tmp_path / "out"
    code = call(entry, [*needed, "--data-root", str(fake_data_root(tmp_path / "data")), "--out", str(out)])
    assert code == 0 and len(parsers) == 1
    assert len(received) == 1 and Path(received[0].out) == out
