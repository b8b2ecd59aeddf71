#!/usr/bin/env python3
"""The project's commands. Needs only Python 3.11+; everything else goes into ./.venv.

    python3 tools/tasks.py book      # set up, then build the rendered book into _build/html
    python3 tools/tasks.py test      # set up, build the book, run every test (unit,
                                     # property, browser and nbval)
    python3 tools/tasks.py test --quick   # the edit loop: lint, unit and property
                                     # tests, and the notebooks that train nothing
    python3 tools/tasks.py test --retrain --shard K/N [--resume]  # shard K of the
                                     # retrain tier (N = 10 in CI): its share of the
                                     # stored networks and fits computed again and
                                     # compared (--resume: go on after a stop)
    python3 tools/tasks.py test --retrain # the whole retrain tier: every notebook with
                                     # every network retrained and every population
                                     # model refitted from scratch (hours)
    python3 tools/tasks.py execute   # re-execute every notebook from its text twin,
                                     # training into (and reading from) data/trained
    python3 tools/tasks.py portability [--retrain [--shard K/N]] [notebooks]
                                     # the test command (or retrain tier) with the CPU
                                     # pins and without them, one core each
    python3 tools/tasks.py bench     # run the benchmarks

Set-up is skipped when .venv already matches pyproject.toml.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
CHAPTERS = ROOT / "book" / "chapters"
#: The networks and population-model fits the stored outputs came from, committed with
#: the book: the test command loads them and refuses to train or fit what is missing.
STORE = ROOT / "data" / "trained"
#: Which stored results each chapter uses (chapter name -> records relative to the store),
#: written by ``execute`` when it ran every chapter: a retrain shard runs only the
#: chapters that ask for its results.
USES = ROOT / "data" / "store_uses.json"
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


#: Notebooks run side by side, each kernel with one TensorFlow thread: faster than one
#: notebook on two threads on a 2-core machine, and a network's training no longer
#: depends on the number of cores (thread count changes the order of some sums).
WORKERS = 2
ONE_THREAD = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
#: Notebooks that train no network: the quick tier runs them.
TRAIN_NOTHING = ("01_mechanistic_model.ipynb", "02_virtual_patients.ipynb")


#: The libraries that pick a code path from the CPU, each held to the x86-64-v2 level
#: (SSE4.2, no AVX) that every x86-64 CPU of the last 15 years has, so that the data a
#: network reads are the same bits on all of them (the reproducibility appendix's
#: "Threads and instruction sets"): numpy's SIMD loops, OpenBLAS's kernels (numpy's and
#: scipy's copies) and glibc's libm (exp, log, pow). Each of the three alone changed the
#: last bit of 0.02-0.3% of a chapter's float32 network inputs between CPUs.
#: oneDNN (TensorFlow's matrix products) is held to SSE4.1 for the same reason. Read at
#: process start, so they are set here, for every kernel the commands start.
CPU_PINS = {
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Nehalem",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-FMA4,-AVX512F,-AVX",
}


def cpu_pins(machine: str | None = None) -> dict[str, str]:
    """:data:`CPU_PINS` on an x86-64 machine; nothing elsewhere (the names are x86's)."""
    machine = (machine or platform.machine()).lower()
    return dict(CPU_PINS) if machine in ("x86_64", "amd64") else {}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    pins = cpu_pins()
    glibc = e.get("GLIBC_TUNABLES", "")
    if "GLIBC_TUNABLES" in pins and glibc and not glibc.endswith(pins["GLIBC_TUNABLES"]):
        # the user's other tunables kept; the later hwcaps setting wins
        pins["GLIBC_TUNABLES"] = f"{e['GLIBC_TUNABLES']}:{pins['GLIBC_TUNABLES']}"
    e.update(pins)
    e.update(ONE_THREAD)
    e.setdefault("PKPD_MODEL_CACHE", str(STORE))
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


#: The longest a notebook cell may run: in the test command, which trains nothing; in
#: the retrain tier, where one cell can train or fit for longer than that (chapter 19's
#: slowest fit took 30 min of one core), as long as a CI job may run.
CELL_TIMEOUT_S = 1800
RETRAIN_CELL_TIMEOUT_S = 5400


def pytest_args(
    *paths: str | Path, workers: int = WORKERS, cell_timeout_s: int = CELL_TIMEOUT_S
) -> list:
    """pytest over ``paths`` with nbval (notebooks compared per :mod:`book.conftest`)."""
    return [
        PY,
        "-m",
        "pytest",
        *paths,
        "--nbval",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        "tools/nbval_sanitize.cfg",
        "--nbval-cell-timeout",
        str(cell_timeout_s),
        "-p",
        "no:cacheprovider",
        "--doctest-modules",
        # the slowest items, for the time budget (a notebook is one item per cell)
        "--durations=15",
        # a notebook's cells share one kernel, so each file stays on one worker
        *(("-n", str(workers), "--dist", "loadfile") if workers > 1 else ()),
    ]


def lint() -> None:
    paths = ("pkpd_lib", "tests", "tools", "benchmarks", "conftest.py", "book/conftest.py")
    run(PY, "-m", "ruff", "check", *paths, "book/chapters")
    run(PY, "-m", "ruff", "format", "--check", *paths)
    # notebook code as wide as the rendered page shows without a scroll bar
    run(PY, "-m", "ruff", "format", "--check", "--line-length", "79", "book/chapters")


def stored_only() -> dict[str, str]:
    """The test command's environment: results only from the committed store; a network
    or fit missing from it is an error, never a silent retrain."""
    return {**env(), "PKPD_MODEL_CACHE": str(STORE), "PKPD_CACHE_MISS": "error"}


def retrain_env(cache: str) -> dict[str, str]:
    """The retrain tier's environment: an empty store, tagged cells within the measured
    reproducibility of retraining."""
    sys.path.insert(0, str(ROOT))
    from pkpd_lib.reproducibility import RETRAIN_RTOL

    return {
        **env(),
        "PKPD_MODEL_CACHE": cache,
        "PKPD_CACHE_MISS": "compute",
        "PKPD_NBVAL_RTOL": str(RETRAIN_RTOL),
    }


#: Shards of the retrain tier (``test --retrain --shard K/N``): each computes again the
#: stored results :func:`pkpd_lib.files.shard_plan` gives it (a tenth of the store's 8.2
#: hours of recorded computing) and re-executes the chapters that use them (:data:`USES`);
#: the GitHub workflow runs them as parallel jobs, each within CI's limit.
RETRAIN_SHARDS = 10


def shard_env(folder: Path, shard: str) -> dict[str, str]:
    """A retrain shard's environment: the committed store, read as the test command reads
    it; the results of shard ``shard`` computed again into ``folder``."""
    return {**stored_only(), "PKPD_RETRAIN_SHARD": shard, "PKPD_RETRAIN_DIR": str(folder)}


def store_digest() -> str:
    """A digest of every record in the store (what a shard's results are compared with)."""
    digest = hashlib.sha256()
    sys.path.insert(0, str(ROOT))
    from pkpd_lib.files import stored_records

    for name in stored_records(STORE):
        digest.update(name.encode() + (STORE / name).read_bytes())
    return digest.hexdigest()


def retrain_shard(shard: str, resume: bool = False) -> None:
    """Shard ``K/N`` of the retrain tier: the chapters that use its results
    (:func:`shard_chapters`) re-executed from the committed store and compared as in the
    test command, and each stored result of the shard computed again from the inputs it
    was stored with and compared with the stored one (:mod:`tools.retrain_report`). The
    shard's results and report go to ``_build/retrain/shard-K-of-N``. With ``resume``
    (``--resume``) a run that was stopped goes on: what it computed and reported is kept
    and not computed again, if the store is still the one it compared with."""
    k, n = shard.split("/")
    folder = ROOT / "_build" / "retrain" / f"shard-{k}-of-{n}"
    stamp = folder / "store.sha256"
    if resume and stamp.is_file() and stamp.read_text() != store_digest():
        sys.exit(f"cannot resume shard {shard}: the store changed since {folder} was begun")
    if not (resume and stamp.is_file()):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        stamp.write_text(store_digest())
    t0 = time.perf_counter()
    notebooks = shard_chapters(int(k), int(n))
    print(f"shard {shard}: {len(notebooks)} chapters use its results", flush=True)
    run(
        *pytest_args(*notebooks, cell_timeout_s=RETRAIN_CELL_TIMEOUT_S),
        env=shard_env(folder, shard),
    )
    run(PY, ROOT / "tools" / "retrain_report.py", folder, shard, env=env())
    print(f"retrain shard {shard} passed in {time.perf_counter() - t0:.0f} s", flush=True)


def test() -> None:
    """Lint, build the book, then pytest: unit, property, browser and nbval tests, the
    notebooks re-executed from the committed networks and fits.

    ``--quick``: lint, unit and property tests (browser test skipped) and the notebooks
    that train nothing; for the edit loop. ``--retrain``: every notebook with an empty
    store, so every network is trained and every population model fitted from scratch.
    CI runs the full command; the GitHub workflow runs the retrain tier once a week.
    """
    setup()
    flags = {"--quick", "--retrain", "--resume"}
    extra = [a for a in sys.argv[2:] if a not in flags]
    if "--quick" in sys.argv[2:]:
        lint()
        notebooks = [CHAPTERS / name for name in TRAIN_NOTHING]
        run(
            *pytest_args("tests", "pkpd_lib", *notebooks),
            "-m",
            "not slow",
            *extra,
            env=stored_only(),
        )
        return
    if "--retrain" in sys.argv[2:] and "--shard" in extra:
        retrain_shard(extra[extra.index("--shard") + 1], "--resume" in sys.argv[2:])
        return
    if "--retrain" in sys.argv[2:]:
        notebooks = extra or [str(p) for p in sorted(CHAPTERS.glob("*.ipynb"))]
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            run(
                *pytest_args(*notebooks, cell_timeout_s=RETRAIN_CELL_TIMEOUT_S),
                env=retrain_env(cache),
            )
            print(f"retrain tier passed in {time.perf_counter() - t0:.0f} s", flush=True)
        return
    t0 = time.perf_counter()
    ensure_chromium()
    lint()
    book()
    # notebooks first: the long ones start while the unit tests fill the gaps
    run(
        *pytest_args("book", "tests", "pkpd_lib"),
        *extra,
        env={**stored_only(), "PKPD_REQUIRE_BROWSER": "1"},
    )
    print(f"test passed in {time.perf_counter() - t0:.0f} s", flush=True)


#: The two machines :func:`portability` compares, one core each. Under :data:`CPU_PINS`
#: every x86-64 CPU runs the same code paths, so emulating another CPU by the same
#: variables would compare a machine with itself. What remains to check is that the
#: pins matter no more than they should: the commands' pinned environment on core 0,
#: and on core 1 the same machine with numpy, OpenBLAS and libm on this CPU's own paths,
#: which is what a reader who runs a notebook outside the commands gets (oneDNN stays
#: on SSE4.1 there too: :mod:`pkpd_lib.nets.networks` sets it unless it is set).
#: ``None`` removes a variable.
MACHINES: dict[str, tuple[dict[str, str | None], str]] = {
    "pinned (x86-64-v2 paths), core 0": ({}, "0"),
    "unpinned numpy, OpenBLAS and libm, core 1": (
        dict.fromkeys(k for k in CPU_PINS if k != "ONEDNN_MAX_CPU_ISA"),
        "1",
    ),
}


def portability() -> None:
    """The test command's notebooks (default: every chapter), or with ``--retrain`` the
    retrain tier's, on each machine of :data:`MACHINES` (pinned and unpinned) side by
    side, each on its own core, from an empty user cache; each machine's log goes to
    ``_build/portability/``."""
    setup()
    args = sys.argv[2:]
    retrain = "--retrain" in args
    shard = args[args.index("--shard") + 1] if retrain and "--shard" in args else None
    targets = [a for a in args if a not in ("--retrain", "--shard", shard)]
    targets_given = bool(targets)
    if not targets:
        every = [str(p) for p in sorted(CHAPTERS.glob("*.ipynb"))]
        targets = shard_chapters(*map(int, shard.split("/"))) if shard else every
    logs = ROOT / "_build" / "portability"
    logs.mkdir(parents=True, exist_ok=True)
    folders = {}
    with contextlib.ExitStack() as stack:
        running = {}
        for name, (variables, core) in MACHINES.items():
            cache = stack.enter_context(tempfile.TemporaryDirectory())
            if shard:  # the shard's results and report, per machine; named notebooks
                # add to what an earlier run of the shard left (e.g. one that timed out)
                folders[name] = logs / f"shard-{shard.replace('/', '-of-')}-core{core}"
                if not targets_given:
                    shutil.rmtree(folders[name], ignore_errors=True)
                base = shard_env(folders[name], shard)
            else:
                base = retrain_env(cache) if retrain else stored_only()
            timeout = RETRAIN_CELL_TIMEOUT_S if retrain else CELL_TIMEOUT_S
            checks = pytest_args(*targets, workers=1, cell_timeout_s=timeout)
            cmd = ["taskset", "-c", core, *map(str, checks)]
            log = logs / f"{'retrain-' if retrain else ''}core{core}.log"
            print(f"== {name}{' (retrain)' if retrain else ''}: {log}", flush=True)
            handle = stack.enter_context(open(log, "w"))
            env_ = {**base, **variables, "XDG_CACHE_HOME": cache}
            env_ = {k: v for k, v in env_.items() if v is not None}
            running[name] = (
                subprocess.Popen(cmd, cwd=ROOT, env=env_, stdout=handle, stderr=subprocess.STDOUT),
                log,
            )
        t0, failed = time.perf_counter(), []
        for name, (process, log) in running.items():
            code = process.wait()
            tail = log.read_text().strip().splitlines()[-1:]
            print(f"== {name}: exit {code} after {time.perf_counter() - t0:.0f} s: {tail}")
            if shard and not code:
                report = [PY, ROOT / "tools" / "retrain_report.py", folders[name], shard]
                code = subprocess.run([str(c) for c in report], cwd=ROOT).returncode
            failed += [name] if code else []
    if failed:
        sys.exit(f"portability failed on {failed}")


def execute() -> None:
    """Re-execute every chapter from its MyST text twin and rewrite the paired .ipynb.
    Networks and fits come from the committed store (``data/trained``); what is missing
    there is trained or fitted and added to it, to be committed with the outputs. After
    all chapters ran (no chapter named), stored results none of them used are removed;
    :data:`USES` gets what the chapters that ran used."""
    setup()
    targets = sys.argv[2:] or sorted(str(p) for p in CHAPTERS.glob("*.md"))
    with tempfile.TemporaryDirectory() as folder:
        run(
            PY,
            str(ROOT / "tools" / "execute_notebooks.py"),
            f"--workers={WORKERS}",
            f"--log-uses={folder}",
            *targets,
            env=env(),
        )
        uses = read_use_logs(Path(folder))
        if sys.argv[2:]:  # the chapters named: their entries of the map renewed
            uses = {**json.loads(USES.read_text()), **uses} if USES.exists() else uses
        else:
            used = {STORE / name for names in uses.values() for name in names}
            for path in sorted(STORE.rglob("*")):
                if path.suffix in (".keras", ".json") and path.with_suffix(".json") not in used:
                    print(f"removed {path.relative_to(ROOT)}: no chapter uses it", flush=True)
                    path.unlink()
        USES.write_text(json.dumps(uses, indent=1, sort_keys=True) + "\n")


def read_use_logs(folder: Path) -> dict[str, list[str]]:
    """The stored results each chapter used, from the logs ``execute_notebooks.py
    --log-uses`` left in ``folder`` (one ``<chapter>.txt`` each): chapter name -> sorted
    records (``.json``) relative to :data:`STORE`."""
    store = STORE.resolve()
    uses = {}
    for log in sorted(folder.glob("*.txt")):
        # a network is noted as its .keras file and its .json record: the record names it
        paths = {Path(line).with_suffix(".json").resolve() for line in log.read_text().split()}
        uses[log.stem] = sorted(p.relative_to(store).as_posix() for p in paths)
    return uses


def shard_chapters(k: int, n: int) -> list[str]:
    """The chapters (.ipynb) shard ``k`` of ``n`` must execute: those that use one of
    its stored results, per :data:`USES` (every chapter if there is no such file)."""
    every = sorted(str(p) for p in CHAPTERS.glob("*.ipynb"))
    if not USES.exists():
        return every
    sys.path.insert(0, str(ROOT))
    from pkpd_lib.files import shard_plan, stored_records

    plan = shard_plan(stored_records(STORE), n)
    mine = {name for name, shard in plan.items() if shard == k}
    uses = json.loads(USES.read_text())
    return [c for c in every if mine & set(uses.get(Path(c).stem, ()))]


def bench() -> None:
    setup()
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        run(PY, script, env=env())


COMMANDS = {
    "book": book,
    "test": test,
    "execute": execute,
    "portability": portability,
    "bench": bench,
    "setup": setup,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    try:
        COMMANDS[sys.argv[1]]()
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)
