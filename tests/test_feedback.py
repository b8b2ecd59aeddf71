"""Interacting biomarkers: the tolerance / moderator structure and its two observed
outputs, against its equations, an independent integration and its behaviour."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from pkpd_lib.pmx import model
from pkpd_lib.pmx import regimens as reg

TYPICAL = model.FEEDBACK_TYPICAL
DAYS_12 = np.arange(0.0, 24 * 12 + 1)


def _simulate(regimen, params=TYPICAL, times=DAYS_12):
    return model.simulate_structure(model.FEEDBACK_TOLERANCE, params, regimen, times)


def test_both_biomarkers_rest_where_production_and_moderator_balance():
    """Under a constant concentration C the equations' fixed point is
    R = M = R0 sqrt(1 - I(C)): the moderator halves the drug's effect on a log scale."""
    p = model.structure_params(model.FEEDBACK_TOLERANCE, TYPICAL)
    rhs = model.FEEDBACK_TOLERANCE.make_rhs(p)
    for conc in (0.0, 0.1, 0.3, 2.0):
        inhibition = 0.9 * conc**2 / (0.3**2 + conc**2)
        level = 100.0 * np.sqrt(1 - inhibition)
        d = rhs(0.0, np.array([0.0, conc * 50.0, level, level]))
        np.testing.assert_allclose(d[2:], 0.0, atol=1e-12)
        moved = rhs(0.0, np.array([0.0, conc * 50.0, level * 1.01, level]))
        assert moved[2] < 0 and moved[3] > 0  # R above it falls; M follows it up


def test_it_matches_an_independent_integration_of_one_patient():
    ka, cl, v, imax, ic50, gam, kout, r0, ktol = (TYPICAL[k] for k in TYPICAL)

    def rhs(_t, y):
        ag, ac, r, m = y
        c = max(ac / v, 0.0)
        inh = imax * c**gam / (ic50**gam + c**gam)
        return [
            -ka * ag,
            ka * ag - cl / v * ac,
            kout * r0 * (1 - inh) * r0 / m - kout * r,
            ktol * (r - m),
        ]

    regimen = reg.named("BID", 100.0)
    y, out = np.array([0.0, 0.0, r0, r0]), []
    edges = [*regimen.times_h, DAYS_12[-1] + 1]
    for k, dose_t in enumerate(regimen.times_h):  # a bolus into the depot at each dose
        y[0] += regimen.amounts_mg[k]
        sol = solve_ivp(rhs, (dose_t, edges[k + 1]), y, dense_output=True, rtol=1e-10, atol=1e-12)
        out.append(sol.sol(DAYS_12[(DAYS_12 >= dose_t) & (DAYS_12 < edges[k + 1])])[2:])
        y = sol.y[:, -1]
    reference = np.concatenate(out, axis=1)
    sim = _simulate(regimen)
    got = np.stack([sim.biomarkers["R"][0], sim.biomarkers["M"][0]])
    np.testing.assert_allclose(got, reference, rtol=1e-6)


def test_tolerance_builds_and_the_response_rebounds_above_baseline_after_the_last_dose():
    sims = {name: _simulate(reg.named(name, 100.0)) for name in ("QD", "BID", "TID")}
    for sim in sims.values():
        r, m = sim.biomarkers["R"][0], sim.biomarkers["M"][0]
        assert r[144:168].min() > r[:24].min() + 3  # the daily nadir rises: tolerance
        assert r[168:].max() > 105 and m[168:].min() < 90  # rebound while M is still low
        assert abs(r[-1] - 100) < 2 and abs(m[-1] - 100) < 5  # and back towards baseline
    mean_day_7 = [sims[n].biomarkers["R"][0][144:168].mean() for n in ("QD", "BID", "TID")]
    rebound = [sims[n].biomarkers["R"][0][168:].max() for n in ("QD", "BID", "TID")]
    assert mean_day_7 == sorted(mean_day_7, reverse=True)  # more even exposure, more effect
    assert rebound == sorted(rebound) and rebound[2] - rebound[0] > 2  # and more rebound


