"""Closed-form PK (pkpd_lib.pmx.pk): dose arrays, the kernels and their superposition."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from pkpd_lib.pmx import model, pk
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.pmx.sampling import DENSE_TIMES_H


@pytest.fixture(scope="module")
def patients():
    return sample_population(60, seed=5)


@pytest.mark.parametrize("regimen", [reg.qd(), reg.tid(), reg.from_doses([(0, 30), (5.5, 80)])])
def test_closed_form_matches_the_ode(patients, regimen):
    p = patients.params
    sim = model.simulate(p, regimen, DENSE_TIMES_H)
    conc = pk.one_compartment_conc(p.ka, p.CL, p.V, regimen, DENSE_TIMES_H)
    np.testing.assert_allclose(conc, sim.conc_mg_L, rtol=1e-6, atol=1e-9)


def test_closed_form_handles_ka_equal_to_ke():
    # ka == CL/V: the textbook formula divides by zero; the limit is D*k/V * t * exp(-k t)
    t = np.array([0.0, 1.0, 5.0])
    conc = pk.one_compartment_conc([0.2], [10.0], [50.0], reg.from_doses([(0, 100)]), t)
    np.testing.assert_allclose(conc[0], 100 * 0.2 / 50 * t * np.exp(-0.2 * t))


def test_trough_at_a_dose_time_excludes_that_dose():
    c = pk.one_compartment_conc([1.0], [15.0], [50.0], reg.qd(), np.array([24.0]))
    c_before = pk.one_compartment_conc([1.0], [15.0], [50.0], reg.qd(days=1), np.array([24.0]))
    np.testing.assert_allclose(c, c_before)


def test_closed_form_rejects_unsorted_times():
    with pytest.raises(ValueError, match="increasing"):
        pk.one_compartment_conc([1.0], [15.0], [50.0], reg.qd(), np.array([5.0, 2.0]))


def test_analytic_jacobian_matches_finite_differences():
    rng = np.random.default_rng(0)
    n = 5
    ka, cl, v = rng.uniform(0.5, 2, n), rng.uniform(5, 20, n), rng.uniform(30, 80, n)
    ka[0] = cl[0] / v[0]  # the ka == ke limit
    dose_t, amt = np.tile([0.0, 24, 30], (n, 1)), np.tile([100.0, 50, 80], (n, 1))
    t = np.tile(np.linspace(0, 72, 13), (n, 1))
    grad = pk.oral_log_derivatives(ka, cl, v, dose_t, amt, t)
    h = 1e-5
    for k in range(3):
        up, down = [ka.copy(), cl.copy(), v.copy()], [ka.copy(), cl.copy(), v.copy()]
        up[k][1:] *= np.exp(h)
        down[k][1:] *= np.exp(-h)
        fd = (pk.oral_conc(*up, dose_t, amt, t) - pk.oral_conc(*down, dose_t, amt, t)) / (2 * h)
        np.testing.assert_allclose(grad[1:, :, k], fd[1:], atol=1e-9)
    # at ka == ke the limit formula is the mean of the general one just either side
    first = tuple(a[:1] for a in (dose_t, amt, t))
    sides = [
        pk.oral_log_derivatives(ka[:1] * f, cl[:1], v[:1], *first) for f in (1 + 1e-4, 1 - 1e-4)
    ]
    np.testing.assert_allclose(grad[:1], (sides[0] + sides[1]) / 2, rtol=1e-6, atol=1e-9)


def test_dose_arrays_pad_with_zero_doses():
    times, amounts = pk.dose_arrays([reg.tid(days=1), reg.from_doses([(2.0, 30.0)])], 2)
    np.testing.assert_array_equal(times, [[0.0, 8.0, 16.0], [2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(amounts, [[100 / 3] * 3, [30.0, 0.0, 0.0]])
    shared, _ = pk.dose_arrays(reg.qd(days=2), 3)
    assert shared.shape == (3, 2)
    with pytest.raises(ValueError, match="regimens"):
        pk.dose_arrays([reg.qd(), reg.qd()], 3)


def _one_compartment_ode(rate_in, cl, v, dose_times, amounts, times, bolus=True):
    """Concentrations from solve_ivp: a central compartment with elimination CL/V and
    ``rate_in(t)`` (mg/h) or boluses at the dose times."""
    ke = cl / v
    out, a, t_now = [], 0.0, 0.0
    events = list(zip(dose_times, amounts, strict=True)) if bolus else []
    for t in times:
        while events and events[0][0] < t:  # doses strictly before the sample
            t_dose, amt = events.pop(0)
            a = _advance(a, rate_in, ke, t_now, t_dose) + amt
            t_now = t_dose
        a = _advance(a, rate_in, ke, t_now, t)
        t_now = t
        out.append(a / v)
    return np.array(out)


def _advance(a, rate_in, ke, t0, t1):
    if t1 <= t0:
        return a
    sol = solve_ivp(
        lambda t, y: rate_in(t) - ke * y, (t0, t1), [a], rtol=1e-11, atol=1e-12, max_step=0.1
    )
    return sol.y[0, -1]


def test_iv_bolus_superposed_matches_the_ode():
    dose_t, amounts = np.array([[0.0, 12.0, 30.0]]), np.array([[100.0, 50.0, 80.0]])
    t = np.array([0.0, 1.0, 12.0, 13.0, 30.0, 48.0])
    c = pk.superpose(pk.iv_bolus, dose_t, amounts, t, cl=[5.0], v=[40.0])
    ode = _one_compartment_ode(lambda t: 0.0, 5.0, 40.0, dose_t[0], amounts[0], t)
    np.testing.assert_allclose(c[0], ode, rtol=1e-7)
    # a sample at a dose time: the trough by default, after the dose if asked
    after = pk.superpose(
        pk.iv_bolus, dose_t, amounts, t, sample_at_dose="after", cl=[5.0], v=[40.0]
    )
    np.testing.assert_allclose(after[0, 2] - c[0, 2], 50.0 / 40.0)


@pytest.mark.parametrize("given", ["rate", "duration"])
def test_iv_infusion_matches_the_ode(given):
    dose, duration, cl, v = 120.0, 3.0, 6.0, 30.0
    t = np.array([0.5, 2.0, 3.0, 4.0, 10.0])
    kw = {"rate_mg_h": dose / duration} if given == "rate" else {"duration_h": duration}
    c = pk.iv_infusion(cl, v, dose, t, **kw)
    ode = _one_compartment_ode(
        lambda s: dose / duration if s < duration else 0.0, cl, v, [], [], t, bolus=False
    )
    np.testing.assert_allclose(c, ode, rtol=1e-6)


def test_iv_infusion_needs_one_of_rate_and_duration():
    with pytest.raises(ValueError, match="not both or neither"):
        pk.iv_infusion(5.0, 50.0, 100.0, 1.0)
    with pytest.raises(ValueError, match="not both or neither"):
        pk.iv_infusion(5.0, 50.0, 100.0, 1.0, rate_mg_h=10.0, duration_h=10.0)
    with pytest.raises(ValueError, match="> 0"):
        pk.iv_infusion(5.0, 50.0, 100.0, 1.0, duration_h=0.0)


def test_a_lag_time_shifts_the_oral_profile():
    t = np.linspace(0.0, 48.0, 25)
    lagged = pk.first_order_absorption(0.8, 10.0, 40.0, 100.0, t, tlag_h=1.5)
    shifted = pk.first_order_absorption(0.8, 10.0, 40.0, 100.0, np.maximum(t - 1.5, 0.0))
    np.testing.assert_array_equal(lagged, shifted)
    assert lagged[0] == 0.0
    # per patient, through the superposition
    dose_t, amounts = pk.dose_arrays(reg.bid(days=1), 2)
    c = pk.superpose(
        pk.first_order_absorption,
        dose_t,
        amounts,
        t,
        ka=[0.8, 0.8],
        cl=[10.0, 10.0],
        v=[40.0, 40.0],
        tlag_h=[0.0, 1.5],
    )
    no_lag = pk.oral_conc([0.8], [10.0], [40.0], dose_t[:1], amounts[:1], t)
    np.testing.assert_array_equal(c[0], no_lag[0])
    assert c[1, 1] < c[0, 1]


def test_superposition_orders_agree_and_options_are_checked():
    dose_t = np.tile(np.arange(0.0, 240.0, 12.0), (3, 1))  # 20 doses
    amounts = np.full_like(dose_t, 50.0)
    t = np.arange(0.0, 250.0, 0.5)
    params = {"ka": [0.5, 1.0, 2.0], "cl": [0.1, 0.14, 0.2], "v": [7.0, 7.4, 8.0]}
    pairwise = pk.superpose(pk.transit_absorption, dose_t, amounts, t, **params)
    sequential = pk.superpose(
        pk.transit_absorption, dose_t, amounts, t, order="sequential", **params
    )
    np.testing.assert_allclose(sequential, pairwise, rtol=1e-12)
    with pytest.raises(ValueError, match="order"):
        pk.superpose(pk.iv_bolus, dose_t, amounts, t, order="random", cl=1.0, v=1.0)
    with pytest.raises(ValueError, match="sample_at_dose"):
        pk.superpose(pk.iv_bolus, dose_t, amounts, t, sample_at_dose="during", cl=1.0, v=1.0)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        pk.superpose(pk.iv_bolus, dose_t, amounts, t, cl=np.ones((3, 1)), v=1.0)


def test_kernels_before_and_at_the_dose():
    t = np.array([0.0])
    assert pk.first_order_absorption(1.0, 15.0, 50.0, 100.0, t)[0] == 0.0
    assert pk.transit_absorption(1.0, 15.0, 50.0, 100.0, t)[0] == 0.0
    assert pk.iv_infusion(15.0, 50.0, 100.0, t, duration_h=1.0)[0] == 0.0
    assert pk.iv_bolus(15.0, 50.0, 100.0, t)[0] == 2.0


@pytest.mark.parametrize(
    "ktr, ka, cl, v",
    [
        (1.1, 0.92, 0.13, 7.9),  # nlmixr's warfarin estimates: two close rates
        (0.5, 2.0, 1.0, 2.0),  # ke equals ktr
        (1.0, 1.0, 7.0, 7.0),  # all three rates equal
        (1.0, 1.0 + 1e-7, 1.0, 1.0),  # nearly equal: where a plain formula cancels
        (3.0, 1.0, 0.13, 7.9),
    ],
)
def test_chain_absorption_is_the_three_compartment_chain(ktr, ka, cl, v):
    t = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 24.0, 60.0])

    def chain(_, a):
        return [-ktr * a[0], ktr * a[0] - ka * a[1], ka * a[1] - cl / v * a[2]]

    ode = solve_ivp(chain, (0, 60), [100.0, 0, 0], t_eval=t, rtol=1e-11, atol=1e-14)
    closed = pk.chain_absorption(ktr, ka, cl, v, 100.0, t)
    np.testing.assert_allclose(closed, ode.y[2] / v, rtol=1e-7, atol=1e-12)
    # symmetric in the two absorption rates after one dose
    np.testing.assert_allclose(pk.chain_absorption(ka, ktr, cl, v, 100.0, t), closed)


def test_chain_absorption_with_one_rate_is_transit_absorption():
    t = np.linspace(0.0, 144.0, 289)
    ka = np.array([[0.3], [1.0], [2.5]])
    np.testing.assert_allclose(
        pk.chain_absorption(ka, ka, 0.14, 7.4, 100.0, t),
        pk.transit_absorption(ka, 0.14, 7.4, 100.0, t),
        rtol=1e-12,
        atol=1e-15,
    )
