"""MkDocs hook: serve MathJax from the installed Python package, so formulas render with no network.

The docs extra installs ``django-static-mathjax`` (MathJax 3, static files only, no dependencies; import name
``mathjax``).  ``on_files`` adds the parts of its ``es5/`` build that a page can load to the site under
``assets/mathjax/``: the ``tex-chtml.js`` component, the TeX extensions it autoloads, the CHTML web fonts, the
accessibility and menu components and their English speech rules.  ``mkdocs.yml`` loads
``assets/mathjax/tex-chtml.js`` after ``javascripts/mathjax.js`` (the configuration); no page refers to a CDN.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DEST = "assets/mathjax"
DISTRIBUTION = "django-static-mathjax"
#: what is served, relative to MathJax's es5/ folder (the rest -- SVG output, other languages' speech rules, the
#: node build -- no page loads)
PARTS = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "a11y", "ui",
         "sre/mathmaps/base.json", "sre/mathmaps/en.json")


def mathjax_es5() -> Path:
    """The ``es5/`` folder of the installed MathJax package; a clear error if it is missing."""
    try:
        import mathjax  # django-static-mathjax
    except ImportError as error:
        raise PluginError(f"MathJax is not installed: pip install -e \".[docs]\" (it ships as {DISTRIBUTION})") \
            from error
    es5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (es5 / PARTS[0]).is_file():
        raise PluginError(f"{es5 / PARTS[0]} not found: reinstall {DISTRIBUTION}")
    return es5


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    es5 = mathjax_es5()
    for part in PARTS:
        source = es5 / part
        for path in sorted(source.rglob("*") if source.is_dir() else [source]):
            if path.is_file():
                uri = f"{DEST}/{path.relative_to(es5).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    licence = next((f for f in metadata.distribution(DISTRIBUTION).files or [] if f.name == "LICENSE"), None)
    if licence is not None:
        files.append(File.generated(config, f"{DEST}/LICENSE.txt", abs_src_path=str(licence.locate())))
    return files
