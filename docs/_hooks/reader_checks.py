"""MkDocs hook: every page speaks to a reader of the project, not to the people who built it.

``on_page_content`` looks at the text of every rendered page (hand-written pages, experiment pages generated from
the READMEs, API pages generated from docstrings) and warns -- so ``mkdocs build --strict`` fails -- on

* **working notes**: "the session", "the coordinator", "helper", "the issue", "issue 12" / "#12", "CI ran",
  "other engineers", a design file the reader cannot see ("DESIGN.md");
* **machine paths**: absolute paths into one machine's folders (its work, home, temporary or root directory), the
  shared-data folder beside one checkout, a named virtual-environment folder (the ``machine path`` rule below);
* a **reStructuredText literal-block marker** (``Usage::``) left in the text;
* **Sphinx roles** left in docstrings (``:class:`X```), which do not link here: write ``[X][ghl_snn.X]``
  (source code shown in a code block is left alone).

Each warning names the page, the rule and the text around the match.
"""
from __future__ import annotations

import html as html_lib
import logging
import re
from typing import Any

log = logging.getLogger("mkdocs.hooks.reader_checks")

RULES: dict[str, re.Pattern[str]] = {
    "working note": re.compile(
        r"\bthe session\b|\bcoordinator\b|\bhelpers?\b|\bthe issue(?:'s)?\b|\bissue #?\d+|(?<![\w&])#\d+\b|"
        r"\bCI ran\b|\bother engineers\b|\bDESIGN\.md\b", flags=re.I),
    "machine path": re.compile(r"(?<![\w.~])/(?:work|home/\w+|tmp|root)/|\.\./shared/|\.venvs/"),
    "Sphinx role": re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref):(?=\s*\S)"),
    "reST literal marker": re.compile(r"(?<=[\w)\]])::(?=\s|$)"),
}
#: parts of a page that are not the author's text
SKIP = re.compile(r"<(script|style)\b.*?</\1>|<nav\b.*?</nav>", flags=re.S)
CODE_BLOCK = re.compile(r"<pre\b.*?</pre>", flags=re.S)
#: rules that do not apply to code blocks
PROSE_ONLY = {"Sphinx role", "reST literal marker"}
TAG = re.compile(r"<[^>]+>")


def page_text(html: str) -> str:
    return html_lib.unescape(TAG.sub(" ", SKIP.sub(" ", html)))


def problems(html: str) -> list[str]:
    """``'rule 'match' in "…context…"'`` for every match of ``RULES`` in the text of a rendered page."""
    found = []
    full, prose = page_text(html), page_text(CODE_BLOCK.sub(" ", html))
    for rule, pattern in RULES.items():
        text = prose if rule in PROSE_ONLY else full
        for match in pattern.finditer(text):
            start, end = max(0, match.start() - 40), min(len(text), match.end() + 40)
            context = " ".join(text[start:end].split())
            found.append(f"{rule} '{match.group(0)}' in \"…{context}…\"")
    return found


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    for problem in problems(html):
        log.warning(f"{page.file.src_uri}: {problem}")
    return html
