import numpy as np
import pandas as pd
import pytest

from pkpd_lib.pmx import model as m
from pkpd_lib.pmx import population as pop


def test_same_seed_same_patients():
    a, b = pop.sample_population(300, seed=11), pop.sample_population(300, seed=11)
    pd.testing.assert_frame_equal(a.table(), b.table(), check_exact=True)
    c = pop.sample_population(300, seed=12)
    assert not np.array_equal(a.params.CL, c.params.CL)


def test_known_draws_are_stable_across_machines():
    # PCG64 streams are platform independent: pin the first patient's draws.
    p = pop.sample_population(3, seed=0)
    rng = np.random.default_rng(0)
    wt = np.clip(rng.normal(75.0, 15.0, 3), 40, 130)
    np.testing.assert_array_equal(p.covariates["WT"].to_numpy(), wt)


def test_demographics_follow_the_design():
    p = pop.sample_population(5000, seed=3).covariates
    assert p["WT"].between(40, 130).all()
    assert p["AGE"].between(18, 80).all()
    assert set(p["SEX"].unique()) == {0, 1}
    assert abs(p["WT"].mean() - 75) < 1.0
    assert abs(p["SEX"].mean() - 0.5) < 0.03


def test_etas_have_the_stated_spread():
    e = pop.sample_population(20000, seed=5).etas
    for name, sd in pop.ETA_SD.items():
        assert e[name].std() == pytest.approx(sd, rel=0.03)


def covs(**kw):
    base = {"WT": np.array([70.0]), "AGE": np.array([45.0]), "SEX": np.array([0.0])}
    base.update({k: np.array([v], float) for k, v in kw.items()})
    return base


def test_typical_patient_has_typical_values():
    p = pop.individual_params(covs())
    for k, v in m.TYPICAL_PARAMS.items():
        assert getattr(p, k)[0] == pytest.approx(v)


def test_covariate_effects_go_the_stated_direction():
    ref = pop.individual_params(covs())
    heavy = pop.individual_params(covs(WT=100))
    old = pop.individual_params(covs(AGE=75))
    female = pop.individual_params(covs(SEX=1))
    assert heavy.CL[0] > ref.CL[0] and heavy.V[0] > ref.V[0]
    assert heavy.CL[0] / ref.CL[0] == pytest.approx((100 / 70) ** 0.75)
    assert old.CL[0] < ref.CL[0] and old.Emax[0] < ref.Emax[0]
    assert female.EC50[0] == pytest.approx(0.7 * ref.EC50[0])  # females more sensitive
    assert female.CL[0] == ref.CL[0]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"WT": np.nan}, r"'WT' \(kg\) contains NaN"),
        ({"AGE": np.inf}, r"'AGE' \(years\) contains NaN"),
        ({"SEX": 2}, r"'SEX' \(0 male, 1 female\) must be one of \[0.0, 1.0\]"),
        ({"WT": -70}, r"'WT' \(kg\) must be > 0"),
    ],
)
def test_bad_covariates_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        pop.individual_params(covs(**bad))


def test_missing_covariate_and_bad_size():
    with pytest.raises(ValueError, match="missing covariate 'AGE'"):
        pop.individual_params({"WT": [70.0], "SEX": [0]})
    with pytest.raises(ValueError, match="different lengths"):
        pop.individual_params({"WT": [70.0, 80.0], "AGE": [45.0], "SEX": [0]})
    with pytest.raises(ValueError, match="n must be"):
        pop.sample_population(0, seed=1)
