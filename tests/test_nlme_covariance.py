"""The FOCE-I covariance step (R, S, sandwich and R-only covariance, its status), the
parameters at a bound, and the results table, against known answers."""

import warnings

import numpy as np
import pandas as pd
import pytest
from nlme_models import decay_data, decay_edited, decay_model, floor_model, level_model
from scipy.stats import multivariate_normal

from pkpd_lib.pmx import nlme


def _decay_model(**options):
    return decay_model(error=("prop",), **options)


def _decay_data(n=30, seed=0, unit=1.0):
    return decay_data(n, seed, unit=unit)


def _level_data(sizes, seed):
    """Random-intercept data: subject i has ``sizes[i]`` observations."""
    rng = np.random.default_rng(seed)
    y = np.full((len(sizes), max(sizes)), np.nan)
    for i, n in enumerate(sizes):
        y[i, :n] = 5 + 0.8 * rng.normal() + 0.5 * rng.normal(size=n)
    return nlme.Observations(np.arange(len(sizes)), np.zeros_like(y), y)


def _exact_subject_ofv(data, x):
    """-2 log-likelihood of each subject of the level model, from the multivariate
    normal marginal: independent of the estimator."""
    m, omega, sigma = x[0], np.exp(x[1]), np.exp(x[2])
    out = []
    for row in data.dv:
        obs = row[~np.isnan(row)]
        cov = omega**2 * np.ones((obs.size, obs.size)) + sigma**2 * np.eye(obs.size)
        out.append(-2 * multivariate_normal(np.full(obs.size, m), cov).logpdf(obs))
    return np.array(out)


def _exact_r_and_s(data, x, h):
    """R and S of the exact likelihood (:func:`_exact_subject_ofv`) at ``x`` (3,) by
    central differences of step ``h``, written out independently of ``nlme._r_and_s``."""
    e = np.eye(3) * h
    gradients = np.array(
        [
            (_exact_subject_ofv(data, x + e[i]) - _exact_subject_ofv(data, x - e[i])) / (2 * h)
            for i in range(3)
        ]
    ).T
    exact_r = np.array(
        [
            [
                (
                    _exact_subject_ofv(data, x + e[i] + e[j]).sum()
                    - _exact_subject_ofv(data, x + e[i] - e[j]).sum()
                    - _exact_subject_ofv(data, x - e[i] + e[j]).sum()
                    + _exact_subject_ofv(data, x - e[i] - e[j]).sum()
                )
                / (4 * h**2)
                for j in range(3)
            ]
            for i in range(3)
        ]
    )
    return exact_r, gradients.T @ gradients


def test_subject_contributions_sum_to_the_ofv():
    data = _decay_data()
    problem = nlme._Problem(_decay_model(), data, {})
    x = np.array([np.log(9.0), np.log(0.25), np.log(0.3), np.log(0.06)])
    contributions = nlme._subject_ofv(problem, x)
    assert contributions.shape == (data.n_subjects,)
    assert contributions.sum() == pytest.approx(problem.ofv(x), rel=1e-12)


