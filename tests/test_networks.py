"""Keras networks: construction, feature checks, saving, reproducible training, CLI.

Uses small synthetic data sets so the whole file runs in seconds."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from network_data import small_network_data

from pkpd_lib.nets import networks as nw
from pkpd_lib.study import experiments

small = pytest.fixture(small_network_data, scope="module", name="small")

CONFIG = nw.NetworkConfig(
    units=(4,), block=4, batch_size=16, learning_rate=1e-2, max_epochs=3, patience=2
)


@pytest.fixture(scope="module")
def trained(small):
    return nw.train_network(CONFIG, *small, seed=3, report_every=None)


def test_model_takes_raw_inputs_and_returns_pd(trained, small):
    x = small[0]
    pred = nw.predict_pd(trained.model, x)
    assert pred.shape == small[1].shape
    assert pred.dtype == np.float64
    # the output is BASE_PD * (1 + f), with f the network's fractional change
    m = trained.model
    frac_model = nw.keras.Model(m.inputs, m.get_layer("frac_change").output)
    frac = np.asarray(frac_model.predict(nw.check_inputs(m, x), verbose=0), float)
    np.testing.assert_allclose(pred, x["BASE_PD"][:, None] * (1 + frac), rtol=1e-5)


def test_padding_handles_any_length(small):
    for block in (1, 4, 5):
        stats = nw.scaling_stats(small[0], small[1])
        m = nw.build_network(nw.NetworkConfig(units=(3,), block=block), 49, stats)
        assert m.output_shape == (None, 49)


def test_same_seed_same_weights(small, trained):
    again = nw.train_network(CONFIG, *small, seed=3, report_every=None)
    for a, b in zip(trained.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = nw.train_network(CONFIG, *small, seed=4, report_every=None)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(trained.model.get_weights(), other.model.get_weights(), strict=True)
    )


def test_training_history_and_report(small, capsys):
    r = nw.train_network(CONFIG, *small, seed=0, report_every=2, label="[t] ")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[t] epoch    2")
    assert "stopped after" in out[-1]
    assert set(r.history) >= {"loss", "val_loss", "lr"}
    assert 1 <= r.best_epoch <= r.epochs_run <= CONFIG.max_epochs


def test_save_and_load_round_trip(trained, small, tmp_path):
    path = nw.save_model(trained.model, tmp_path / "m.keras")
    loaded = nw.load_model(path)
    np.testing.assert_array_equal(
        nw.predict_pd(loaded, small[0]), nw.predict_pd(trained.model, small[0])
    )
    with pytest.raises(ValueError, match=r"\.keras"):
        nw.save_model(trained.model, tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError):
        nw.load_model(tmp_path / "missing.keras")


def test_wrong_features_raise_clear_errors(trained, small, tmp_path):
    model = nw.load_model(nw.save_model(trained.model, tmp_path / "m.keras"))
    x = dict(small[0])
    with pytest.raises(ValueError, match=r"missing \['WT'\]"):
        nw.predict_pd(model, {k: v for k, v in x.items() if k != "WT"})
    with pytest.raises(ValueError, match=r"unexpected \['HEIGHT'\]"):
        nw.predict_pd(model, {**x, "HEIGHT": x["WT"]})
    with pytest.raises(TypeError, match="mapping"):
        nw.predict_pd(model, np.column_stack([x["BASE_PD"], x["WT"], x["AGE"], x["SEX"]]))
    with pytest.raises(ValueError, match=r"'conc' has shape \(64, 48\)"):
        nw.predict_pd(model, {**x, "conc": x["conc"][:, :48]})
    with pytest.raises(ValueError, match=r"'AGE' \(years\) contains NaN"):
        nw.predict_pd(model, {**x, "AGE": np.where(np.arange(64) == 5, np.nan, x["AGE"])})
    with pytest.raises(ValueError, match="16 patients"):
        nw.predict_pd(model, {**x, "WT": x["WT"][:16]})
    with pytest.raises(ValueError, match=r"'conc' \(mg/L\) must be >= 0"):
        nw.predict_pd(model, {**x, "conc": -x["conc"]})
    with pytest.raises(ValueError, match="SEX"):
        nw.predict_pd(model, {**x, "SEX": x["SEX"] + 2})
    # before: "could not convert string to float: 'heavy'", naming no feature
    with pytest.raises(ValueError, match=r"feature 'WT' must hold numbers: .*'heavy'"):
        nw.predict_pd(model, {**x, "WT": ["heavy"] * len(x["WT"])})


def test_train_or_load_reuses_identical_model(small, tmp_path):
    a = nw.train_or_load(CONFIG, *small, seed=5, cache_dir=tmp_path, report_every=None)
    b = nw.train_or_load(CONFIG, *small, seed=5, cache_dir=tmp_path, report_every=None)
    assert len(list(tmp_path.glob("*.keras"))) == 1
    assert b.history == a.history
    np.testing.assert_array_equal(
        nw.predict_pd(a.model, small[0]), nw.predict_pd(b.model, small[0])
    )


@pytest.mark.slow
def test_cli_trains_and_saves_a_usable_model(tmp_path, capsys):
    from pkpd_lib.__main__ import main

    assert main(["train", "--design", "sparse", "--out", str(tmp_path), "--max-epochs", "2"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["design"] == "sparse" and report["epochs_run"] == 2
    assert set(report["test"]) == {"QD", "BID", "TID"}
    model = nw.load_model(tmp_path / "model.keras")
    data = experiments.study_data("sparse")
    pred = nw.predict_pd(model, data.test_x["TID"])
    assert pred.shape == data.test_truth["TID"].shape
    assert np.all(np.isfinite(pred))


def test_prediction_refuses_empty_input_and_bad_batch_size(trained, small):
    x = small[0]
    with pytest.raises(ValueError, match="no patients"):
        nw.predict_pd(trained.model, {k: v[:0] for k, v in x.items()})
    for bad in (-1, 0, 2.5, True, np.int64(0)):
        with pytest.raises(ValueError, match="batch_size"):
            nw.predict_pd(trained.model, x, batch_size=bad)


def test_prediction_takes_a_numpy_integer_batch_size(trained, small):
    """Before: np.int64(4) was refused, although NetworkConfig takes numpy integers."""
    x = small[0]
    np.testing.assert_array_equal(
        nw.predict_pd(trained.model, x, batch_size=np.int64(4)),
        nw.predict_pd(trained.model, x, batch_size=4),
    )


@pytest.mark.parametrize("batch_size", [256, 64, 24])
def test_prediction_is_keras_predict_bit_for_bit(trained, small, batch_size):
    """predict_pd batches through the compiled predict step (no tf.data pipeline): the
    same numbers as model.predict with the same batches, a partial last batch too."""
    x = small[0]
    keras_pred = trained.model.predict(
        nw.check_inputs(trained.model, x), batch_size=batch_size, verbose=0
    )
    ours = nw.predict_pd(trained.model, x, batch_size=batch_size)
    np.testing.assert_array_equal(ours, np.asarray(keras_pred, float))


def test_prediction_refuses_a_model_with_two_outputs(trained, small):
    """Before: batch outputs of a two-output model were concatenated into a wrong shape."""
    m = trained.model
    two = nw.keras.Model(m.inputs, [m.output, m.output], name="two_heads")
    with pytest.raises(ValueError, match="one PD output; model 'two_heads' has 2 outputs"):
        nw.predict_pd(two, small[0])


def test_training_names_a_missing_feature_before_building(small):
    """Before: a bare KeyError: 'AGE' (from the scaling) or 'time_h' (from the building)."""
    x, y, vx, vy = small
    with pytest.raises(ValueError, match=r"missing \['AGE'\]"):
        nw.train_network(CONFIG, {k: v for k, v in x.items() if k != "AGE"}, y, vx, vy)
    with pytest.raises(ValueError, match=r"missing \['WT'\]"):
        nw.train_network(CONFIG, x, y, {k: v for k, v in vx.items() if k != "WT"}, vy)
    timed = nw.NetworkConfig(units=(4,), time_input=True, max_epochs=1)
    with pytest.raises(ValueError, match=r"model 'lstm_1x4' .*missing \['time_h'\]"):
        nw.train_network(timed, x, y, vx, vy, report_every=None)


def test_saved_model_knows_its_training_ranges_and_warns(trained, small, tmp_path):
    x = small[0]
    model = nw.load_model(nw.save_model(trained.model, tmp_path / "m.keras"))
    low, high = nw.training_ranges(model)["WT"]
    assert (low, high) == pytest.approx((x["WT"].min(), x["WT"].max()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nw.predict_pd(model, x)  # the training data itself: no warning
    cases = {"WT": x["WT"] * 1000, "conc": x["conc"] * 1000}  # grams, ng/mL
    for name, values in cases.items():
        with pytest.warns(nw.InputRangeWarning, match=f"{name} is far outside"):
            nw.predict_pd(model, {**x, name: values})
    first_heavy = np.where(np.arange(len(x["WT"])) == 0, 500.0, x["WT"])
    with pytest.warns(nw.InputRangeWarning, match=r"WT .* 1 patient\(s\) \(rows \[0\]\)"):
        nw.predict_pd(model, {**x, "WT": first_heavy})
    with pytest.raises(ValueError, match=r"'WT' \(kg\) must be > 0"):
        nw.predict_pd(model, {**x, "WT": -x["WT"]})


def test_saves_are_atomic_and_never_silent(trained, tmp_path):
    path = nw.save_model(trained.model, tmp_path / "m.keras")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        nw.save_model(trained.model, path)
    nw.save_model(trained.model, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]
    (tmp_path / "empty.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        nw.load_model(tmp_path / "empty.keras")


def test_network_config_validates_training_settings():
    for field, bad in (("max_epochs", 0), ("max_epochs", -1), ("batch_size", 0), ("patience", 1.5)):
        with pytest.raises(ValueError, match=field):
            nw.NetworkConfig(**{field: bad})
    with pytest.raises(ValueError, match="learning_rate"):
        nw.NetworkConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="min_delta"):
        nw.NetworkConfig(min_delta=-1.0)
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match=f"latent must be an integer >= 1, got {bad}"):
            nw.NetworkConfig(kind="node", block=1, latent=bad)
    with pytest.raises(ValueError, match="static_features must include 'BASE_PD'"):
        nw.NetworkConfig(static_features=("WT", "AGE"))


def test_epoch_report_refuses_a_bad_interval():
    """Before: every=0 was accepted and divided by zero after the first epoch."""
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match=r"every must be an integer >= 1"):
            nw.EpochReport(every=bad)
    assert nw.EpochReport(every=np.int64(5)).every == 5


def test_the_cache_examples_leave_the_environment_alone(monkeypatch):
    """A doctest that deleted PKPD_MODEL_CACHE sent every notebook run later by the same
    pytest worker to the user's cache instead of the test command's."""
    import doctest
    import os

    monkeypatch.setenv(nw.CACHE_ENV, "/somewhere")
    doctest.run_docstring_examples(nw.default_cache_dir, vars(nw), verbose=False)
    assert os.environ[nw.CACHE_ENV] == "/somewhere"


def test_a_network_missing_from_the_store_is_an_error_not_a_retrain(small, tmp_path, monkeypatch):
    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PKPD_CACHE_MISS", "error")
    with pytest.raises(nw.StoreMissError, match=r"not in the store .*tasks.py execute"):
        nw.train_or_load(CONFIG, *small, seed=5, report_every=None)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written
    monkeypatch.setenv("PKPD_CACHE_MISS", "compute")
    a = nw.train_or_load(CONFIG, *small, seed=5, report_every=None)
    monkeypatch.setenv("PKPD_CACHE_MISS", "error")
    b = nw.train_or_load(CONFIG, *small, seed=5, report_every=None)  # stored: loaded
    assert b.history == a.history
    changed = [{**small[0], "WT": small[0]["WT"] * 1.01}, *small[1:]]
    with pytest.raises(nw.StoreMissError):
        nw.train_or_load(CONFIG, *changed, seed=5, report_every=None)


def test_store_key_ignores_the_last_bits_of_the_data(small):
    """Another CPU's numpy moves simulated data by ~1e-14 and fitted ones by ~1e-8: the
    same stored network must be found; another seed or other data must not."""
    from pkpd_lib.files import signatures_match

    x, y, vx, vy = small
    key, signature = nw._fingerprint(CONFIG, 5, (x, y, vx, vy))
    for rel in (1e-13, 1e-8):
        jitter = {k: np.asarray(v, float) * (1 + rel) for k, v in x.items()}
        key2, signature2 = nw._fingerprint(CONFIG, 5, (jitter, y, vx, vy))
        assert key2 == key and signatures_match(signature, signature2)
    assert nw._fingerprint(CONFIG, 6, (x, y, vx, vy))[0] != key
    other = {**x, "WT": np.asarray(x["WT"], float)[::-1]}
    assert not signatures_match(signature, nw._fingerprint(CONFIG, 5, (other, y, vx, vy))[1])


def test_every_stored_network_read_or_written_is_noted(small, tmp_path, monkeypatch):
    """``tasks.py execute`` removes stored networks no chapter notes (stale ones)."""
    log = tmp_path / "used.txt"
    monkeypatch.setenv("PKPD_STORE_LOG", str(log))
    nw.train_or_load(CONFIG, *small, seed=5, cache_dir=tmp_path / "store", report_every=None)
    stored = sorted(p.name for p in (tmp_path / "store").iterdir() if p.suffix != ".lock")
    noted = sorted(Path(line).name for line in log.read_text().splitlines())
    assert noted == stored and len(stored) == 2


# --- a damaged, read-only or shared store; unsafe model files -------------------------


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_model_file_is_named_as_such(trained, tmp_path):
    """Before: "File not found" for a file that exists."""
    path = nw.save_model(trained.model, tmp_path / "m.keras")
    _truncate(path)
    with pytest.raises(nw.DamagedFileError, match=f"{path} is a truncated or damaged file"):
        nw.load_model(path)
    data = bytearray(nw.save_model(trained.model, tmp_path / "n.keras").read_bytes())
    data[2000:2100] = b"x" * 100  # complete, but a member's bytes changed
    (tmp_path / "n.keras").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="n.keras is a truncated or damaged file.*checksum"):
        nw.load_model(tmp_path / "n.keras")


@pytest.mark.parametrize("damage", ["truncated model", "empty metadata"])
def test_a_damaged_stored_model_is_retrained_or_named(small, tmp_path, monkeypatch, damage):
    """Before: every call failed ("File not found", or a bare JSONDecodeError)."""
    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PKPD_CACHE_MISS", "compute")
    a = nw.train_or_load(CONFIG, *small, seed=5, report_every=None)
    (path,) = tmp_path.glob("*.keras")
    damaged = path if damage == "truncated model" else path.with_suffix(".json")
    if damaged == path:
        _truncate(path)
    else:
        damaged.write_text("")
    monkeypatch.setenv("PKPD_CACHE_MISS", "error")  # training not allowed: an error naming it
    with pytest.raises(nw.DamagedFileError, match=f"{damaged}.*forbids training"):
        nw.train_or_load(CONFIG, *small, seed=5, report_every=None)
    monkeypatch.setenv("PKPD_CACHE_MISS", "compute")  # allowed: trained again, and stored
    with pytest.warns(UserWarning, match=f"{damaged} is a truncated or damaged file"):
        b = nw.train_or_load(CONFIG, *small, seed=5, report_every=None)
    assert b.history["loss"] == a.history["loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        c = nw.train_or_load(CONFIG, *small, seed=5, report_every=None)  # repaired: loaded
    np.testing.assert_array_equal(
        nw.predict_pd(c.model, small[0]), nw.predict_pd(a.model, small[0])
    )


def test_a_read_only_store_that_holds_the_model_is_read_without_a_lock(
    small, tmp_path, monkeypatch
):
    """Before: EROFS creating the lock file in a read-only store (the tests may run as
    root, whom a read-only folder does not stop: the lock's creation fails instead)."""
    a = nw.train_or_load(CONFIG, *small, seed=5, cache_dir=tmp_path, report_every=None)
    for lock in tmp_path.glob("*.lock"):
        lock.unlink()

    def read_only(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(nw, "exclusive_lock", read_only)
    b = nw.train_or_load(CONFIG, *small, seed=5, cache_dir=tmp_path, report_every=None)
    assert b.history == a.history
    assert not list(tmp_path.glob("*.lock"))


def test_targets_that_do_not_match_the_inputs_are_named(small):
    """Before: a broadcast error that blamed ``conc``."""
    x, y, vx, vy = small
    with pytest.raises(ValueError, match=r"train_y has shape \(63, 49\).*train_x\['conc'\]"):
        nw.train_network(CONFIG, x, y[:63], vx, vy, report_every=None)
    with pytest.raises(ValueError, match=r"val_y has shape \(16, 48\).*val_x\['conc'\]"):
        nw.train_network(CONFIG, x, y, vx, vy[:, :48], report_every=None)
    with pytest.raises(ValueError, match=r"train_y must be \(patients, times\)"):
        nw.train_network(CONFIG, x, y[:, 0], vx, vy, report_every=None)


def test_model_files_that_would_run_code_are_refused(tmp_path):
    """Safe loading: a Lambda layer (Python bytecode in the file) and a config that names
    a function outside Keras (``os.system``) are refused, and nothing runs."""
    import zipfile

    keras = nw.keras
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Lambda(lambda v: v * 2)(inputs)).save(tmp_path / "l.keras")
    with pytest.raises(ValueError, match="Lambda"):
        nw.load_model(tmp_path / "l.keras")
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "d.keras")
    with zipfile.ZipFile(tmp_path / "d.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    marker = tmp_path / "code_ran"
    config["config"]["layers"][1].update(module="os", class_name="system", config=f"touch {marker}")
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "injected.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises((TypeError, ValueError)):
        nw.load_model(tmp_path / "injected.keras")
    assert not marker.exists()


_STORE_USER = """
import os, signal, sys, warnings
import numpy as np
from pkpd_lib.nets import networks as nw
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.study import datasets

warnings.simplefilter("ignore")
times = np.arange(0.0, 25.0)
sets = [
    datasets.simulate_dataset(sample_population(n, seed=s), reg.qd(), times, obs_seed=s)
    for n, s in ((16, 1), (8, 2))
]
data = [v for d in sets for v in (datasets.network_inputs(d), d.pd_obs)]
config = nw.NetworkConfig(units=(2,), block=4, batch_size=16, max_epochs=2, patience=2)
if sys.argv[2] == "die":  # kill -9 in the middle of writing the model file

    def dying(model, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK half a model")
        os.kill(os.getpid(), signal.SIGKILL)

    nw.keras.Model.save = dying
run = nw.train_or_load(config, *data, seed=5, cache_dir=sys.argv[1], report_every=1)
print("LOSS", run.history["loss"])
"""


@pytest.mark.slow
def test_a_killed_cache_write_leaves_no_model_and_two_processes_train_once(tmp_path):
    """kill -9 during a cache write leaves no file read as a model; then two processes
    that need the same key at once train it once: one trains, the other waits for the
    lock and loads it, and both get the same network."""
    import subprocess
    import sys

    def start(mode):
        return subprocess.Popen(
            [sys.executable, "-c", _STORE_USER, str(tmp_path), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    killed = start("die")
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    left = sorted(p.suffix for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == [".lock"], left  # the half-written model stays a hidden temporary file
    both = [start("train"), start("train")]
    outputs = [p.communicate(timeout=300) for p in both]
    for p, (_, err) in zip(both, outputs, strict=True):
        assert p.returncode == 0, err
    losses = {line for out, _ in outputs for line in out.splitlines() if line.startswith("LOSS")}
    assert len(losses) == 1, losses
    loaded = ["loaded the model trained earlier" in out for out, _ in outputs]
    assert sorted(loaded) == [False, True], [out for out, _ in outputs]
    stored = sorted(p.suffix for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert stored == [".json", ".keras", ".lock"], stored
