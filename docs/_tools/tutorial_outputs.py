"""Run every example with the command its tutorial page shows and record what it prints and plots.

    GHL_SNN_DATA=<folder holding MNIST/> python docs/_tools/tutorial_outputs.py

Writes ``docs/guides/output/<example>.txt`` (the printed output, as the page shows it) and the example's figures
(``--plot``) next to it, so that the pages show real output of the code they include.  Run it from the repository
root after changing an example; one thread, about two minutes of CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "guides" / "output"

#: example script -> its arguments on the tutorial page (``{plot}`` becomes the figure path prefix)
COMMANDS: dict[str, list[str]] = {
    "01_resnet18_plugin.py": ["--steps", "3", "--batch-size", "8"],
    "02_custom_rule.py": ["--epochs", "4", "--plot", "{plot}.png"],
    "03_custom_modulator.py": ["--batches", "150"],
    "04_online_spiking_mnist.py": ["--train", "2048", "--test", "500", "--steps", "10", "--plot", "{plot}"],
    "05_equivalence_check.py": ["--steps", "10", "100", "1000"],
}


def record(script: str, arguments: list[str]) -> Path:
    stem = Path(script).stem
    args = [a.replace("{plot}", str(OUTPUT / stem)) for a in arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    shown = " ".join(a.replace(str(OUTPUT) + "/", "") for a in arguments).replace("{plot}", stem)
    text = f"$ python examples/{script} {shown}\n{run.stdout}"
    path = OUTPUT / f"{stem}.txt"
    path.write_text(text.replace(str(ROOT) + "/", "").replace(os.environ.get("GHL_SNN_DATA", "\0"), "$GHL_SNN_DATA"),
                    encoding="utf-8")
    return path


if __name__ == "__main__":
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, arguments in COMMANDS.items():
        print(f"wrote {record(name, arguments).relative_to(ROOT)}")
