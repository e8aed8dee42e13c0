"""One comparison run in parts: the trials of several output folders gathered into one.

A comparison's trials are independent runs keyed by (method, hyper-parameters, seed), so its rows can be run apart
-- one process per method on a multi-core machine, or one machine per method -- each with the same settings and
its own ``--out`` folder.  [`merge_trials`][] gathers their trials into a new folder; the experiment's command run
there with ``--resume`` and every method then reruns nothing that is stored and writes the one table, record and
plot (tuning, final seeds and paired intervals over all rows).  From the command line::

    python -m ghl_snn.comparison.merge runs/all runs/part-a runs/part-b
    python -m ghl_snn.experiments.recurrent --out runs/all --resume OPTIONS   # the parts' options, every method

A trial stored in several parts is taken from the first part that has it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import write_json
from .engine import trial_key
from .guard import CliError
from .runner import identity_changes

__all__ = ["merge_trials", "main"]


def _stored(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    if not path.is_file():
        raise CliError(f"{folder} holds no results.json: not the output folder of a comparison")
    try:
        stored = json.loads(path.read_text())
    except ValueError as error:
        raise CliError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(stored, dict) or "identity" not in stored or not isinstance(stored.get("trials"), list):
        raise CliError(f"{path} has no 'identity' and 'trials': not written by a comparison")
    return stored


def merge_trials(out: str | os.PathLike[str], parts: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Write ``out/results.json`` holding the union of the trials stored in ``parts`` (output folders of the same
    comparison: equal ``identity``, i.e. equal settings) and return it.  The result is an unfinished comparison
    (no table yet): finish it with the experiment's command, ``--out out --resume``.  Refuses parts of different
    settings and an ``out`` that already holds a comparison (nothing is overwritten)."""
    if not parts:
        raise CliError("give at least one part (an output folder of the comparison) to merge")
    out = Path(out)
    if (out / "results.json").exists():
        raise CliError(f"{out} already holds a comparison; merge into a new folder")
    stored = [(Path(p), _stored(Path(p))) for p in parts]
    first, reference = stored[0]
    for folder, part in stored[1:]:
        if part["identity"] != reference["identity"]:
            changed = identity_changes(reference["identity"], part["identity"])
            raise CliError(f"{folder} was run with other settings than {first} ({'; '.join(changed)}): "
                           "only parts of the same comparison can be merged")
    trials: dict[str, dict[str, Any]] = {}
    for _, part in stored:
        for trial in part["trials"]:
            trials.setdefault(trial_key(trial["method"], trial["hparams"], trial["seed"]), trial)
    merged = {"title": reference.get("title", ""), "identity": reference["identity"], "trials": list(trials.values())}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", merged)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghl_snn.comparison.merge",
                                     description="Gather the trials of a comparison run in parts (output folders "
                                     "of the same settings) into a new folder; then run the experiment's command "
                                     "there with --resume and every method to write the one table.")
    parser.add_argument("out", help="new output folder for the merged comparison")
    parser.add_argument("parts", nargs="+", help="output folders of the parts (same settings)")
    args = parser.parse_args(argv)
    try:
        merged = merge_trials(args.out, args.parts)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    methods = sorted({t["method"] for t in merged["trials"]})
    print(f"{len(merged['trials'])} trials of {', '.join(methods)} in {Path(args.out) / 'results.json'}; finish "
          f"with the experiment's command: --out {args.out} --resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
