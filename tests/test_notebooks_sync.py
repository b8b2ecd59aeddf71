"""Every chapter's MyST text twin and its .ipynb carry the same cells, and every
chapter is in the table of contents."""

from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "book" / "chapters"
TEXTS = sorted(CHAPTERS.glob("*.md"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), c.metadata.get("tags", [])) for c in nb.cells]


def test_every_text_has_a_notebook_and_back():
    assert TEXTS, "no chapters found"
    assert {p.stem for p in TEXTS} == {p.stem for p in CHAPTERS.glob("*.ipynb")}


@pytest.mark.parametrize("text", TEXTS, ids=[p.stem for p in TEXTS])
def test_pair_in_sync(text):
    md = jupytext.read(text)
    ipynb = jupytext.read(text.with_suffix(".ipynb"))
    assert _cells(md) == _cells(ipynb), (
        f"{text.name} and its .ipynb differ; re-run `python3 tools/tasks.py execute {text}`"
    )
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,md:myst"


@pytest.mark.parametrize("text", TEXTS, ids=[p.stem for p in TEXTS])
def test_notebook_was_executed_in_order(text):
    nb = jupytext.read(text.with_suffix(".ipynb"))
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{text.name}: re-execute from a fresh kernel"


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    assert {f"book/chapters/{p.stem}" for p in TEXTS} <= files


#: Characters of code the rendered page shows without a scroll bar (1280 px window).
PAGE_WIDTH = 79


@pytest.mark.parametrize("text", TEXTS, ids=[p.stem for p in TEXTS])
def test_code_fits_the_page_and_chapter_ends_the_same_way(text):
    nb = jupytext.read(text)
    long = [
        line
        for c in nb.cells
        if c.cell_type == "code"
        for line in c.source.splitlines()
        if len(line) > PAGE_WIDTH
    ]
    assert not long, f"{text.name}: code lines wider than the page: {long}"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown" and "## " in c.source]
    assert "## What this chapter showed" in headings[-1], f"{text.name}: no closing section"


@pytest.mark.parametrize("text", TEXTS, ids=[p.stem for p in TEXTS])
def test_readers_see_no_test_plumbing(text):
    nb = jupytext.read(text)
    assert not any("NBVAL" in c.source for c in nb.cells if c.cell_type == "code")
