"""Protocol version 3's study of two interacting biomarkers (pkpd_lib.study.interacting):
its sets, what the methods read, and its scoring."""

import numpy as np
import pytest

from pkpd_lib.pmx.sampling import named_seed
from pkpd_lib.study import interacting as fb


@pytest.fixture(scope="module")
def val():
    return fb.dataset("fb-val", "QD")


def test_sets_follow_from_their_names_and_never_overlap():
    ids = [fb.population(name).ids for name in fb.SETS]
    assert all(len(set(a) & set(b)) == 0 for i, a in enumerate(ids) for b in ids[i + 1 :])
    again = fb.population("fb-val")
    np.testing.assert_array_equal(again.params.R0, fb.population("fb-val").params.R0)
    assert named_seed("fb-val/population") != named_seed("locked-v3/population")


def test_the_moderators_turnover_varies_between_patients():
    pop = fb.population("fb-val")
    assert "MTT" in pop.etas.columns
    assert 0.25 < pop.etas["MTT"].std() < 0.35


def test_regimens_are_the_protocols():
    assert fb.regimen("stopped").times_h.tolist() == [0.0, 24.0, 48.0]
    missed = fb.regimen("missed")
    assert missed.amounts_mg.sum() == 500.0 and 72.0 not in missed.times_h
    assert fb.regimen("q18h").name == "q18h"
    a = fb.regimen("random", 5, "fb-train")
    b = fb.regimen("random", 5, "fb-train")
    assert len(a) == 5 and all(
        np.array_equal(x.times_h, y.times_h) for x, y in zip(a, b, strict=True)
    )
    with pytest.raises(ValueError, match="need the number of patients"):
        fb.regimen("random")
    with pytest.raises(ValueError, match="unknown set"):
        fb.dataset("fb-test")


def test_networks_read_true_concentrations_and_the_screening_baseline(val):
    x = fb.network_inputs(val)
    np.testing.assert_allclose(x["conc"], val.truth.conc_mg_L, rtol=1e-6)  # float32
    np.testing.assert_allclose(x["BASE_PD"], val.screening_pd.mean(axis=1))
    assert not np.allclose(x["BASE_PD"], val.population.params.R0)  # not the oracle R0


def test_targets_stack_the_biomarkers_in_order(val):
    y = fb.targets(val)
    np.testing.assert_array_equal(y[..., 1], val.biomarkers_obs["M"])
    np.testing.assert_array_equal(fb.targets(val, ("R",)), val.pd_obs)
    with pytest.raises(ValueError, match="non-empty sequence"):
        fb.targets(val, "R")


def _methods(val):
    truth = {"QD": fb.truths(val), "BID": {b: v * 0.9 for b, v in fb.truths(val).items()}}
    perfect = {k: dict(v) for k, v in truth.items()}
    no_change = {"QD": truth["QD"], "BID": truth["QD"]}
    half = {
        "QD": truth["QD"],
        "BID": {b: 0.5 * (truth["QD"][b] + truth["BID"][b]) for b in fb.BIOMARKERS},
    }
    return truth, perfect, no_change, half


def test_the_regimen_effect_error_scores_perfect_none_and_half(val):
    truth, perfect, no_change, half = _methods(val)
    boot = fb.bootstrap(val.n_patients)
    table = fb.effect_table(
        {"perfect": perfect, "no change": no_change, "half": half}, truth, boot, ("BID",)
    )
    err = table["error"]
    assert err.loc["perfect"].abs().max() < 1e-12
    np.testing.assert_allclose(err.loc["no change"], 1.0)
    np.testing.assert_allclose(err.loc["half"], 0.5)
    verdicts = table["verdict"]
    assert set(verdicts.xs("no change", level="method")) == {"does not"}
    assert set(verdicts.xs("perfect", level="method")) == {"extrapolates"}


