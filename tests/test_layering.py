"""The package's layering, read from the ``import`` statements of every module (no module is executed).

Imports only point downwards: eligibility kernels (``rules/``) and neuromodulators (``modulators/``) at the bottom,
sharing only the tensor kernels of ``ops/``;
layer selection one small module above them; networks (``models/``, the spiking neurons, encoders and network
container) and data loaders (``datasets/``) know no learner, no modulator and no harness; the learners (the
plug-in ``plasticity``, the spiking learner, ``learners/``) use the kernels; diagnostics, the equivalence layer and
export use learners; the experiments sit on top and nothing below imports them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ghl_snn"

#: layer of a module = the rank of its longest matching prefix (names relative to ``ghl_snn``)
RANKS = {
    "ops": 0, "rules": 0, "modulators": 0,
    "selection": 1, "guards": 1,
    "models": 2, "datasets": 2, "spiking.neurons": 2, "spiking.encoders": 2, "spiking.network": 2,
    "spiking.architectures": 2, "spiking.recurrent": 2, "spiking.synapses": 2, "spiking.compiled": 2,
    "plasticity": 3, "learners": 3, "spiking": 3, "spiking.learner": 3,
    "diagnostics": 4, "equivalence": 4, "export": 4,
    "experiments": 5, "integrations": 5,
    "": 6,  # the package's own __init__ (public re-exports)
}
#: sub-packages that may import only themselves (besides third-party code)
SELF_CONTAINED = {"ops": {"ops"}, "rules": {"rules", "ops"}, "modulators": {"modulators", "ops"},
                  "models": {"models"}, "datasets": {"datasets"}}
# Imports inside a module-level ``__getattr__`` (PEP 562) are exempt: they are aliases of names that moved up a
# layer (kept so that existing code keeps working), resolved on first use and never when the module is imported.


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
    """``(imported module relative to ghl_snn, line, inside a module-level __getattr__)`` for every import."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    lazy_lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            lazy_lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
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
    assert "plasticity" in cifar and "datasets.cifar" in cifar


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path):
    source = module_name(path)
    source_layer = prefix(source, RANKS) if source else ""
    problems = []
    for target, line, lazy in package_imports(path):
        if lazy:
            continue
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
            problems.append(f"line {line}: {source} imports the harness {target}")
    assert not problems, "\n".join(problems)


def test_moved_names_still_import_from_their_old_paths():
    from ghl_snn.learners.softhebb import SoftHebbLearner, train_softhebb
    from ghl_snn.models.activations import Triangle

    with pytest.warns(DeprecationWarning, match="moved to ghl_snn.learners.softhebb"):
        from ghl_snn.rules.softhebb import train_softhebb as old_trainer
    with pytest.warns(DeprecationWarning):
        from ghl_snn.rules import SoftHebbLearner as old_learner
    with pytest.warns(DeprecationWarning, match="models.activations"):
        from ghl_snn.rules.softhebb import Triangle as old_triangle
    from ghl_snn.experiments.common import resolve_data_root
    from ghl_snn.datasets.root import resolve_data_root as new_resolve

    assert (old_trainer, old_learner, old_triangle, resolve_data_root) == (train_softhebb, SoftHebbLearner,
                                                                           Triangle, new_resolve)
    from ghl_snn.ops import weight_gradient

    with pytest.warns(DeprecationWarning, match="moved to ghl_snn.ops.weight_gradient"):
        from ghl_snn.rules.weight_gradient import autotune as old_autotune
    with pytest.warns(DeprecationWarning):
        from ghl_snn.rules.weight_gradient import conv_weight_gradient as old_kernel
    assert (old_autotune, old_kernel) == (weight_gradient.autotune, weight_gradient.conv_weight_gradient)
