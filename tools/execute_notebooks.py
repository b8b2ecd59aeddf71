"""Execute chapters from their MyST text twins and write the paired .ipynb files.

Usage: python tools/execute_notebooks.py book/chapters/01_mechanistic_model.md [...]

Each notebook runs in a fresh kernel with the chapter folder as working directory; the
text twin is then re-synchronised so both files carry the same cells.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
import nbclient


def execute(md_path: Path) -> float:
    nb = jupytext.read(md_path)
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,md:myst"
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    t0 = time.perf_counter()
    nbclient.NotebookClient(
        nb,
        timeout=1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(md_path.parent)}},
    ).execute()
    seconds = time.perf_counter() - t0
    jupytext.write(nb, md_path.with_suffix(".ipynb"))
    jupytext.write(nb, md_path, fmt="md:myst")
    return seconds


if __name__ == "__main__":
    total = 0.0
    for arg in sys.argv[1:]:
        s = execute(Path(arg).with_suffix(".md"))
        total += s
        print(f"executed {arg} in {s:.0f} s", flush=True)
    print(f"total {total:.0f} s")