def test_paired_differences_have_the_right_sign(val):
    truth, perfect, no_change, _ = _methods(val)
    boot = fb.bootstrap(val.n_patients)
    diff = fb.effect_difference(perfect, no_change, truth, boot, ("BID",))
    np.testing.assert_allclose(diff["difference"], -1.0)
    assert set(diff["verdict"]) == {"lower"}


def test_qd_errors_and_the_rebound(val):
    truth, perfect, _, _ = _methods(val)
    errors = fb.qd_errors({"perfect": perfect}, truth, val.screening_pd.mean(axis=1))
    assert errors.to_numpy().max() < 1e-12
    stopped = {"stopped": {"R": truth["QD"]["R"] + 5.0}}
    peaks = fb.rebound({"shifted": stopped}, {"stopped": truth["QD"]})
    assert peaks["shifted"] == pytest.approx(peaks["truth"] + 5.0)


def test_the_kept_setup_is_the_simplest_within_ten_percent():
    labels = [label for label, _, _ in fb.SETUPS]
    crit = dict(zip(labels, (0.30, 0.20, 0.19, 0.21), strict=True))
    assert fb.kept_setup(crit) == "2x16, QD"
    crit = dict(zip(labels, (0.30, 0.30, 0.30, 0.10), strict=True))
    assert fb.kept_setup(crit) == "2x16, randomised"
    with pytest.raises(ValueError, match="must cover"):
        fb.kept_setup({"1x16, QD": 0.1})
    with pytest.raises(ValueError, match="finite"):
        fb.kept_setup(dict(zip(labels, (np.nan, 0.2, 0.2, 0.2), strict=True)))


def test_the_sufficient_memory_is_the_shortest_within_ten_percent():
    assert fb.sufficient_memory({12: 0.50, 24: 0.34, 72: 0.30}, uncut=0.31) == 24
    assert fb.sufficient_memory({12: 0.20, 24: 0.34, 72: 0.30}, uncut=0.31) == 12
    assert fb.sufficient_memory({12: 0.50, 24: 0.35, 72: 0.35}, uncut=0.31) is None
    with pytest.raises(ValueError, match="must cover"):
        fb.sufficient_memory({24: 0.3}, uncut=0.3)
    with pytest.raises(ValueError, match="finite"):
        fb.sufficient_memory({12: 0.5, 24: 0.3, 72: 0.3}, uncut=np.nan)


def test_the_population_models_data_are_the_first_training_patients():
    train = fb.dataset("fb-train")
    data = fb.population_fit_data(train)
    n, k = fb.POP_FIT_PATIENTS, fb.POP_FIT_TIMES_H.size
    assert data.dv.shape == (n, 2 * k)
    np.testing.assert_array_equal(data.dv[:, :k], train.biomarkers_obs["R"][:n, ::4])
    np.testing.assert_array_equal(data.dv[:, k:], train.biomarkers_obs["M"][:n, ::4])


def test_predictions_must_name_as_many_biomarkers_as_the_network_has():
    class Run:
        model = None

    from unittest import mock

    with mock.patch.object(fb.nw, "predict_pd", return_value=np.zeros((3, 5))):
        assert fb.predict([Run()], {}, ("M",))["M"].shape == (3, 5)
        with pytest.raises(ValueError, match="predict 1 biomarker"):
            fb.predict([Run()], {})


def test_bad_inputs_are_named(val):
    with pytest.raises(ValueError, match="schedules must be 'QD' or 'random'"):
        fb.train_network(fb.LSTM, 0, schedules="BID")
    with pytest.raises(ValueError, match="at least one trained network"):
        fb.predict([], {})
    other = fb.dataset("fb-train")
    with pytest.raises(ValueError, match="same patients"):
        fb.population_predictions(None, {"QD": val, "BID": other})
    with pytest.raises(ValueError, match="at least one data set"):
        fb.population_predictions(None, {})
    with pytest.raises(ValueError, match="no time after it"):
        fb.rebound({}, {"stopped": fb.truths(val)}, after_h=168.0)
