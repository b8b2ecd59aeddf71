"""The regression check catches regressions: mutation tests.

Each test breaks something on purpose and shows that the book's notebook check fails:
a number in a stored output moved by 1.3x (every tagged cell of every chapter), and, by
re-executing a chapter against the committed networks and fits, a library change that
makes every relative RMSE 25% worse, one that makes the network's predicted response 20%
larger around the baseline (BID predictions worse), and a FOCE-I estimate moved by 5%.
The mutations are installed in the notebook's kernel by a ``sitecustomize`` module on
``PYTHONPATH``, the way a bug in the library would reach it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from pkpd_lib.reproducibility import TRAINED_TAG, numbers_match

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "book" / "chapters"
STORE = ROOT / "data" / "trained"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _plugin():
    spec = importlib.util.spec_from_file_location("book_conftest", ROOT / "book" / "conftest.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin


def _tagged_texts():
    """(chapter, cell index, output, kind, text) of every text output of tagged cells."""
    plugin = _plugin()
    for path in sorted(CHAPTERS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if TRAINED_TAG not in cell.metadata.get("tags", []):
                continue
            for k, output in enumerate(cell.get("outputs", [])):
                for kind, (box, key) in plugin._texts(output).items():
                    if isinstance(box[key], str) and NUMBER.search(box[key]):
                        yield path.stem, index, k, kind, box[key]


def _scaled(text: str, position: int, factor: float) -> str | None:
    """``text`` with its ``position``-th number times ``factor``, printed with the same
    decimals; None when that change does not show at the printed precision."""
    matches = list(NUMBER.finditer(text))
    m = matches[position]
    old = m.group()
    mantissa = old.lower().partition("e")[0]
    if "e" in old.lower() or float(old) == 0:
        return None
    decimals = len(mantissa.partition(".")[2]) if "." in mantissa else 0
    new = f"{float(old) * factor:.{decimals}f}"
    if abs(float(new) - float(old)) <= 1.5 * 10.0**-decimals:
        return None  # too small to print: a moved digit no reader would see
    return text[: m.start()] + new + text[m.end() :]


def test_every_tagged_number_moved_by_1_3x_fails_the_comparison():
    """Every number printed by a tagged cell of every chapter, moved by 1.3x on its own,
    fails the comparison the test command makes (1.3x of a number too small to show at
    its precision is not a change).

    The comparison is number by number, and no number spans a line, so each move is
    checked on the line that holds it (the whole output's comparison costs as much as
    the output is long, for each of its numbers); every 97th move is checked on the
    whole output too."""
    checked = 0
    for chapter, index, k, kind, text in _tagged_texts():
        lines = text.split("\n")
        for row, line in enumerate(lines):
            for position in range(len(NUMBER.findall(line))):
                mutated = _scaled(line, position, 1.3)
                if mutated is None:
                    continue
                checked += 1
                where = (chapter, index, k, kind, row, position)
                assert not numbers_match(line, mutated), where
                if checked % 97 == 0:
                    whole = "\n".join([*lines[:row], mutated, *lines[row + 1 :]])
                    assert not numbers_match(text, whole), where
    assert checked > 1000, f"only {checked} numbers found in tagged cells"


def test_plugin_restores_only_what_matches():
    plugin = _plugin()
    stored = [nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": "BID 3.98%"})]
    same = [nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": "BID 3.99%"})]
    moved = [nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": "BID 5.17%"})]
    assert plugin.within_tolerance(same, stored)[0]["text"] == "BID 3.98%"
    assert plugin.within_tolerance(moved, stored)[0]["text"] == "BID 5.17%"


#: sitecustomize bodies, each a bug a library change could bring.
MUTATIONS = {
    "relative RMSE 25% worse": """
        import pkpd_lib.study.metrics as m
        _rmse = m.relative_rmse
        m.relative_rmse = lambda *a, **k: 1.25 * _rmse(*a, **k)
    """,
    "predicted response 20% larger (BID 20% worse)": """
        import numpy as np
        import pkpd_lib.nets.networks as nw
        _predict = nw.predict_pd
        def predict_pd(model, x, *a, **k):
            pred = _predict(model, x, *a, **k)
            base = np.asarray(x["BASE_PD"], float).reshape(-1, 1)
            return base + 1.2 * (pred - base)
        nw.predict_pd = predict_pd
    """,
    # the PD fit: moving a PK estimate changes the PD fit's data, and the PD fit is then
    # missing from the store, an error that also fails the check
    "a FOCE-I estimate moved by 5%": """
        import numpy as np
        import pkpd_lib.pmx.nlme as nlme
        _finish = nlme._finish
        def _moved(problem, estimate, *a, **k):
            x = np.array(estimate.x, float)
            if problem.model.name.startswith("warfarin PCA"):
                x[0] += np.log(1.05)  # E0, the first typical value, on the log scale
            return _finish(problem, estimate._replace(x=x), *a, **k)
        nlme._finish = _moved
    """,
}
CHAPTER_OF = {
    "relative RMSE 25% worse": "05_dense_extrapolation",
    "predicted response 20% larger (BID 20% worse)": "05_dense_extrapolation",
    "a FOCE-I estimate moved by 5%": "14_warfarin",
}


def _nbval(notebook: Path, sitecustomize: str | None, tmp_path: Path):
    env = {**os.environ, "PKPD_MODEL_CACHE": str(STORE), "PKPD_CACHE_MISS": "error"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PYTHONHASHSEED="0")
    if sitecustomize is not None:
        (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(sitecustomize))
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    cmd += ["--nbval", "--nbval-current-env", "--nbval-cell-timeout", "600"]
    cmd += ["--nbval-sanitize-with", str(ROOT / "tools" / "nbval_sanitize.cfg"), str(notebook)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_library_regression_fails_the_notebook_check(mutation, tmp_path):
    notebook = CHAPTERS / f"{CHAPTER_OF[mutation]}.ipynb"
    result = _nbval(notebook, MUTATIONS[mutation], tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report[-3000:]
    # failed on a compared output or a claim's assert, not on a broken mutation
    assert "Cell outputs differ" in report or "AssertionError" in report, report[-3000:]
    assert "sitecustomize" not in report, report[-3000:]


def test_nbvals_comparison_rules_are_the_only_conftest_of_their_name():
    """book/conftest.py holds the notebook check's comparison rules. pytest imports every
    conftest.py by its base name under the rootdir import mode, so a second one (e.g.
    tests/conftest.py) makes collecting book/conftest.py an error: the notebooks are then
    compared without those rules. Shared test helpers go into plain modules instead."""
    found = sorted(
        p.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("conftest.py")
        if not {".venv", "_build", "node_modules"} & set(p.relative_to(ROOT).parts)
    )
    assert found == ["book/conftest.py", "conftest.py"], found
