"""The README's Quick start snippet runs as pasted and learns (it is the first thing a newcomer copies)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README's Quick start has no python block"
    return match.group(1)


def test_quick_start_runs_as_pasted_and_learns(tmp_path: Path) -> None:
    """Saved beside a clone named ghl_snn (the folder a newcomer cloned into), the snippet still imports the installed
    package, not the clone's folder as an empty namespace package (the README installs with editable_mode=compat)."""
    (tmp_path / "ghl_snn").mkdir()
    (tmp_path / "ghl_snn" / "README.md").write_text("a clone's root holds no __init__.py\n")
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start_snippet())
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", result.stdout).group(1))
    assert accuracy > 50.0, f"quick start reached only {accuracy}% (chance is 10%)"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_python_example_of_the_readme_runs(tmp_path: Path) -> None:
    """Each python block beside the quick start (the plug-in on ResNet-18, the snntorch-style network trained by
    ThreeFactor) runs as pasted; the spiking one learns far above chance."""
    blocks = [block for block in python_blocks() if block != quick_start_snippet()]
    assert len(blocks) >= 2, "the README shows the plug-in and a spiking example"
    for index, block in enumerate(blocks):
        script = tmp_path / f"example_{index}.py"
        script.write_text(block)
        result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"README python block {index + 1}:\n{result.stderr[-2000:]}"
        found = re.search(r"test accuracy ([\d.]+)%", result.stdout)
        if found:
            assert float(found.group(1)) > 40.0, f"README block {index + 1} reached only {found.group(1)}%"


def test_readme_is_a_first_hour_read() -> None:
    assert len(README.read_text()) <= 15_000, "the README is for the first hour; the reference lives in docs/"


def test_no_section_is_duplicated() -> None:
    """Every heading of the README occurs once (a section pasted twice by an edit leaves two stale copies)."""
    headings = [line for line in README.read_text().splitlines() if line.startswith("#")]
    repeated = sorted({heading for heading in headings if headings.count(heading) > 1})
    assert not repeated, f"README headings that occur more than once: {repeated}"
