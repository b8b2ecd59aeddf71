"""The commands hold every CPU-dispatching library to one code path (``tools/tasks.py``).

Without the pins, numpy's SIMD loops, OpenBLAS's kernels and glibc's libm each changed
the last bit of a fraction of the data a network reads between CPUs, and training on
noisy data amplified that into another network. These tests check that the pins reach
the processes the commands start, and that each library obeys them.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tasks  # noqa: E402

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86 = pytest.mark.skipif(not X86, reason="the pins name x86-64 code paths")


def test_the_pins_are_x86_only():
    assert tasks.cpu_pins("x86_64") == tasks.CPU_PINS
    assert tasks.cpu_pins("AMD64") == tasks.CPU_PINS
    assert tasks.cpu_pins("aarch64") == {}
    assert set(tasks.CPU_PINS) == {
        "ONEDNN_MAX_CPU_ISA",
        "NPY_DISABLE_CPU_FEATURES",
        "OPENBLAS_CORETYPE",
        "GLIBC_TUNABLES",
    }


@needs_x86
def test_every_command_environment_carries_the_pins(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for e in (tasks.env(), tasks.stored_only(), tasks.retrain_env("/tmp/x")):
        assert {k: e[k] for k in tasks.CPU_PINS} == tasks.CPU_PINS


@needs_x86
def test_a_users_other_glibc_tunables_are_kept(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert tasks.env()["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=2:" + tasks.CPU_PINS["GLIBC_TUNABLES"]
    )
    # a process the commands started (a kernel) gets the pin once, not twice
    monkeypatch.setenv("GLIBC_TUNABLES", tasks.env()["GLIBC_TUNABLES"])
    assert tasks.env()["GLIBC_TUNABLES"].count("hwcaps") == 1


def test_the_unpinned_machine_removes_every_pin():
    (pinned, _), (unpinned, _) = tasks.MACHINES.values()
    assert pinned == {}
    # oneDNN stays on SSE4.1 (pkpd_lib.nets.networks sets it), as outside the commands
    assert set(unpinned) == set(tasks.CPU_PINS) - {"ONEDNN_MAX_CPU_ISA"}
    assert all(v is None for v in unpinned.values())


PROBE = """
import ctypes, glob, json, os
import numpy, scipy
from numpy._core._multiarray_umath import __cpu_targets_info__ as targets
names = {}
for package, symbol in ((numpy, "scipy_openblas_get_corename64_"),
                        (scipy, "scipy_openblas_get_corename")):
    libs = os.path.join(os.path.dirname(os.path.dirname(package.__file__)),
                        package.__name__ + ".libs")
    for lib in glob.glob(os.path.join(libs, "*openblas*")):
        f = getattr(ctypes.CDLL(lib), symbol, None)
        if f is not None:
            f.restype = ctypes.c_char_p
            names[package.__name__] = f().decode()
current = {t["current"] for loops in targets.values() for t in loops.values()}
print(json.dumps({"numpy": sorted(current), "openblas": names}))
"""


@needs_x86
def test_numpy_and_openblas_obey_the_pins():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=tasks.env(), capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    # every SIMD loop numpy dispatches runs its baseline (x86-64-v2) version
    assert seen["numpy"] and all(t.startswith("baseline") for t in seen["numpy"]), seen
    assert seen["openblas"], "no OpenBLAS found in numpy's or scipy's wheel"
    assert set(seen["openblas"].values()) == {"Nehalem"}, seen


LOADER = Path("/lib64/ld-linux-x86-64.so.2")


@needs_x86
@pytest.mark.skipif(not LOADER.exists(), reason="not a glibc x86-64 system")
def test_libm_is_held_below_avx():
    """The loader offers no x86-64-v3 or v4 libraries (AVX2, FMA) under the pin: what
    the loader reports, not each libm function's choice of variant."""
    help_text = subprocess.run(
        [str(LOADER), "--help"], env=tasks.env(), capture_output=True, text=True
    ).stdout
    levels = {
        line.split()[0]: "supported" in line
        for line in help_text.splitlines()
        if line.strip().startswith("x86-64-v")
    }
    if not levels:
        pytest.skip("glibc older than 2.33 lists no x86-64 levels")
    assert not levels.get("x86-64-v3") and not levels.get("x86-64-v4"), levels
