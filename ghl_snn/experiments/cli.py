"""What every experiment's command line shares: checked argument types, the common options (``--data-root``,
``--out``, ``--device``, ``--seed`` / ``--seeds``, ``--epochs``, ``--resume``, ``--force``, ``--threads``,
``--quiet``), one ``--methods a b c`` spelling, one entry-point style, the output folder's
guard (writable, free space, one run at a time, SIGTERM handled like Ctrl-C) and one-line errors with exit codes.

An experiment adopts it in a few lines::

    def parse_args(argv=None):
        parser = cli.parser("python -m ghl_snn.experiments.NAME", __doc__)
        cli.add_methods_argument(parser, METHODS, DEFAULT_METHODS)         # --methods a b c
        cli.add_common_arguments(parser, out_default="runs/NAME", data_help="the folder holding MNIST/")
        parser.add_argument("--hidden", type=cli.positive_int, default=256, help="hidden neurons")
        return parser.parse_args(argv)            # bad values: one line on stderr, exit code 2, nothing done yet

    def run(args): ...                            # the work, writing into args.out

    main, cli_main = cli.entry_points(parse_args, run, check=locate_the_data)

Exit codes: 0 done; 2 bad input (arguments, data, output folder, a run that would be overwritten or resumed
under other settings, a folder in use); 3 training diverged (a non-finite loss, gradient, eligibility or weight:
the last good checkpoint is kept); 130 interrupted (Ctrl-C or SIGTERM; checkpoints keep the last finished epoch).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..datasets.root import DATA_ENV

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
LOCK_NAME = ".ghl_snn.lock"


class CliError(Exception):
    """A problem the user can fix (bad value, missing data, output folder in use...): one line, exit code 2."""


# ---------------------------------------------------------------------------------------------------- parser
class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line (``prog: error: message (see --help)``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def plain_text(docstring: str | None) -> str | None:
    """A docstring as terminal text: documentation cross-references ``[`name`][target]`` become ``name``."""
    return None if docstring is None else re.sub(r"\[`([^`]+)`\]\[[^\]]*\]", r"\1", docstring)


def parser(prog: str, description: str | None, raw: bool = True) -> OneLineParser:
    """A ``OneLineParser`` that shows every option's default (once); ``raw``: the description as written (with
    documentation cross-references shown as plain names)."""
    return OneLineParser(prog=prog, description=plain_text(description),
                         formatter_class=RawDefaultsFormatter if raw else DefaultsFormatter)


class DefaultsFormatter(argparse.HelpFormatter):
    """``(default: X)`` appended to every option that has a default and does not already mention one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class RawDefaultsFormatter(DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """``DefaultsFormatter`` with the description kept as written."""


def _number(text: str, kind: type, test: Callable[[Any], bool], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not test(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, temperatures, widths)."""
    return _number(text, float, lambda v: 0 < v < float("inf"), "a finite number > 0")


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (weight decay, noise)."""
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    return _number(text, float, lambda v: 0 < v < 1, "a number in (0, 1)")


def list_of(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """argparse type: a comma-separated, non-empty list whose items pass ``item``."""
    def parse(text: str) -> list[Any]:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        return values
    parse.__name__ = f"list of {getattr(item, '__name__', 'values')}"
    return parse


def device_name(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused when not available here."""
    name = text.strip().lower()
    if name in ("auto", "cpu"):
        return name
    try:
        device = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError("CUDA requested but not available (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{name} requested but only {torch.cuda.device_count()} CUDA "
                                             "device(s) present")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError("MPS requested but not available (use --device cpu or auto)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def add_preset_arguments(parser: argparse.ArgumentParser, presets: dict[str, Any], default: str,
                         describe: Callable[[str, Any], str], help: str = "preset (see --list-presets)") -> None:
    """``--preset NAME`` (checked against ``presets`` when parsed) and ``--list-presets`` (prints
    ``describe(name, preset)`` for every preset and exits 0)."""
    def preset_name(text: str) -> str:
        if text not in presets:
            raise argparse.ArgumentTypeError(f"unknown preset {text!r}; see --list-presets")
        return text

    class ListPresets(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
            for name, preset in presets.items():
                print(describe(name, preset))
            parser.exit(0)

    parser.add_argument("--preset", type=preset_name, default=default, help=f"{help} (default: {default})")
    parser.add_argument("--list-presets", action=ListPresets, nargs=0, help="print every preset and exit")


class MethodsAction(argparse.Action):
    """``--methods a b c`` (items may also be comma-separated, ``a,b c``): a flat list without repeats, every item
    checked against ``self.choices_list``."""

    def __init__(self, option_strings: list[str], dest: str, choices_list: Any = (), **kwargs: Any) -> None:
        self.choices_list = choices_list
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        names = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
        known = self.choices_list() if callable(self.choices_list) else self.choices_list
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            parser.error(f"argument {option}: unknown method(s) {unknown}; choose from {', '.join(known)}")
        setattr(namespace, self.dest, list(dict.fromkeys(names)))


def add_methods_argument(parser: argparse.ArgumentParser, choices: Any, default: Any,
                         help: str = "methods (table rows) to run") -> None:
    """``--methods a b c``: the rows to run, from ``choices`` (a sequence, or a function returning one, so that
    methods registered later are accepted); the default is ``default`` (``None``: the preset's)."""
    listed = ", ".join(choices() if callable(choices) else choices)
    parser.add_argument("--methods", action=MethodsAction, choices_list=choices, metavar="METHOD",
                        default=None if default is None else list(default),
                        help=f"{help}, space-separated, from {listed}")


def add_common_arguments(parser: argparse.ArgumentParser, *, out_default: str,
                         data_help: str = "the folder holding the data sets", seeds_default: int | None = 1,
                         seeds_help: str = "number of seeds: seed, seed+1, ...", epochs_default: int | None = None,
                         epochs_help: str = "training epochs", threads_default: int | None = None,
                         amp: bool = False, out_layout: str = "", study: bool = False) -> None:
    """The options every training command shares, each checked when parsed: ``--data-root``, ``--out``,
    ``--device``, ``--seed`` / ``--seeds``, ``--epochs``, ``--resume``, ``--force``, ``--threads``, ``--quiet``
    (and ``--amp``).  ``None`` defaults mean "the preset's"; ``out_layout`` (e.g. ``" (runs in
    DIR/<preset>/seed<k>/)"``) completes ``--out``'s help.  ``study``: a one-seed CPU measurement without
    checkpoints (``alignment``) gets only ``--data-root``, ``--out``, ``--seed``, ``--force``, ``--threads`` and
    ``--quiet``."""
    parser.add_argument("--data-root", metavar="DIR",
                        help=f"{data_help}, or that data set's own folder (default: ${DATA_ENV})")
    parser.add_argument("--out", default=out_default, metavar="DIR",
                        help=f"output folder{out_layout}; one run at a time per folder (default: {out_default})")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the first run (default: 0)")
    parser.add_argument("--force", action="store_true",
                        help="run again from scratch what already finished (by default a finished run with the "
                             "same settings is kept and skipped, and one with other settings refused)")
    parser.add_argument("--threads", type=positive_int, default=threads_default,
                        help="torch CPU threads (default: "
                             f"{threads_default if threads_default is not None else 'torch' + chr(39) + 's choice'})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    if study:
        return
    parser.add_argument("--device", type=device_name, default="auto",
                        help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N' or 'mps' (default: auto)")
    parser.add_argument("--seeds", type=positive_int, default=seeds_default,
                        help=f"{seeds_help} (default: {seeds_default if seeds_default is not None else 'the preset'})")
    parser.add_argument("--epochs", type=positive_int, default=epochs_default,
                        help=f"{epochs_help} (default: {epochs_default if epochs_default is not None else 'the preset'})")
    parser.add_argument("--resume", action="store_true",
                        help="continue runs that have a checkpoint, start those that have none, skip finished ones")
    if amp:
        parser.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (autocast; fp16 with a "
                            "GradScaler)")


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds a command runs: ``--seed``, ``--seed + 1``, ... (``--seeds`` of them)."""
    return list(range(args.seed, args.seed + args.seeds))


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """``torch.set_num_threads(count)`` inside the block (``None``: unchanged), restored after it (a command may
    be called in-process, from tests or notebooks)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def entry_points(parse_args: Callable[[list[str] | None], argparse.Namespace],
                 run: Callable[[argparse.Namespace], Any], *, resumable: bool = True,
                 out: Callable[[argparse.Namespace], str | os.PathLike[str]] | None = None,
                 need_bytes: Callable[[argparse.Namespace], int] | None = None,
                 check: Callable[[argparse.Namespace], Any] | None = None, distributed: bool = False
                 ) -> tuple[Callable[..., Any], Callable[..., int]]:
    """``(main, cli_main)`` of an experiment whose work is ``run(args)`` (writing into ``out(args)``, default
    ``args.out``), the one entry-point style of every experiment:

    * ``main(argv) -> run's result``: the Python entry point (errors raise);
    * ``cli_main(argv) -> exit code``: the command line (``python -m`` calls it): ``check(args)`` first (the data
      located: a wrong data root is one line before the output folder is touched), then ``run`` through
      ``run_guarded`` (one-line errors, the output folder checked for ``need_bytes(args)`` free bytes and locked,
      SIGTERM like Ctrl-C; ``resumable=False`` for experiments without checkpoints).  ``distributed``: under
      ``torchrun`` every process joins the process group first (``args.dist`` holds its
      [`DistContext`][ghl_snn.experiments.distributed.DistContext]; rank 0 alone holds the lock).

    Both apply ``--threads`` for the duration of the call."""
    def main(argv: list[str] | None = None) -> Any:
        args = parse_args(argv)
        with torch_threads(getattr(args, "threads", None)):
            return run(args)

    @returns_exit_code
    def cli_main(argv: list[str] | None = None) -> int:
        from . import distributed as dist_tools

        args = parse_args(argv)
        with torch_threads(getattr(args, "threads", None)):
            if check is not None:
                try:
                    check(args)
                except (CliError, FileNotFoundError, ValueError) as error:
                    return fail(one_line(error))
            ctx = None
            if distributed and dist_tools.launched_by_torchrun():
                from .common import select_device

                ctx = dist_tools.init_distributed(select_device(args.device))
            args.dist = ctx
            main_rank = ctx is None or ctx.is_main
            sync = (lambda ok: dist_tools.agree(ok, ctx.device)) if ctx is not None and ctx.distributed else None
            try:
                return run_guarded(lambda: (run(args), 0)[1], out=(out or (lambda a: a.out))(args) if main_rank
                                   else None, need_bytes=need_bytes(args) if need_bytes else 0, sync=sync,
                                   resumable=resumable)
            finally:
                if ctx is not None:
                    dist_tools.cleanup_distributed()

    return main, cli_main


# ---------------------------------------------------------------------------------------------------- output guard
#: options that do not change a run's results (left out of its identity)
NOT_IDENTITY = ("out", "threads", "force", "resume", "device", "quiet", "dist")


def run_identity(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that identify a run (every option but ``NOT_IDENTITY``), stored in ``config.json``."""
    return {key: value for key, value in vars(args).items() if key not in NOT_IDENTITY}


def finished_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """For experiments without per-epoch checkpoints: the stored ``results.json`` of a finished run in
    ``args.out`` with the same ``run_identity`` (one line says so), or ``None`` to run.  A finished run with
    other settings raises [`RunExists`][ghl_snn.experiments.runner.RunExists] unless ``args.force``."""
    from .runner import SKIP, plan_run

    if plan_run(args.out, None, run_identity(args), resume=False, force=args.force) != SKIP:
        return None
    print(f"finished run in {args.out}, not run again (--force runs it again)", file=sys.stderr)
    return json.loads((Path(args.out) / "results.json").read_text())


def check_output_dir(out: str | os.PathLike[str], need_bytes: int = 0) -> Path:
    """Create ``out`` and make sure a file can be written there and ``need_bytes`` are free; ``CliError`` in
    one line otherwise (called before any data is decoded)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise CliError(f"output folder {out} is not writable ({reason}); choose another --out") from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise CliError(f"output folder {out} has {free / 2**20:.0f} MiB free but the run needs about "
                       f"{need_bytes / 2**20:.0f} MiB (checkpoints); free space or choose another --out")
    return out


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc``), to tell a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class RunLock:
    """One run per output folder: an exclusive ``flock`` on ``<out>/.ghl_snn.lock`` holding the owner's pid, host
    and start time.  The kernel drops the lock when its process dies (also on ``kill -9``), so a lock left by a
    dead process is simply taken over; a live holder makes ``acquire`` raise ``CliError`` naming it."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise CliError(f"output folder {self.path.parent} is in use by {self.holder()}; wait for that run "
                               "or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its holder removed while we waited
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                         "proc_start": _process_start(os.getpid())}).encode())
                self._fd = fd
                return self
            os.close(fd)
        raise CliError(f"could not lock output folder {self.path.parent}")

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another run"
        return f"pid {info.get('pid')} on {info.get('host')} (started {info.get('started')})"

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temporaries(out: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files (``.<name>.<random>.tmp``, see [`ghl_snn.experiments.common.atomic_path`][])
    that a killed run left in ``out``; call only while holding ``out``'s ``RunLock``."""
    stale = [path for path in Path(out).rglob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as a KeyboardInterrupt so every cleanup path of Ctrl-C runs."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C does); the old handler is restored."""
    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def returns_exit_code(main: Callable[..., int]) -> Callable[..., int]:
    """Decorator for ``main(argv) -> int``: argparse's ``SystemExit`` (bad value, ``--help``) becomes the return
    value, so ``main`` can be called from Python (tests) and from ``sys.exit(main())`` alike; a ``SystemExit``
    carrying a message is printed as one ``error:`` line and returns 2."""
    import functools

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except SystemExit as stop:
            if isinstance(stop.code, str):  # ``SystemExit("error: ...")`` of an experiment: bad input, one line
                return fail(stop.code.removeprefix("error: "))
            return stop.code if isinstance(stop.code, int) else 0
    return wrapper


def one_line(error: BaseException) -> str:
    """The error's own message on one line.  An exception re-raised by a DataLoader worker carries the worker's
    whole traceback; its last line (``ExceptionType: message``) is what the user needs."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``error: message`` (one line) to stderr and return ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def run_guarded(body: Callable[[], int], out: str | os.PathLike[str] | None = None, need_bytes: int = 0,
        lock: bool = True, sync: Callable[[bool], bool] | None = None, resumable: bool = True) -> int:
    """Run an experiment's ``body`` behind the output guard and turn every expected failure into one line.

    ``out``: checked for writability and ``need_bytes`` of free space and locked (``lock``) before ``body`` runs.
    SIGTERM is handled like Ctrl-C.  ``sync(ok)`` (under torchrun: [`ghl_snn.experiments.distributed.agree`][])
    makes every process stop when one of them could not take the guard.  ``resumable=False``: the experiment keeps
    no checkpoints, so an interruption says to rerun the command (not ``--resume``).  Returns ``body``'s exit code, or
    2 / 3 / 130 (see the module docstring).  ``GHL_SNN_DEBUG=1`` re-raises errors with their traceback.
    """
    from ..datasets.events.base import EventDataError
    from .runner import RunExists, TrainingDiverged

    guard = RunLock(out) if out is not None and lock else None
    try:
        with sigterm_as_interrupt():
            problem = None
            try:
                if out is not None:
                    check_output_dir(out, need_bytes)
                if guard is not None:
                    guard.acquire()
            except CliError as error:
                problem = error
            if sync is not None and not sync(problem is None) and problem is None:
                return EXIT_BAD_INPUT  # another process refused; it printed why
            if problem is not None:
                raise problem
            if guard is not None:
                remove_stale_temporaries(out)
            return body()
    except KeyboardInterrupt as interrupt:
        how = "SIGTERM" if isinstance(interrupt, _Terminated) else "interrupted"
        where = f" in {out}" if out is not None else ""
        if resumable:
            print(f"\n{how}: the checkpoints{where} keep the last finished epoch of every run; rerun the same "
                  "command with --resume to continue", file=sys.stderr)
        else:
            print(f"\n{how}: stopped before the results{where} were complete; rerun the same command to measure "
                  "again", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if os.environ.get("GHL_SNN_DEBUG"):
            raise
        if isinstance(error, (TrainingDiverged, FloatingPointError)):  # a learner's guard outside the runner too
            return fail(one_line(error), EXIT_DIVERGED)
        if isinstance(error, (CliError, RunExists, EventDataError, FileNotFoundError, ValueError, OSError)):
            return fail(one_line(error))
        raise
    finally:
        if guard is not None:
            guard.release()
