"""Small utilities every experiment shares: device choice, seeding, peak memory, result tables, atomic JSON.

The data-root convention lives in [`ghl_snn.datasets.root`][]."""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager measuring peak memory of the enclosed code in MiB.

    On CUDA: ``torch.cuda.max_memory_allocated`` after a reset.  On CPU: the process RSS sampled every
    ``interval`` seconds by a background thread, reported as peak minus the RSS on entry (``peak_mib``) and as the
    absolute peak (``peak_rss_mib``).
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mib = 0.0
        self.peak_rss_mib = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif os.path.exists("/proc/self/statm"):
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._base = self._peak = 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            if hasattr(self, "_thread"):
                self._stop.set()
                self._thread.join()
                self._peak = max(self._peak, _rss_bytes())
            peak = self._peak
        self.peak_mib = (peak - self._base) / 2**20
        self.peak_rss_mib = peak / 2**20


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render dictionaries as a GitHub markdown table (floats with 4 significant digits)."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, so the JSON stays valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a uniquely named temporary file beside ``path``; on success it replaces ``path`` (atomic rename), on
    any error it is removed and the error re-raised as one ``OSError`` line naming ``path``.  Concurrent writers
    never share a temporary file, and an interrupted write never leaves a truncated ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make every run file private to its writer
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)) and not isinstance(error, NotImplementedError):
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise OSError(f"cannot write {path} (disk full or not writable?): {first}") from error
        raise


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON atomically ([`atomic_path`][]); non-finite floats become ``null`` (strict JSON, no bare NaN)."""
    text = json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
