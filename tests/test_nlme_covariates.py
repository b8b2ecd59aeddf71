"""Covariate effects in the forms practice uses (power, linear, categorical), declared in
the model, with coefficients estimated, fixed or started like typical values."""

import dataclasses

import numpy as np
import pytest
from nlme_models import decay_model, level_model

from pkpd_lib.pmx import nlme

WEIGHT = nlme.CovariateEffect("k", "WT", "power", reference=70.0)
SEX = nlme.CovariateEffect("k", "SEX", "categorical")
AGE = nlme.CovariateEffect("C0", "AGE", "linear", reference=40.0)


def _covariate_data(n=60, seed=0, exponent=0.75, sex=-0.3, age=0.01):
    """k = 0.2 (WT/70)**exponent (1 + sex where SEX == 1) exp(eta), eta SD 0.15;
    C0 = 10 (1 + age (AGE - 40)); 5% proportional error."""
    rng = np.random.default_rng(seed)
    wt = rng.uniform(40.0, 120.0, n)
    female = (rng.uniform(size=n) < 0.5).astype(float)
    years = rng.uniform(20.0, 70.0, n)
    k = 0.2 * (wt / 70) ** exponent * (1 + sex * female) * np.exp(0.15 * rng.normal(size=n))
    c0 = 10 * (1 + age * (years - 40))
    t = np.tile([0.5, 1, 2, 4, 8, 12.0], (n, 1))
    y = c0[:, None] * np.exp(-k[:, None] * t) * (1 + 0.05 * rng.normal(size=t.shape))
    covariates = {"WT": wt, "SEX": female, "AGE": years}
    return nlme.Observations(np.arange(n), t, y, covariates=covariates)


START = {"C0": 5.0, "k": 0.5}


def test_each_form_multiplies_the_typical_value_as_written():
    data = _covariate_data(n=4)
    model = decay_model(effects=(WEIGHT, SEX, AGE))
    problem = nlme._Problem(model, data, {})
    x = np.array([np.log(10.0), np.log(0.2), 0.75, -0.3, 0.01, np.log(0.2), np.log(0.05)])
    theta, beta, _, _ = problem.unpack(x)
    eta = np.array([[[0.1]], [[0.0]], [[-0.2]], [[0.3]]])
    p = problem.individual(theta, beta, eta)
    c = data.covariates
    k = 0.2 * (c["WT"] / 70) ** 0.75 * np.where(c["SEX"] == 1, 0.7, 1.0) * np.exp(eta[:, 0, 0])
    np.testing.assert_allclose(p["k"][:, 0], k, rtol=1e-13)
    np.testing.assert_allclose(p["C0"][:, 0], 10 * (1 + 0.01 * (c["AGE"] - 40)), rtol=1e-13)
    assert problem.names()[2:5] == ["beta_k~WT", "beta_k~SEX", "beta_C0~AGE"]


def test_exponential_forms_and_an_untransformed_parameter():
    """``none`` parameters: P = TV * factor + eta; exponential forms exp(theta (c - ref))
    and exp(theta) at the level."""
    model = dataclasses.replace(
        level_model(),
        effects=(
            nlme.CovariateEffect("m", "AGE", "exponential", reference=40.0),
            nlme.CovariateEffect("m", "SEX", "categorical_exp", level=0.0),
        ),
    )
    covariates = {"AGE": np.array([30.0, 50.0]), "SEX": np.array([0.0, 1.0])}
    data = nlme.Observations([1, 2], np.zeros((2, 1)), np.ones((2, 1)), covariates=covariates)
    problem = nlme._Problem(model, data, {})
    theta, beta, _, _ = problem.unpack([5.0, 0.02, 0.4, 0.0, 0.0])
    p = problem.individual(theta, beta, np.array([[[1.0]], [[-1.0]]]))["m"][:, 0]
    np.testing.assert_allclose(p, [5 * np.exp(-0.2) * np.exp(0.4) + 1, 5 * np.exp(0.2) - 1])


@pytest.fixture(scope="module")
def covariate_fit():
    return nlme.fit_foce(decay_model(effects=(WEIGHT, SEX, AGE)), _covariate_data(), START)


def test_power_and_categorical_coefficients_are_recovered_with_standard_errors(covariate_fit):
    fit = covariate_fit
    assert fit.converged
    est = fit.estimates
    for name, truth in (("k~WT", 0.75), ("k~SEX", -0.3), ("C0~AGE", 0.01)):
        se = est.loc[f"beta_{name}", "SE (estimation scale)"]
        assert 0 < se < 0.2, name
        assert abs(fit.typical(name) - truth) < 3 * se, name
    assert fit.typical("k") == pytest.approx(0.2, rel=0.1)
    assert fit.typical("C0") == pytest.approx(10.0, rel=0.05)


