"""The built book as a reader sees it: every page of the table of contents opened in headless Chromium.

Fails on a missing figure, an equation MathJax did not typeset, a broken internal link, a Binder or
Colab launch button (those services cannot import remap), or an error in an executed notebook; saves a
screenshot of each page under ``_build/screenshots``.

Runs after the book is built: ``make test`` builds it with the smoke profile and then runs this file
with ``REMAP_BOOK_HTML=_build/html``. Without that variable a missing book, or one older than its
sources, skips (so ``pytest tests`` can run before any build); with it, a missing book fails. A
missing Chromium fails (``make test`` installs Debian's package first: ``scripts/ensure-chromium.sh``);
only ``REMAP_SKIP_RENDERED=1``, asked for on purpose, skips the check.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
REQUESTED = "REMAP_BOOK_HTML" in os.environ
BOOK_HTML = Path(os.environ.get("REMAP_BOOK_HTML") or REPO / "_build" / "html")
if not BOOK_HTML.is_absolute():
    BOOK_HTML = REPO / BOOK_HTML
SCREENSHOTS = BOOK_HTML.parent / "screenshots"
CHROMIUM = os.environ.get("REMAP_CHROMIUM", "/usr/bin/chromium")
SKIP_ASKED = os.environ.get("REMAP_SKIP_RENDERED", "0") == "1"
MIN_SCREENSHOT_BYTES = 40_000  # a blank 1280x2000 page is about 12 kB
BUILD_COMMAND = "make book PROFILE=smoke"


def toc_pages() -> list[str]:
    """Document names of the book, in reading order (root first)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                pages.append(node["file"].removesuffix(".md").removesuffix(".ipynb"))
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return pages


PAGES = toc_pages()


@pytest.fixture(scope="module")
def book() -> Path:
    if not (BOOK_HTML / f"{PAGES[0]}.html").exists():
        message = f"no built book at {BOOK_HTML}: build it with `{BUILD_COMMAND}` (or run `make test`)"
        if REQUESTED:
            pytest.fail(message)
        pytest.skip(message)
    stale = _newer_sources()
    if stale and not REQUESTED:
        # `pytest tests` must not judge an old build by today's sources (make test sets REMAP_BOOK_HTML)
        pytest.skip(f"the book in {BOOK_HTML} is older than {stale[0]}: rebuild it with `{BUILD_COMMAND}`")
    if SKIP_ASKED:
        pytest.skip("REMAP_SKIP_RENDERED=1: rendered-page check skipped on request")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run `make chromium` (Debian's chromium package), "
                    "set REMAP_CHROMIUM, or skip this check on purpose with REMAP_SKIP_RENDERED=1")
    return BOOK_HTML


def _newer_sources() -> list[str]:
    """Sources changed after the last build (Sphinx rewrites searchindex.js on every build)."""
    built = (BOOK_HTML / "searchindex.js").stat().st_mtime if (BOOK_HTML / "searchindex.js").exists() else 0
    sources = [REPO / "_toc.yml", REPO / "_config.yml", *(REPO / "book").glob("*.md"),
               *(REPO / "book" / "notebooks").glob("*.ipynb")]
    return [str(p.relative_to(REPO)) for p in sources if p.exists() and p.stat().st_mtime > built]


@functools.cache
def render(page: str) -> str:
    """The page's DOM after its scripts (MathJax) ran; a screenshot of it is saved on the way."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{page.replace('/', '__')}.png"
    shot.unlink(missing_ok=True)
    profile = BOOK_HTML.parent / ".chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars",
         "--virtual-time-budget=15000",  # virtual time: MathJax finishes typesetting before the dump
         "--window-size=1280,2000", f"--screenshot={shot}", "--dump-dom", (BOOK_HTML / f"{page}.html").as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"chromium failed on {page}: {result.stderr[-2000:]}"
    return result.stdout


def _visible_text(dom: str, code: bool = False) -> str:
    """The DOM's text without scripts, styles and MathJax's own markup, and without code unless ``code``."""
    hidden = "script|style|mjx-container" + ("" if code else "|pre|code")
    dom = re.sub(rf"<({hidden})\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def _main(dom: str) -> str:
    """The article body, without the theme's navigation and header."""
    m = re.search(r'<main\b.*?</main>', dom, flags=re.S)
    return m.group(0) if m else dom


