"""The output folder's guard every experiment runs behind: the folder checked (writable, free space) and locked
(one run at a time, a lock left by a killed run taken over), stale temporary files removed, SIGTERM handled like
Ctrl-C, and every expected failure turned into one ``error:`` line with an exit code.

Exit codes: 0 done; 2 bad input (arguments, data, output folder, a run that would be overwritten or resumed
under other settings, a folder in use); 3 training diverged (a non-finite loss, gradient, eligibility or weight:
the last good checkpoint is kept); 130 interrupted (Ctrl-C or SIGTERM; checkpoints keep the last finished epoch).
"""
from __future__ import annotations

import errno
import json
import os
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

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
LOCK_NAME = ".ghl_snn.lock"


class CliError(Exception):
    """A problem the user can fix (bad value, missing data, output folder in use...): one line, exit code 2."""


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
    """Remove the temporary files (``.<name>.<random>.tmp``, see [`ghl_snn.comparison.common.atomic_path`][])
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
    SIGTERM is handled like Ctrl-C.  ``sync(ok)`` (under torchrun: [`ghl_snn.comparison.distributed.agree`][])
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
