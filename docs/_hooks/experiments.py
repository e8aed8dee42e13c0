"""MkDocs hook: one page per recorded experiment, generated from ``experiments/<name>/README.md``.

* ``on_config``: every ``experiments/*/README.md`` is appended to the "Experiments" section of the nav, so a new
  recorded experiment shows up without editing ``mkdocs.yml``.
* ``on_files``: the README becomes ``experiments/<name>/index.md`` and the other files of that folder (plots,
  tables, CSV/JSON) are served next to it, so the README's relative links and images work unchanged.  A relative
  link that points outside those files (e.g. into ``ghl_snn/``) is turned into the plain repository path, so it
  cannot break the strict build while staying informative.
* ``on_page_markdown``: the ``<!-- recorded-experiments -->`` marker of ``experiments/index.md`` becomes a list of
  those pages with their titles.
* ``on_page_content``: the Sphinx roles used in the docstrings (``:class:`~ghl_snn.GHL```) are shown as plain code
  and a reST literal-block marker (``Usage::``) as a plain colon.
* One docstring style that the Google-style parser reports as a warning -- several parameters documented on one
  ``Args:`` line (``GROUPED_PARAMETERS``) -- is silenced; every *other* docstring warning still fails
  ``mkdocs build --strict``.
"""
from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref):(<code>)~?(?:[\w.]+\.)?")
LITERAL_BLOCK = re.compile(r"(?<=\w)::</p>")
SECTION = "Experiments"
MARKER = "<!-- recorded-experiments -->"

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


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def _experiment_dirs(config: MkDocsConfig) -> list[Path]:
    return sorted(p.parent for p in (_root(config) / "experiments").glob("*/README.md"))


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    for entry in config.nav or []:
        if isinstance(entry, dict) and SECTION in entry:
            section = entry[SECTION]
            for folder in _experiment_dirs(config):
                page = f"experiments/{folder.name}/index.md"
                if not any(page in (item.values() if isinstance(item, dict) else [item]) for item in section):
                    section.append({folder.name: page})
    return config


def _rewrite_links(text: str, folder: Path, served: set[str], root: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path = target.split("#", 1)[0]
        if posixpath.normpath(path) in served:
            return match.group(0)
        repo_path = (folder / path).resolve()
        try:
            shown = repo_path.relative_to(root).as_posix()
        except ValueError:
            shown = path
        return f"{label} (`{shown}`)" if label else f"`{shown}`"

    return LINK.sub(replace, text)


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    root = _root(config)
    for folder in _experiment_dirs(config):
        served = {p.name for p in folder.iterdir() if p.is_file() and p.name != "README.md"}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name != "README.md":
                files.append(File.generated(config, f"experiments/{folder.name}/{path.name}", abs_src_path=str(path)))
        readme = (folder / "README.md").read_text(encoding="utf-8")
        note = (f"\n!!! note \"Recorded result\"\n    This page is `experiments/{folder.name}/README.md`, written when "
                "the run was recorded; the files it links to are in the same folder of the repository.\n\n")
        first, _, rest = readme.partition("\n")
        content = (first + "\n" + note + rest) if first.startswith("# ") else (note + readme)
        content = _rewrite_links(content, folder, served, root)
        files.append(File.generated(config, f"experiments/{folder.name}/index.md", content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, **kwargs: Any) -> str:
    if page.file.src_uri != "experiments/index.md" or MARKER not in markdown:
        return markdown
    lines = []
    for folder in _experiment_dirs(config):
        title = folder.name
        for line in (folder / "README.md").read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                break
        lines.append(f"* [`{folder.name}`]({folder.name}/index.md): {title}")
    return markdown.replace(MARKER, "\n".join(lines) if lines else "(none recorded yet)")


def on_page_content(html: str, **kwargs: Any) -> str:
    html = ROLE.sub(r"\1", html)
    return LITERAL_BLOCK.sub(":</p>", html)   # reST "Usage::" before a code block reads "Usage:"
