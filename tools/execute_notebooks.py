"""Execute chapters from their MyST text twins and write the paired .ipynb files.

Usage: python tools/execute_notebooks.py [--workers=N] [--log-uses=FOLDER]
    book/chapters/01_mechanistic_model.md [...]

Each notebook runs in a fresh kernel with the chapter folder as working directory; the
text twin is then re-synchronised so both files carry the same cells. With ``--workers``
N notebooks run side by side (they share trained networks through the model cache,
which trains each network once). With ``--log-uses`` each chapter's kernel notes the stored
networks and fits it used in ``FOLDER/<chapter>.txt`` (``$PKPD_STORE_LOG``, one per line).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
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


def _run(arg: str, log_uses: str = "") -> tuple[str, float]:
    if log_uses:  # read by the kernel this worker starts next, not by a running one
        os.environ["PKPD_STORE_LOG"] = str(Path(log_uses) / f"{Path(arg).stem}.txt")
        Path(os.environ["PKPD_STORE_LOG"]).touch()
    return arg, execute(Path(arg).with_suffix(".md"))


if __name__ == "__main__":
    workers, log_uses = 1, ""
    args = []
    for arg in sys.argv[1:]:
        if arg.startswith("--workers="):
            workers = int(arg.partition("=")[2])
        elif arg.startswith("--log-uses="):
            log_uses = arg.partition("=")[2]
        else:
            args.append(arg)
    t0, total = time.perf_counter(), 0.0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for arg, seconds in pool.map(_run, args, [log_uses] * len(args)):
            total += seconds
            print(f"executed {arg} in {seconds:.0f} s", flush=True)
    print(f"total {total:.0f} s of notebook time in {time.perf_counter() - t0:.0f} s")
