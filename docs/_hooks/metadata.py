"""MkDocs hook: the library's version on the pages, read from ``ghl_snn/__init__.py`` (no import of the package).

``<!-- version -->`` in a page's Markdown becomes the version string, e.g. on the home page and the changelog, so
the site always names the release it documents.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.pages import Page

MARKER = "<!-- version -->"
VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)


def library_version(root: Path) -> str:
    """The ``__version__`` assigned in ``ghl_snn/__init__.py`` under ``root``."""
    match = VERSION.search((root / "ghl_snn" / "__init__.py").read_text(encoding="utf-8"))
    if match is None:
        raise ValueError("ghl_snn/__init__.py assigns no __version__ string")
    return match.group(1)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, library_version(Path(config.config_file_path).resolve().parent))
