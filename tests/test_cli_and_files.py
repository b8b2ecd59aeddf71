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
    from pkpd_lib.pmx import regimens as reg
    from pkpd_lib.study import datasets

    schedules = datasets.training_regimens("deviating", 200, seed=101)
    tests = [reg.named(r) for r in ("QD", "BID", "TID")]
    assert not any(s.doses() == t.doses() for s in schedules for t in tests)
    assert any(len(s) < 8 for s in schedules), "some patients stop or miss doses"


def test_a_broken_link_as_output_folder_fails_before_training(tmp_path):
    os.symlink("/nonexistent/x", tmp_path / "out")
    result = _cli("--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "--out out is a broken link (to /nonexistent/x)" in result.stderr
    assert "Traceback" not in result.stderr and "simulating" not in result.stdout
    assert "lies under" in output_problem(tmp_path / "out" / "run", overwrite=False)


def test_an_output_that_is_a_folder_fails_before_training_even_with_overwrite(tmp_path):
    (tmp_path / "o" / "model.keras").mkdir(parents=True)
    (tmp_path / "o" / "metrics.json").write_text("{}")
    result = _cli("--out", "o", "--overwrite", cwd=tmp_path)
    assert result.returncode == 2
    assert "o/model.keras is not a file" in result.stderr
    assert "Traceback" not in result.stderr and "simulating" not in result.stdout
    assert (tmp_path / "o" / "metrics.json").read_text() == "{}"


def test_a_name_too_long_fails_before_training(tmp_path):
    result = _cli("--out", "x" * 300, cwd=tmp_path)
    assert result.returncode == 2
    assert "300 bytes long; file systems allow at most 255" in result.stderr
    assert "Traceback" not in result.stderr and "simulating" not in result.stdout
    deep = tmp_path.joinpath(*["d" * 200] * 25)  # each name fits, the path does not
    assert "--out" in output_problem(deep, overwrite=False)


def test_the_pair_of_outputs_is_placed_all_or_nothing(tmp_path):
    """Another writer creates model.keras while the files are written: neither is placed
    (the metrics are never left beside another run's model), and nothing is left over."""
    from pkpd_lib.files import atomic_paths

    targets = [tmp_path / "model.keras", tmp_path / "metrics.json"]
    with pytest.raises(FileExistsError, match="model.keras appeared"):
        with atomic_paths(targets) as (model_tmp, metrics_tmp):
            model_tmp.write_text("our model")
            metrics_tmp.write_text("our metrics")
            targets[0].write_text("another run's model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    assert targets[0].read_text() == "another run's model"
    # the model placed, then the metrics cannot be: the model is taken back
    with pytest.raises(FileExistsError, match="metrics.json appeared"):
        with atomic_paths([tmp_path / "b" / "model.keras", tmp_path / "b" / "metrics.json"]) as (
            model_tmp,
            metrics_tmp,
        ):
            model_tmp.write_text("our model")
            metrics_tmp.write_text("our metrics")
            (tmp_path / "b" / "metrics.json").write_text("another run's metrics")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["metrics.json"]
    # with overwrite, a failed second rename puts the replaced first file back
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.keras").write_text("old model")
    with pytest.raises(IsADirectoryError):
        with atomic_paths(
            [tmp_path / "c" / "model.keras", tmp_path / "c" / "metrics.json"], overwrite=True
        ) as (model_tmp, metrics_tmp):
            model_tmp.write_text("new model")
            metrics_tmp.write_text("new metrics")
            (tmp_path / "c" / "metrics.json").mkdir()
    assert (tmp_path / "c" / "model.keras").read_text() == "old model"
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["metrics.json", "model.keras"]


def test_the_cli_writes_neither_file_if_another_writer_made_one(tmp_path, monkeypatch, capsys):
    from pkpd_lib import __main__ as cli
    from pkpd_lib.nets import networks as nw

    def save_while_another_writes(model, path, overwrite=False):
        Path(path).write_text("our model")
        (tmp_path / "model.keras").write_text("another run's model")

    monkeypatch.setattr(nw, "save_model", save_while_another_writes)
    with pytest.raises(FileExistsError):
        cli._write_outputs(tmp_path, None, {"a": 1}, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    assert (tmp_path / "model.keras").read_text() == "another run's model"


def test_a_lock_held_by_a_hung_process_is_reported_then_times_out(tmp_path, monkeypatch, capsys):
    import pkpd_lib.files as files

    lock = tmp_path / "model.lock"
    code = (
        "import time; from pkpd_lib.files import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    hung = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert hung.stdout.readline().strip() == "held"
        monkeypatch.setattr(files, "LOCK_NOTICE_S", 0.2)
        with pytest.raises(TimeoutError, match=f"gave up waiting for {lock} after 1 s"):
            with exclusive_lock(lock, timeout_s=1.0):
                pass
        err = capsys.readouterr().err.splitlines()
        assert err == [f"waiting for {lock} held by another process"]
    finally:
        hung.kill()
        hung.wait(timeout=30)
    with exclusive_lock(lock, timeout_s=5.0):  # the holder is gone: free again
        pass


def test_an_empty_cache_variable_is_an_error(monkeypatch):
    from pkpd_lib.files import CACHE_ENV, default_cache_dir

    monkeypatch.setenv(CACHE_ENV, "")
    with pytest.raises(ValueError, match=r"\$PKPD_MODEL_CACHE is set but empty"):
        default_cache_dir()
