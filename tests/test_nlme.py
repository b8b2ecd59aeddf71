"""The FOCE-I estimator against known answers, and the warfarin data and model."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nlme_models import DECAY_START, decay_data, decay_edited, decay_model, floor_model, level_model
from scipy.integrate import solve_ivp
from scipy.stats import multivariate_normal

from pkpd_lib.pmx import nlme, nonmem, pk
from pkpd_lib.pmx import warfarin as w


def test_ofv_is_the_exact_likelihood_of_a_linear_mixed_model():
    """For y = m + eta + eps the Laplace approximation is exact: the OFV must equal
    -2 log-likelihood of the multivariate normal marginal."""
    rng = np.random.default_rng(0)
    y = 5 + rng.normal(size=(6, 1)) + 0.5 * rng.normal(size=(6, 4))
    y[0, 3] = np.nan  # one subject with fewer observations
    data = nlme.Observations(np.arange(6), np.zeros_like(y), y)
    problem = nlme._Problem(level_model(), data, {})
    x = np.array([4.5, np.log(0.8), np.log(0.6)])  # m, omega, sigma
    exact = 0.0
    for row in y:
        obs = row[~np.isnan(row)]
        cov = 0.8**2 * np.ones((obs.size, obs.size)) + 0.6**2 * np.eye(obs.size)
        exact -= 2 * multivariate_normal(np.full(obs.size, 4.5), cov).logpdf(obs)
    assert problem.ofv(x) == pytest.approx(exact, rel=1e-8)


def test_standard_error_of_a_linear_mixed_model_is_the_textbook_one():
    """Balanced random-intercept model: the SE of the mean is sqrt((omega**2 +
    sigma**2 / n) / N) at the estimates; the OFV Hessian must give it."""
    rng = np.random.default_rng(1)
    n_subjects, n_obs = 60, 5
    y = 5 + 0.8 * rng.normal(size=(n_subjects, 1)) + 0.5 * rng.normal(size=(n_subjects, n_obs))
    data = nlme.Observations(np.arange(n_subjects), np.zeros_like(y), y)
    fit = nlme.fit_foce(level_model(), data, {"m": 4.0}, omega_sd=1.0, sigma={"add": 1.0})
    omega = fit.estimates.loc["omega_m", "estimate"]
    sigma = fit.estimates.loc["sigma_add", "estimate"]
    textbook = np.sqrt((omega**2 + sigma**2 / n_obs) / n_subjects)
    se = fit.estimates.loc["theta_m", "SE (estimation scale)"]
    assert se == pytest.approx(textbook, rel=0.02)


def _simulate_pk(n, seed, truth):
    rng = np.random.default_rng(seed)
    times = np.tile([0.5, 1, 2, 3, 6, 9, 12, 24, 36, 48, 72, 96, 120.0], (n, 1))
    eta = rng.normal(size=(n, 3)) * [truth["omega"][k] for k in ("ka", "CL", "V")]
    ka = truth["ka"] * np.exp(eta[:, :1])
    cl = truth["CL"] * np.exp(eta[:, 1:2])
    v = truth["V"] * np.exp(eta[:, 2:])
    dose = np.full((n, 1), 100.0)
    f = pk.transit_absorption(ka, cl, v, dose, times)
    sd = np.sqrt(truth["add"] ** 2 + (truth["prop"] * f) ** 2)
    y = f + sd * rng.normal(size=f.shape)
    realised = {k: truth[k] * np.exp(eta[:, i].mean()) for i, k in enumerate(("ka", "CL", "V"))}
    data = nlme.Observations(np.arange(n), times, y, extra={"dose_mg": dose[:, 0]})
    return data, realised


TRUTH = {
    "ka": 1.2,
    "CL": 0.14,
    "V": 7.5,
    "omega": {"ka": 0.4, "CL": 0.3, "V": 0.2},
    "add": 0.3,
    "prop": 0.08,
}


@pytest.fixture(scope="module")
def pk_fits():
    data, realised = _simulate_pk(100, 1, TRUTH)
    starts = [{k: v * f for k, v in w.PK_START.items()} for f in (0.5, 1.0, 1.5)]
    fits = [
        nlme.fit_foce(w.PK_MODEL, data, s, standard_errors=(i == 1)) for i, s in enumerate(starts)
    ]
    return fits, realised


@pytest.mark.slow
def test_foce_recovers_simulated_values_with_standard_errors(pk_fits):
    fits, realised = pk_fits
    fit = fits[1]
    assert fit.converged
    est = fit.estimates
    for name in ("ka", "CL", "V"):
        assert fit.typical(name) == pytest.approx(TRUTH[name], rel=0.10), name
        assert est.loc[f"omega_{name}", "estimate"] == pytest.approx(
            TRUTH["omega"][name], rel=0.30
        ), name
        # the typical value this sample realised lies within 3 standard errors
        se = est.loc[f"theta_{name}", "SE (estimation scale)"]
        assert 0 < se < 0.2
        assert abs(np.log(fit.typical(name) / realised[name])) < 3 * se, name
    assert est.loc["sigma_prop", "estimate"] == pytest.approx(TRUTH["prop"], rel=0.2)


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_foce_estimates_agree_from_three_starting_points(pk_fits):
    fits, _ = pk_fits
    assert all(f.converged for f in fits)
    table = nlme.compare_estimates(fits)
    ofv = table.loc["OFV"]
    assert ofv.max() - ofv.min() < 0.05
    rel = table.drop("OFV").std(axis=1) / table.drop("OFV").mean(axis=1).abs()
    assert rel.max() < 0.01


def test_a_fixed_parameter_is_held_and_not_estimated():
    data, _ = _simulate_pk(30, 2, TRUTH)
    fit = nlme.fit_foce(w.PK_MODEL, data, w.PK_START, fixed={"ka": 1.2}, standard_errors=False)
    assert "theta_ka" not in fit.estimates.index
    assert fit.typical("ka") == 1.2


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_population_and_individual_predictions_have_the_data_shape(pk_fits):
    data, _ = _simulate_pk(100, 1, TRUTH)
    fit = pk_fits[0][1]
    pred = nlme.population_predictions(fit, data)
    ipred = nlme.individual_predictions(fit, data)
    assert pred.shape == ipred.shape == data.dv.shape
    # individual predictions fit better than the typical subject's
    assert np.mean((ipred - data.dv) ** 2) < np.mean((pred - data.dv) ** 2) / 2
    sims = nlme.simulate_population(fit, data, 5)
    assert sims.shape == (5, *data.dv.shape)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: nlme.Observations([0], [[0.0, 1.0]], [[1.0]]), r"\(N, K\)"),
        (
            lambda: nlme.Observations([0, 1], [[0.0], [0.0]], [[1.0], [np.nan]]),
            "at least one observation",
        ),
        (
            lambda: nlme.Observations([0], [[0.0]], [[1.0]], covariates={"WT": [np.nan]}),
            "covariate 'WT'",
        ),
        (
            lambda: nlme.NLMEModel("m", ("a",), {"a": "exp"}, (), lambda p, d: 0),
            "transform",
        ),
        (
            lambda: nlme.NLMEModel("m", ("a",), {"a": "log"}, ("b",), lambda p, d: 0),
            "unknown parameters",
        ),
        (lambda: nlme.start_vector(w.PK_MODEL, {"ka": 1.0}), "starting values missing"),
        (lambda: nlme.to_transformed("logit", 1.5), r"in \(0, 1\)"),
        # before: any other transform was taken as logit (to_natural("logiz", 0) == 0.5)
        (lambda: nlme.to_natural("logiz", 0.0), r"transform must be one of .*got 'logiz'"),
        (lambda: nlme.to_transformed("Log", 0.5), r"transform must be one of .*got 'Log'"),
    ],
)
def test_bad_models_and_data_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_observations_from_lists_are_arrays_and_arrays_are_kept_as_given():
    """Before: built from lists, ``n_subjects`` raised AttributeError (a list has no
    shape)."""
    obs = nlme.Observations([1], [[1.0]], [[2]])
    assert obs.n_subjects == 1 and obs.n_observations == 1
    assert isinstance(obs.ids, np.ndarray) and obs.dv.dtype == float
    assert obs.times_h.dtype == float and obs.dv.tolist() == [[2.0]]
    ids, t, dv = np.array([3, 4]), np.ones((2, 1), np.float32), np.array([[1.0], [2.0]])
    given = nlme.Observations(ids, t, dv)
    assert given.ids is ids and given.times_h is t and given.dv is dv


# --- warfarin --------------------------------------------------------------------


def test_warfarin_reference_is_the_fixtures_estimation_scale_values_transformed():
    """posologyr's tests/testthat/test_multi_outputs.R records nlmixr's estimates as
    tktr 0.106, tka -0.087, tcl -2.03, tv 2.07, temax 3.4, tec50 0.00724, tkout -2.9,
    te0 4.57, and the residual SDs prop.err 0.15, pkadd.err 0.144, pdadd.err 3.91."""
    assert w.REFERENCE_ESTIMATION_SCALE == {
        "ktr": 0.106,
        "ka": -0.087,
        "CL": -2.03,
        "V": 2.07,
        "Emax": 3.4,
        "EC50": 0.00724,
        "kout": -2.9,
        "E0": 4.57,
    }
    natural = {
        "ktr": 1.112,
        "ka": 0.917,
        "CL": 0.131,
        "V": 7.92,
        "Emax": 0.968,
        "EC50": 1.007,
        "kout": 0.055,
        "E0": 96.5,
    }
    for name, value in natural.items():
        assert w.REFERENCE[name] == pytest.approx(value, rel=5e-3), name  # 3 digits
    assert "posologyr" in w.REFERENCE_SOURCE and "test_multi_outputs.R" in w.REFERENCE_SOURCE
    assert w.REFERENCE_SIGMA == {
        "sigma_conc_add": 0.144,
        "sigma_conc_prop": 0.15,
        "sigma_pca_add": 3.91,
    }
    assert set(w.REFERENCE_OMEGA_RECORDED) == set(w.JOINT_MODEL.random)


def test_warfarin_goes_through_the_strict_reader():
    table = w.load()
    assert table["ID"].nunique() == 32
    assert (table.loc[table["EVID"] == 1, "CMT"] == nonmem.CMT_DEPOT).all()
    pk = w.observations(table, nonmem.CMT_CENTRAL)
    pca = w.observations(table, nonmem.CMT_RESPONSE)
    assert pk.n_observations == 251 and pca.n_observations == 232
    # subject 9's replicate assays are kept, not averaged or dropped
    row = list(pk.ids).index(9)
    assert np.sum(pk.times_h[row][~np.isnan(pk.dv[row])] == 3.0) == 2
    with pytest.raises(ValueError, match="duplicated records"):
        nonmem.check_nonmem(table)


def test_a_warfarin_subject_without_a_dose_is_named():
    """Before: the one-dose check passed and a KeyError followed."""
    table = w.load()
    undosed = table[~((table["ID"] == 7) & (table["EVID"] == 1))]
    with pytest.raises(ValueError, match=r"subject\(s\) \[7\] have no dose record"):
        w.observations(undosed, nonmem.CMT_CENTRAL)
    twice = pd.concat([table, table[(table["ID"] == 5) & (table["EVID"] == 1)]])
    with pytest.raises(ValueError, match=r"one dose, at 0 h: subject\(s\) \[5\]"):
        w.observations(twice, nonmem.CMT_CENTRAL)


def test_warfarin_network_targets_off_the_hourly_grid_are_named():
    """Before: a time of 24.5 h was truncated to 24 h, and one past 144 h an IndexError."""
    table = w.load()
    n = w.observations(table, nonmem.CMT_RESPONSE).n_subjects
    pk_ = {"ka": np.full(n, 1.0), "CL": np.full(n, 0.14), "V": np.full(n, 7.5)}
    x, y = w.network_data(table, pk_)
    assert y.shape == x["conc"].shape == (n, w.HOURLY_H.size)
    pca = (table["CMT"] == nonmem.CMT_RESPONSE) & (table["EVID"] == 0) & (table["MDV"] == 0)
    row = table.index[pca][0]
    subject = table.loc[row, "ID"]
    for time, shown in ((24.5, "24.5"), (200.0, "200"), (-3.0, "-3")):
        bad = table.copy()
        bad.loc[row, "TIME"] = time
        with pytest.raises(ValueError, match=rf"subject {subject} has a PCA sample at {shown} h"):
            w.network_data(bad, pk_)


def test_warfarin_conversion_names_unknown_codes():
    raw = pd.read_csv(w.DATA_PATH)
    bad = raw.assign(sex=raw["sex"].replace({"female": "f"}))
    with pytest.raises(ValueError, match=r"unknown sex value\(s\) \['f'\]"):
        w.to_nonmem_table(bad)
    bad = raw.assign(dvid=raw["dvid"].replace({"pca": "inr"}))
    with pytest.raises(ValueError, match="unknown dvid"):
        w.to_nonmem_table(bad)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # before: "unknown sex value(s) [nan]"
        (lambda text: text[: len(text) // 2], r"missing values in column\(s\) \[.*'sex'\] at row"),
        (lambda text: "", r"warf\.csv is not a readable warfarin table \(empty"),  # before: pandas'
        (lambda text: text.splitlines()[0] + "\n", r"no records \(a header only"),
        (lambda text: text.replace("\n1,2.0,", "\n1,2.0,,", 1), r"warf\.csv is not a .*fields"),
        (lambda text: text.replace(",66.7,", ",,", 1), r"missing values in column\(s\) \['wt'\]"),
    ],
)
def test_a_damaged_warfarin_file_is_named(tmp_path, damage, message):
    path = tmp_path / "warf.csv"
    path.write_text(damage(w.DATA_PATH.read_text()))
    with pytest.raises(ValueError, match=message):
        w.load(path)


def _warfarin_ode(ka, cl, v, e0, emax, ec50, kout, dose, t_end):
    def rhs(_t, y):
        depot, gut, central, r = y
        c = central / v
        return [
            -ka * depot,
            ka * depot - ka * gut,
            ka * gut - cl / v * central,
            kout * e0 * (1 - emax * c / (ec50 + c)) - kout * r,
        ]

    t = np.arange(0.0, t_end + 0.5, 0.5)
    sol = solve_ivp(rhs, (0, t_end), [dose, 0, 0, e0], t_eval=t, rtol=1e-10, atol=1e-10)
    return t, sol.y[2] / v, sol.y[3]


def test_closed_form_pk_and_pca_integrator_match_scipy():
    t, conc, pca = _warfarin_ode(1.1, 0.14, 7.5, 96.0, 0.95, 0.9, 0.053, 100.0, 144.0)
    np.testing.assert_allclose(pk.transit_absorption(1.1, 0.14, 7.5, 100.0, t), conc, atol=1e-9)
    mid = pk.transit_absorption(1.1, 0.14, 7.5, 100.0, t[:-1] + w.PD_STEP_H / 2)
    ours = w.turnover_pca(96.0, 0.95, 0.9, 0.053, mid)
    np.testing.assert_allclose(ours, pca, rtol=2e-3)
    # equal absorption and elimination rates: the closed form's limit, not NaN
    equal = pk.transit_absorption(0.02, 0.14, 7.0, 100.0, t)
    assert np.isfinite(equal).all()


# --- the book's drug ---------------------------------------------------------------


def test_population_models_of_the_books_drug_match_its_simulator():
    """The NLME models' closed-form PK and grid-integrated PD against scipy's solution
    of the generating model (pkpd_lib.pmx.model.simulate)."""
    from pkpd_lib.pmx import model, popmodels, population
    from pkpd_lib.pmx import regimens as reg

    pop = population.sample_population(6, seed=3)
    t = np.arange(0.0, 169.0)
    for regimen in (reg.qd(), reg.tid()):
        sim = model.simulate(pop.params, regimen, t)
        p = pop.params.as_dict()
        conc = popmodels.individual_conc(p, regimen, t)
        np.testing.assert_allclose(conc, sim.conc_mg_L, rtol=1e-6, atol=1e-9)
        mid = popmodels.individual_conc(p, regimen, popmodels.mid_grid(168.0))
        grid = popmodels.transit_turnover_grid({k: v[:, None] for k, v in p.items()}, mid, 3)
        np.testing.assert_allclose(grid[:, 0, ::2], sim.pd, rtol=5e-3)


def test_individual_concentrations_take_each_patients_own_times():
    """Before: (N, T) times failed in np.broadcast_to; other shapes now name the shape."""
    from pkpd_lib.pmx import popmodels, population
    from pkpd_lib.pmx import regimens as reg

    p = population.sample_population(3, seed=2).params.as_dict()
    t = np.array([[0.0, 2.0, 5.0], [1.0, 3.0, 6.0], [0.5, 4.0, 7.0]])
    own = popmodels.individual_conc(p, reg.bid(), t)
    for i in range(3):
        shared = popmodels.individual_conc(p, reg.bid(), t[i])
        np.testing.assert_array_equal(own[i], shared[i])
    with pytest.raises(ValueError, match=r"times_h must be \(T,\) or \(N, T\) = \(3, T\)"):
        popmodels.individual_conc(p, reg.bid(), t[:2])
    with pytest.raises(ValueError, match=r"got shape \(3, 3, 1\)"):
        popmodels.individual_conc(p, reg.bid(), t[..., None])


def test_population_pd_models_name_their_structure():
    from pkpd_lib.pmx import popmodels

    assert popmodels.pd_model(0).params == ("R0", "Emax", "EC50", "gam", "kout")
    assert "MTT" in popmodels.pd_model(3).params
    with pytest.raises(ValueError, match="multiples of 0.5 h"):
        popmodels.pd_observations(
            [[1.0]], [0.7], np.zeros((1, 2)), {"WT": [70.0], "AGE": [45.0], "SEX": [0]}
        )


def test_transit_chain_filter_matches_the_per_row_scan():
    """The transit chain runs as one IIR filter when all rows share MTT and as a scan
    per row otherwise; both are the same discretisation."""
    from pkpd_lib.pmx import popmodels

    rng = np.random.default_rng(5)
    drive = rng.uniform(0.0, 1.0, (4, 2, 50))
    a = np.array([0.8, 0.9])
    joint = popmodels._transit_chain(drive, np.broadcast_to(a, (4, 2)), 3)
    for k in range(2):
        alone = popmodels._transit_chain(drive[:, k], np.full(4, a[k]), 3)
        np.testing.assert_allclose(joint[:, k], alone, rtol=1e-12, atol=1e-14)


def test_conditional_modes_of_new_subjects_recover_their_effects():
    """MAP random effects of subjects the fit has not seen: with many samples each,
    close to the values they were simulated with."""
    rng = np.random.default_rng(2)
    t = np.tile(np.linspace(0.5, 12.0, 12), (30, 1))
    k_true = 0.2 * np.exp(0.3 * rng.normal(size=30))
    y = 10 * np.exp(-k_true[:, None] * t) * (1 + 0.02 * rng.normal(size=t.shape))
    decay = decay_model()
    fit = nlme.fit_foce(
        decay,
        nlme.Observations(np.arange(30), t, y),
        {"C0": 5.0, "k": 0.5},
        standard_errors=False,
    )
    new = nlme.Observations(np.arange(30), t[:, ::3], y[:, ::3])
    eta = nlme.conditional_modes(fit, new)
    k_map = fit.typical("k") * np.exp(eta[:, 0])
    np.testing.assert_allclose(k_map, k_true, rtol=0.05)


def test_stopping_on_a_stalled_ofv_leaves_the_estimates_where_the_gradient_test_does():
    rng = np.random.default_rng(4)
    t = np.tile([0.5, 1, 2, 4, 8, 12.0], (40, 1))
    k = 0.2 * np.exp(0.3 * rng.normal(size=(40, 1)))
    y = 10 * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
    decay = decay_model()
    data = nlme.Observations(np.arange(40), t, y)
    start = {"C0": 5.0, "k": 0.5}
    stalled = nlme.fit_foce(decay, data, start, standard_errors=False, ofv_tol=0.01)
    strict = nlme.fit_foce(decay, data, start, standard_errors=False, ofv_tol=0.0)
    assert stalled.converged and strict.converged
    assert stalled.convergence.startswith("stalled: OFV changed < 0.01 over 3 iterations")
    assert strict.convergence.startswith("gradient below tolerance")
    assert abs(stalled.ofv - strict.ofv) < 0.05
    np.testing.assert_allclose(stalled.x, strict.x, atol=0.01)


def test_a_design_without_observations_predicts_but_does_not_estimate():
    design = nlme.Observations([0, 1], [[1.0, 2.0]] * 2, np.full((2, 2), np.nan))
    decay = nlme.NLMEModel(
        "decay",
        ("k",),
        {"k": "log"},
        ("k",),
        lambda p, d: np.exp(-p["k"][..., None] * d.times_h[:, None]),
    )
    with pytest.raises(ValueError, match="at least one observation to estimate"):
        nlme.fit_foce(decay, design, {"k": 0.5})


def test_hessian_tolerates_the_ofv_noise_of_inner_optimisations():
    """The OFV carries noise of about 1e-3 (inner modes solved to a tolerance); the
    finite-difference Hessian must still see a curvature of a few hundred (a covariate
    effect's, SE about 0.1) within 10%."""
    curvature = np.diag([200.0, 3000.0])

    def noisy_ofv(x):
        return 0.5 * x @ curvature @ x + 1e-3 * np.cos(1e4 * x).sum()

    h = nlme._hessian(noisy_ofv, np.zeros(2))
    np.testing.assert_allclose(np.diag(h), np.diag(curvature), rtol=0.1)


def test_a_stored_fit_is_the_fit_to_the_last_bit(tmp_path, monkeypatch):
    model = decay_model()
    rng = np.random.default_rng(3)
    t = np.tile([0.5, 1, 2, 4, 8, 12.0], (30, 1))
    k = 0.2 * np.exp(0.3 * rng.normal(size=(30, 1)))
    y = 10 * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
    data = nlme.Observations(np.arange(30), t, y)
    fresh = nlme.fit_foce(model, data, {"C0": 5.0, "k": 0.5})
    stored = nlme.fit_foce(model, data, {"C0": 5.0, "k": 0.5}, cache_dir=tmp_path)
    loaded = nlme.fit_foce(model, data, {"C0": 5.0, "k": 0.5}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    for fit in (stored, loaded):
        pd.testing.assert_frame_equal(fit.estimates, fresh.estimates)
        np.testing.assert_array_equal(fit.etas, fresh.etas)
        assert fit.ofv == fresh.ofv and fit.converged == fresh.converged
        assert fit.ofv_nonmem == fresh.ofv_nonmem
        assert fit.convergence == fresh.convergence and fit.gradient == fresh.gradient
        for matrix in ("r_matrix", "s_matrix", "covariance"):
            np.testing.assert_array_equal(
                getattr(fit.covariance_step, matrix), getattr(fresh.covariance_step, matrix)
            )
    assert fresh.converged
    # the store holds R and S: the other covariance matrix comes from the same file
    by_r = nlme.fit_foce(model, data, {"C0": 5.0, "k": 0.5}, cache_dir=tmp_path, covariance="r")
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert by_r.covariance_step.kind == "r"
    np.testing.assert_array_equal(by_r.covariance_step.se, fresh.covariance_as("r").se)
    assert stored.failed_trials == loaded.failed_trials == fresh.failed_trials == 0
    # another start is another fit; in the test command a missing fit is an error
    monkeypatch.setenv("PKPD_MODEL_CACHE", str(tmp_path))
    monkeypatch.setenv("PKPD_CACHE_MISS", "error")
    with pytest.raises(nlme.StoreMissError, match="not in the store"):
        nlme.fit_foce(model, data, {"C0": 6.0, "k": 0.5}, cache_dir="default")


# --- failures the estimator must not fit through ------------------------------------


def _nan_at_first_time(out, p):
    out[..., 0] = np.nan


def _all_nan(out, p):
    out[...] = np.nan


@pytest.mark.parametrize("edit", [_nan_at_first_time, _all_nan])
def test_predictions_that_fail_at_the_start_are_refused_naming_subject_and_values(edit):
    """Before: NaN replaced by 1e10 and fitted (converged, C0 8.51 for 10, sigma 10x)."""
    with pytest.raises(
        ValueError,
        match=r"NaN or inf at the starting values for subject 0 \(row 0\) at "
        r"observation\(s\) \[0.*times \[0\.5.*parameters C0=5, k=0\.5\).* and 17 more",
    ):
        nlme.fit_foce(decay_edited(edit), decay_data(), DECAY_START)


def _nan_after_the_start():
    """An edit of the decay model's predictions: NaN at the first time from the second
    call on, so that the check at the starting values passes and every point after it
    fails."""
    calls = [0]

    def edit(out, p):
        calls[0] += 1
        if calls[0] > 1:
            out[..., 0] = np.nan

    return edit


def test_predictions_that_fail_at_the_estimate_are_an_error_naming_subject_and_values(
    tmp_path,
):
    """Probe 1 past the start check. Before: fitted with 1e10 in place of each NaN,
    converged=True, C0 8.51 for 10, sigma 10 times too large; later a fit marked invalid
    (OFV inf) with a warning, which a script could still use."""
    estimate = (
        r"predicts NaN or inf at the estimate the search ended at after \d+ BFGS "
        r"iterations, for 20 subject\(s\): subject 0 \(row 0\) at observation\(s\) \[0\] "
        r"\(times \[0\.5\] h.*parameters C0=.*, k=.*\).* and 17 more subject\(s\)\. Not a "
        r"fit \(nothing is stored\); the estimate was theta_C0=.*, theta_k=.*, omega_k=.*, "
        r"sigma_prop="
    )
    with pytest.raises(ValueError, match=estimate):
        nlme.fit_foce(
            decay_edited(_nan_after_the_start()),
            decay_data(),
            DECAY_START,
            max_iter=5,
            cache_dir=tmp_path,
        )
    assert not list(tmp_path.iterdir())
    starts = [DECAY_START, {"C0": 8.0, "k": 0.3}]
    with pytest.raises(ValueError, match=r"^start 0 \{'C0': 5\.0, 'k': 0\.5\}: model 'decay'"):
        nlme.fit_foce_starts(decay_edited(_nan_after_the_start()), decay_data(), starts)


def test_trial_points_with_failed_predictions_are_counted_and_reported():
    """A model whose predictions fail (NaN) where C0 > 12, which the search passes
    through from C0 = 5 on its way to 10: it reaches the fit of the model that never
    fails, and says how many of its trial points rested on the stand-in."""

    def nan_above_12(out, p):
        out[p["C0"] > 12.0] = np.nan

    plain = nlme.fit_foce(decay_model(), decay_data(), DECAY_START, standard_errors=False)
    edited = nlme.fit_foce(
        decay_edited(nan_above_12), decay_data(), DECAY_START, standard_errors=False
    )
    assert plain.failed_trials == 0 and "trial points" not in plain.convergence
    assert edited.converged and edited.failed_trials > 0
    assert re.search(
        rf"; {edited.failed_trials} of \d+ trial points of the search had failed "
        r"predictions \(NaN or inf\) for a subject \(their OFV used the stand-in 1e\+10 "
        r"for each\) and 0 a non-finite OFV \(rejected\)$",
        edited.convergence,
    ), edited.convergence
    np.testing.assert_allclose(edited.x, plain.x, atol=0.01)


def test_the_objective_counts_stand_ins_and_rejects_what_is_not_finite():
    def nan_above_12(out, p):
        out[p["C0"] > 12.0] = np.nan

    problem = nlme._Problem(decay_edited(nan_above_12), decay_data(), {})
    x = nlme.start_vector(problem.model, DECAY_START)
    assert np.isfinite(problem.ofv(x)) and not problem.failed.any()
    far = x.copy()
    far[0] = np.log(20.0)  # C0 = 20: every prediction fails
    assert np.isfinite(problem.ofv(far)) and problem.failed.all()
    no_omega = x.copy()
    no_omega[2] = -1e4  # omega = 0: an OFV that is not finite
    with np.errstate(all="ignore"):
        assert problem.ofv(no_omega) == nlme.NOT_FINITE_OFV
    assert problem.trials == {"all": 3, "failed predictions": 1, "not finite": 1}


def test_an_objective_that_is_not_finite_at_the_estimate_is_an_error():
    """The search kept its start (no iterations) where omega is 0: the OFV there is not
    finite, which BFGS saw as 1e20, not a fit."""
    problem = nlme._Problem(decay_model(), decay_data(), {})
    x = nlme.start_vector(problem.model, DECAY_START)
    x[2] = -1e4  # omega_k = 0
    with (
        np.errstate(all="ignore"),
        pytest.raises(
            ValueError,
            match=r"the OFV is not finite at the estimate after 0 BFGS iterations .* not a "
            r"fit: theta_C0=5, theta_k=0\.5, omega_k=0, sigma_prop=0\.1$",
        ),
    ):
        nlme._estimate(problem, x, False, 0, 0, 0.01)


def test_a_fit_stored_as_invalid_is_estimated_again(tmp_path):
    """Versions that kept a fit whose predictions failed at its estimate stored it with
    OFV inf: such a record is not loaded as a fit."""
    fit = nlme.fit_foce(decay_model(), decay_data(), DECAY_START, cache_dir=tmp_path)
    (record,) = tmp_path.glob("*.json")
    stored = json.loads(record.read_text())
    record.write_text(json.dumps({**stored, "ofv": float("inf"), "converged": False}))
    again = nlme.fit_foce(decay_model(), decay_data(), DECAY_START, cache_dir=tmp_path)
    assert again.ofv == fit.ofv and again.converged
    assert json.loads(record.read_text())["ofv"] == fit.ofv
    assert again.failed_trials == fit.failed_trials == 0
    # where a store miss is an error, an invalid record is one too: never a silent refit
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PKPD_MODEL_CACHE", str(tmp_path / "store"))
        patch.delenv("PKPD_CACHE_MISS", raising=False)
        nlme.fit_foce(decay_model(), decay_data(), DECAY_START, cache_dir="default")
        (kept,) = (tmp_path / "store").rglob("*.json")
        kept.write_text(json.dumps({**json.loads(kept.read_text()), "ofv": float("inf")}))
        patch.setenv("PKPD_CACHE_MISS", "error")
        with pytest.raises(nlme.StoreMissError, match="invalid fit"):
            nlme.fit_foce(decay_model(), decay_data(), DECAY_START, cache_dir="default")


def _zero_at_first_time(out, p):
    out[..., 0] = 0.0


@pytest.mark.parametrize(
    "dv, edit, message",
    [
        # before: converged, k = 4.9e8
        (lambda y: 0.0 * y, None, r"every observation \(DV\) is 0"),
        # before: converged at C0 = k = 0
        (lambda y: -y, None, r"opposite sign .* \(DV negated\?\): subject 0"),
        # before: OFV 6e11
        (
            lambda y: y,
            _zero_at_first_time,
            r"predicts exactly 0 .* subject 0 \(row 0\) at observation\(s\) \[0\] "
            r"\(times \[0\.5\] h.*leave such samples out",
        ),
    ],
)
def test_data_a_proportional_error_cannot_explain_are_refused(dv, edit, message):
    data = decay_data()
    data = nlme.Observations(data.ids, data.times_h, dv(data.dv))
    model = decay_model() if edit is None else decay_edited(edit)
    with pytest.raises(ValueError, match=message):
        nlme.fit_foce(model, data, DECAY_START)


def test_values_coded_0_under_a_proportional_error_warn():
    """Below-limit values coded 0 among others (before: fitted silently)."""
    data = decay_data()
    y = data.dv.copy()
    y[:, -1] = 0.0
    with pytest.warns(nlme.NLMEWarning, match=r"20 observation\(s\) are 0 .* coded 0"):
        nlme.fit_foce(
            decay_model(),
            nlme.Observations(data.ids, data.times_h, y),
            DECAY_START,
            standard_errors=False,
            max_iter=1,
            restarts=0,
        )


@pytest.mark.parametrize(
    "arguments, message",
    [
        # before: 0 iterations, OFV 1e20, every SE 0.0
        ({"omega_sd": 0.0}, r"omega_sd\['k'\] must be a finite SD > 0, got 0\.0"),
        ({"omega_sd": -0.3}, r"omega_sd\['k'\] must be a finite SD > 0"),
        ({"omega_sd": np.nan}, r"omega_sd\['k'\] must be a finite SD > 0, got nan"),
        ({"sigma": {"prop": 0.0}}, r"sigma\['prop'\] must be a finite SD > 0"),
        ({"typical": {"C0": np.nan, "k": 0.5}}, r"starting value of 'C0' must be one finite"),
        ({"typical": {"C0": -1.0, "k": 0.5}}, r"starting value of 'C0': .* must be > 0"),
        ({"fixed": {"C0": np.nan}}, r"fixed value of 'C0' must be one finite"),
        # before: a bare KeyError
        ({"omega_sd": {}}, r"omega_sd must give one SD .* \('k',\): missing \['k'\]"),
        ({"omega_sd": {"k": 0.3, "C0": 0.3}}, r"random effects \('k',\): unknown \['C0'\]"),
        ({"sigma": {"add": 1.0}}, r"error terms \('prop',\): missing \['prop'\]; unknown"),
    ],
)
def test_bad_starting_values_and_sds_are_refused_by_name(arguments, message):
    arguments = {"typical": DECAY_START, **arguments}
    with pytest.raises(ValueError, match=message):
        nlme.fit_foce(decay_model(), decay_data(), **arguments)


def test_names_the_model_uses_and_the_data_or_model_lack_are_refused():
    data = decay_data()
    on_weight = dataclasses.replace(decay_model(), covariates={"k": ("WT",)})
    with pytest.raises(ValueError, match=r"covariate\(s\) 'WT' \(on k\) that the data lack"):
        nlme.fit_foce(on_weight, data, DECAY_START)  # before: KeyError: 'WT'
    levels = nlme.Observations(data.ids, np.zeros_like(data.dv), data.dv)
    with pytest.raises(ValueError, match=r"error terms \('add',\): .* unknown \['prop'\]"):
        nlme.fit_foce(level_model(), levels, {"m": 1.0}, sigma={"prop": 0.1})


def test_converged_needs_a_small_gradient_and_the_fit_says_why_it_stopped():
    """Before: a stall (three iterations gaining < ofv_tol) counted as convergence
    whatever the gradient."""
    data = decay_data()
    limited = nlme.fit_foce(
        decay_model(), data, DECAY_START, standard_errors=False, max_iter=2, restarts=0
    )
    assert not limited.converged
    assert limited.convergence.startswith("iteration limit (2 BFGS iterations a run)")
    coarse = nlme.fit_foce(decay_model(), data, DECAY_START, standard_errors=False, ofv_tol=1e3)
    assert not coarse.converged
    assert coarse.convergence.startswith("stalled: OFV changed < 1000 over 3 iterations")
    gradient = float(coarse.convergence.rpartition("max |g| = ")[2])
    assert gradient >= nlme.CONVERGED_GRADIENT


def test_a_singular_inner_system_rejects_that_subject_not_the_fit():
    """Before: LinAlgError ('Singular matrix') from the decay model started at C0 0.1,
    k 5 (a trial point's omega overflowed)."""
    matrices = np.array([np.eye(2), np.ones((2, 2))])
    steps = nlme._solve(matrices, np.ones((2, 2)))
    np.testing.assert_array_equal(steps[0], [1.0, 1.0])
    assert np.isnan(steps[1]).all()


def test_parameters_at_a_bound_are_named_in_a_warning():
    data = decay_data()
    fraction = floor_model()
    problem = nlme._Problem(fraction, data, {})
    x = np.array([np.log(10.0), 11.0, np.log(0.2), np.log(1e-4), np.log(0.05)])
    with pytest.warns(nlme.NLMEWarning) as caught:
        nlme._warn_at_bounds(problem, x)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert messages[0].startswith("theta_F is at or near a bound: F = 0.999983 (logit 11")
    assert messages[1].startswith("omega_k is at its lower bound: SD 0.0001 < 0.001")


def test_several_starts_keep_the_lowest_ofv_and_say_when_they_disagree():
    """A far start that ends worse (here: stopped by the iteration limit) is reported,
    and the best fit kept."""
    starts = [{"C0": 10.0, "k": 0.2}, {"C0": 1e4, "k": 20.0}]
    result = nlme.fit_foce_starts(
        decay_model(), decay_data(), starts, standard_errors=False, max_iter=10, restarts=0
    )
    assert len(result.fits) == 2 and result.best is result.fits[0]
    assert result.fits[1].ofv > result.fits[0].ofv + 3.84
    assert result.note.startswith("the starts disagree: OFV above the best (start 0")
    assert result.fits[0].converged and not result.fits[1].converged
    assert "start 1 by" in result.note and "not converged: start 1 (iteration limit" in result.note
    assert list(result.table().columns) == [0, 1]
    with pytest.raises(ValueError, match="at least one start"):
        nlme.fit_foce_starts(decay_model(), decay_data(), [])


def test_nonmem_objective_and_variances():
    """NONMEM's OBJV leaves out n log(2 pi) and reports variances, not SDs."""
    rng = np.random.default_rng(0)
    y = 5 + rng.normal(size=(6, 1)) + 0.5 * rng.normal(size=(6, 4))
    data = nlme.Observations(np.arange(6), np.zeros_like(y), y)
    problem = nlme._Problem(level_model(), data, {})
    x = np.array([4.5, np.log(0.8), np.log(0.6)])
    se = np.array([0.3, 0.2, 0.1])
    r_matrix = np.diag(2 / se**2)  # 2 R^-1 has these SEs
    estimate = nlme._Estimate(x, problem.ofv(x), r_matrix, r_matrix, 0, 0.0, True, "")
    fit = nlme._finish(problem, estimate, covariance="r")
    np.testing.assert_allclose(fit.estimates["SE (estimation scale)"], se, rtol=1e-12)
    assert fit.ofv_nonmem == pytest.approx(fit.ofv - 24 * np.log(2 * np.pi), rel=1e-12)
    table = fit.variances()
    assert list(table.index) == ["omega_m", "sigma_add"]
    np.testing.assert_allclose(table["variance"], [0.64, 0.36], rtol=1e-12)
    np.testing.assert_allclose(table["SE (variance)"], [2 * 0.64 * 0.2, 2 * 0.36 * 0.1])


def test_a_stored_fit_is_noted_as_used(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    t = np.tile([0.5, 1, 2, 4, 8, 12.0], (20, 1))
    k = 0.2 * np.exp(0.3 * rng.normal(size=(20, 1)))
    y = 10 * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
    data = nlme.Observations(np.arange(20), t, y)
    log = tmp_path / "used.txt"
    monkeypatch.setenv("PKPD_STORE_LOG", str(log))
    nlme.fit_foce(decay_model(), data, {"C0": 5.0, "k": 0.5}, cache_dir=tmp_path / "fits")
    assert [p.name for p in (tmp_path / "fits").iterdir()] == [
        Path(line).name for line in log.read_text().splitlines()
    ]


def test_predictions_and_simulations_never_hide_a_failed_prediction():
    data = decay_data(8)
    fit = nlme.fit_foce(decay_model(), data, DECAY_START, standard_errors=False)

    def fail_for_subject_2(out, p):
        out[2, :, 1] = np.nan

    broken = dataclasses.replace(fit, model=decay_edited(fail_for_subject_2))
    for predictions in (nlme.population_predictions, nlme.individual_predictions):
        with pytest.raises(
            ValueError, match=r"NaN or infinite for 1 subject.*subject 2 at \[1.0\]"
        ):
            predictions(broken, data)
    np.testing.assert_array_equal(nlme.population_predictions(fit, data).shape, (8, 6))
    with pytest.warns(nlme.NLMEWarning, match="have NaN or infinite predictions"):
        sims = nlme.simulate_population(broken, data, 5)
    assert np.isnan(sims[:, 2, 1]).all() and np.isfinite(np.delete(sims, 2, axis=1)).all()


def test_modes_of_new_subjects_never_rest_on_failed_predictions():
    data = decay_data(8)
    fit = nlme.fit_foce(decay_model(), data, DECAY_START, standard_errors=False)

    def fail_where_k_is_large(out, p):
        out[np.broadcast_to(p["k"][..., None] > 0.3, out.shape)] = np.nan

    broken = dataclasses.replace(fit, model=decay_edited(fail_where_k_is_large))
    fast = nlme.Observations(np.arange(3), data.times_h[:3], 10 * np.exp(-0.6 * data.times_h[:3]))
    with pytest.raises(ValueError, match=r"predictions fail .* 3 subject\(s\) \[0, 1, 2\]"):
        nlme.conditional_modes(broken, fast)
    assert nlme.conditional_modes(fit, fast).shape == (3, 1)


def test_a_trial_point_is_counted_once():
    problem = nlme._Problem(decay_edited(lambda out, p: out.fill(np.nan)), decay_data(4), {})
    x = nlme.start_vector(problem.model, DECAY_START)
    problem.ofv(x)
    assert problem.trials["all"] == 1
    assert problem.trials["failed predictions"] + problem.trials["not finite"] == 1


def test_only_the_kept_start_warns_the_others_are_noted(monkeypatch):
    """Which start ends where can depend on a CPU's last bits: the warnings of starts
    not kept go into the note, the kept fit's are raised as they were."""
    import types
    import warnings

    def fake_fit(model, data, start, **kwargs):
        if start["k"] > 1:
            warnings.warn("start went astray", nlme.NLMEWarning, stacklevel=2)
        ofv = 10.0 if start["k"] > 1 else 1.0
        return types.SimpleNamespace(ofv=ofv, converged=True, at_bound=(), convergence="")

    monkeypatch.setattr(nlme, "fit_foce", fake_fit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = nlme.fit_foce_starts(None, None, [{"k": 0.1}, {"k": 2.0}])
    assert result.best.ofv == 1.0
    assert "warnings of starts not kept: start 1: start went astray" in result.note
    with pytest.warns(nlme.NLMEWarning, match="start went astray"):
        kept = nlme.fit_foce_starts(None, None, [{"k": 2.0}])
    assert "warnings of starts not kept" not in kept.note


def test_a_subject_whose_search_failed_is_searched_again_in_small_steps(monkeypatch):
    """A new subject far from the typical one can send full Gauss-Newton steps out to
    where its predictions overflow (replicate 1 of the protocol: a 40 kg patient's
    troughs far above the proportional-error model's near-zero typical prediction).
    Such subjects are searched again from 0 in steps of at most RETRY_STEP_LIMIT SDs;
    the others keep the modes of the first search; a subject failing twice is named."""
    data = decay_data(8)
    fit = nlme.fit_foce(decay_model(), data, DECAY_START, standard_errors=False)
    new = nlme.Observations(np.arange(3), data.times_h[:3], data.dv[:3])
    exact = nlme.conditional_modes(fit, new)
    search = nlme._Problem.conditional_modes
    limits = []

    def first_search_fails_for(subjects):
        def modes(self, x, eta, step_limit=None, **kw):
            limits.append(step_limit)
            out = search(self, x, eta, step_limit=step_limit, **kw)
            if step_limit is None:
                out[0][2] = 1e3  # where it ran to
                self.failed = np.isin(np.arange(3), [2])
            else:
                self.failed = np.isin(np.arange(3), subjects)
            return out

        return modes

    monkeypatch.setattr(nlme._Problem, "conditional_modes", first_search_fails_for([]))
    eta = nlme.conditional_modes(fit, new)
    assert limits == [None, nlme.RETRY_STEP_LIMIT]
    np.testing.assert_array_equal(eta[:2], exact[:2])
    np.testing.assert_allclose(eta[2], exact[2], atol=1e-6)
    monkeypatch.setattr(nlme._Problem, "conditional_modes", first_search_fails_for([2]))
    with pytest.raises(ValueError, match=r"predictions fail .* 1 subject\(s\) \[2\]"):
        nlme.conditional_modes(fit, new)


def test_objective_function_reproduces_the_fits_ofv_and_reads_any_point():
    from nlme_models import DECAY_START, decay_data, decay_model

    data = decay_data()
    fit = nlme.fit_foce(decay_model(), data, DECAY_START, standard_errors=False)
    assert nlme.objective_function(fit, data) == pytest.approx(fit.ofv, abs=1e-6)
    away = np.array(fit.x, float)
    away[0] += 0.2  # log C0 moved from the optimum: the OFV rises
    assert nlme.objective_function(fit, data, away) > fit.ofv + 1.0
    with pytest.raises(ValueError, match=r"x must have the fit's \d+ values"):
        nlme.objective_function(fit, data, away[:-1])
