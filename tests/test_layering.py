"""The package's layering, read from the ``import`` statements of every module (no module is executed).

Imports only point downwards: eligibility kernels (``rules/``) and neuromodulators (``modulators/``) at the bottom,
sharing only the tensor kernels of ``ops/``;
layer selection one small module above them; networks (``models/``, the spiking neurons, encoders and network
container) and data loaders (``datasets/``) know no learner, no modulator and no harness; the learners (the
plug-in ``plasticity``, the spiking learner, ``learners/``) use the kernels; diagnostics, the equivalence layer and
export use learners; the comparison harness (``comparison/``: method registry, command-line grammar, training loop,
tuning and paired statistics) uses the learners; the experiments sit on top of it and nothing below imports them.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ghl_snn"

#: layer of a module = the rank of its longest matching prefix (names relative to ``ghl_snn``)
RANKS = {
    "ops": 0, "rules": 0, "modulators": 0,
    "selection": 1, "guards": 1,
    "models": 2, "datasets": 2,
    "spiking.neurons": 2, "spiking.adapters": 2, "spiking.encoders": 2, "spiking.network": 2,
    "spiking.architectures": 2, "spiking.recurrent": 2, "spiking.synapses": 2, "spiking.compiled": 2,
    "plasticity": 3, "learners": 3, "spiking": 3, "spiking.learner": 3,
    "diagnostics": 4, "equivalence": 4, "export": 4,
    "comparison": 5, "integrations": 5,
    "experiments": 6,
    "": 7,  # the package's own __init__ (public re-exports)
}
#: sub-packages that may import only themselves (besides third-party code)
SELF_CONTAINED = {"ops": {"ops"}, "rules": {"rules", "ops"}, "modulators": {"modulators", "ops"},
                  "models": {"models"}, "datasets": {"datasets"}, "selection": {"selection"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def prefix(name: str, table) -> str:
    parts = name.split(".") if name else []
    for end in range(len(parts), 0 if parts else -1, -1):
        candidate = ".".join(parts[:end])
        if candidate in table:
            return candidate
    raise KeyError(f"ghl_snn.{name} has no layer: add its package to RANKS in tests/test_layering.py")


def package_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module relative to ghl_snn, line, inside a function)`` for every import of the package, at any
    depth (an import inside a function counts like one at the top: no lazy import escapes the layering)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    lazy_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy_lines |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if name else []
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] if node.module else [".".join(base + [a.name]) for a in node.names]
                targets = ["ghl_snn" + ("." + t if t else "") for t in targets]
            else:
                targets = [node.module or ""]
        for target in targets:
            if target == "ghl_snn" or target.startswith("ghl_snn."):
                found.append((target[len("ghl_snn."):] if target != "ghl_snn" else "", node.lineno,
                              node.lineno in lazy_lines))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_walk_sees_the_known_imports():
    """The parser itself: relative imports resolve to package names (a broken parser would pass everything)."""
    vgg = {target for target, _, _ in package_imports(PACKAGE / "models" / "vgg.py")}
    assert "models.activations" in vgg and "models.deephebb" in vgg
    cifar = {target for target, _, _ in package_imports(PACKAGE / "experiments" / "cifar.py")}
    presets = {target for target, _, _ in package_imports(PACKAGE / "experiments" / "cifar_presets.py")}
    assert "plasticity" in presets and "datasets.cifar" in cifar and "experiments.cifar_presets" in cifar


def test_the_walk_sees_imports_inside_functions(tmp_path, monkeypatch):
    """An import inside a function (a lazy import) is seen and checked like one at the top of the module."""
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "ghl_snn")
    source = tmp_path / "ghl_snn" / "rules" / "lazy.py"
    source.parent.mkdir(parents=True)
    source.write_text("import torch\n\n\ndef f():\n    from ..learners import hebbff\n")
    assert package_imports(source) == [("learners", 5, True)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path):
    source = module_name(path)
    source_layer = prefix(source, RANKS) if source else ""
    problems = []
    for target, line, _ in package_imports(path):
        target_layer = prefix(target, RANKS) if target else ""
        if target_layer == "":
            problems.append(f"line {line}: imports the top-level package ghl_snn")
            continue
        if RANKS[target_layer] > RANKS[source_layer]:
            problems.append(f"line {line}: {source or 'ghl_snn'} (layer {source_layer}) imports {target} "
                            f"(layer {target_layer}, above it)")
        own = source.split(".")[0] if source.split(".")[0] in SELF_CONTAINED else None
        if own is not None and target.split(".")[0] not in SELF_CONTAINED[own]:
            problems.append(f"line {line}: {source} may import only {sorted(SELF_CONTAINED[own])}, imports {target}")
        if target.split(".")[0] == "experiments" and source.split(".")[0] != "experiments":
            problems.append(f"line {line}: {source} imports the experiment {target}")
    assert not problems, "\n".join(problems)
