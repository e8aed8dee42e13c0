"""The documentation site, checked on what a reader gets: the HTML that ``mkdocs build`` writes, after every hook.

The site is built once (into a temporary folder) and then checked for what a browser showed going wrong:

* the build logs no warning (what ``mkdocs build --strict`` would abort on: dead links, unknown cross-references,
  docstring errors, working notes, machine paths, Sphinx roles -- see ``docs/_hooks/``);
* no raw LaTeX outside math elements (``\\(``, ``\\[``, ``$…$``, ``\\frac``, ``\\_`` in the text or the table of
  contents), and every page with math loads the MathJax served by the site itself;
* every link, image, script and stylesheet of every page resolves to a file of the site, and every ``#anchor`` to
  an element of its target page;
* every page is reachable from the navigation;
* no page loads a script, stylesheet, font or image from another host (no CDN);
* the top-level API page lists every name of ``ghl_snn.__all__``; the install page shows the README's commands.

Cheaper source-level checks come first: an API entry for every public module, every example on the examples page,
no "DESIGN.md" citation and no Sphinx role in the sources (``docs/_tools/docstring_crossrefs.py`` converts roles),
and unit tests of the hooks' own rules.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS = DOCS / "_hooks"
#: experiment programs are documented by their ``--help``; everything else public has an API entry
NOT_IN_API = re.compile(r"^ghl_snn\.experiments\.")


def load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public_all() -> list[str]:
    tree = ast.parse((ROOT / "ghl_snn" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]
    raise AssertionError("ghl_snn/__init__.py has no __all__")


# --------------------------------------------------------------------------------------------- source-level checks

def test_every_public_module_has_an_api_entry() -> None:
    api = load_hook("api")
    expected = set()
    for path in (ROOT / "ghl_snn").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(part.startswith("_") for part in parts):
            continue
        name = ".".join(parts)
        if not NOT_IN_API.match(name):
            expected.add(name)
    missing = sorted(expected - api.documented_modules(DOCS, ROOT))
    assert not missing, f"add these modules to a page in docs/api/ (a '::: name' line or a modules: marker): {missing}"


def test_every_example_is_on_the_examples_page() -> None:
    page = (DOCS / "guides" / "examples.md").read_text(encoding="utf-8")
    included = set(re.findall(r'--8<-- "examples/([\w.]+)"', page))
    scripts = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert scripts == included, f"examples not shown: {sorted(scripts - included)}; stale: {sorted(included - scripts)}"
    outputs = set(re.findall(r'--8<-- "docs/guides/output/([\w.]+)\.txt"', page))
    assert outputs == {Path(s).stem for s in scripts}, "every example's page section shows its recorded output"
    for stem in outputs:   # recorded from the command the page shows
        recorded = (DOCS / "guides" / "output" / f"{stem}.txt").read_text(encoding="utf-8")
        command = recorded.splitlines()[0].removeprefix("$ ")
        assert f"```bash\n{command}\n```" in page, f"{stem}: output recorded with '{command}', not the page's command"


def test_sources_cite_the_docs_not_a_design_file_and_use_no_sphinx_roles() -> None:
    """Docstrings (also those shown only by ``--help``) cite the documentation's pages, which a reader can open, and
    write cross-references the site links (``[`GHL`][ghl_snn.GHL]``); ``docs/_tools/docstring_crossrefs.py``
    converts Sphinx roles."""
    role = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref):`")
    design, roles = [], []
    for folder in ("ghl_snn", "benchmarks", "examples", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".md") or "_hooks" in path.parts or "_tools" in path.parts:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                where = f"{path.relative_to(ROOT)}:{number}"
                if "DESIGN.md" in line:
                    design.append(where)
                if folder == "ghl_snn" and role.search(line):
                    roles.append(where)
    assert not design, f"cite the architecture page of the docs instead of DESIGN.md: {design}"
    assert not roles, f"Sphinx roles (run python docs/_tools/docstring_crossrefs.py): {roles[:20]}"


#: an absolute folder of one machine, assembled here so that the repository itself names no machine path
MACHINE_FOLDER = "/" + "work"
#: the shared-data folder beside one checkout, assembled for the same reason
SHARED_FOLDER = ".." + "/shared"


def test_reader_checks_catch_working_notes_machine_paths_and_roles() -> None:
    checks = load_hook("reader_checks")
    assert checks.problems("<p>The run finished; the table below is its result.</p>") == []
    for bad, rule in [("<p>To fit the session we cut it.</p>", "working note"),
                      ("<p>As in DESIGN.md §1.</p>", "working note"),
                      ("<p>the issue's width</p>", "working note"),
                      (f"<pre><code>cd {MACHINE_FOLDER}/main &amp;&amp; python x.py</code></pre>", "machine path"),
                      (f"<p>--data-root {SHARED_FOLDER}/data</p>", "machine path"),
                      ("<p>see :class:<code>GHL</code></p>", "Sphinx role"),
                      ("<p>Usage::</p>", "reST literal marker")]:
        found = checks.problems(bad)
        assert len(found) == 1 and found[0].startswith(rule), (bad, found)
    # source code shown in a code block may use Sphinx roles
    assert checks.problems("<pre><code>'''Uses :class:`GHL`.'''</code></pre>") == []


def test_experiment_hook_fails_on_a_dead_link(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = load_hook("experiments")
    folder = tmp_path / "experiments" / "demo"
    folder.mkdir(parents=True)
    (folder / "plot.png").write_bytes(b"png")
    (tmp_path / "ghl_snn").mkdir()
    (tmp_path / "ghl_snn" / "x.py").write_text("")
    text = "[plot](plot.png) [code](../../ghl_snn/x.py) [runs](runs/)"
    with caplog.at_level("WARNING"):
        out = hook._rewrite_links(text, "experiments/demo/README.md", folder, {"plot.png"}, tmp_path,
                                  tmp_path / "docs", {"demo"})
    assert "[plot](plot.png)" in out                       # a served file keeps its link
    assert "code (`ghl_snn/x.py`)" in out                  # a repository file becomes its path
    assert [r.getMessage() for r in caplog.records if "runs/" in r.getMessage()], "a dead link must warn"


def test_experiment_hook_turns_a_github_alert_into_an_admonition() -> None:
    hook = load_hook("experiments")
    text = ("# Title\n\n> [!WARNING]\n> **Result**\n>\n> | a | b |\n> |---|---|\n> | 1 | 2 |\n\n"
            "After.\n\n> [!NOTE]\n> Plain note.\n\n> An ordinary quote.\n")
    out = hook.github_alerts(text)
    assert '!!! warning "Result"\n\n    | a | b |\n    |---|---|\n    | 1 | 2 |\n\nAfter.' in out
    assert '!!! note "Note"\n\n    Plain note.\n' in out
    assert "> An ordinary quote." in out and "[!" not in out


# ------------------------------------------------------------------------------------------------ the built site

class Page(HTMLParser):
    """Ids, references and the reader-visible text of one HTML page (math, code and scripts set aside)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    OPAQUE = {"script", "style", "pre", "code", "svg", "mjx-container", "textarea"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []          # (tag, url)
        self.text: list[str] = []
        self.math = 0
        self.scripts: list[str] = []
        self.nav_links: list[str] = []
        self._stack: list[tuple[str, bool, bool]] = []   # (tag, opaque, in primary nav)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        for attr in ("href", "src"):
            if a.get(attr):
                self.refs.append((tag, a[attr]))
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        classes = a.get("class", "").split()
        math = "arithmatex" in classes
        self.math += math
        opaque = tag in self.OPAQUE or math or (bool(self._stack) and self._stack[-1][1])
        in_nav = "md-nav--primary" in classes or (bool(self._stack) and self._stack[-1][2])
        if tag == "a" and in_nav and a.get("href"):
            self.nav_links.append(a["href"])
        if tag not in self.VOID:
            self._stack.append((tag, opaque, in_nav))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                del self._stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if not (self._stack and self._stack[-1][1]):
            self.text.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NO_MKDOCS_2_WARNING": "1"}
    # --no-strict so that the site is written even when it has warnings: test_site_builds_without_warnings reports them
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--no-strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and (out / "index.html").is_file(), f"mkdocs build failed:\n{log[-4000:]}"
    return out, log


@pytest.fixture(scope="module")
def pages(site: tuple[Path, str]) -> dict[str, Page]:
    out, _ = site
    parsed = {}
    for path in sorted(out.rglob("*.html")):
        rel = path.relative_to(out).as_posix()
        if rel == "404.html" or rel.startswith("assets/"):
            continue
        page = Page()
        page.feed(path.read_text(encoding="utf-8"))
        parsed[rel] = page
    assert len(parsed) > 20
    return parsed


def test_site_builds_without_warnings(site: tuple[Path, str]) -> None:
    _, log = site
    warnings = [line for line in log.splitlines() if re.match(r"\s*(\x1b\[\d+m)?(WARNING|ERROR)\b", line)]
    assert not warnings, "mkdocs build --strict would fail on:\n" + "\n".join(warnings)


RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\$[^$\s][^$\n]{0,80}?\$|\\(?:frac|operatorname|mathbb|text|tau|eta|odot|sum)\b"
                     r"|\\_")


