"""MkDocs hook: the parts of the install page that must say what the repository says.

* ``<!-- readme-setup -->`` becomes the shell commands of the README's "Set-up" section, copied at build time, so
  the page and the README cannot disagree.
* ``<!-- extras -->`` becomes a table of the optional extras of ``pyproject.toml`` and what each installs.

A marker whose source cannot be found is a warning (``mkdocs build --strict`` fails on it).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

log = logging.getLogger("mkdocs.hooks.install")

SETUP = "<!-- readme-setup -->"
EXTRAS = "<!-- extras -->"
FENCE = re.compile(r"^```(bash|sh|shell|console)\n(.*?)^```", flags=re.S | re.M)


def readme_setup_commands(readme: str) -> list[str]:
    """The fenced shell blocks of the README section whose heading starts with 'Set-up' or 'Setup'."""
    section = re.search(r"^## Set-?up\b.*?$(.*?)(?=^## |\Z)", readme, flags=re.S | re.M | re.I)
    return [block.group(2).rstrip("\n") for block in FENCE.finditer(section.group(1))] if section else []


def extras_table(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    rows = ["| extra | install with | what it adds |", "|---|---|---|"]
    for name, requirements in project.get("optional-dependencies", {}).items():
        packages = ", ".join(f"`{r}`" for r in requirements)
        rows.append(f"| **{name}** | `pip install -e \".[{name}]\"` | {packages} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, **kwargs: Any) -> str:
    root = Path(config.config_file_path).resolve().parent
    if SETUP in markdown:
        commands = readme_setup_commands((root / "README.md").read_text(encoding="utf-8"))
        if not commands:
            log.warning(f"{page.file.src_uri}: README.md has no '## Set-up' section with ```bash blocks to show")
        steps = []
        for number, command in enumerate(commands, 1):
            steps.append(f"**Command {number}:**\n\n```bash\n{command}\n```")
        markdown = markdown.replace(SETUP, "\n\n".join(steps))
    if EXTRAS in markdown:
        markdown = markdown.replace(EXTRAS, extras_table(root / "pyproject.toml"))
    return markdown