def test_two_biomarkers_are_named_and_the_first_is_pd_while_one_output_keeps_its_name():
    sim = _simulate(reg.named("QD", 100.0), times=[0.0, 12.0, 24.0])
    assert list(sim.biomarkers) == ["R", "M"]
    assert sim.biomarkers["R"] is sim.pd
    np.testing.assert_array_equal(sim.biomarkers["M"], sim.states["M"])
    default = model.simulate(model.typical_params(), reg.named("QD", 100.0), [0.0, 12.0])
    assert list(default.biomarkers) == ["PD"] and default.biomarkers["PD"] is default.pd


def test_patients_are_integrated_together_as_each_alone():
    params = {k: np.full(3, v) for k, v in TYPICAL.items()}
    params["ktol"] = np.array([0.01, 0.03, 0.1])
    params["IC50"] = np.array([0.2, 0.3, 0.6])
    together = _simulate(reg.named("TID", 100.0), params)
    for i in range(3):
        alone = _simulate(reg.named("TID", 100.0), {k: v[i] for k, v in params.items()})
        for name in ("R", "M"):
            np.testing.assert_allclose(
                together.biomarkers[name][i], alone.biomarkers[name][0], rtol=1e-7
            )


@pytest.mark.parametrize("imax", [1.0, 1.5])
def test_a_drug_that_would_inhibit_all_production_or_more_is_refused(imax):
    params = {**TYPICAL, "Imax": np.array([0.5, imax])}
    with pytest.raises(
        ValueError, match=rf"Imax must be < 1 .* got {imax:g} for patient\(s\) \[1\]"
    ):
        _simulate(reg.named("QD", 100.0), params)


# --- two observed biomarkers through the data sets and the NONMEM tables ---------------


@pytest.fixture(scope="module")
def two_biomarkers():
    from pkpd_lib.pmx.population import sample_population
    from pkpd_lib.study import datasets

    pop = sample_population(4, seed=3)
    return datasets.simulate_dataset(
        pop, reg.named("BID", 100.0), [0.0, 2.0, 24.0, 170.0], 5, model.simulate_feedback
    )


def test_feedback_parameters_carry_the_populations_variability_and_covariates():
    from pkpd_lib.pmx.population import sample_population

    pop = sample_population(50, seed=1, extra_eta_sd={"MTT": 0.3})
    p = model.feedback_params(pop.params)
    np.testing.assert_array_equal(p["CL"], pop.params.CL)
    np.testing.assert_allclose(p["IC50"], 0.6 * pop.params.EC50)  # women more sensitive
    np.testing.assert_allclose(p["ktol"], 0.36 / pop.params.MTT)
    assert np.std(np.log(p["ktol"])) > 0.2 and np.all(p["Imax"] == 0.9)


def test_each_biomarker_is_observed_with_its_own_error(two_biomarkers):
    from pkpd_lib.pmx import sampling

    d = two_biomarkers
    assert list(d.biomarkers_obs) == ["R", "M"] and d.biomarkers_obs["R"] is d.pd_obs
    # the first biomarker's error is the one a single-output data set gets
    _, pd_obs = sampling.observe(d.truth.conc_mg_L, d.truth.pd, seed=5)
    np.testing.assert_array_equal(d.pd_obs, pd_obs)
    m_error = d.biomarkers_obs["M"] / d.truth.biomarkers["M"] - 1
    r_error = d.pd_obs / d.truth.pd - 1
    assert 0 < np.std(m_error) < 0.2 and not np.allclose(m_error, r_error)
    later = d.at_times([24.0, 170.0])
    assert later.biomarkers_obs["R"] is later.pd_obs
    np.testing.assert_array_equal(later.biomarkers_obs["M"], d.biomarkers_obs["M"][:, 2:])
    np.testing.assert_array_equal(later.truth.biomarkers["M"], d.truth.biomarkers["M"][:, 2:])