def test_no_raw_latex_outside_math(pages: dict[str, Page]) -> None:
    bad = {}
    for rel, page in pages.items():
        text = " ".join(page.text)
        found = sorted({m.group(0) for m in RAW_TEX.finditer(text)})
        if found:
            bad[rel] = found
    assert not bad, f"raw LaTeX shown as text (write it inside $…$, or keep it out of headings): {bad}"


def test_math_pages_load_the_local_mathjax(pages: dict[str, Page]) -> None:
    with_math = {rel: page for rel, page in pages.items() if page.math}
    assert built(pages, "concepts/three-factors") in with_math
    for rel, page in with_math.items():
        local = [s for s in page.scripts if s.endswith("assets/mathjax/tex-chtml.js") and not urlsplit(s).scheme]
        assert local, f"{rel} has math but loads no local MathJax: {page.scripts}"


def built(pages: dict[str, "Page"], name: str) -> str:
    """The built file of page ``name`` ("install", "api/ghl_snn"): ``name.html`` or ``name/index.html``."""
    for rel in (f"{name}.html", f"{name}/index.html"):
        if rel in pages:
            return rel
    raise AssertionError(f"no built page for {name}: {sorted(pages)[:10]}…")


def _target(rel: str, url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = unquote(parts.path)
    base = posixpath.dirname(rel)
    target = posixpath.normpath(posixpath.join(base, path)) if path else rel
    if path.endswith("/") or target == ".":
        target = posixpath.join(target, "index.html") if target != "." else "index.html"
    return target, parts.fragment


def test_every_link_and_anchor_resolves(site: tuple[Path, str], pages: dict[str, Page]) -> None:
    out, _ = site
    ids = {rel: page.ids for rel, page in pages.items()}
    broken = []
    for rel, page in pages.items():
        for tag, url in page.refs:
            if urlsplit(url).scheme or url.startswith(("//", "data:")):
                continue
            target, fragment = _target(rel, url)
            if not (out / target).is_file():
                if (out / target).is_dir() and (out / target / "index.html").is_file():
                    target = posixpath.join(target, "index.html")
                else:
                    broken.append(f"{rel}: <{tag}> {url} -> {target} (no such file)")
                    continue
            if fragment and target in ids and fragment not in ids[target]:
                broken.append(f"{rel}: <{tag}> {url} -> no element id '{fragment}' in {target}")
    assert not broken, "\n".join(broken[:40])


def test_every_page_is_in_the_nav(pages: dict[str, Page]) -> None:
    nav = {_target("index.html", url)[0] for url in pages["index.html"].nav_links}
    missing = sorted(rel for rel in pages if rel not in nav)
    assert not missing, f"pages that no navigation entry reaches: {missing}"


def test_no_remote_assets(site: tuple[Path, str], pages: dict[str, Page]) -> None:
    out, _ = site
    remote = [f"{rel}: <{tag}> {url}" for rel, page in pages.items() for tag, url in page.refs
              if tag in ("script", "link", "img", "iframe", "source", "embed") and (urlsplit(url).scheme
                                                                                   or url.startswith("//"))]
    for css in list((out / "stylesheets").glob("*.css")) + list((out / "javascripts").glob("*.js")):
        remote += [f"{css.relative_to(out)}: {m}" for m in re.findall(r"https?://[^\s'\")]+", css.read_text())]
    assert not remote, "the site must work offline; remote assets:\n" + "\n".join(remote[:20])


def test_top_level_api_page_lists_all_of_dunder_all(pages: dict[str, Page]) -> None:
    page = pages[built(pages, "api/ghl_snn")]
    linked = {url.rsplit(".", 1)[-1] for tag, url in page.refs if tag == "a" and "#ghl_snn." in url}
    missing = [name for name in public_all() if name not in linked]
    assert not missing, f"names of ghl_snn.__all__ without a link on the top-level API page: {missing}"


def test_install_page_shows_the_readme_commands(site: tuple[Path, str], pages: dict[str, Page]) -> None:
    out, _ = site
    commands = load_hook("install").readme_setup_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands, "README.md has no '## Set-up' section with ```bash blocks"
    html = (out / built(pages, "install")).read_text(encoding="utf-8")
    text = " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())
    for command in commands:
        assert " ".join(command.split()) in text, f"the install page does not show the README command {command!r}"


# ------------------------------------------------------------------------------ the site in a browser, offline

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PROBE = """<!doctype html><html><body><pre id="out">pending</pre><iframe id="f" style="width:1280px;height:900px">
</iframe><script>
const pages = PAGES, results = {}, frame = document.getElementById("f");
function measure(url) { return new Promise(resolve => {
  frame.onload = async () => {
    const w = frame.contentWindow, d = frame.contentDocument;
    try { if (w.MathJax && w.MathJax.startup) await w.MathJax.startup.promise; } catch (e) {}
    await new Promise(r => setTimeout(r, 200));
    results[url] = {
      mathjax: !!(w.MathJax && w.MathJax.startup && w.MathJax.startup.document),
      math: d.querySelectorAll(".arithmatex").length,
      rendered: d.querySelectorAll(".arithmatex mjx-container").length,
      errors: [...d.querySelectorAll("mjx-merror")].map(e => e.getAttribute("data-mjx-error") || e.textContent),
      too_wide: [...d.querySelectorAll("div.arithmatex")].filter(e => e.scrollWidth > e.clientWidth + 1).length};
    resolve(); };
  frame.src = url; }); }
(async () => { for (const p of pages) await measure(p);
  document.getElementById("out").textContent = JSON.stringify(results); })();
</script></body></html>"""


@pytest.mark.skipif(not any(shutil.which(b) for b in BROWSERS), reason="no headless Chromium installed")
def test_math_renders_offline_in_a_browser(site: tuple[Path, str], pages: dict[str, Page],
                                           tmp_path: Path) -> None:
    """Every formula is typeset by the site's own MathJax with every other host unreachable, none is a TeX error,
    and no display formula is wider than the column (1280-px window)."""
    import functools
    import http.server
    import json
    import threading

    out, _ = site
    urls = ["/" + rel for rel, page in pages.items() if page.math]
    (out / "_probe.html").write_text(PROBE.replace("PAGES", json.dumps(urls)), encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
        dom = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp_path}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                              "--window-size=1400,1000", "--virtual-time-budget=60000", "--dump-dom",
                              f"http://127.0.0.1:{server.server_address[1]}/_probe.html"],
                             capture_output=True, text=True, timeout=180).stdout
    finally:
        server.shutdown()
        (out / "_probe.html").unlink()
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, flags=re.S)
    assert found and found.group(1) != "pending", f"the browser returned no result: {dom[:300]}"
    results = json.loads(unescape(found.group(1)))
    assert set(results) == set(urls)
    bad = {url: r for url, r in results.items()
           if not r["mathjax"] or r["rendered"] != r["math"] or r["errors"] or r["too_wide"]}
    assert not bad, f"formulas not rendered, TeX errors or display formulas wider than the column: {bad}"