def _expected_figures(page: str) -> int:
    """Images the page must show: a notebook's image outputs, or a Markdown page's figures."""
    source = REPO / f"{page}.ipynb"
    if source.exists():
        nb = nbformat.read(str(source), as_version=4)
        return sum(any(k.startswith("image/") for k in out.get("data", {}))
                   for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))
    text = (REPO / f"{page}.md").read_text()
    return len(re.findall(r"^```\{(?:figure|image)\}", text, flags=re.M)) + len(re.findall(r"!\[[^]]*\]\(", text))


@functools.cache
def _ids(path: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_its_figures(book, page):
    assert (book / f"{page}.html").exists(), f"{page}.html missing from the build"
    dom = render(page)
    main = _main(dom)
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', main)
    for src in sources:
        if src.startswith(("data:", "http:", "https:")):
            continue
        target = (book / page).parent / unquote(urlsplit(src).path)
        assert target.exists(), f"{page}: image {src} is not in the build"
    shown = sum("_images/" in src or src.startswith("data:image") for src in sources)
    expected = _expected_figures(page)
    assert shown >= expected, f"{page}: {shown} figures shown, {expected} in the source"


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(book, page):
    dom = render(page)
    static = (book / f"{page}.html").read_text()
    n_math = len(re.findall(r'class="math notranslate', static))
    text = _visible_text(_main(dom))
    for raw in ("$$", "\\begin{", "\\(", "\\["):
        context = text[max(text.find(raw) - 80, 0):][:200]
        assert raw not in text, f"{page}: untypeset math {raw!r} left in the page: ...{context}"
    if n_math:
        typeset = dom.count("<mjx-container")
        assert typeset >= n_math, f"{page}: {n_math} equations in the HTML, {typeset} typeset by MathJax"


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_resolve(book, page):
    dom = render(page)
    here = (book / page).parent
    for href in set(re.findall(r'<a\b[^>]*\bhref="([^"]*)"', dom)):
        href = html.unescape(href)
        parts = urlsplit(href)
        if parts.scheme in ("http", "https", "mailto", "javascript") or parts.netloc:
            continue
        target = (here / unquote(parts.path)).resolve() if parts.path else book / f"{page}.html"
        assert target.exists(), f"{page}: link {href!r} points to a missing file"
        if parts.fragment and target.suffix == ".html":
            assert parts.fragment in _ids(target), f"{page}: link {href!r}: no id {parts.fragment!r} in {target.name}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("book/notebooks/")])
def test_no_launch_buttons_to_services_that_cannot_import_remap(book, page):
    # Binder and Colab neither install remap nor fetch its data: a button there would end in an ImportError
    dom = render(page)
    links = re.findall(r'href="(https://(?:mybinder\.org|colab\.research\.google\.com)[^"]*)"', dom)
    assert not links, f"{page}: launch buttons {links} open notebooks that cannot import remap_lib"


def test_executed_notebooks_have_no_error_output(book):
    executed = sorted((REPO / "book" / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert executed, "no executed notebooks in book/notebooks"
    for source in executed:
        nb = nbformat.read(str(source), as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{source.name} cell {i}: {out.get('ename')}"
                assert "Traceback (most recent call last)" not in str(out.get("text", "")), f"{source.name} cell {i}"


@pytest.mark.parametrize("page", PAGES)
def test_no_traceback_shown(book, page):
    assert "Traceback" not in _visible_text(render(page), code=True), f"{page}: a traceback is shown"


@pytest.mark.parametrize("page", PAGES)
def test_screenshot_saved(book, page):
    render(page)
    shot = SCREENSHOTS / f"{page.replace('/', '__')}.png"
    assert shot.exists(), f"no screenshot of {page}"
    assert shot.stat().st_size > MIN_SCREENSHOT_BYTES, f"{shot.name}: {shot.stat().st_size} bytes, a blank page?"
