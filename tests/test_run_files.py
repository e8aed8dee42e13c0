"""Files a run writes are readable like any other file the user writes (the umask decides, not mkstemp's 0600)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ghl_snn.experiments.common import write_json


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomically_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "results.json", {"test_acc": 0.5})
        reference = tmp_path / "plain.txt"
        reference.write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "results.json").stat().st_mode)
    assert mode == stat.S_IMODE(reference.stat().st_mode) == 0o666 & ~umask
