"""Rewrite the Sphinx roles of ``ghl_snn`` docstrings as mkdocstrings cross-references.

    python docs/_tools/docstring_crossrefs.py                # every module of ghl_snn
    python docs/_tools/docstring_crossrefs.py ghl_snn/x.py   # some files

Only docstring text changes:

* ``:class:`Name``` where ``Name`` is visible in the docstring's scope becomes ``[`Name`][]`` (a scoped
  cross-reference: mkdocstrings resolves it like Python resolves the name);
* ``:func:`~ghl_snn.pkg.mod.name``` becomes ``[`name`][ghl_snn.pkg.mod.name]`` and ``:mod:`ghl_snn.pkg```
  becomes ``[`ghl_snn.pkg`][]``; a name that ``ghl_snn`` itself exports is linked through it (``ghl_snn.GHL``), so the
  link survives a move between modules;
* a target that the site does not document (another package such as ``torch``, a private name, a module without
  an API page, a member the reference does not show) becomes plain code, ````name````; so does a role inside a
  literal block (after ``::``), which shows as code anyway;
* a paragraph in which a line grew past 120 characters is re-flowed (same indentation, double spaces after a
  sentence kept).

Afterwards the site is built once and every cross-reference that still does not resolve is turned into plain
code, so ``mkdocs build --strict`` passes.  Needs the docs extra (griffe comes with mkdocstrings).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 120
ROLE = re.compile(r":(class|func|meth|mod|attr|data|exc|obj|ref):`(~?)([\w.]+)`")
START = re.compile(r"^\s*(?:[*-] |\d+\. |[\w*]+(?:\s*\([^)]*\))?: )")   # a list item or a Google-style entry
FENCE = re.compile(r"^\s*(```|~~~)")
UNRESOLVED = re.compile(r"from (\S+\.py):(\d+): .*Could not find cross-reference target '([^']+)'")


def _api_hook() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hook_api", ROOT / "docs" / "_hooks" / "api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Resolver:
    def __init__(self) -> None:
        self.package = griffe.load("ghl_snn", search_paths=[str(ROOT)], resolve_aliases=True,
                                   resolve_external=False)
        self.documented = _api_hook().documented_modules(ROOT / "docs", ROOT)
        self.exports = set(self.package.exports or [])

    @staticmethod
    def final(obj: Any) -> Any:
        try:
            return obj.final_target if obj.is_alias else obj
        except Exception:          # an alias to something outside ghl_snn
            return None

    def get(self, path: str) -> Any:
        parts = path.split(".")
        if parts[0] != "ghl_snn":
            return None
        obj = self.package
        for part in parts[1:]:
            if obj is None or part not in obj.members:
                return None
            obj = self.final(obj.members[part])
        return obj

    def in_scope(self, name: str, scope: str) -> Any:
        head, *rest = name.split(".")
        path = scope
        while path:
            holder = self.get(path)
            if holder is not None and head in holder.members:
                obj = self.final(holder.members[head])
                for part in rest:
                    obj = self.final(obj.members[part]) if obj is not None and part in obj.members else None
                return obj
            path = path.rpartition(".")[0]
        return None

    def rendered(self, obj: Any) -> bool:
        if any(part.startswith("_") for part in obj.path.split(".")[1:]):
            return False
        module = obj.path if obj.is_module else obj.module.path
        return module in self.documented

    def convert(self, match: re.Match[str], scope: str) -> str:
        _, tilde, target = match.groups()
        shown = target.rsplit(".", 1)[-1] if tilde else target
        scoped = self.in_scope(target, scope) if not target.startswith("ghl_snn.") else None
        obj = self.get(target) if target.startswith("ghl_snn.") else scoped
        if obj is None and target.split(".")[0] in self.exports:
            obj = self.get(f"ghl_snn.{target}")
        if obj is None or not self.rendered(obj):
            return f"``{shown}``"
        if scoped is not None and not tilde and "." not in target:
            return f"[`{shown}`][]"
        if target == obj.path and not tilde:
            return f"[`{target}`][]"
        exported = self.final(self.package.members[obj.name]) if obj.name in self.exports else None
        ident = f"ghl_snn.{obj.name}" if exported is not None and exported.path == obj.path else obj.path
        return f"[`{shown}`][{ident}]"


def docstring_spans(tree: ast.Module, module: str) -> list[tuple[int, int, str]]:
    """(first line, last line, griffe path of the documented object) of every docstring."""
    spans = []

    def visit(node: ast.AST, scope: str) -> None:
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            spans.append((body[0].lineno, body[0].end_lineno, scope))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{scope}.{child.name}")

    visit(tree, module)
    return spans


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _tokens(text: str) -> list[str]:
    """Words, keeping a code span or a link together; a word followed by two spaces keeps one extra space."""
    out: list[str] = []
    current: list[str] = []
    ticks = brackets = 0
    for word in text.split(" "):
        if word == "":
            if current:
                current[-1] += " "
            elif out and not out[-1].endswith(" "):
                out[-1] += " "
            continue
        current.append(word)
        ticks += word.count("``")
        brackets += word.count("[") - word.count("]")
        if ticks % 2 == 0 and brackets <= 0:
            out.append(" ".join(current))
            current, ticks, brackets = [], 0, 0
    if current:
        out.append(" ".join(current))
    return [w.rstrip() + (" " if w.endswith(" ") else "") for w in out]


def _reflow(lines: list[str], i: int, first: int, last: int) -> tuple[int, int, list[str]]:
    """Re-flow the paragraph around line ``i``, inside the docstring that spans lines ``first..last``."""
    start = i
    while start > first:
        previous = lines[start - 1]
        if not previous.strip() or previous.strip() in ('"""', "'''") or previous.rstrip().endswith("::") \
                or FENCE.match(previous) or (START.match(lines[start]) and _indent(lines[start]) <= _indent(previous)):
            break
        if _indent(previous) == _indent(lines[start]) or (START.match(previous)
                                                            and _indent(previous) < _indent(lines[start])):
            start -= 1
            if START.match(lines[start]) or '"""' in lines[start]:
                break
        else:
            break
    if start == i:
        body = _indent(lines[i]) + 4 if START.match(lines[i]) and not lines[i].lstrip().startswith('"""') \
            else _indent(lines[i])
        if i + 1 < len(lines) and lines[i + 1].strip() and not START.match(lines[i + 1]) \
                and _indent(lines[i + 1]) > _indent(lines[i]) and not FENCE.match(lines[i + 1]):
            body = _indent(lines[i + 1])
    else:
        body = _indent(lines[start + 1])
    end = i + 1
    while end <= last:
        following = lines[end]
        if not following.strip() or following.strip() in ('"""', "'''") or START.match(following) \
                or FENCE.match(following) or _indent(following) != body or lines[end - 1].rstrip().endswith("::"):
            break
        end += 1
        if '"""' in following:
            break
    first = lines[start]
    out, current = [], first[:_indent(first)]
    for word in _tokens(" ".join(line.strip() for line in lines[start:end])):
        candidate = current + (" " if current.strip() else "") + word
        if len(candidate.rstrip()) > LIMIT and current.strip():
            out.append(current.rstrip())
            current = " " * body + word
        else:
            current = candidate
    out.append(current.rstrip())
    return start, end, out