def test_search_works_from_disk(site: tuple[Path, str], pages: dict[str, Page]) -> None:
    """The offline plugin ships the search index as a script, which a page opened from file:// can load."""
    out, _ = site
    index = out / "search" / "search_index.js"
    assert index.is_file(), "no search/search_index.js: search would disappear when the site is opened from disk"
    text = index.read_text(encoding="utf-8")
    assert text.startswith("var __index") and "SWTA" in text, "the offline search index holds no page text"


def test_no_escaped_pipe_in_rendered_code(site: tuple[Path, str]) -> None:
    out, _ = site
    code = re.compile(r"<code>(.*?)</code>", re.DOTALL)
    bad = [f"{path.relative_to(out)}: {m[:60]}" for path in out.rglob("*.html")
           for m in code.findall(path.read_text(encoding="utf-8")) if "\\|" in m]
    assert not bad, "a table's escaped pipe shows as \\| in rendered code:\n" + "\n".join(bad[:10])


def test_every_experiment_figure_is_on_a_page(pages: dict[str, Page]) -> None:
    figures = {p.relative_to(ROOT).as_posix() for ext in ("png", "svg", "jpg", "gif")
               for p in (ROOT / "experiments").rglob(f"*.{ext}")}
    shown = {posixpath.normpath(posixpath.join(posixpath.dirname(rel), url.split("#")[0]))
             for rel, page in pages.items() for tag, url in page.refs if tag == "img" and not urlsplit(url).scheme}
    missing = sorted(figures - shown)
    assert not missing, "figures of recorded experiments that no page shows:\n" + "\n".join(missing)


def test_home_page_shows_version_and_how_it_works(pages: dict[str, Page]) -> None:
    import ghl_snn

    home = pages["index.html"]
    assert ghl_snn.__version__ in " ".join(home.text)
    assert any(tag == "img" and url.endswith("three-factors.png") for tag, url in home.refs)


@pytest.mark.skipif(not any(shutil.which(b) for b in BROWSERS), reason="no headless Chromium installed")
def test_search_finds_pages_when_the_site_is_opened_from_disk(site: tuple[Path, str], tmp_path: Path) -> None:
    """Opened as file://index.html?q=..., the search box answers (browsers refuse workers on file:// pages; the
    site's own stand-in runs the search worker in an iframe)."""
    out, _ = site
    browser = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    dom = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path}", "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--virtual-time-budget=20000", "--dump-dom",
                          (out / "index.html").as_uri() + "?q=eligibility"],
                         capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'md-search-result__meta">(\d+) matching', dom)
    assert found and int(found.group(1)) > 3, "search returned nothing from the site opened from disk"
