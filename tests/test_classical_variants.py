"""Classical PK/PD fits and the richer-PD model variant."""

import numpy as np
import pandas as pd
import pytest

from pkpd_lib.pmx import model
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.study import classical, datasets

HOURLY = np.arange(0.0, 169.0)
TRUE_THETA = {
    "Emax": 1.0,
    "EC50": 0.5,
    "gam": 2.0,
    "MTT": 12.0,
    "kout": 0.1,
    "Emax_AGE": -0.3,
    "EC50_SEX": 0.3,
}


@pytest.fixture(scope="module")
def patients():
    return sample_population(30, seed=9)


def _pk(pop):
    return pd.DataFrame({k: getattr(pop.params, k) for k in ("ka", "CL", "V")})


def test_chained_variant_keeps_the_default_states_and_lags_them(patients):
    base = model.simulate(patients.params, reg.qd(), HOURLY)
    chained = model.simulate_second_turnover(patients.params, reg.qd(), HOURLY)
    np.testing.assert_allclose(chained.states["R"], base.pd, rtol=1e-7)
    np.testing.assert_allclose(chained.pd[:, 0], patients.params.R0)
    # the second turnover delays the first day's peak
    day1 = slice(0, 24)
    assert np.all(chained.pd[:, day1].argmax(1) >= base.pd[:, day1].argmax(1))
    with pytest.raises(ValueError, match="kout2"):
        model.simulate_second_turnover(patients.params, reg.qd(), HOURLY, kout2=0.0)


def test_datasets_accept_a_variant_and_extra_variability():
    sets = datasets.study_datasets("sparse", simulator=model.simulate_second_turnover)
    default = datasets.study_datasets("sparse")
    np.testing.assert_allclose(sets["train"].conc_obs, default["train"].conc_obs, rtol=1e-6)
    assert not np.allclose(sets["train"].truth.pd, default["train"].truth.pd)
    varied = sample_population(50, seed=1, extra_eta_sd={"EC50": 0.3})
    plain = sample_population(50, seed=1)
    pd.testing.assert_frame_equal(varied.covariates, plain.covariates)
    np.testing.assert_array_equal(varied.params.CL, plain.params.CL)
    assert np.std(np.log(varied.params.EC50 / plain.params.EC50)) > 0.2
    with pytest.raises(ValueError, match="already"):
        sample_population(5, seed=1, extra_eta_sd={"CL": 0.3})


def test_turnover_structure_with_true_values_reproduces_the_model(patients):
    pred = classical.predict_pd_from_pk(
        "turnover",
        TRUE_THETA,
        _pk(patients),
        patients.covariates,
        patients.params.R0,
        reg.bid(),
        HOURLY,
    )
    truth = model.simulate(patients.params, reg.bid(), HOURLY).pd
    np.testing.assert_allclose(pred, truth, rtol=1e-4)


def test_effect_compartment_reaches_the_direct_effect_at_steady_infusion_like_dosing(patients):
    # many small doses approximate a constant concentration; with a fast ke0 the effect
    # site follows it and PD approaches R0 * (1 + Emax C^g / (EC50^g + C^g))
    frequent = reg.repeated(100.0, 24, 7)
    theta = {"Emax": 1.0, "EC50": 0.5, "gam": 2.0, "ke0": 5.0, "Emax_AGE": 0.0, "EC50_SEX": 0.0}
    t = np.array([160.0])
    pd_pred = classical.predict_pd_from_pk(
        "effect_compartment", theta, _pk(patients), patients.covariates, 100.0, frequent, t
    )
    c = model.simulate(patients.params, frequent, t).conc_mg_L
    np.testing.assert_allclose(pd_pred, 100 * (1 + c**2 / (0.25 + c**2)), rtol=0.02)


@pytest.mark.slow
def test_sequential_fit_recovers_the_true_values(patients):
    data = datasets.simulate_dataset(patients, reg.qd(), HOURLY, obs_seed=2)
    fit, pk = classical.fit_sequential("turnover", data)
    for name in ("Emax", "EC50", "MTT", "kout"):
        assert fit.theta[name] == pytest.approx(TRUE_THETA[name], rel=0.15), name
    pred = classical.predict_dataset(fit, data)
    assert np.sqrt(np.mean((pred - data.truth.pd) ** 2)) < 1.0  # biomarker units, effect ~20


def test_classical_rejects_unknown_structure_and_bad_data(patients):
    with pytest.raises(ValueError, match="unknown PD structure"):
        classical.predict_pd_from_pk(
            "emax", TRUE_THETA, _pk(patients), patients.covariates, 100, reg.qd(), HOURLY
        )
    with pytest.raises(ValueError, match="finite"):
        classical.fit_population_pd(
            "turnover",
            _pk(patients),
            patients.covariates,
            100.0,
            reg.qd(),
            HOURLY,
            np.full((30, 169), np.nan),
        )


def test_a_data_set_is_pk_fitted_once_and_another_gets_its_own_fit(patients):
    """The sequential fits share one PK fit per data set (chapter 9 fits two PD
    structures to one training set): the same content, the same fit; other content, a
    fit of its own with the numbers a fresh fit gives. Each caller gets a copy it may
    change."""
    from dataclasses import replace

    from pkpd_lib.pmx.pkfit import fit_individual_pk

    times = np.arange(0.0, 169.0, 12.0)
    data = datasets.simulate_dataset(patients, reg.qd(), times)
    first = classical.dataset_pk(data)
    v0 = first.params["V"].to_numpy().copy()
    first.params["V"] = -1.0  # this caller's copy
    same_content = replace(data, conc_obs=data.conc_obs.copy())
    again = classical.dataset_pk(same_content)
    assert again.seconds == first.seconds  # the same fit, not fitted again
    np.testing.assert_array_equal(again.params["V"], v0)
    other = replace(data, conc_obs=data.conc_obs * 1.1)
    fit = classical.dataset_pk(other)
    fresh = fit_individual_pk(
        other.conc_obs, other.times_h, other.regimens, other.population.covariates
    )
    pd.testing.assert_frame_equal(fit.params, fresh.params)
    assert not np.allclose(fit.params["V"], v0)
