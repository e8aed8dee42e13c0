"""Training in a child process that never outlives the command that started it.

The experiments train every run in a fresh (spawned) process, so that its peak memory is its own.  When the parent
is killed without a chance to clean up (``kill -9``, an out-of-memory kill), such a child would keep training and
writing ``checkpoint.pt`` / ``results.json`` into a folder whose lock its parent no longer holds, beside the run
that ``--resume`` starts there.  [`run_in_child`][] prevents that: the child asks the kernel for ``SIGKILL`` when its
parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``) and, everywhere, a watchdog thread kills it as soon as its parent
process is gone.  Checkpoints are written atomically, so a killed child leaves the last good one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1
#: seconds between two checks of the watchdog thread
WATCH_INTERVAL = 0.5


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent: int) -> None:
    """Make the calling process die when process ``parent`` does (call first thing in a child)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still stops the child
            pass
    if os.getppid() != parent:  # the parent died before the request was made
        _kill_self()

    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            if os.getppid() != parent:
                _kill_self()

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def run_in_child(function: Callable[..., Result], *args: Any) -> Result:
    """``function(*args)`` in a fresh spawned process that dies with this one; its result (or its exception) is
    returned (raised) here."""
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1, initializer=die_with_parent,
                                      initargs=(os.getpid(),)) as pool:
        return pool.apply(function, args)
