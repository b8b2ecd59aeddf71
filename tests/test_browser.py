"""The rendered book, opened as files in headless Chromium, reads fully offline.

For every page in ``_toc.yml`` the test checks that each figure loaded (non-zero natural
size), that every equation was typeset by the local MathJax, that the page logged no
errors and asked for nothing outside ``_build/html``; it saves a full-page screenshot to
``_build/screenshots/<page>.png``. Search and next/previous navigation are checked too.

``python3 tools/tasks.py test`` installs Debian's chromium when it is missing, builds the
book and sets ``PKPD_REQUIRE_BROWSER=1``, so these tests always run there. Run alone
(plain ``pytest``) without a built book or a browser they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
]


def _toc_pages() -> list[str]:
    """Every page of the book in reading order, as paths without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc["parts"]:
        pages += [chapter["file"] for chapter in part["chapters"]]
    return pages


PAGES = _toc_pages()


def _missing(reason: str):
    if os.environ.get("PKPD_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _chromium() -> str | None:
    named = os.environ.get("CHROMIUM")  # a path, or a command name such as google-chrome
    if named:
        return shutil.which(named) or named
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _png_outputs(page: str) -> int:
    """How many figures the page's notebook stores (0 for a plain MyST page)."""
    notebook = ROOT / f"{page}.ipynb"
    if not notebook.exists():
        return 0
    cells = json.loads(notebook.read_text())["cells"]
    return sum(
        "image/png" in output.get("data", {})
        for cell in cells
        for output in cell.get("outputs", [])
    )


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not (HTML / "index.html").exists():
        _missing("the book is not built: run `python3 tools/tasks.py book`")
    executable = _chromium()
    if executable is None:
        _missing("no chromium on PATH: `apt-get install chromium` (tools/tasks.py test does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=tmp_path_factory.mktemp("chromium-profile"),  # fresh profile
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def _open(context, url: str):
    """Open ``url`` in a new tab, recording errors and any request that leaves the book."""
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"script error: {err}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    page.on("requestfailed", lambda req: problems.append(f"failed to load {req.url}"))

    def only_local(route):
        if route.request.url.startswith(HTML.as_uri()):
            route.continue_()
        else:
            problems.append(f"request outside the book: {route.request.url}")
            route.abort()

    page.route("**/*", only_local)
    page.goto(url, wait_until="load")
    return page, problems


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_offline(browser_context, name):
    html_file = HTML / f"{name}.html"
    assert html_file.exists(), f"{name} is in _toc.yml but was not rendered"
    page, problems = _open(browser_context, html_file.as_uri())

    n_math = page.locator(".math").count()
    if n_math:
        typeset = page.evaluate(
            "async () => { if (!window.MathJax?.startup?.promise) return false;"
            " await window.MathJax.startup.promise; return true; }"
        )
        assert typeset, f"{name}: MathJax did not load"
        assert page.locator(".math mjx-container").count() == n_math, (
            f"{name}: not every equation was typeset"
        )
        assert page.locator("mjx-merror").count() == 0, f"{name}: MathJax reported a TeX error"

    images = page.evaluate(
        "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    broken = [src for src, width in images if width == 0]
    assert not broken, f"{name}: figures that did not load: {broken}"
    assert len(images) >= _png_outputs(name), f"{name}: fewer figures than the notebook stores"

    SHOTS.mkdir(parents=True, exist_ok=True)
    # a full-page screenshot of the API page takes seconds, more on a loaded machine
    page.screenshot(path=SHOTS / f"{Path(name).name}.png", full_page=True, timeout=120_000)
    page.close()
    assert not problems, f"{name}: " + "; ".join(problems)


def test_math_is_typeset_in_model_chapter(browser_context):
    """The model chapter carries the equations; a renderer that drops them must fail."""
    page, problems = _open(browser_context, (HTML / f"{PAGES[1]}.html").as_uri())
    page.evaluate("async () => { await window.MathJax.startup.promise; }")
    assert page.locator("mjx-container").count() >= 5
    page.close()
    assert not problems


def test_search_finds_the_model_chapter(browser_context):
    page, problems = _open(browser_context, (HTML / "search.html").as_uri() + "?q=turnover")
    # results are appended one by one; Sphinx reports when the search has finished
    page.wait_for_function(
        "() => (document.querySelector('#search-results')?.textContent || '')"
        ".includes('Search finished')",
        timeout=30_000,
    )
    results = page.locator("#search-results ul.search li")
    hrefs = [
        results.nth(i).locator("a").first.get_attribute("href") for i in range(results.count())
    ]
    page.close()
    assert any(PAGES[1].split("/")[-1] in href for href in hrefs), hrefs
    assert not problems, problems


def test_next_links_walk_the_toc_in_order(browser_context):
    page, problems = _open(browser_context, (HTML / f"{PAGES[0]}.html").as_uri())
    visited = [PAGES[0]]
    while (link := page.locator("a.right-next")).count():
        link.first.click()
        page.wait_for_load_state("load")
        visited.append(str(Path(page.url.removeprefix(HTML.as_uri() + "/")).with_suffix("")))
    page.close()
    assert visited == PAGES
    assert not problems, problems
