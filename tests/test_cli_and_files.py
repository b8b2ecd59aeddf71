"""Users' files are safe: the command line fails before it trains, with one line and
exit code 2; writes are atomic and never replace a file without being told to."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pkpd_lib.__main__ import output_problem, parse
from pkpd_lib.files import atomic_path, exclusive_lock, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd=None):
    cmd = [sys.executable, "-m", "pkpd_lib", "train", "--design", "dense", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd or ROOT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "", "--seed", "0"], "--out: must name a folder"),
        (["--out", "OUT", "--max-epochs", "0"], "must be at least 1"),
        (["--out", "OUT", "--max-epochs", "-1"], "must be at least 1"),
        (["--out", "OUT", "--seed", "-1"], "must be between 0 and"),
        (["--out", "OUT", "--seed", "1.5"], "expected a whole number"),
        (["--out", "FILE"], "exists and is not a folder"),
        (["--out", "FILE/sub"], "which is a file"),
        (["--out", "FULL"], "already holds model.keras, metrics.json; pass --overwrite"),
    ],
)
def test_bad_arguments_fail_at_once_with_one_line(tmp_path, args, message):
    (tmp_path / "FILE").write_text("not a folder")
    (tmp_path / "FULL").mkdir()
    for name in ("model.keras", "metrics.json"):
        (tmp_path / "FULL" / name).write_text("a user's earlier result")
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "simulating" not in result.stdout, "no work may start before the checks"
    assert (tmp_path / "FULL" / "model.keras").read_text() == "a user's earlier result"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "no permission" in output_problem(locked / "run", overwrite=False)


def test_overwrite_is_explicit(tmp_path):
    (tmp_path / "model.keras").write_text("old")
    assert output_problem(tmp_path, overwrite=False)
    assert output_problem(tmp_path, overwrite=True) is None
    args = parse(["train", "--design", "dense", "--out", str(tmp_path), "--overwrite"])
    assert args.overwrite and args.seed == 0


def test_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("good")
    with pytest.raises(KeyboardInterrupt), atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"], "no debris"


def test_atomic_write_refuses_to_overwrite_silently(tmp_path):
    target = write_text_atomic(tmp_path / "a.txt", "first")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_text_atomic(target, "second")
    write_text_atomic(target, "second", overwrite=True)
    assert target.read_text() == "second"


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="nothing was written"), atomic_path(tmp_path / "x"):
        pass
    assert not (tmp_path / "x").exists()


def test_lock_is_exclusive_across_processes(tmp_path):
    lock = tmp_path / "model.lock"
    code = (
        "import sys, time; from pkpd_lib.files import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}):\n"
        "    print('held', flush=True); time.sleep(1.5)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    import time

    t0 = time.perf_counter()
    with exclusive_lock(lock):
        waited = time.perf_counter() - t0
    other.wait(timeout=30)
    assert waited > 0.5, "the second process must wait for the first"


def test_training_schedules_option(tmp_path):
    args = parse(["train", "--design", "dense", "--out", str(tmp_path), "--schedules", "deviating"])
    assert args.schedules == "deviating"
    result = _cli("--out", str(tmp_path / "x"), "--schedules", "weekly")
    assert result.returncode == 2 and "invalid choice: 'weekly'" in result.stderr


def test_deviating_training_schedules_are_never_the_test_regimens():
    from pkpd_lib import datasets
    from pkpd_lib import regimens as reg

    schedules = datasets.training_regimens("deviating", 200, seed=101)
    tests = [reg.named(r) for r in ("QD", "BID", "TID")]
    assert not any(s.doses() == t.doses() for s in schedules for t in tests)
    assert any(len(s) < 8 for s in schedules), "some patients stop or miss doses"