def test_a_coefficient_is_fixed_or_started_like_a_typical_value(covariate_fit):
    data = _covariate_data()
    model = decay_model(effects=(WEIGHT, SEX, AGE))
    fixed = nlme.fit_foce(model, data, START, fixed={"k~WT": 0.75}, standard_errors=False)
    assert "beta_k~WT" not in fixed.estimates.index and fixed.typical("k~WT") == 0.75
    assert fixed.typical("k~SEX") == pytest.approx(covariate_fit.typical("k~SEX"), abs=0.03)
    x0 = nlme.start_vector(model, {**START, "k~WT": 0.5})
    np.testing.assert_array_equal(x0[2:5], [0.5, 0.0, 0.0])
    assert nlme.start_vector(model, START, fixed={"k~SEX": 0.1}).size == 6
    with pytest.raises(ValueError, match=r"unknown covariate coefficient\(s\) \['k~AGE'\]"):
        nlme.start_vector(model, {**START, "k~AGE": 0.1})
    with pytest.raises(ValueError, match=r"starting value of 'k~WT' must be one finite"):
        nlme.start_vector(model, {**START, "k~WT": np.nan})
    with pytest.raises(ValueError, match=r"fixed value of 'k~WT' must be one finite"):
        nlme.fit_foce(model, data, START, fixed={"k~WT": np.inf})
    with pytest.raises(ValueError, match=r"cannot fix unknown parameter\(s\) \['k~AGE'\]"):
        nlme.fit_foce(model, data, START, fixed={"k~AGE": 0.1})


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: nlme.CovariateEffect("k", "WT", "allometric"), r"'k~WT': unknown form"),
        (lambda: nlme.CovariateEffect("k", "WT", "power"), r"'k~WT' \(power\) needs a reference"),
        (
            lambda: nlme.CovariateEffect("k", "WT", "power", reference=0.0),
            r"reference value > 0",
        ),
        (lambda: nlme.CovariateEffect("k", "AGE", "linear", reference=np.nan), "finite"),
        (
            lambda: decay_model(effects=(nlme.CovariateEffect("CL", "WT", "power", 70.0),)),
            r"'CL~WT' on unknown parameter 'CL'",
        ),
        (lambda: decay_model(effects=(WEIGHT, WEIGHT)), r"'k~WT' is given twice"),
        (
            lambda: dataclasses.replace(
                decay_model(), covariates={"k": ("WT",)}, effects=(WEIGHT,)
            ),
            "given twice",
        ),
        (
            lambda: nlme.NLMEModel(
                "fraction",
                ("F",),
                {"F": "logit"},
                (),
                lambda p, d: 0,
                effects=(nlme.CovariateEffect("F", "WT", "power", 70.0),),
            ),
            r"'F' is logit-transformed",
        ),
    ],
)
def test_bad_effects_are_refused_by_name(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_covariates_the_data_lack_or_cannot_take_are_named():
    data = _covariate_data(n=10)
    lacking = nlme.Observations(data.ids, data.times_h, data.dv, {"WT": data.covariates["WT"]})
    with pytest.raises(ValueError, match=r"covariate\(s\) 'SEX' \(on k\) that the data lack"):
        nlme.fit_foce(decay_model(effects=(WEIGHT, SEX)), lacking, START)
    wt = data.covariates["WT"].copy()
    wt[3] = 0.0
    zero = nlme.Observations(data.ids, data.times_h, data.dv, {"WT": wt})
    with pytest.raises(ValueError, match=r"power of WT, which must be > 0: it is 0 for subject 3"):
        nlme.fit_foce(decay_model(effects=(WEIGHT,)), zero, START)
    wt[3] = np.nan
    with pytest.raises(ValueError, match=r"covariate 'WT' is nan .* for subject 3 \(row 3\)"):
        nlme.Observations(data.ids, data.times_h, data.dv, {"WT": wt})


def test_a_fit_with_effects_has_its_own_store_key():
    data = _covariate_data(n=10)
    x0 = nlme.start_vector(decay_model(), START)
    plain = nlme._fit_key(decay_model(), data, x0, {}, ())[0]
    x1 = nlme.start_vector(decay_model(effects=(WEIGHT,)), START)
    weighted = nlme._fit_key(decay_model(effects=(WEIGHT,)), data, x1, {}, ())[0]
    other = nlme._fit_key(
        decay_model(effects=(nlme.CovariateEffect("k", "WT", "power", reference=75.0),)),
        data,
        x1,
        {},
        (),
    )[0]
    assert len({plain, weighted, other}) == 3
