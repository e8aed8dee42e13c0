"""What every experiment's command line shares: checked argument types, the common options (``--data-root``,
``--out``, ``--device``, ``--seed`` / ``--seeds``, ``--epochs``, ``--resume``, ``--force``, ``--threads``,
``--quiet``), one ``--methods a b c`` spelling, one entry-point style (behind the output folder's guard,
[`ghl_snn.comparison.guard`][]) and the settings that identify a run.

An experiment adopts it in a few lines::

    def parse_args(argv=None):
        parser = cli.parser("python -m ghl_snn.experiments.NAME", __doc__)
        cli.add_methods_argument(parser, METHODS, DEFAULT_METHODS)         # --methods a b c
        cli.add_common_arguments(parser, out_default="runs/NAME", data_help="the folder holding MNIST/")
        parser.add_argument("--hidden", type=cli.positive_int, default=256, help="hidden neurons")
        return parser.parse_args(argv)            # bad values: one line on stderr, exit code 2, nothing done yet

    def run(args): ...                            # the work, writing into args.out

    main, cli_main = cli.entry_points(parse_args, run, check=locate_the_data)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..datasets.root import DATA_ENV
from .guard import EXIT_BAD_INPUT, CliError, fail, one_line, returns_exit_code, run_guarded

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
    seeds_shown = seeds_default if seeds_default is not None else "the preset"
    epochs_shown = epochs_default if epochs_default is not None else "the preset"
    parser.add_argument("--seeds", type=positive_int, default=seeds_default,
                        help=f"{seeds_help} (default: {seeds_shown})")
    parser.add_argument("--epochs", type=positive_int, default=epochs_default,
                        help=f"{epochs_help} (default: {epochs_shown})")
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
      [`DistContext`][ghl_snn.comparison.distributed.DistContext]; rank 0 alone holds the lock).

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


# ---------------------------------------------------------------------------------------------------- identity
#: options that do not change a run's results (left out of its identity)
NOT_IDENTITY = ("out", "threads", "force", "resume", "device", "quiet", "dist")


def run_identity(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that identify a run (every option but ``NOT_IDENTITY``), stored in ``config.json``."""
    return {key: value for key, value in vars(args).items() if key not in NOT_IDENTITY}


def finished_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """For experiments without per-epoch checkpoints: the stored ``results.json`` of a finished run in
    ``args.out`` with the same ``run_identity`` (one line says so), or ``None`` to run.  A finished run with
    other settings raises [`RunExists`][ghl_snn.comparison.runner.RunExists] unless ``args.force``."""
    from .runner import SKIP, plan_run

    if plan_run(args.out, None, run_identity(args), resume=False, force=args.force) != SKIP:
        return None
    print(f"finished run in {args.out}, not run again (--force runs it again)", file=sys.stderr)
    return json.loads((Path(args.out) / "results.json").read_text())
