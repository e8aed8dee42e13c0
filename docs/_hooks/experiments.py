"""MkDocs hook: one page per recorded experiment, generated from ``experiments/<name>/README.md``.

* ``on_config``: every ``experiments/*/README.md`` becomes a section of the "Experiments" nav, with the folder's
  other Markdown files (full tables, summaries) as its sub-pages, so every generated page is reachable from the
  nav and a new recorded experiment shows up without editing ``mkdocs.yml``.
* ``on_files``: the README becomes ``experiments/<name>/index.md`` and every other file of that folder (plots,
  tables, CSV/JSON, sub-folders) is served next to it, so the README's relative links and images work unchanged.
  A relative link to another experiment's README or to a page of ``docs/`` is pointed at that page.  A relative
  link to a file of the repository that the site does not serve (e.g. ``ghl_snn/...``) is shown as its
  repository path.  A link whose target exists nowhere is a **warning**, so ``mkdocs build --strict`` fails on it.
  A GitHub alert (``> [!NOTE]``, ``> [!WARNING]``, ...; a bold first line is its title) becomes the theme's
  admonition, so a page's result box reads as a box both on GitHub and on the site.
* ``on_page_markdown``: the ``<!-- recorded-experiments -->`` marker of ``experiments/index.md`` becomes a list of
  those pages with their titles.
* ``on_page_content``: a figure on an experiment page fits the column and links to the full-size file; on every
  page, ``\\|`` inside a table cell's code span (a Markdown table's escaped pipe) is shown as ``|``.
"""
from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.experiments")

LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
IMAGE_PARAGRAPH = re.compile(r"<p>((?:\s*<img [^>]*>\s*)+)</p>")
IMG_SRC = re.compile(r'<img ([^>]*?)src="([^"]+)"([^>]*)>')
ALERT = re.compile(r"^> ?\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\][ \t]*\n((?:>.*(?:\n|$))*)", re.MULTILINE)
ALERT_KIND = {"NOTE": "note", "TIP": "tip", "IMPORTANT": "info", "WARNING": "warning", "CAUTION": "danger"}
ALERT_TITLE = re.compile(r"\*\*(.+?)\*\*")
SECTION = "Experiments"
MARKER = "<!-- recorded-experiments -->"


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def _experiment_dirs(config: MkDocsConfig) -> list[Path]:
    return sorted(p.parent for p in (_root(config) / "experiments").glob("*/README.md"))


