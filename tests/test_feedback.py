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