def convert_file(path: Path, resolver: Resolver) -> bool:
    source = path.read_text(encoding="utf-8")
    if not ROLE.search(source):
        return False
    module = ".".join(path.resolve().relative_to(ROOT).with_suffix("").parts)
    module = module.removesuffix(".__init__")
    lines = source.splitlines()
    original = set(lines)
    spans = docstring_spans(ast.parse(source), module)
    for first, last, scope in spans:
        literal = None
        for i in range(first - 1, last):
            line = lines[i]
            if literal is not None and line.strip() and _indent(line) <= literal:
                literal = None
            if literal is not None and line.strip():
                lines[i] = ROLE.sub(lambda m: m.group(3).rsplit(".", 1)[-1] if m.group(2) else m.group(3), line)
            else:
                lines[i] = ROLE.sub(lambda m: resolver.convert(m, scope), line)
            if line.rstrip().endswith("::"):
                literal = _indent(line)
    for first, last, _ in sorted(spans, reverse=True):     # bottom-up: earlier line numbers stay valid
        first, last = first - 1, last - 1
        i = first
        while i <= last:
            if len(lines[i]) > LIMIT and lines[i] not in original:
                start, end, new = _reflow(lines, i, first, last)
                lines[start:end] = new
                last += len(new) - (end - start)
                i = start + len(new)
            else:
                i += 1
    text = "\n".join(lines) + "\n"
    if text != source:
        path.write_text(text, encoding="utf-8")
        return True
    return False


def unresolved_references() -> list[tuple[Path, str]]:
    with tempfile.TemporaryDirectory() as site:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
        run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--no-strict", "-d", site], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    return [(Path(m.group(1)), m.group(3)) for m in UNRESOLVED.finditer(run.stdout + run.stderr)]


def main(argv: list[str]) -> None:
    files = [Path(a) for a in argv] or sorted((ROOT / "ghl_snn").rglob("*.py"))
    resolver = Resolver()
    for path in files:
        if convert_file(path, resolver):
            print(f"converted {path}")
    for path, target in dict.fromkeys(unresolved_references()):
        text = path.read_text(encoding="utf-8")
        fixed = re.sub(r"\[`([^`\]]+)`\]\[" + re.escape(target) + r"\]", r"``\1``", text)
        fixed = re.sub(r"\[`(" + re.escape(target.rsplit(".", 1)[-1]) + r")`\]\[\]", r"``\1``", fixed)
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")
            print(f"{path}: '{target}' is not in the reference: plain code")
        else:
            print(f"{path}: '{target}' does not resolve; fix it by hand")


if __name__ == "__main__":
    main(sys.argv[1:])
