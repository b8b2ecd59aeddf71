"""Classical PK estimation: the closed-form model and empirical Bayes fits."""

import numpy as np
import pytest

from pkpd_lib import datasets, model, pkfit
from pkpd_lib import regimens as reg
from pkpd_lib.population import sample_population
from pkpd_lib.sampling import DENSE_TIMES_H, SPARSE_TIMES_H


@pytest.fixture(scope="module")
def patients():
    return sample_population(60, seed=5)


@pytest.mark.parametrize("regimen", [reg.qd(), reg.tid(), reg.from_doses([(0, 30), (5.5, 80)])])
def test_closed_form_matches_the_ode(patients, regimen):
    p = patients.params
    sim = model.simulate(p, regimen, DENSE_TIMES_H)
    conc = pkfit.one_compartment_conc(p.ka, p.CL, p.V, regimen, DENSE_TIMES_H)
    np.testing.assert_allclose(conc, sim.conc_mg_L, rtol=1e-6, atol=1e-9)


def test_closed_form_handles_ka_equal_to_ke():
    # ka == CL/V: the textbook formula divides by zero; the limit is D*k/V * t * exp(-k t)
    t = np.array([0.0, 1.0, 5.0])
    conc = pkfit.one_compartment_conc([0.2], [10.0], [50.0], reg.from_doses([(0, 100)]), t)
    np.testing.assert_allclose(conc[0], 100 * 0.2 / 50 * t * np.exp(-0.2 * t))


def test_trough_at_a_dose_time_excludes_that_dose():
    c = pkfit.one_compartment_conc([1.0], [15.0], [50.0], reg.qd(), np.array([24.0]))
    c_before = pkfit.one_compartment_conc([1.0], [15.0], [50.0], reg.qd(days=1), np.array([24.0]))
    np.testing.assert_allclose(c, c_before)


def test_empirical_bayes_recovers_individual_clearance(patients):
    data = datasets.simulate_dataset(patients, reg.qd(), DENSE_TIMES_H, obs_seed=3)
    sparse = data.at_times(SPARSE_TIMES_H)
    fit = pkfit.fit_individual_pk(
        sparse.conc_obs, sparse.times_h, sparse.regimen, patients.covariates
    )
    true_cl = patients.params.CL
    assert np.corrcoef(np.log(fit.params["CL"]), np.log(true_cl))[0, 1] > 0.9
    # the fitted profile is closer to the truth than the covariate-only typical profile
    typical = pkfit.one_compartment_conc(
        *(getattr(model.typical_params(60), k) for k in ("ka", "CL", "V")), reg.qd(), DENSE_TIMES_H
    )
    fitted = pkfit.reconstructed_conc(fit, reg.qd(), DENSE_TIMES_H)
    truth = data.truth.conc_mg_L
    assert np.abs(fitted - truth).mean() < 0.5 * np.abs(typical - truth).mean()


def test_fit_accepts_each_patients_own_times(patients):
    data = datasets.simulate_dataset(patients, reg.qd(), DENSE_TIMES_H, obs_seed=3)
    s = datasets.sample_at(data, np.tile([0.0, 3.0, 30.0, 100.0], (60, 1)))
    fit = pkfit.fit_individual_pk(s.conc_obs, s.times_h, data.regimens, patients.covariates)
    assert fit.params.shape == (60, 3) and np.all(fit.params.to_numpy() > 0)


@pytest.mark.parametrize(
    ("conc", "match"),
    [
        (np.full((60, 7), np.nan), "NaN"),
        (-np.ones((60, 7)), ">= 0"),
        (np.ones(7), r"\(N, T\)"),
        (np.ones((60, 6)), "does not match"),
        (np.ones((59, 7)), "59"),
    ],
)
def test_fit_rejects_bad_input(patients, conc, match):
    with pytest.raises(ValueError, match=match):
        pkfit.fit_individual_pk(conc, SPARSE_TIMES_H, reg.qd(), patients.covariates)


def test_closed_form_rejects_unsorted_times():
    with pytest.raises(ValueError, match="increasing"):
        pkfit.one_compartment_conc([1.0], [15.0], [50.0], reg.qd(), np.array([5.0, 2.0]))


def test_joint_fit_is_as_good_as_separate_fits(patients):
    data = datasets.simulate_dataset(patients, reg.qd(), DENSE_TIMES_H, obs_seed=3)
    sparse = data.at_times(SPARSE_TIMES_H)
    cov = patients.covariates
    joint = pkfit.fit_individual_pk(sparse.conc_obs, SPARSE_TIMES_H, reg.qd(), cov)
    assert joint.objective.shape == (60,)
    for i in range(0, 60, 12):
        one = pkfit.fit_individual_pk(
            sparse.conc_obs[i : i + 1], SPARSE_TIMES_H, reg.qd(), cov.iloc[i : i + 1]
        )
        assert joint.objective[i] <= one.objective[0] + 1e-6