def _title(path: Path, default: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return default


def _sub_pages(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.md") if p.name != "README.md")


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    def pages_of(item: Any) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [p for value in item.values() for p in pages_of(value)]
        if isinstance(item, list):
            return [p for value in item for p in pages_of(value)]
        return []

    for entry in config.nav or []:
        if isinstance(entry, dict) and SECTION in entry:
            section = entry[SECTION]
            for folder in _experiment_dirs(config):
                page = f"experiments/{folder.name}/index.md"
                if page in pages_of(section):
                    continue
                children: list[Any] = [page]
                for sub in _sub_pages(folder):
                    rel = sub.relative_to(folder).with_suffix("").as_posix()
                    children.append({_title(sub, rel.replace("_", " ").capitalize()):
                                     f"experiments/{folder.name}/{sub.relative_to(folder).as_posix()}"})
                section.append({folder.name: children})
    return config


def _rewrite_links(text: str, source: str, folder: Path, served: set[str], root: Path, docs: Path,
                   experiments: set[str]) -> str:
    """Point a README's relative links at what the site serves; warn on a link whose target exists nowhere."""
    def replace(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        suffix = f"#{anchor}" if anchor else ""
        if posixpath.normpath(path) in served:
            return match.group(0)
        repo_path = (folder / path).resolve()
        try:
            shown = repo_path.relative_to(root).as_posix()
        except ValueError:
            shown = path
        if repo_path.name == "README.md" and repo_path.parent.parent == root / "experiments" \
                and repo_path.parent.name in experiments:
            page = posixpath.relpath(f"experiments/{repo_path.parent.name}/index.md", posixpath.dirname(source))
            return f"{bang}[{label}]({page}{suffix})"
        if repo_path.suffix == ".md" and repo_path.is_file() and docs in repo_path.parents:
            page = posixpath.relpath(repo_path.relative_to(docs).as_posix(), posixpath.dirname(source))
            return f"{bang}[{label}]({page}{suffix})"
        if not repo_path.exists():
            log.warning(f"{source}: the link '{target}' points at '{shown}', which does not exist: "
                        "link an existing file of the folder, or write the path as plain text")
            return match.group(0)
        return f"{label} (`{shown}`)" if label else f"`{shown}`"

    return LINK.sub(replace, text)


def github_alerts(text: str) -> str:
    """A GitHub alert block (``> [!NOTE]`` and the quoted lines after it) as a Material admonition.

    A first line that is bold text alone (``> **Result**``) becomes the admonition's title; otherwise the title is
    the alert's kind.  GitHub shows the same block as its own alert box."""
    def replace(match: re.Match[str]) -> str:
        kind = match.group(1)
        body = [re.sub(r"^> ?", "", line) for line in match.group(2).splitlines()]
        title = kind.capitalize()
        if body and (bold := ALERT_TITLE.fullmatch(body[0].strip())):
            title, body = bold.group(1), body[1:]
        while body and not body[0].strip():
            body = body[1:]
        inner = "\n".join(f"    {line}" if line.strip() else "" for line in body)
        return f'!!! {ALERT_KIND[kind]} "{title}"\n\n{inner}\n'
    return ALERT.sub(replace, text)


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    root = _root(config)
    docs = Path(config.docs_dir).resolve()
    folders = _experiment_dirs(config)
    names = {f.name for f in folders}
    for folder in folders:
        served = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != "README.md"}
        for rel in sorted(served):
            uri = f"experiments/{folder.name}/{rel}"
            if rel.endswith(".md"):
                content = (folder / rel).read_text(encoding="utf-8")
                content = _rewrite_links(github_alerts(content), uri, (folder / rel).parent, served, root, docs,
                                         names)
                if not content.lstrip().startswith("# "):   # a table the run wrote: say what it is
                    back = posixpath.relpath("index.md", posixpath.dirname(rel) or ".")
                    content = (f"# {folder.name}: {Path(rel).stem.replace('_', ' ')}\n\n"
                               f"Every column the run wrote (`experiments/{folder.name}/{rel}`); "
                               f"[the experiment's page]({back}) explains them.\n\n" + content)
                files.append(File.generated(config, uri, content=content))
            else:
                files.append(File.generated(config, uri, abs_src_path=str(folder / rel)))
        readme = (folder / "README.md").read_text(encoding="utf-8")
        note = (f"\n\n---\n\n*This page is `experiments/{folder.name}/README.md` of the repository, written when "
                "the run was recorded; the files it links to are in the same folder.*\n")
        content = _rewrite_links(github_alerts(readme).rstrip("\n") + note, f"experiments/{folder.name}/README.md",
                                 folder, served, root, docs, names)
        files.append(File.generated(config, f"experiments/{folder.name}/index.md", content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, **kwargs: Any) -> str:
    if page.file.src_uri != "experiments/index.md" or MARKER not in markdown:
        return markdown
    lines = [f"* [`{folder.name}`]({folder.name}/index.md): {_title(folder / 'README.md', folder.name)}"
             for folder in _experiment_dirs(config)]
    return markdown.replace(MARKER, "\n".join(lines) if lines else "(none recorded yet)")


CELL = re.compile(r"(<t[dh][^>]*>)(.*?)(</t[dh]>)", re.DOTALL)
CODE = re.compile(r"<code>(.*?)</code>", re.DOTALL)


def unescape_table_pipes(html: str) -> str:
    """``\\|`` inside a code span of a table cell is how a Markdown table writes a literal ``|`` (GitHub shows
    ``|``); Python-Markdown keeps the backslash, so it is dropped in the code spans of every table cell."""
    def cell(match: re.Match[str]) -> str:
        opening, body, closing = match.groups()
        return opening + CODE.sub(lambda m: "<code>" + m.group(1).replace("\\|", "|") + "</code>", body) + closing
    return CELL.sub(cell, html)


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    html = unescape_table_pipes(html)
    if not page.file.src_uri.startswith("experiments/"):
        return html

    def link(match: re.Match[str]) -> str:
        before, src, after = match.groups()
        return f'<a class="figure-link" href="{src}" title="open at full size"><img {before}src="{src}"{after}></a>'

    return IMAGE_PARAGRAPH.sub(lambda m: f'<p class="figure-scroll">{IMG_SRC.sub(link, m.group(1))}</p>', html)