def test_observed_biomarkers_must_be_the_simulated_ones(two_biomarkers):
    from dataclasses import replace

    d = two_biomarkers
    with pytest.raises(ValueError, match=r"observed biomarkers \['R'\] are not the simulated"):
        replace(d, biomarkers_obs={"R": d.pd_obs})
    with pytest.raises(ValueError, match="'M' has shape"):
        replace(d, biomarkers_obs={"R": d.pd_obs, "M": d.pd_obs[:, :2]})


def test_the_nonmem_table_has_a_compartment_and_dvid_per_biomarker(two_biomarkers):
    from pkpd_lib.pmx import nonmem

    d = two_biomarkers
    table = nonmem.to_nonmem(d)
    assert list(table.columns[:7]) == ["ID", "TIME", "AMT", "EVID", "MDV", "CMT", "DVID"]
    observed = table[table["EVID"] == 0]
    assert sorted(set(zip(observed["CMT"], observed["DVID"], strict=True))) == [
        (2, 1),
        (3, 2),
        (4, 3),
    ]
    assert table["DVID"].dtype == np.int64
    assert (table.loc[table["EVID"] == 1, "DVID"] == 0).all()
    nonmem.check_nonmem(table)
    back = nonmem.observations(table, dvid=(2, 3))
    for k, name in enumerate(("R", "M")):
        got = np.where(back.output == k, back.dv, np.nan)[:, :]
        got = np.array([row[~np.isnan(row)] for row in got])
        np.testing.assert_array_equal(got, d.biomarkers_obs[name])


# --- the population model of the two biomarkers ------------------------------------------


@pytest.fixture(scope="module")
def patients():
    from pkpd_lib.pmx.population import sample_population

    pop = sample_population(6, seed=4, extra_eta_sd={"MTT": 0.3})
    return pop, model.feedback_params(pop.params)


def _grid_prediction(patients, regimen, times, feedback=True):
    from pkpd_lib.pmx import popmodels as pm

    pop, fp = patients
    pk = {k: fp[k] for k in ("ka", "CL", "V")}
    data = pm.feedback_data(regimen, times, pk, pop.covariates)
    p = {k: fp[k][:, None] for k in pm.FEEDBACK_UNITS}
    return data, pm.feedback_model(feedback).predict(p, data)


def test_the_population_models_grid_matches_the_simulation_within_1e_3(patients):
    times = np.arange(0.0, 24 * 9 + 1)
    regimen = reg.named("TID", 100.0)
    _, pred = _grid_prediction(patients, regimen, times)
    sim = model.simulate_structure(model.FEEDBACK_TOLERANCE, patients[1], regimen, times)
    k = times.size
    np.testing.assert_allclose(pred["R"][:, 0, :k], sim.biomarkers["R"], rtol=1e-3)
    np.testing.assert_allclose(pred["M"][:, 0, k:], sim.biomarkers["M"], rtol=1e-3)


def test_without_feedback_the_response_ignores_its_moderator(patients):
    """The competitor without feedback: R is the plain inhibited turnover (no tolerance,
    no rebound), whatever ktol; M still follows R."""
    times = np.arange(0.0, 24 * 9 + 1)
    regimen = reg.named("QD", 100.0)
    data, plain = _grid_prediction(patients, regimen, times, feedback=False)
    from pkpd_lib.pmx import popmodels as pm

    p = {k: patients[1][k][:, None] for k in pm.FEEDBACK_UNITS}
    faster = pm.feedback_model(False).predict({**p, "ktol": p["ktol"] * 3}, data)
    np.testing.assert_array_equal(faster["R"], plain["R"])
    assert not np.allclose(faster["M"], plain["M"])
    k = times.size
    r = plain["R"][:, 0, :k]
    assert r[:, 170:].max() <= r[:, 0].max() * 1.001  # no rebound above baseline
    _, true = _grid_prediction(patients, regimen, times)
    assert (true["R"][:, 0, 170:k].max(axis=1) > r[:, 0] * 1.02).all()  # the truth rebounds
