"""The README stays true: its Python example runs (from the committed store, training
nothing), its results table is the one the chapters' stored outputs give, its links lead
to files, and it stays a short user's guide."""

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The most lines the README may have: a user's guide, not a lab notebook (history goes
#: to CHANGELOG.md, how the outputs are compared to book/reproducibility.md).
MAX_LINES = 150


def _results():
    """tools/results.py, imported once (its dataclass needs a module in sys.modules)."""
    name = "_readme_results"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "results.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_readme_is_a_short_users_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines (at most {MAX_LINES})"


def test_readme_example_runs_from_the_committed_store(monkeypatch):
    (block,) = _python_blocks(README.read_text())
    from pkpd_lib.nets import networks

    def refuse(*args, **kwargs):
        raise AssertionError("the README's example trained a network")

    # the block sets both variables itself; setting them here first restores them after
    monkeypatch.setenv("PKPD_MODEL_CACHE", str(ROOT / "data" / "trained"))
    monkeypatch.setenv("PKPD_CACHE_MISS", "error")
    monkeypatch.setattr(networks, "train_network", refuse)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    printed = re.fullmatch(
        r"relative RMSE under BID, never trained on: ([\d.]+)%\n", out.getvalue()
    )
    assert printed, out.getvalue()
    # five patients only, so a loose band: the chapter's 200 give 3.84% (3 seeds)
    assert 1 < float(printed.group(1)) < 10


def test_results_table_matches_the_chapters_stored_outputs():
    results = _results()
    written = results.written(README.read_text())
    assert written == results.table(), (
        "README.md's results table differs from the chapters' stored outputs: "
        "run python3 tools/results.py"
    )


def test_results_reader_finds_outputs_by_label_not_position(tmp_path):
    results = _results()
    chapter = results.Chapter("05_dense_extrapolation")
    with pytest.raises(results.ResultsError, match="0 stored tables"):
        chapter.table("no such column")
    assert chapter.line("BID:").startswith("BID: 3.84%")
    # the table stays found when cells are added before it or the cells are reordered
    import json

    notebook = json.loads((ROOT / "book/chapters/05_dense_extrapolation.ipynb").read_text())
    notebook["cells"].reverse()
    (tmp_path / "05_dense_extrapolation.ipynb").write_text(json.dumps(notebook))
    moved = results.Chapter("05_dense_extrapolation", folder=tmp_path)
    labels = ("rel_RMSE_%", "ratio", "error target")
    assert moved.table(*labels).rows == chapter.table(*labels).rows


def test_readme_links_lead_to_files():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    local = [link for link in links if "://" not in link]
    missing = [link for link in local if not (ROOT / link).exists()]
    assert local and not missing, missing
