#!/usr/bin/env python3
"""The project's commands. Needs only Python 3.11+; everything else goes into ./.venv.

    python3 tools/tasks.py book      # set up, then build the rendered book into _build/html
    python3 tools/tasks.py test      # set up, build the book, run every test (unit,
                                     # property, browser and nbval)
    python3 tools/tasks.py execute   # re-execute every notebook from its text twin
    python3 tools/tasks.py bench     # run the benchmarks

Set-up is skipped when .venv already matches pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
CHAPTERS = ROOT / "book" / "chapters"
STAMP = VENV / ".pyproject.sha256"


def run(*cmd: str | Path, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def setup() -> None:
    """Create .venv and install the package with its book and test extras."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    t0 = time.perf_counter()
    if not PY.exists():
        venv.create(VENV, with_pip=True)
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", ".[book,test]")
    STAMP.write_text(digest)
    print(f"set-up done in {time.perf_counter() - t0:.0f} s", flush=True)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    e["PATH"] = f"{PY.parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def book() -> None:
    setup()
    run(
        PY.parent / "jupyter-book",
        "build",
        ".",
        "--all",
        "--warningiserror",
        "--keep-going",
        env=env(),
    )
    print(f"book: {ROOT / '_build' / 'html' / 'index.html'}")


def ensure_chromium() -> None:
    """Install Debian's chromium for the browser test when it is missing (root or sudo)."""
    if os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if shutil.which("apt-get") is None:
        sys.exit("the browser test needs Chromium: install it, or set CHROMIUM=/path/to/it")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    t0 = time.perf_counter()
    quiet = {"stdout": subprocess.DEVNULL}
    run(*sudo, "apt-get", "update", "-qq", **quiet)
    run(*sudo, "apt-get", "install", "-y", "-qq", "chromium", **quiet)
    print(f"chromium installed in {time.perf_counter() - t0:.0f} s", flush=True)


def test() -> None:
    """Lint, build the book, then pytest: unit, property, browser and nbval tests."""
    setup()
    ensure_chromium()
    lint = ("pkpd_lib", "tests", "tools", "benchmarks")
    run(PY, "-m", "ruff", "check", *lint, "book/chapters")
    run(PY, "-m", "ruff", "format", "--check", *lint)
    book()
    run(
        PY,
        "-m",
        "pytest",
        "tests",
        "book/chapters",
        "--nbval",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        "tools/nbval_sanitize.cfg",
        "--nbval-cell-timeout",
        "1800",
        "-p",
        "no:cacheprovider",
        *sys.argv[2:],
        env={**env(), "PKPD_REQUIRE_BROWSER": "1"},
    )


def execute() -> None:
    """Re-execute every chapter from its MyST text twin and rewrite the paired .ipynb."""
    setup()
    targets = sys.argv[2:] or sorted(str(p) for p in CHAPTERS.glob("*.md"))
    run(PY, str(ROOT / "tools" / "execute_notebooks.py"), *targets, env=env())


def bench() -> None:
    setup()
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        run(PY, script, env=env())


COMMANDS = {"book": book, "test": test, "execute": execute, "bench": bench, "setup": setup}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    try:
        COMMANDS[sys.argv[1]]()
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)
