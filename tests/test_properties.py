"""Property-based tests (hypothesis) for regimens, the simulator and the closed-form PK."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkpd_lib.pmx import model, pk
from pkpd_lib.pmx import regimens as reg

TIMES = np.arange(0.0, 97.0, 2.0)

dose_times = st.lists(st.floats(0, 96, allow_nan=False), min_size=1, max_size=6, unique=True).map(
    sorted
)
amounts = st.floats(1.0, 300.0, allow_nan=False)


@st.composite
def schedules(draw):
    times = draw(dose_times)
    return reg.from_doses([(t, draw(amounts)) for t in times])


FAST = settings(max_examples=25, deadline=None)


@FAST
@given(schedules())
def test_amounts_and_concentrations_are_non_negative(regimen):
    sim = model.simulate(model.typical_params(1), regimen, TIMES)
    assert np.all(sim.conc_mg_L >= -1e-12)
    assert np.all(sim.states["Ag"] >= -1e-9)
    assert np.all(sim.pd >= model.TYPICAL_PARAMS["R0"] * (1 - 1e-9))  # stimulation only


@FAST
@given(schedules(), schedules())
def test_pk_superposition(a, b):
    """C under the union of two schedules equals the sum of C under each."""
    merged = sorted(a.doses() + b.doses())
    # equal times are allowed in a regimen; the simulator adds their amounts
    both = reg.from_doses(merged)
    p = model.typical_params(1)
    ca = model.simulate(p, a, TIMES).conc_mg_L
    cb = model.simulate(p, b, TIMES).conc_mg_L
    cab = model.simulate(p, both, TIMES).conc_mg_L
    np.testing.assert_allclose(cab, ca + cb, rtol=1e-6, atol=1e-9)


@FAST
@given(st.integers(1, 3), st.floats(20.0, 300.0))
def test_steady_state_is_approached(doses_per_day, daily_dose):
    """Troughs before successive doses rise and converge (elimination t1/2 about 2.3 h)."""
    r = reg.repeated(daily_dose, doses_per_day, days=6)
    sim = model.simulate(model.typical_params(1), r, r.times_h[1:])
    troughs = sim.conc_mg_L[0]
    assert np.all(np.diff(troughs) >= -1e-12)
    assert troughs[-1] == pytest.approx(troughs[-2], rel=1e-3, abs=1e-9)


@FAST
@given(st.lists(st.tuples(st.integers(0, 96), amounts), min_size=2, max_size=6))
def test_invariance_to_how_doses_are_listed(pairs):
    """Two doses at the same time act like one dose of their sum."""
    pairs = sorted(pairs)
    split = reg.from_doses(pairs)
    totals = {}
    for t, a in pairs:
        totals[t] = totals.get(t, 0.0) + a
    combined = reg.from_doses(sorted(totals.items()))
    p = model.typical_params(1)
    np.testing.assert_allclose(
        model.simulate(p, split, TIMES).pd, model.simulate(p, combined, TIMES).pd, rtol=1e-7
    )


bad_number = st.one_of(
    st.floats(max_value=-1e-6, allow_nan=False), st.just(float("nan")), st.just(float("inf"))
)


@FAST
@given(st.lists(st.tuples(st.floats(0, 100), bad_number), min_size=1, max_size=4))
def test_bad_amounts_always_raise(pairs):
    with pytest.raises(ValueError, match="amount"):
        reg.from_doses(sorted(pairs, key=lambda p: p[0]))


@FAST
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=6, unique=True))
def test_unsorted_or_negative_times_always_raise(times):
    if times == sorted(times) and min(times) >= 0:
        times = times[::-1]
    with pytest.raises(ValueError, match="dose times"):
        reg.from_doses([(t, 10.0) for t in times])


@FAST
@given(schedules(), st.floats(0.2, 3.0), st.floats(5.0, 40.0), st.floats(20.0, 120.0))
def test_closed_form_pk_matches_the_ode(regimen, ka, cl, v):
    """The closed-form PK used by the empirical Bayes fits is the simulator's PK."""
    p = model.Params(ka, cl, v, 1.0, 0.5, 2.0, 12.0, 0.1, 100.0)
    ode = model.simulate(p, regimen, TIMES).conc_mg_L
    closed = pk.one_compartment_conc([ka], [cl], [v], regimen, TIMES)
    np.testing.assert_allclose(closed, ode, rtol=1e-6, atol=1e-9)


@FAST
@given(
    st.integers(0, 10_000),
    st.integers(1, 12).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, 36))),
    st.floats(10.0, 500.0),
)
def test_random_schedules_average_the_daily_dose(seed, gap_h, daily_dose):
    for r in reg.random_schedules(3, seed=seed, daily_dose_mg=daily_dose, gap_h=gap_h):
        gaps = np.diff(r.times_h)
        assert np.all((gaps >= gap_h[0]) & (gaps <= gap_h[1]))
        np.testing.assert_allclose(r.amounts_mg[:-1], daily_dose * gaps / 24)
        assert r.times_h[-1] < 168
