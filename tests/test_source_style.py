"""The code's line-length limit: no line of the package, its tests, benchmarks or documentation tools is longer
than 120 characters (the width the docstrings are wrapped to)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("ghl_snn", "tests", "benchmarks", "docs/_tools")
MAX_COLUMNS = 120


def long_lines(root: Path, folders: tuple[str, ...] = SOURCE_FOLDERS, limit: int = MAX_COLUMNS) -> list[str]:
    """``path:line (length)`` for every line of the folders' Python files longer than ``limit`` characters."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if len(line) > limit:
                    found.append(f"{path.relative_to(root).as_posix()}:{number} ({len(line)})")
    return found


def test_no_source_line_is_longer_than_120_characters():
    assert long_lines(ROOT) == []


def test_long_lines_names_the_file_line_and_length(tmp_path):
    (tmp_path / "ghl_snn").mkdir()
    (tmp_path / "ghl_snn" / "a.py").write_text("x = 1\n" + "y = '" + "z" * 114 + "'\n" + "w" * 121 + "\n")
    assert long_lines(tmp_path) == ["ghl_snn/a.py:3 (121)"]