def test_r_and_s_are_the_hessian_and_the_subjects_gradient_cross_product():
    """Unbalanced random-intercept data (where the sandwich and 2 R^-1 differ): R and S
    against derivatives of the exact likelihood, computed without the estimator."""
    data = _level_data([2, 3, 4, 6, 8] * 8, seed=2)
    problem = nlme._Problem(level_model(), data, {})
    x = np.array([5.1, np.log(0.7), np.log(0.55)])
    problem.eta = problem.conditional_modes(x, problem.eta)[0]
    r, s = nlme._r_and_s(lambda z: nlme._subject_ofv(problem, z), x)
    h = 1e-4
    exact_r, exact_s = _exact_r_and_s(data, x, h)
    np.testing.assert_allclose(r, exact_r, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(s, exact_s, rtol=1e-3, atol=1e-2)


def test_sandwich_and_r_standard_errors_of_a_mean_are_the_textbook_ones():
    """Balanced random intercept at the estimate: the sandwich SE of the mean is the
    cluster-robust sqrt(sum (ybar_i - m)**2) / N, and 2 R^-1 gives
    sqrt((omega**2 + sigma**2 / n) / N); at the maximum likelihood both are the same
    number (omega**2 + sigma**2 / n is then the mean squared deviation of ybar_i)."""
    data = _level_data([5] * 60, seed=1)
    fit = nlme.fit_foce(level_model(), data, {"m": 4.0}, omega_sd=1.0, sigma={"add": 1.0})
    assert fit.converged and fit.covariance_step.ok
    assert fit.covariance_step.kind == "sandwich"  # the default, as NONMEM's
    m = fit.typical("m")
    ybar = np.nanmean(data.dv, axis=1)
    robust = np.sqrt(np.sum((ybar - m) ** 2)) / 60
    omega = fit.estimates.loc["omega_m", "estimate"]
    sigma = fit.estimates.loc["sigma_add", "estimate"]
    model_based = np.sqrt((omega**2 + sigma**2 / 5) / 60)
    sandwich = fit.estimates.loc["theta_m", "SE (estimation scale)"]
    by_r = fit.covariance_as("r").se[0]
    assert sandwich == pytest.approx(robust, rel=0.01)
    assert by_r == pytest.approx(model_based, rel=0.01)
    assert robust == pytest.approx(model_based, rel=0.01)


def test_the_sandwich_sees_variability_the_model_leaves_out():
    """Random effects from a heavy-tailed mixture (90% SD 0.3, 10% SD 2; kurtosis
    about 21) where the model assumes a normal one: the SE of log omega is then
    sqrt((kurtosis - 1) / 2), about 3, times the normal theory one, which the sandwich
    sees and 2 R^-1 does not. Known answer: R^-1 S R^-1 and 2 R^-1 from the exact
    likelihood's R and S, computed without the estimator."""
    rng = np.random.default_rng(0)
    eta = np.where(rng.random(60) < 0.1, 2.0, 0.3) * rng.normal(size=60)
    y = 5 + eta[:, None] + 0.3 * rng.normal(size=(60, 6))
    data = nlme.Observations(np.arange(60), np.zeros_like(y), y)
    fit = nlme.fit_foce(level_model(), data, {"m": 4.0}, omega_sd=0.5, sigma={"add": 1.0})
    assert fit.converged and fit.covariance_step.ok
    x = fit.x
    h = 1e-4
    exact_r, exact_s = _exact_r_and_s(data, x, h)
    r_inv = np.linalg.inv(exact_r)
    exact_sandwich = np.sqrt(np.diag(r_inv @ exact_s @ r_inv))
    exact_by_r = np.sqrt(np.diag(2 * r_inv))
    np.testing.assert_allclose(fit.covariance_step.se, exact_sandwich, rtol=0.01)
    np.testing.assert_allclose(fit.covariance_as("r").se, exact_by_r, rtol=0.01)
    # the misspecification shows in omega (2.8 times), not in the mean (the same)
    ratio = fit.covariance_step.se / fit.covariance_as("r").se
    assert 2.0 < ratio[1] < 4.0
    assert ratio[0] == pytest.approx(1.0, abs=0.01)


def test_a_parameter_that_changes_nothing_makes_r_singular_never_pseudo_inverted():
    """B enters no prediction (NONMEM's unused THETA): R is singular. Before: pinv gave
    finite SEs for every parameter."""
    unused = nlme.NLMEModel(
        "decay with an unused parameter",
        ("C0", "B", "k"),
        {"C0": "log", "B": "log", "k": "log"},
        ("k",),
        _decay_model().predict,
    )
    with pytest.warns(nlme.NLMEWarning, match=r"covariance step \(sandwich\): R matrix singular"):
        fit = nlme.fit_foce(unused, _decay_data(), {"C0": 5.0, "B": 2.0, "k": 0.5})
    step = fit.covariance_step
    assert step.status == "R matrix singular" and not step.ok
    assert "the OFV curves not at all along theta_B" in step.message
    assert fit.estimates["SE (estimation scale)"].isna().all()
    assert np.isnan(step.covariance).all() and np.isnan(step.condition_number)
    assert fit.table()["SE"].isna().all()
    assert fit.covariance_as("r").status == "R matrix singular"


def test_two_parameters_only_their_product_determines_fail_the_covariance_step():
    """C0 = A * B: R is singular along log A - log B; the finite-difference noise can
    leave that eigenvalue slightly negative (indefinite); either way no SEs."""
    product = nlme.NLMEModel(
        "decay of a product",
        ("A", "B", "k"),
        {"A": "log", "B": "log", "k": "log"},
        ("k",),
        lambda p, d: (p["A"] * p["B"])[..., None] * np.exp(-p["k"][..., None] * d.times_h[:, None]),
    )
    with pytest.warns(nlme.NLMEWarning, match=r"direction of theta_A, theta_B"):
        fit = nlme.fit_foce(product, _decay_data(), {"A": 2.0, "B": 2.5, "k": 0.5})
    assert fit.covariance_step.status in ("R matrix singular", "R matrix indefinite")
    assert fit.estimates["SE (estimation scale)"].isna().all()


@pytest.mark.parametrize(
    "r, status, message",
    [
        (np.array([[4.0, 0.0], [0.0, -1.0]]), "R matrix indefinite", "curves down along b"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "R matrix indefinite", "direction of a, b"),
        (np.array([[4.0, 2.0], [2.0, 1.0]]), "R matrix singular", "a, b are not separately"),
        (np.array([[4.0, 0.0], [0.0, 0.0]]), "R matrix singular", "curves not at all along b"),
        (np.array([[4.0, 0.0], [0.0, np.nan]]), "failed", "not finite"),
    ],
)
def test_an_r_that_is_not_positive_definite_gives_a_status_and_no_covariance(r, status, message):
    for kind in nlme.COVARIANCE_KINDS:
        step = nlme.covariance_step(r, np.eye(2), ["a", "b"], kind)
        assert step.status == status and message in step.message
        assert np.isnan(step.se).all()


def test_an_indefinite_r_in_a_fit_is_flagged_with_a_warning(monkeypatch):
    def saddle(subject_ofv, x, step=1e-2):
        return np.diag([100.0, -5.0, 50.0, 80.0]), np.eye(4)

    monkeypatch.setattr(nlme, "_r_and_s", saddle)
    with pytest.warns(nlme.NLMEWarning, match=r"R matrix indefinite: .* along theta_k"):
        fit = nlme.fit_foce(_decay_model(), _decay_data(), {"C0": 5.0, "k": 0.5})
    assert fit.covariance_step.status == "R matrix indefinite"
    assert fit.estimates["SE (estimation scale)"].isna().all()


def test_a_singular_s_fails_the_sandwich_but_not_r():
    r = np.array([[4.0, 1.0], [1.0, 2.0]])
    s = np.array([[1.0, 0.0], [0.0, 0.0]])  # no subject's OFV depends on b
    sandwich = nlme.covariance_step(r, s, ["a", "b"])
    assert sandwich.status == "S matrix singular" and np.isnan(sandwich.se).all()
    assert "no subject's data depend on it" in sandwich.message
    by_r = nlme.covariance_step(r, s, ["a", "b"], kind="r")
    np.testing.assert_allclose(by_r.covariance, 2 * np.linalg.inv(r))
    with pytest.raises(ValueError, match=r"covariance must be one of \('sandwich', 'r'\)"):
        nlme.covariance_step(r, s, ["a", "b"], kind="S")
    with pytest.raises(ValueError, match="covariance must be one of"):
        nlme.fit_foce(_decay_model(), _decay_data(), {"C0": 5.0, "k": 0.5}, covariance="R")


def test_condition_number_is_that_of_the_correlation_matrix():
    cov = np.array([[4.0, 1.8], [1.8, 1.0]])  # correlation 0.9: eigenvalues 0.1, 1.9
    r = 2 * np.linalg.inv(cov)
    step = nlme.covariance_step(r, 2 * r, ["a", "b"], kind="r")
    np.testing.assert_allclose(step.covariance, cov, rtol=1e-12)
    np.testing.assert_allclose(step.eigenvalues, [0.1, 1.9], rtol=1e-12)
    assert step.condition_number == pytest.approx(19.0, rel=1e-12)
    np.testing.assert_allclose(step.correlation().loc["a", "b"], 0.9, rtol=1e-12)


def test_a_fraction_that_goes_to_its_bound_is_reported_not_plainly_converged():
    """Data that fall below the floor a fraction of 1 allows (F = 1.03): F goes to 1.
    Before: converged=True, nothing in the result said so (a warning only beyond
    logit 10, which a stalled fit need not reach), and F's SE came from noise."""
    rng = np.random.default_rng(3)
    t = np.tile([0.5, 1, 2, 3, 4, 6.0], (30, 1))
    k = 0.2 * np.exp(0.3 * rng.normal(size=(30, 1)))
    y = 10 * (1 - 1.03 * (1 - np.exp(-k * t))) * (1 + 0.05 * rng.normal(size=t.shape))
    data = nlme.Observations(np.arange(30), t, y)
    with pytest.warns(nlme.NLMEWarning, match=r"theta_F is at or near a bound: F = (0\.999|1 - )"):
        fit = nlme.fit_foce(floor_model(), data, {"C0": 5.0, "F": 0.5, "k": 0.5})
    assert fit.at_bound == ("theta_F",)
    assert fit.typical("F") > 1 - 1e-3
    assert "at a bound: theta_F" in fit.convergence
    step = fit.covariance_step
    assert step.excluded == ("theta_F",) and step.ok
    assert np.isnan(step.se[1]) and np.isfinite(step.se[[0, 2, 3, 4]]).all()
    table = fit.table()
    assert table.loc["theta_F", "note"] == "at a bound" and np.isnan(table.loc["theta_F", "SE"])
    # several starts say it too
    result = nlme.fit_foce_starts(
        floor_model(), data, [{"C0": 5.0, "F": 0.5, "k": 0.5}], standard_errors=False
    )
    assert "at a bound: start 0 (theta_F)" in result.note


def test_results_table_reports_natural_scale_se_intervals_and_shrinkage():
    data = _decay_data()
    model = _decay_model(units={"C0": "mg/L", "k": "1/h"})
    fit = nlme.fit_foce(model, data, {"C0": 5.0, "k": 0.5}, sigma={"prop": 0.1})
    table = fit.table()
    assert list(table.index) == ["theta_C0", "theta_k", "omega_k", "sigma_prop"]
    assert table.loc["theta_C0", "unit"] == "mg/L" and table.loc["theta_k", "scale"] == (
        "typical value"
    )
    se_log = fit.covariance_step.se
    estimate = table["estimate"].to_numpy()
    # delta method: SE of a log-normal quantity is estimate * SE(log); RSE is SE(log)
    np.testing.assert_allclose(table["SE"], estimate * se_log, rtol=1e-12)
    np.testing.assert_allclose(table["RSE %"], 100 * se_log, rtol=1e-12)
    np.testing.assert_allclose(table["95% CI low"], estimate * np.exp(-1.959964 * se_log))
    np.testing.assert_allclose(table["95% CI high"], estimate * np.exp(1.959964 * se_log))
    shrinkage = 100 * (1 - np.std(fit.etas[:, 0], ddof=1) / table.loc["omega_k", "estimate"])
    assert table.loc["omega_k", "shrinkage %"] == pytest.approx(shrinkage, rel=1e-12)
    assert table["shrinkage %"].drop("omega_k").isna().all()
    # NONMEM's variances: the square, twice the RSE, the interval squared
    var = fit.table(variances=True)
    np.testing.assert_allclose(var.loc["omega_k", "estimate"], estimate[2] ** 2)
    np.testing.assert_allclose(var.loc["omega_k", "RSE %"], 2 * table.loc["omega_k", "RSE %"])
    np.testing.assert_allclose(
        var.loc["omega_k", "95% CI high"], table.loc["omega_k", "95% CI high"] ** 2
    )
    np.testing.assert_allclose(var["estimate"].iloc[2:], fit.variances()["variance"])
    np.testing.assert_allclose(var["SE"].iloc[2:], fit.variances()["SE (variance)"])
    # another level, another matrix
    wide = fit.table(level=0.9, covariance="r")
    assert "90% CI low" in wide.columns
    np.testing.assert_allclose(wide["RSE %"], 100 * fit.covariance_as("r").se, rtol=1e-12)
    # a fixed parameter is listed as such
    held = nlme.fit_foce(model, data, {"k": 0.5}, fixed={"C0": 10.0}, standard_errors=False)
    held_table = held.table()
    assert held_table.loc["theta_C0", "note"] == "fixed"
    assert held_table.loc["theta_C0", "estimate"] == pytest.approx(10.0)
    assert held_table["SE"].isna().all()  # no covariance step requested


def test_observations_under_the_sd_floor_are_named():
    """The same data in a unit a million times larger: a 5% error on 1e-5 is under
    the objective's smallest SD (1e-6), which weighs them wrongly."""
    assert nlme._Problem(_decay_model(), _decay_data(), {}).sd(
        np.array([0.0]), {"prop": 0.1}
    ) == pytest.approx(nlme.SD_FLOOR)
    tiny = _decay_data(unit=1e-6)
    with pytest.warns(nlme.NLMEWarning, match=r"observation\(s\) have a residual SD under 1e-06"):
        nlme.fit_foce(
            _decay_model(),
            tiny,
            {"C0": 5e-6, "k": 0.5},
            standard_errors=False,
            max_iter=2,
            restarts=0,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nlme.fit_foce(_decay_model(), _decay_data(), {"C0": 5.0, "k": 0.5}, standard_errors=False)
    assert not any("residual SD under" in str(w.message) for w in caught)


def test_a_fit_made_without_standard_errors_has_no_covariance_step():
    fit = nlme.fit_foce(_decay_model(), _decay_data(), {"C0": 5.0, "k": 0.5}, standard_errors=False)
    assert fit.covariance_step is None
    with pytest.raises(ValueError, match="standard_errors=False"):
        fit.covariance_as("r")
    assert isinstance(fit.table(), pd.DataFrame)


def test_the_convergence_gradient_tolerates_noise_and_steep_curvature():
    """The gradient that decides convergence, at an optimum (gradient 0) of an OFV with
    noise of 1e-3 and a curvature of 8e4 (an RSE of 0.5%) with a third derivative to
    match: under 0.1. BFGS's own steps (1e-4) turn the noise into a gradient of 7;
    plain central differences of step 0.01 turn the third derivative into one of 1.3."""
    curvature = np.array([8e4, 200.0])

    def ofv(x):
        return 0.5 * curvature @ x**2 + 4e4 * x[0] ** 3 / 3 + 1e-3 * np.sin(1e4 * x + 0.5).sum()

    assert np.abs(nlme._gradient(ofv, np.zeros(2))).max() < 0.1
    for step in (1e-4, 1e-2):
        e = np.eye(2) * step
        plain = np.array([(ofv(e[i]) - ofv(-e[i])) / (2 * step) for i in range(2)])
        assert np.abs(plain).max() > nlme.CONVERGED_GRADIENT


def test_a_covariance_step_through_failed_predictions_fails_and_says_so():
    data = _decay_data()
    fit = nlme.fit_foce(_decay_model(), data, {"C0": 5.0, "k": 0.5}, standard_errors=False)
    c0 = fit.typical("C0")

    def fail_above_the_estimate(out, p):
        out[np.broadcast_to(p["C0"][..., None] > 1.005 * c0, out.shape)] = np.nan

    problem = nlme._Problem(decay_edited(fail_above_the_estimate, error=("prop",)), data, {})
    problem.eta = fit.etas.copy()
    r, s = nlme._r_and_s(lambda z: nlme._subject_ofv(problem, z), fit.x)
    assert not np.isfinite(r).all()
    step = nlme.covariance_step(r, s, problem.names(), "sandwich", ())
    assert step.status == "failed" and "predictions that fail" in step.message
    assert np.isnan(step.se).all()
