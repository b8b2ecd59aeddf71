"""The regression check: exact where exact, trained numbers within the stated tolerance,
and verdicts that seed noise cannot flip. The nbval plugin (book/conftest.py) is run on
small notebooks so a deliberately broken output is shown to fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from pkpd_lib.reproducibility import SCORE_RTOL, TRAINED_TAG, numbers_match, verdict

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("stored", "fresh", "same"),
    [
        ("QD 1.79%  BID 5.90%", "QD 2.08%  BID 5.80%", True),  # another CPU, issue 9
        ("1.97x the dense model", "1.98x the dense model", True),
        ("ratio 0.27", "ratio 0.26", True),  # the last printed digit
        ("ratio 0.20", "ratio 0.60", False),
        ("BID 3.80", "BID -3.80", False),
        ("holds: missed dose", "breaks: washout", False),  # another label
        ("TID 5.35: too close to call", "TID 5.80: missed", True),  # verdict follows
        ("TID 5.35: too close to call", "TID 12.80: missed", False),
        ("a 1 b 2", "a 1 b 2 c 3", False),  # a number more
        ("   QD  9.99\nBID  1.00", "  QD 10.01\nBID  1.00", True),  # realigned table
        ("<td>0.35</td>", "<td>0.36</td>", True),
    ],
)
def test_numbers_match(stored, fresh, same):
    assert numbers_match(stored, fresh) is same


def test_tolerance_is_relative_to_the_larger_value():
    assert numbers_match("10.0", f"{10.0 / (1 - SCORE_RTOL):.1f}")
    assert not numbers_match("10.0", f"{10.0 / (1 - SCORE_RTOL) + 0.5:.1f}")


def test_verdict_has_a_band_the_spread_cannot_flip():
    assert verdict(4.0, 5.0) == "met"
    assert verdict(6.0, 5.0) == "missed"
    assert verdict(4.9, 5.0) == verdict(5.1, 5.0) == "too close to call"
    assert verdict(9.0, 10.0, below="holds", above="breaks", margin=0.05) == "holds"


def _notebook(path: Path, printed: str, tags: list[str], stored: str) -> None:
    cell = nbformat.v4.new_code_cell(f"print({printed!r})", metadata={"tags": tags})
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored + "\n")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)


def _nbval(folder: Path) -> int:
    shutil.copy(ROOT / "book" / "conftest.py", folder / "conftest.py")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    cmd += ["--nbval", "--nbval-current-env", str(folder)]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=300).returncode


@pytest.mark.parametrize(
    ("printed", "tags", "stored", "passes"),
    [
        ("TID 5.9%", [TRAINED_TAG], "TID 5.3%", True),  # within the seed spread
        ("TID 12.0%", [TRAINED_TAG], "TID 5.3%", False),  # a conclusion changed
        ("TID 5.9%", [], "TID 5.3%", False),  # untagged cells stay exact
        ("TID 5.3%", [], "TID 5.3%", True),
    ],
)
def test_nbval_plugin_on_a_notebook(tmp_path, printed, tags, stored, passes):
    _notebook(tmp_path / "check.ipynb", printed, tags, stored)
    assert (_nbval(tmp_path) == 0) is passes


def test_plugin_matches_outputs_by_mime_type_not_order():
    """A kernel sends text/plain before text/html; a stored notebook lists them sorted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_conftest", ROOT / "book" / "conftest.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    stored = [
        nbformat.from_dict(
            {
                "output_type": "execute_result",
                "data": {"text/html": "<td>4.40</td>", "text/plain": "4.40"},
            }
        )
    ]
    fresh = [
        nbformat.from_dict(
            {
                "output_type": "execute_result",
                "data": {"text/plain": "4.38", "text/html": "<td>4.38</td>"},
            }
        )
    ]
    assert plugin.within_tolerance(fresh, stored)[0]["data"] == stored[0]["data"]
