"""The retrain tier in shards: each stored result computed again in exactly one shard,
from the inputs it was stored with, and compared with the stored one."""

import contextlib
import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from network_data import small_network_data
from nlme_models import DECAY_START, decay_data, decay_model

from pkpd_lib import files
from pkpd_lib.nets import networks as nw
from pkpd_lib.pmx import nlme

ROOT = Path(__file__).resolve().parent.parent
small = pytest.fixture(small_network_data, scope="module", name="small")

CONFIG = nw.NetworkConfig(
    units=(4,), block=4, batch_size=16, learning_rate=1e-2, max_epochs=3, patience=2
)


def _tool(name):
    """The script ``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report_tool():
    return _tool("retrain_report")


def test_every_stored_result_is_in_exactly_one_shard_and_the_shards_balance():
    rng = np.random.default_rng(0)
    records = {f"r{i}.json": float(s) for i, s in enumerate(rng.exponential(60.0, 200))}
    plan = files.shard_plan(records, 7)
    assert set(plan) == set(records) and set(plan.values()) == set(range(1, 8))
    loads = [sum(s for r, s in records.items() if plan[r] == k) for k in range(1, 8)]
    assert max(loads) - min(loads) <= max(records.values())
    assert files.shard_plan(dict(reversed(records.items())), 7) == plan  # order-free
    with pytest.raises(ValueError, match="at least one shard"):
        files.shard_plan(records, 0)


def test_each_of_the_ci_shards_of_the_committed_store_fits_the_ci_limit():
    """CI gives each shard 90 minutes on 2 cores; the notebooks' own execution takes
    about 10 of them. A shard's share of the committed store, as recorded when it was
    computed, must leave room for a slower machine: at most 50 minutes."""
    tasks = _tool("tasks")
    records = files.stored_records(ROOT / "data" / "trained")
    plan = files.shard_plan(records, tasks.RETRAIN_SHARDS)
    loads = [sum(s for r, s in records.items() if plan[r] == k) / 60 for k in set(plan.values())]
    assert len(loads) == tasks.RETRAIN_SHARDS
    assert max(loads) <= 50, loads


def test_the_workflow_runs_every_shard():
    import yaml

    tasks = _tool("tasks")
    job = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    retrain = job["retrain"]
    assert retrain["strategy"]["matrix"]["shard"] == list(range(1, tasks.RETRAIN_SHARDS + 1))
    commands = [step.get("run", "") for step in retrain["steps"]]
    assert f"--shard ${{{{ matrix.shard }}}}/{tasks.RETRAIN_SHARDS}" in " ".join(commands)
    covers = job["retrain-covers"]  # the starts that passed on another start's word
    assert covers["needs"] == "retrain"
    assert "retrain_report.py --covers" in " ".join(step.get("run", "") for step in covers["steps"])


def test_the_chapters_use_every_stored_result_and_only_stored_ones():
    """``data/store_uses.json`` (written by ``tasks.py execute``) tells a shard which
    chapters to run; a stale map would leave a result unchecked, so it must name every
    stored result, nothing else, and only chapters that exist."""
    tasks = _tool("tasks")
    uses = json.loads(tasks.USES.read_text())
    chapters = {p.stem for p in tasks.CHAPTERS.glob("*.md")}
    assert set(uses) <= chapters, set(uses) - chapters
    named = {name for names in uses.values() for name in names}
    assert named == set(files.stored_records(tasks.STORE)), named ^ set(
        files.stored_records(tasks.STORE)
    )


def test_a_shard_runs_the_chapters_that_use_its_results(tmp_path, monkeypatch):
    tasks = _tool("tasks")
    store, chapters = tmp_path / "store", tmp_path / "chapters"
    store.mkdir(), chapters.mkdir()
    for name, seconds in {"a.json": 30.0, "b.json": 20.0, "c.json": 15.0}.items():
        (store / name).write_text(json.dumps({"seconds": seconds}))
    for chapter in ("01_x", "02_y", "03_z"):
        (chapters / f"{chapter}.ipynb").touch()
    uses = tmp_path / "uses.json"
    uses.write_text(json.dumps({"01_x": ["a.json"], "02_y": ["b.json", "c.json"], "03_z": []}))
    monkeypatch.setattr(tasks, "STORE", store)
    monkeypatch.setattr(tasks, "CHAPTERS", chapters)
    monkeypatch.setattr(tasks, "USES", uses)
    # plan: a -> 1, b -> 2, c -> 2
    assert [Path(c).stem for c in tasks.shard_chapters(1, 2)] == ["01_x"]
    assert [Path(c).stem for c in tasks.shard_chapters(2, 2)] == ["02_y"]
    uses.unlink()  # no map: every chapter
    assert len(tasks.shard_chapters(1, 2)) == 3


def test_use_logs_become_the_map_of_chapters_to_stored_results(tmp_path, monkeypatch):
    tasks = _tool("tasks")
    monkeypatch.setattr(tasks, "STORE", tmp_path / "store")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "01_x.txt").write_text(f"{tmp_path}/store/b.json\n{tmp_path}/store/fits/a.json\n")
    (logs / "02_y.txt").write_text(f"{tmp_path}/store/b.json\n{tmp_path}/store/b.keras\n")
    (logs / "03_z.txt").write_text("")
    assert tasks.read_use_logs(logs) == {
        "01_x": ["b.json", "fits/a.json"],
        "02_y": ["b.json"],
        "03_z": [],
    }


def _shard(monkeypatch, store, folder, shard):
    monkeypatch.setenv(files.CACHE_ENV, str(store))
    monkeypatch.setenv(files.MISS_ENV, "error")
    monkeypatch.setenv(files.SHARD_ENV, shard)
    monkeypatch.setenv(files.RETRAIN_DIR_ENV, str(folder))
    files._PLANS.clear()


def _report(folder):
    return [json.loads(line) for line in (folder / files.REPORT_NAME).read_text().splitlines()]


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_a_shard_trains_its_own_networks_again_and_loads_the_others(small, tmp_path, monkeypatch):
    store, folder = tmp_path / "store", tmp_path / "shard"
    stored = {
        seed: nw.train_or_load(CONFIG, *small, seed=seed, cache_dir=store, report_every=None)
        for seed in (5, 6)
    }
    plan = files.shard_plan(files.stored_records(store), 2)
    mine = next(name for name, k in plan.items() if k == 1)
    _shard(monkeypatch, store, folder, "1/2")
    for seed in (5, 6):  # twice: the second time nothing is trained or reported again
        for _ in range(2):
            got = nw.train_or_load(CONFIG, *small, seed=seed, report_every=None)
            assert got.history == stored[seed].history  # the stored network, as stored
    (line,) = _report(folder)
    assert line["record"] == mine and line["within"] and line["difference"] == 0.0
    assert sorted(p.name for p in folder.glob("*.keras")) == [Path(mine).with_suffix(".keras").name]
    assert _report_tool().check(folder, 1, 2, store) == []
    assert "not computed again" in _report_tool().check(folder, 2, 2, store)[0]


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_a_stored_network_that_training_no_longer_gives_is_reported(small, tmp_path, monkeypatch):
    store, folder = tmp_path / "store", tmp_path / "shard"
    for seed in (5, 6):
        nw.train_or_load(CONFIG, *small, seed=seed, cache_dir=store, report_every=None)
    five, six = (next(store.glob(f"*seed{s}_*.keras")) for s in (5, 6))
    shutil.copyfile(six, five)  # seed 5's file now holds other weights
    _shard(monkeypatch, store, folder, "1/1")
    nw.train_or_load(CONFIG, *small, seed=5, report_every=None)
    (line,) = _report(folder)
    assert not line["within"] and line["difference"] > 0.05
    problems = _report_tool().check(folder, 1, 1, store)
    assert f"{five.with_suffix('.json').name}: moved beyond" in "\n".join(problems)


@pytest.mark.parametrize("moved", [0.0, 0.05])
def test_a_shard_estimates_its_fits_again_and_a_moved_estimate_is_reported(
    tmp_path, monkeypatch, moved
):
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    first = nlme.fit_foce(model, data, DECAY_START, cache_dir=store / "fits")
    (record,) = (store / "fits").glob("*.json")
    stored = json.loads(record.read_text())
    stored["x"][0] += moved * max(1.0, abs(stored["x"][0]))  # log C0: C0 moved by ~5%
    record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    fit = nlme.fit_foce(model, data, DECAY_START, cache_dir="default")
    np.testing.assert_array_equal(fit.x, stored["x"])  # what the notebook gets: the stored fit
    (line,) = _report(folder)
    assert line["kind"] == "fit" and line["within"] is (moved == 0.0)
    assert line["ofv_difference"] == 0.0 or moved
    assert first.ofv == pytest.approx(stored["ofv"])


STARTS = (DECAY_START, {"C0": 20.0, "k": 0.1})


@pytest.mark.parametrize(
    ("ofv_shift", "cover_elsewhere", "covered"),
    [
        ((0.0, 0.0), False, True),  # it ends where an equally good start's fit lies
        ((-1.0, -1.0), False, True),  # it ends clearly above the best: a worse optimum
        ((0.0, 0.0), True, False),  # as low as the best, but not at the other's estimate
        ((0.0, 10.0), False, False),  # the start that moved was the only best one
        ((1.0, 1.0), False, False),  # it ended below every stored start: a better fit
    ],
)
def test_a_start_that_ends_in_another_optimum_is_judged_by_the_fit_kept(
    tmp_path, monkeypatch, ofv_shift, cover_elsewhere, covered
):
    """Which start of a multi-start fit ends in which optimum can turn on a CPU's last
    bits; the caller keeps the lowest OFV. Start 0's stored estimate is moved (as if it
    had ended elsewhere when stored): it passes its shard only if another stored start is
    as good and the refit either ends clearly above it or at its estimate, and then only
    if that start is reported as reproduced over all the shards (``--covers``)."""
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    nlme.fit_foce_starts(model, data, STARTS, cache_dir=store / "fits", standard_errors=False)
    records = sorted((store / "fits").glob("*.json"))
    assert len(records) == 2
    x0_of = {r: json.loads(r.read_text())["signature"]["/x0"]["stats"][0] for r in records}
    first = min(records, key=x0_of.get)  # the fit from STARTS[0]
    second = max(records, key=x0_of.get)
    for record, shift in zip((first, second), ofv_shift, strict=True):
        stored = json.loads(record.read_text())
        stored["ofv"] += shift
        if record == first or cover_elsewhere:
            stored["x"][0] += 0.05 * max(1.0, abs(stored["x"][0]))  # wandered: C0 ~5%
        record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    nlme.fit_foce_starts(model, data, STARTS, cache_dir="default", standard_errors=False)
    lines = {line["record"]: line for line in _report(folder)}
    moved = lines[f"fits/{first.name}"]
    assert moved["difference"] > 0.04 and moved["within"] is covered
    assert moved.get("covered_by", []) == ([f"fits/{second.name}"] if covered else [])
    if not covered:
        return
    report = _report_tool()
    if ofv_shift != (0.0, 0.0):  # both stored OFVs lowered: both "wandered" above them
        assert lines[f"fits/{second.name}"]["covered_by"] == [moved["record"]]
        assert len(report.covers([folder])) == 2  # and cannot vouch for each other
        return
    assert report.covers([folder]) == []  # the covering start reproduced
    # a cover that passed by another rule, or wandered too, does not vouch for it
    for other in ({"judged_by": "converged in neither run"}, {"covered_by": [moved["record"]]}):
        reported = {**lines, f"fits/{second.name}": {**lines[f"fits/{second.name}"], **other}}
        text = "".join(json.dumps(v) + "\n" for v in reported.values())
        (folder / files.REPORT_NAME).write_text(text)
        assert len(report.covers([folder])) == 1 + ("covered_by" in other)
    assert report.covers([tmp_path / "nothing"]) != []  # no report: nothing was checked


@pytest.mark.parametrize(
    ("candidate", "usable_when_stored", "move", "ofv_shift", "within"),
    [
        (True, False, 0.03, 0.3, True),  # a search's candidate left out both times
        (True, False, 0.03, 5.0, False),  # ...but its printed OFV moved beyond 0.5%
        (True, True, 0.03, 0.3, False),  # usable when stored: compared as any fit
        (False, False, 0.03, 0.3, False),  # any other fit: a worse OFV is a different fit
        (False, False, 0.03, 0.0, True),  # converged in neither run, equally good
        (False, False, 0.1, 0.0, False),  # ...but its estimates beyond a fit table's 5%
    ],
)
def test_a_fit_that_did_not_converge_is_judged_by_what_its_caller_reads(
    tmp_path, monkeypatch, candidate, usable_when_stored, move, ofv_shift, within
):
    """A fit stopped by its iteration limit (converged in neither run) whose stored
    estimate moved: a model search's candidate passes if its printed OFV stays within
    what the table's comparison allows, since the search keeps only usable fits; another
    such fit passes only with an OFV as good and estimates within a fit table's
    tolerance."""
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    options = {"max_iter": 2, "standard_errors": False}
    nlme.fit_foce(model, data, DECAY_START, cache_dir=store / "fits", **options)
    (record,) = (store / "fits").glob("*.json")
    stored = json.loads(record.read_text())
    assert not stored["converged"]
    stored["x"][0] += move * max(1.0, abs(stored["x"][0]))
    stored["ofv"] += ofv_shift
    stored["converged"] = usable_when_stored
    record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    with nlme.candidate_fits() if candidate else contextlib.nullcontext():
        nlme.fit_foce(model, data, DECAY_START, cache_dir="default", **options)
    (line,) = _report(folder)
    assert line["converged"] == [usable_when_stored, False]
    assert line["difference"] > 0.9 * move
    assert line["within"] is within and ("judged_by" in line) is within


@pytest.mark.parametrize(
    ("edit", "converged_when_stored", "judged"),
    [
        ({4: -0.5}, False, True),  # the SD of u, which no prediction reads, moved
        ({4: -0.5}, True, True),  # ...from a fit stored as converged: the same
        ({3: -0.5}, False, False),  # the SD of k, which the data determine
        ({4: -0.5, 0: 0.1}, False, False),  # ...and a typical value beyond 5%
        ({4: -0.5, 0: 0.01}, True, False),  # ...beyond 0.5% where one run converged
    ],
)
def test_a_fit_that_moved_only_along_an_sd_the_data_do_not_determine_is_judged_by_its_ofv(
    tmp_path, monkeypatch, edit, converged_when_stored, judged
):
    """The decay model with a parameter ``u`` that no prediction reads (as E_max's once
    E_max is at its bound, chapter 14) and a random effect on it: the OFV is flat along
    its SD, whatever the estimation's path. A stored estimate (with its OFV) whose SD of
    u is elsewhere passes: the OFVs are equal, and equal with that random effect
    removed. An SD the data determine, or any other estimate moved too, does not."""
    store, folder = tmp_path / "store", tmp_path / "shard"
    model = nlme.NLMEModel(
        "decay, an unread parameter",
        ("C0", "k", "u"),
        dict.fromkeys(("C0", "k", "u"), "log"),
        ("k", "u"),
        decay_model().predict,
    )
    data, start = decay_data(), {**DECAY_START, "u": 1.0}
    options = {"standard_errors": False}
    nlme.fit_foce(model, data, start, cache_dir=store / "fits", **options)
    (record,) = (store / "fits").glob("*.json")
    stored = json.loads(record.read_text())
    assert 0.01 < np.exp(stored["x"][4]) < 10  # the SD of u, away from its bound
    for i, shift in edit.items():
        stored["x"][i] += shift * (max(1.0, abs(stored["x"][i])) if i == 0 else 1.0)
    problem = nlme._Problem(model, data, {})
    stored["ofv"] = problem.ofv(np.array(stored["x"]), eta_start=np.zeros((data.n_subjects, 2)))
    stored["converged"] = converged_when_stored
    record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    nlme.fit_foce(model, data, start, cache_dir="default", **options)
    (line,) = _report(folder)
    assert line["within"] is judged and ("judged_by" in line) is judged
    if judged:
        assert list(line["undetermined_sds"]) == ["omega_u"]
        sd_stored, sd_refit = line["undetermined_sds"]["omega_u"]
        assert sd_refit == pytest.approx(np.exp(0.5) * sd_stored)


@pytest.mark.parametrize(
    ("in_se", "ofv_shift", "converged", "covariance_step", "judged"),
    [
        (0.2, 0.0, True, True, True),  # the SD of k moved by 0.2 of its SE
        (1.0, 0.0, True, True, False),  # ...by 1 SE: d'Rd/2 beyond the OFV tolerance
        (0.2, 0.2, True, True, False),  # ...to an OFV 0.2 apart
        (0.2, 0.0, False, True, False),  # ...stored as not converged: not this rule
        (0.2, 0.0, True, False, False),  # ...stored without a covariance step: no R
    ],
)
def test_a_converged_fit_is_judged_by_the_ofv_change_its_curvature_predicts(
    tmp_path, monkeypatch, in_se, ofv_shift, converged, covariance_step, judged
):
    """A converged fit stops where three iterations gain < 0.01 OFV, so an estimate the
    data determine poorly (a large SE) can stop further than 0.5% apart on another CPU
    at an equally good OFV: it passes if the stored fit's curvature puts the two end
    points within the OFV tolerance (d'Rd/2 <= 0.1; along one estimate about (d/SE)^2).
    The correlated case, where each estimate alone would look near, is the doctest of
    ``nlme._ofv_change_by_curvature``."""
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    fit = nlme.fit_foce(model, data, DECAY_START, cache_dir=store / "fits", covariance="r")
    se = fit.covariance_step.se[2]
    assert fit.converged and se > 0.01  # the SD of k: 0.5% of its log would be ~0.006
    (record,) = (store / "fits").glob("*.json")
    stored = json.loads(record.read_text())
    stored["x"][2] += in_se * se
    stored["ofv"] += ofv_shift
    stored["converged"] = converged
    if not covariance_step:
        stored["r_matrix"] = stored["s_matrix"] = None
    record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    nlme.fit_foce(model, data, DECAY_START, cache_dir="default", covariance="r")
    (line,) = _report(folder)
    assert line["difference"] > nlme.RETRAIN_RTOL
    assert line["within"] is judged and ("judged_by" in line) is judged


def _sd_problem(scale=2e3, best=1e-3, theta_weight=0.0, failed=False):
    """A stand-in problem of a typical value ``a`` and the SD of its random effect (its
    log), whose OFV is ``100 + scale (max(SD, 0.001) - best)^2 + theta_weight (a -
    1)^2``: by default it falls as the SD does, flat below 0.001."""
    from types import SimpleNamespace

    def ofv(x, eta_start=None):
        sd = max(np.exp(x[1]), 1e-3)
        return 100.0 + scale * (sd - best) ** 2 + theta_weight * (x[0] - 1.0) ** 2

    return SimpleNamespace(
        names=lambda: ["theta_a", "omega_a"],
        model=SimpleNamespace(transforms={"a": "log"}),
        ofv=ofv,
        eta=np.zeros((1, 1)),
        failed=np.full(1, failed),
    )


@pytest.mark.parametrize(
    ("theta_moved", "sds", "others", "ofv_shift", "problem", "judged"),
    [
        (0.03, (0.002, 0.005), 0.05, 0.0, {}, True),  # typical value within 5%
        (0.03, (0.002, 0.005), 0.005, 0.0, {}, False),  # ...not within 0.5%
        (0.0, (0.002, 0.08), 0.05, 0.0, {"scale": 20.0}, False),  # SDs 0.078 apart
        (0.0, (0.25, 0.27), 0.005, 0.0, {"scale": 0.0}, True),  # ...but the OFV flat
        (0.0, (0.002, 0.005), 0.05, 1.0, {}, False),  # OFVs beyond a printed OFV's 0.5%
        (0.0, (0.3, 0.31), 0.05, 0.0, {"scale": 100.0, "best": 0.3}, False),  # determined
        (0.03, (0.002, 0.005), 0.05, 0.0, {"theta_weight": 200.0}, False),  # removed: apart
        (0.0, (0.002, 0.005), 0.05, 0.0, {"failed": True}, False),  # predictions fail there
    ],
)
def test_an_sd_the_data_do_not_determine_passes_only_within_every_bound(
    theta_moved, sds, others, ofv_shift, problem, judged
):
    """Each condition of ``nlme._undetermined_sds`` on its own, on a stand-in OFV: the
    other estimates within ``others``; the end points' OFVs within 0.1 (flat along the
    SD, as one whose parameter is at a bound), or else the SDs within ``others`` on
    their natural scale and the OFVs within 0.5%; with the SDs at 0.001 neither OFV
    higher by more than 0.1 (an SD of 0.3 that the data determine fails here), no
    prediction failing, and the two OFVs within 0.1."""
    p = _sd_problem(**problem)
    stored = np.array([1.0, np.log(sds[0])])
    fresh = np.array([1.0 + theta_moved, np.log(sds[1])])
    moved = nlme._retrain_changes(p, stored, fresh)
    assert moved[1] > nlme.RETRAIN_RTOL  # the SD moved on its log scale
    found, apart = nlme._undetermined_sds(
        p, stored, p.ofv(stored), fresh, p.ofv(fresh) + ofv_shift, moved, others
    )
    assert bool(found) is judged and bool(np.isfinite(apart)) is judged


@pytest.mark.parametrize(
    ("candidate", "ofv_shift", "judged"),
    [
        (True, 0.0, True),  # a search's candidate usable in both runs, OFV as good
        (True, 0.3, False),  # ...its OFV 0.3 apart: a decision could turn on it
        (False, 0.0, False),  # any other fit is read for its estimates
    ],
)
def test_a_usable_candidate_is_judged_by_its_ofv(
    tmp_path, monkeypatch, candidate, ofv_shift, judged
):
    """A model search reads a candidate's OFV and whether it is usable, so a candidate
    usable in both runs whose estimates moved along a flat ridge (no covariance step to
    say so) passes with its OFV within 0.1."""
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    options = {"standard_errors": False}
    nlme.fit_foce(model, data, DECAY_START, cache_dir=store / "fits", **options)
    (record,) = (store / "fits").glob("*.json")
    stored = json.loads(record.read_text())
    assert stored["converged"]
    stored["x"][1] += 0.03 * max(1.0, abs(stored["x"][1]))  # log k: 3% of its magnitude
    stored["ofv"] += ofv_shift
    record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    with nlme.candidate_fits() if candidate else contextlib.nullcontext():
        nlme.fit_foce(model, data, DECAY_START, cache_dir="default", **options)
    (line,) = _report(folder)
    assert line["converged"] == [True, True] and line["difference"] > 0.02
    assert line["within"] is judged and ("judged_by" in line) is judged


def test_a_fit_of_one_start_is_not_covered_by_another_start(tmp_path, monkeypatch):
    """Outside :func:`~pkpd_lib.pmx.nlme.fit_foce_starts` the caller reads the fit itself:
    a fit that moved is reported as moved even if another start reaches its OFV."""
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    for start in STARTS:
        nlme.fit_foce(model, data, start, cache_dir=store / "fits", standard_errors=False)
    record = sorted((store / "fits").glob("*.json"))[0]
    stored = json.loads(record.read_text())
    stored["x"][0] += 0.05 * max(1.0, abs(stored["x"][0]))
    record.write_text(json.dumps(stored))
    _shard(monkeypatch, store, folder, "1/1")
    for start in STARTS:
        nlme.fit_foce(model, data, start, cache_dir="default", standard_errors=False)
    (line,) = [ln for ln in _report(folder) if ln["record"] == f"fits/{record.name}"]
    assert not line["within"] and "covered_by" not in line


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_what_a_refit_warns_of_goes_to_the_report_not_the_notebook(tmp_path, monkeypatch):
    store, folder = tmp_path / "store", tmp_path / "shard"
    model, data = decay_model(), decay_data()
    nlme.fit_foce(model, data, DECAY_START, cache_dir=store / "fits")
    _shard(monkeypatch, store, folder, "1/1")
    estimate = nlme._estimate

    def estimate_that_warns(*args, **kwargs):
        warnings.warn("overflow encountered in exp", RuntimeWarning, stacklevel=1)
        return estimate(*args, **kwargs)

    monkeypatch.setattr(nlme, "_estimate", estimate_that_warns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notebook's cell would show it
        nlme.fit_foce(model, data, DECAY_START, cache_dir="default")
    (line,) = _report(folder)
    assert line["within"] and line["warnings"] == ["RuntimeWarning: overflow encountered in exp"]


def test_a_shard_needs_a_folder_for_what_it_computes_again(small, tmp_path, monkeypatch):
    nw.train_or_load(CONFIG, *small, seed=5, cache_dir=tmp_path, report_every=None)
    _shard(monkeypatch, tmp_path, "", "1/1")
    monkeypatch.setenv(files.RETRAIN_DIR_ENV, " ")
    with pytest.raises(ValueError, match="PKPD_RETRAIN_DIR must name a folder"):
        nw.train_or_load(CONFIG, *small, seed=5, report_every=None)


def test_retrained_networks_replace_the_stored_ones_keeping_their_planning_time(tmp_path):
    adopt = _tool("adopt_retrained").adopt
    store, folder = tmp_path / "store", tmp_path / "shard"
    store.mkdir(), folder.mkdir()
    for name, where, seconds in (("n", store, 50.0), ("n", folder, 99.0), ("m", store, 7.0)):
        (where / f"{name}.keras").write_bytes(f"{where.name} weights".encode())
        (where / f"{name}.json").write_text(json.dumps({"seconds": seconds, "x": where.name}))
    lines = [{"record": "n.json", "kind": "network"}, {"record": "fits/f.json", "kind": "fit"}]
    (folder / files.REPORT_NAME).write_text("".join(json.dumps(d) + "\n" for d in lines))
    assert adopt(folder, store) == ["n.json"]
    assert (store / "n.keras").read_bytes() == b"shard weights"
    assert json.loads((store / "n.json").read_text()) == {"seconds": 50.0, "x": "shard"}
    assert json.loads((store / "m.json").read_text())["x"] == "store"  # not retrained
    (folder / "n.keras").unlink()
    with pytest.raises(FileNotFoundError, match="n.keras is missing"):
        adopt(folder, store)


def test_a_stopped_shard_resumes_only_against_the_store_it_began_with(tmp_path, monkeypatch):
    tasks = _tool("tasks")
    store = tmp_path / "data" / "trained"
    store.mkdir(parents=True)
    (store / "a.json").write_text(json.dumps({"seconds": 1.0}))
    monkeypatch.setattr(tasks, "ROOT", tmp_path)
    monkeypatch.setattr(tasks, "STORE", store)
    monkeypatch.setattr(tasks, "run", lambda *a, **k: None)  # no notebooks, no report
    monkeypatch.setattr(tasks, "shard_chapters", lambda k, n: [])
    folder = tmp_path / "_build" / "retrain" / "shard-1-of-2"
    tasks.retrain_shard("1/2")
    (folder / "a.json").write_text("computed before the stop")
    tasks.retrain_shard("1/2", resume=True)
    assert (folder / "a.json").read_text() == "computed before the stop"
    (store / "a.json").write_text(json.dumps({"seconds": 2.0}))  # the store moved on
    with pytest.raises(SystemExit, match="store changed"):
        tasks.retrain_shard("1/2", resume=True)
    tasks.retrain_shard("1/2")  # a new run begins afresh
    assert not (folder / "a.json").exists()


def test_the_summary_over_the_shards_counts_each_kind():
    lines = [
        {"kind": "network", "within": True, "difference": 1e-6, "decision_repeats": True},
        {"kind": "network", "within": False, "difference": 6e-3, "decision_repeats": False},
        {"kind": "fit", "within": True, "difference": 2e-4, "ofv_difference": 5e-5},
        {
            "kind": "fit",
            "within": True,
            "difference": 0.59,
            "ofv_difference": 153.0,
            "covered_by": ["fits/a.json"],
        },
        {
            "kind": "fit",
            "within": True,
            "difference": 0.16,
            "ofv_difference": 5.3,
            "judged_by": "converged in neither run: an equally good end point (OFV)",
        },
        {
            "kind": "fit",
            "within": True,
            "difference": 0.02,
            "ofv_difference": 0.01,
            "judged_by": "converged in neither run: an equally good end point (OFV)",
        },
    ]
    text = _report_tool().summary(lines).splitlines()
    assert text == [
        "fits: 4, 4 within, largest change 0.59, largest OFV change 1.5e+02;"
        " 1 start(s) in another optimum, covered; judged by what the caller reads:"
        " 2 converged in neither run",
        "networks: 2, 1 within, largest change 0.006; early stopping would decide the same"
        " in 1 of 2",
    ]
