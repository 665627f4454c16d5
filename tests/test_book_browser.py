"""The built book, opened in headless Chromium: every page of _toc.yml loads and reads right.

For each page: it loads with no JavaScript error and no missing local file; no cell shows an
error or a traceback; every image has loaded; every equation has been rendered by MathJax (and
no raw ``$$`` or ``\\(`` source is left in the text); the previous/next links and the sidebar's
table of contents lead to files that exist; no table or code block is cut (a table fits the
column; a code block fits or scrolls); no numbered equation runs under its number; no page says
a spread printed as zero ("± 0.000") or "1 threads". A screenshot of each page is kept in
_build/screenshots/<page>.png. The machine running this has no internet, so the maths can only
render from the local MathJax copy (see book/_ext/offline_mathjax.py).

The book is expected in _build/html (``make book-smoke`` or ``make book``); when it is missing,
or older than a source page, the configuration or the library, it is built first at the smoke
budget. Skipped when playwright or Chromium is not installed.

    make book-smoke && make test-book        # what CI runs
    python -m pytest -q -m browser tests/test_book_browser.py
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

yaml = pytest.importorskip("yaml")

# a spread printed as zero ("± 0.000", "±0.0%": every digit 0) or a thread count in the plural for one
ZERO_SPREAD_OR_PLURAL = re.compile(r"±\s?0\.0+(?![0-9])|\b1 threads\b")
ROOT = Path(__file__).resolve().parents[1]
# CONTRASTLAB_BOOK_HTML checks another build as it is (never rebuilt), e.g. an older one.
HTML = Path(os.environ.get("CONTRASTLAB_BOOK_HTML") or ROOT / "_build" / "html")
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CONTRASTLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BUILD_TIMEOUT_S = 1800
SCREENSHOT_MAX_HEIGHT = 12_000   # pixels; the API page is seven times longer

pytestmark = pytest.mark.browser


def _toc_pages() -> list[str]:
    """The files of _toc.yml in reading order, without suffix (e.g. 'notebooks/01_quickstart')."""
    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    yield node[key]
            for value in node.values():
                if isinstance(value, (dict, list)):
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    pages = []
    for entry in walk(yaml.safe_load((ROOT / "_toc.yml").read_text())):
        entry = entry.removesuffix(".ipynb").removesuffix(".md")
        if entry not in pages:
            pages.append(entry)
    return pages


PAGES = _toc_pages()


def _sources() -> list[Path]:
    found = [ROOT / "_config.yml", ROOT / "_toc.yml", *(ROOT / "contrastlab").rglob("*.py"),
             *(p for p in (ROOT / "book").rglob("*") if p.is_file())]
    for page in PAGES:
        found += [ROOT / f"{page}{suffix}" for suffix in (".ipynb", ".md") if (ROOT / f"{page}{suffix}").exists()]
    return found


def _stale_reason() -> str | None:
    if not (HTML / "index.html").exists():
        return f"{HTML / 'index.html'} is missing"
    built = min((HTML / f"{page}.html").stat().st_mtime if (HTML / f"{page}.html").exists() else 0.0
                for page in PAGES)
    newer = [p for p in _sources() if p.stat().st_mtime > built]
    if newer:
        return f"{newer[0].relative_to(ROOT)} is newer than the build"
    return None


@pytest.fixture(scope="module")
def book_html() -> Path:
    """_build/html, built at the smoke budget first when missing or stale."""
    reason = None if os.environ.get("CONTRASTLAB_BOOK_HTML") else _stale_reason()
    if reason is not None:
        print(f"\nbuilding the book at the smoke budget ({reason})")
        env = {**os.environ, "CONTRASTLAB_BUDGET": "smoke"}
        cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
               "build", str(ROOT), "-W", "-n", "--keep-going", "--all"]
        done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            pytest.fail(f"the book build failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}", pytrace=False)
    return HTML


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CONTRASTLAB_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


# Runs in the page: wait until MathJax (2 or 3) has typeset everything, and every image has settled.
SETTLE_JS = """async () => {
  if (window.MathJax && MathJax.Hub && MathJax.Hub.Register) {          // MathJax 2
    await new Promise(resolve => MathJax.Hub.Register.StartupHook("End", resolve));
    await new Promise(resolve => MathJax.Hub.Queue([resolve]));
  } else if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await Promise.all([...document.images].map(img => img.complete ? null :
    new Promise(resolve => { img.onload = img.onerror = resolve; })));
}"""

# Runs in the page: what is cut or overlaps. A table must fit the page's column (a table that needs
# its scroll bar hides columns from a reader who does not see it); a code block fits or scrolls;
# the visible part of a numbered equation (its box cut by any box that scrolls) must not meet its number.
LAYOUT_JS = """() => {
  const main = document.querySelector('main') || document.body;
  const overflowX = el => getComputedStyle(el).overflowX;
  const label = el => el.tagName.toLowerCase() + ': ' + el.innerText.replace(/\\s+/g, ' ').slice(0, 70);
  const column = main.getBoundingClientRect();
  const cut = [];
  for (const el of main.querySelectorAll('table, pre')) {
    if (!el.getClientRects().length) continue;
    let scroller = null;
    for (let a = el; a && a !== main; a = a.parentElement) {
      if (a.scrollWidth > a.clientWidth + 1 && overflowX(a) !== 'visible') { scroller = a; break; }
    }
    if (el.tagName === 'TABLE' && scroller) {
      cut.push(`${label(el)} (${scroller.scrollWidth} px wide in a ${scroller.clientWidth} px column)`);
    } else if (scroller && !['auto', 'scroll'].includes(overflowX(scroller))) {
      cut.push(label(el) + ' (cut by its container, which does not scroll)');
    }
    const r = el.getBoundingClientRect();
    if (!scroller && (r.right > column.right + 1 || r.left < column.left - 1))
      cut.push(`${label(el)} (spills out of the column: ${Math.round(r.left)}-${Math.round(r.right)} px)`);
  }
  const overlaps = [];
  for (const d of main.querySelectorAll('div.math')) {
    const eqno = d.querySelector('.eqno');
    const body = d.querySelector('mjx-math, .mjx-math, .MathJax span.math, .MathJax_SVG > svg');
    if (!eqno || !body) continue;
    const e = eqno.getBoundingClientRect(), b = body.getBoundingClientRect();
    let left = b.left, right = b.right;
    for (let a = body.parentElement; a && a !== d.parentElement; a = a.parentElement) {
      if (overflowX(a) !== 'visible') {
        const c = a.getBoundingClientRect();
        left = Math.max(left, c.left); right = Math.min(right, c.right);
      }
    }
    if (left < e.right - 1 && e.left < right - 1 && b.top < e.bottom - 1 && e.top < b.bottom - 1)
      overlaps.push(eqno.innerText.trim() + ' (#' + d.id + ')');
  }
  return {cut, overlaps, text: main.innerText};
}"""

# Runs in the page: what the checks need, gathered in one pass.
INSPECT_JS = """() => {
  const main = document.querySelector('main') || document.body;
  const rendered = 'mjx-container, .MathJax, .MathJax_CHTML, .MathJax_SVG, .MathJax_Display';
  const maths = [...main.querySelectorAll('.math')];
  // Text the reader sees as prose: not code, not MathJax's own output or source scripts.
  const skip = 'pre, code, script, style, .highlight, mjx-container, .MathJax, .MathJax_CHTML, .MathJax_Preview';
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  const prose = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.parentElement.closest(skip)) prose.push(node.textContent);
  }
  const sidebar = document.querySelector('.bd-sidebar-primary, #pst-primary-sidebar') || document.body;
  return {
    title: document.title,
    maths: maths.length,
    unrendered: maths.filter(m => !m.querySelector(rendered)).map(m => m.textContent.slice(0, 80)),
    mathErrors: document.querySelectorAll('.MathJax_Error, .mjx-merror, mjx-merror, merror').length,
    prose: prose.join(' '),
    errorOutputs: [...main.querySelectorAll('.output.error, .output.traceback, .system-message')]
                    .map(e => e.innerText.slice(0, 300)),
    stderr: [...main.querySelectorAll('.output.stderr')].map(e => e.innerText),
    images: [...document.images].filter(i => i.getClientRects().length || i.closest('main'))
              .map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    prev: (document.querySelector('a.left-prev') || {}).href || null,
    next: (document.querySelector('a.right-next') || {}).href || null,
    toc: [...sidebar.querySelectorAll('nav a.reference.internal, .bd-links a')].map(a => a.href),
    colab: [...document.querySelectorAll('a[href*="colab.research.google.com"]')].map(a => a.href),
    assets: [...document.querySelectorAll('script[src], link[rel=stylesheet][href]')].map(e => e.src || e.href),
    search: !!document.querySelector('form[action*="search"], .search-button, button[aria-label*="Search"]'),
  };
}"""


def _local_file(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


@pytest.mark.parametrize("page", PAGES)
def test_page(page, browser, book_html):
    path = book_html / f"{page}.html"
    assert path.exists(), f"{page} is in _toc.yml but {path} was not built"
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    js_errors, missing = [], []
    tab.on("pageerror", lambda err: js_errors.append(str(err)))
    tab.on("requestfailed", lambda req: missing.append(req.url) if req.url.startswith("file:") else None)
    try:
        tab.goto(path.as_uri(), wait_until="load")
        tab.evaluate(SETTLE_JS)
        info = tab.evaluate(INSPECT_JS)
        layout = tab.evaluate(LAYOUT_JS)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = min(tab.evaluate("document.documentElement.scrollHeight"), SCREENSHOT_MAX_HEIGHT)
        tab.screenshot(path=str(SCREENSHOTS / f"{page.replace('/', '__')}.png"), full_page=True,
                       clip={"x": 0, "y": 0, "width": 1280, "height": height})
    finally:
        tab.close()

    problems = []
    problems += [f"JavaScript error: {e}" for e in js_errors]
    problems += [f"missing file: {u}" for u in missing]
    problems += [f"script or stylesheet missing: {url}" for url in info["assets"]
                 if (target := _local_file(url)) is not None and not target.exists()]
    problems += [f"error output: {e}" for e in info["errorOutputs"]]
    problems += [f"stderr output with an error: {s[:300]}" for s in info["stderr"] if "Traceback" in s or "Error" in s]
    if "Traceback (most recent call last)" in info["prose"]:
        problems.append("a traceback in the page text")
    problems += [f"image not loaded: {i['src']}" for i in info["images"] if not i["ok"]]
    problems += [f"cut: {c}" for c in layout["cut"]]
    problems += [f"equation overlaps its number: {o}" for o in layout["overlaps"]]
    for found in ZERO_SPREAD_OR_PLURAL.finditer(layout["text"]):
        at = found.start()
        problems.append(f"the page says {found.group(0)!r}: ...{layout['text'][max(0, at - 60):at + 40]}...")
    problems += [f"equation not rendered: {m!r}" for m in info["unrendered"]]
    if info["mathErrors"]:
        problems.append(f"{info['mathErrors']} MathJax error(s)")
    for raw in ("$$", "\\(", "\\)", "\\[", "\\begin{"):
        if raw in info["prose"]:
            at = info["prose"].index(raw)
            problems.append(f"raw maths source {raw!r} visible: ...{info['prose'][max(0, at - 60):at + 60]}...")
    links = [u for u in (info["prev"], info["next"]) if u] + info["toc"]
    problems += [f"link to a missing file: {url}" for url in links
                 if (target := _local_file(url)) is not None and not target.exists()]
    linked = {_local_file(url).relative_to(book_html.resolve()).as_posix() for url in info["toc"]
              if _local_file(url) is not None and _local_file(url).is_relative_to(book_html.resolve())}
    problems += [f"sidebar has no link to {other}" for other in PAGES[1:]
                 if other != page and f"{other}.html" not in linked]
    index = PAGES.index(page)
    if index > 0 and not info["prev"]:
        problems.append("no previous-page link")
    if index < len(PAGES) - 1 and not info["next"]:
        problems.append("no next-page link")
    if not info["search"]:
        problems.append("no search box")
    if page.startswith("notebooks/"):
        expected = f"colab.research.google.com/github/contrastlab/contrastlab/blob/main/{page}.ipynb"
        if not any(expected in url for url in info["colab"]):
            problems.append(f"no Colab launch link to {expected} (found {info['colab']})")
    assert not problems, f"{page}.html ({info['title']}):\n  " + "\n  ".join(problems)


def test_pages_with_maths_exist(browser, book_html):
    """The maths check above must have something to check: the notation page and chapters use maths."""
    text = (book_html / "book" / "notation.html").read_text()
    assert 'class="math' in text, "the notation page shows no maths: did dollarmath stop working?"


def test_search_finds_a_chapter(browser, book_html):
    tab = browser.new_page()
    try:
        tab.goto((book_html / "search.html").as_uri() + "?q=SimCLR", wait_until="load")
        tab.wait_for_selector("#search-results li a", timeout=30_000)
        hits = tab.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
    finally:
        tab.close()
    assert any("01_quickstart" in h for h in hits), f"searching 'SimCLR' did not find the quickstart: {hits}"
