"""MkDocs hook: the API reference.

* ``on_page_markdown``: the ``<!-- public-names -->`` marker of ``api/ghl_snn.md`` becomes one table per group of
  ``ghl_snn.__all__`` (the groups are the comments in that list): every public name, linked to its full reference,
  with the first sentence of its docstring.  The list is read from the source with griffe (nothing is imported), so
  a name added to ``__all__`` appears without editing the page, and a name whose module has no API page breaks the
  strict build (the cross-reference cannot be resolved).
* ``on_page_markdown``: a ``<!-- modules: NAME ... -->`` marker on an API page becomes one ``::: module`` block per
  module, in the order given: ``ghl_snn.rules.base`` names one module (left out while it does not exist),
  ``ghl_snn.rules.*`` every public module of that package, ``ghl_snn.datasets.**`` also those of its sub-packages.
  A module added to a package therefore gets its reference without editing the page; a module that some API page
  names in a ``::: module`` line of its own is left to that page.
* ``on_page_content``: a reStructuredText literal-block marker (``Usage::`` before an indented code block) reads
  ``Usage:``.
* One docstring style that the Google-style parser reports as a warning -- several parameters documented on one
  ``Args:`` line (``GROUPED_PARAMETERS``) -- is silenced; every *other* docstring warning still fails
  ``mkdocs build --strict``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig

MARKER = "<!-- public-names -->"
MODULES = re.compile(r"<!--\s*modules:\s*(.*?)\s*-->", flags=re.S)
PAGE = "api/ghl_snn.md"
LITERAL_BLOCK = re.compile(r"::</p>")
EMPTY_LITERAL_BLOCK = re.compile(r"<p>::</p>")
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref):`~?([\w.]+)`")

#: griffe warnings to drop.  Some docstrings document several parameters on one Google-style line
#: ("model, optimizer, layers, every: as for ..."); the parser reads that as one unknown parameter named
#: 'model, optimizer, layers, every'.  Only that pattern is dropped: any other docstring warning still fails the build.
GROUPED_PARAMETERS = re.compile(r"(No type or annotation for parameter|Parameter) '\w+(, \w+)+'")


class _KnownQuirks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not GROUPED_PARAMETERS.search(record.getMessage())


def on_startup(**kwargs: Any) -> None:
    logger = logging.getLogger("mkdocs.plugins.griffe")
    if not any(isinstance(f, _KnownQuirks) for f in logger.filters):
        logger.addFilter(_KnownQuirks())


def _groups(init: Path) -> list[tuple[str, list[str]]]:
    """The names of ``__all__`` in ``init``, grouped by the comment lines inside the list."""
    source = init.read_text(encoding="utf-8")
    block = re.search(r"^__all__\s*=\s*\[(.*?)^\]", source, flags=re.S | re.M)
    if block is None:
        raise ValueError(f"{init}: no __all__ = [...] list")
    groups: list[tuple[str, list[str]]] = [("other", [])]
    for line in block.group(1).splitlines():
        comment = re.match(r"\s*#\s*(.+)", line)
        if comment:
            groups.append((comment.group(1).strip(), []))
        groups[-1][1].extend(re.findall(r"[\"'](\w+)[\"']", line.split("#", 1)[0]))
    return [(title, names) for title, names in groups if names]


def _summary(obj: Any) -> str:
    """First sentence of a docstring, as Markdown on one line."""
    if not obj.docstring:
        return ""
    text = " ".join(obj.docstring.value.strip().split("\n\n", 1)[0].split())
    text = re.sub(r"(?<=[.)])\s+(?=[A-Z(])", "\n", text, count=1).split("\n", 1)[0]
    text = ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = re.sub(r"\[([^\]]+)\]\[\]", r"\1", text)   # a scoped cross-reference means nothing out of its scope
    text = text.replace("``", "`")
    text = re.sub(r"::$", ".", text)                    # a reST literal-block marker ends the sentence here
    parts = re.split(r"(`[^`]*`)", text)                 # a table cell: escape | outside code spans only
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def public_names_table(root: Path) -> str:
    import griffe

    package = griffe.load("ghl_snn", search_paths=[str(root)], resolve_aliases=False)
    lines: list[str] = []
    for title, names in _groups(root / "ghl_snn" / "__init__.py"):
        lines += [f"### {title[:1].upper()}{title[1:]}", "", "| name | what |", "|---|---|"]
        for name in names:
            obj = package[name]
            target = obj.final_target if obj.is_alias else obj
            if target.is_module and name in target.members:   # a function named like its module
                member = target.members[name]
                target = member.final_target if member.is_alias else member
            if target.docstring or target.is_module:
                lines.append(f"| [`{name}`][{target.path}] | {_summary(target)} |")
            else:   # the reference hides an object without a docstring: nothing to link to
                lines.append(f"| `{name}` | (`{target.path}`) |")
        lines.append("")
    return "\n".join(lines)


def _public_modules(package_dir: Path, prefix: str, recursive: bool) -> list[str]:
    names = []
    for path in sorted(package_dir.iterdir()):
        if path.name.startswith("_"):
            continue
        if path.suffix == ".py":
            names.append(f"{prefix}.{path.stem}")
        elif recursive and (path / "__init__.py").is_file():
            names += _public_modules(path, f"{prefix}.{path.name}", recursive)
    return names


def expand_modules(spec: str, root: Path) -> list[str]:
    """The modules named by a ``modules:`` marker (see the module docstring), in order, without repeats."""
    modules: list[str] = []
    for item in spec.split():
        recursive = item.endswith(".**")
        if item.endswith((".*", ".**")):
            package = item.rsplit(".", 2 if recursive else 1)[0] if not recursive else item[:-3]
            folder = root.joinpath(*package.split("."))
            found = _public_modules(folder, package, recursive) if folder.is_dir() else []
        else:
            path = root.joinpath(*item.split("."))
            found = [item] if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else []
        modules += [m for m in found if m not in modules]
    return modules


def documented_modules(docs: Path, root: Path) -> set[str]:
    """Every module that an API page renders (``::: name`` lines and ``modules:`` markers)."""
    found: set[str] = set()
    for page in (docs / "api").glob("*.md"):
        text = page.read_text(encoding="utf-8")
        found.update(re.findall(r"^:::\s+([\w.]+)\s*$", text, flags=re.M))
        for spec in MODULES.findall(text):
            found.update(expand_modules(spec, root))
    return found


def _explicit_modules(docs: Path) -> set[str]:
    return {name for page in (docs / "api").glob("*.md")
            for name in re.findall(r"^:::\s+([\w.]+)\s*$", page.read_text(encoding="utf-8"), flags=re.M)}


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, **kwargs: Any) -> str:
    root = Path(config.config_file_path).resolve().parent
    if page.file.src_uri.startswith("api/"):
        explicit = _explicit_modules(Path(config.docs_dir))      # a module with its own '::: name' is not repeated
        markdown = MODULES.sub(lambda m: "\n\n".join(f"::: {name}" for name in expand_modules(m.group(1), root)
                                                        if name not in explicit), markdown)
    if page.file.src_uri == PAGE and MARKER in markdown:
        markdown = markdown.replace(MARKER, public_names_table(root))
    return markdown


def on_page_content(html: str, **kwargs: Any) -> str:
    html = EMPTY_LITERAL_BLOCK.sub("", html)
    return LITERAL_BLOCK.sub(":</p>", html)   # reST "Usage::" before a code block reads "Usage:"
