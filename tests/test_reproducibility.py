"""The regression check: exact where exact, numbers from networks and fits to their last
printed digit (or within the retrain tier's tolerance), verdicts compared as words. The
nbval plugin (book/conftest.py) is run on small notebooks so a deliberately broken
output is shown to fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from pkpd_lib.reproducibility import (
    FIT_TABLE_TAG,
    RETRAIN_FIT_TABLE_RTOL,
    RETRAIN_RTOL,
    TRAINED_TAG,
    cell_tolerance,
    numbers_match,
    tolerance,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("stored", "fresh", "same"),
    [
        ("QD 1.79%  BID 5.90%", "QD 1.80%  BID 5.89%", True),  # rounding on another CPU
        ("QD 1.79%  BID 5.90%", "QD 1.79%  BID 5.92%", False),
        ("ratio 0.27", "ratio 0.26", True),  # the last printed digit
        ("BID 3.98", "BID 7.96", False),  # an error doubled
        ("CL 15.332", "CL 30.6", False),
        ("OFV 24415", "OFV 36000", False),
        ("BID 3.80", "BID -3.80", False),
        ("holds: missed dose", "breaks: washout", False),  # another label
        ("TID 5.35: too close to call", "TID 5.35: missed", False),  # verdicts are words
        ("a 1 b 2", "a 1 b 2 c 3", False),  # a number more
        ("   QD  9.99\nBID  1.00", "  QD 10.00\nBID  1.00", True),  # realigned table
        ("<td>0.35</td>", "<td>0.36</td>", True),
    ],
)
def test_numbers_match(stored, fresh, same):
    assert numbers_match(stored, fresh) is same


def test_retrain_tolerance_is_relative():
    assert numbers_match("6.147", "6.134", rtol=RETRAIN_RTOL)  # a refit on another CPU
    assert not numbers_match("10.00000", "10.06000", rtol=RETRAIN_RTOL)
    assert not numbers_match("10.0", "12.5", rtol=RETRAIN_RTOL)  # a 25% regression


def test_tolerance_from_the_environment(monkeypatch):
    monkeypatch.delenv("PKPD_NBVAL_RTOL", raising=False)
    assert tolerance() == 0.0
    monkeypatch.setenv("PKPD_NBVAL_RTOL", str(RETRAIN_RTOL))
    assert tolerance() == RETRAIN_RTOL
    monkeypatch.setenv("PKPD_NBVAL_RTOL", "0.5")
    with pytest.raises(ValueError, match="above the largest tolerance"):
        tolerance()


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
        ("TID 5.4%", [TRAINED_TAG], "TID 5.3%", True),  # the last digit rounded
        ("TID 5.9%", [TRAINED_TAG], "TID 5.3%", False),  # an 11% regression
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
                "data": {"text/plain": "4.39", "text/html": "<td>4.39</td>"},
            }
        )
    ]
    assert plugin.within_tolerance(fresh, stored)[0]["data"] == stored[0]["data"]


def test_a_fit_table_is_looser_only_in_the_retrain_tier(monkeypatch):
    monkeypatch.delenv("PKPD_NBVAL_RTOL", raising=False)
    assert cell_tolerance([TRAINED_TAG, FIT_TABLE_TAG]) == 0.0  # the test command
    assert cell_tolerance([FIT_TABLE_TAG]) is None  # untagged as trained: exact
    monkeypatch.setenv("PKPD_NBVAL_RTOL", str(RETRAIN_RTOL))
    assert cell_tolerance([TRAINED_TAG]) == RETRAIN_RTOL
    rtol = cell_tolerance([TRAINED_TAG, FIT_TABLE_TAG])
    assert rtol == RETRAIN_FIT_TABLE_RTOL
    assert numbers_match("<td>0.766</td>", "<td>0.789</td>", rtol)  # measured spread
    assert not numbers_match("<td>0.766</td>", "<td>0.958</td>", rtol)  # 25% more
