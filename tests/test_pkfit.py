"""Classical PK estimation: the closed-form model and empirical Bayes fits."""

import numpy as np
import pytest

from pkpd_lib.pmx import model, pk, pkfit
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.pmx.sampling import DENSE_TIMES_H, SPARSE_TIMES_H
from pkpd_lib.study import datasets


@pytest.fixture(scope="module")
def patients():
    return sample_population(60, seed=5)


def test_empirical_bayes_recovers_individual_clearance(patients):
    data = datasets.simulate_dataset(patients, reg.qd(), DENSE_TIMES_H, obs_seed=3)
    sparse = data.at_times(SPARSE_TIMES_H)
    fit = pkfit.fit_individual_pk(
        sparse.conc_obs, sparse.times_h, sparse.regimen, patients.covariates
    )
    true_cl = patients.params.CL
    assert np.corrcoef(np.log(fit.params["CL"]), np.log(true_cl))[0, 1] > 0.9
    # the fitted profile is closer to the truth than the covariate-only typical profile
    typical = pk.one_compartment_conc(
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


def test_empirical_bayes_estimate_is_the_optimum_to_machine_precision(patients):
    # the rebuilt concentrations are network inputs: a relative change of 1e-13 in the
    # data (what another CPU's exp/log can do) must not move the estimate visibly
    data = datasets.simulate_dataset(patients, reg.qd(), DENSE_TIMES_H, obs_seed=3)
    sparse = data.at_times(SPARSE_TIMES_H)
    cov = patients.covariates
    fit = pkfit.fit_individual_pk(sparse.conc_obs, SPARSE_TIMES_H, reg.qd(), cov)
    nudged = pkfit.fit_individual_pk(sparse.conc_obs * (1 + 1e-13), SPARSE_TIMES_H, reg.qd(), cov)
    a = pkfit.reconstructed_conc(fit, reg.qd(), DENSE_TIMES_H)
    b = pkfit.reconstructed_conc(nudged, reg.qd(), DENSE_TIMES_H)
    assert np.abs(a - b).max() < 1e-8 * np.sqrt((a**2).mean())
    assert fit.nfev < 200
