import contextlib
import dataclasses
import re
import signal

import numpy as np
import pytest

from pkpd_lib.pmx import model as m
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.pmx.regimens import per_patient

HOURLY = np.arange(169.0)


def analytic_conc(params: m.Params, regimen: reg.Regimen, t: np.ndarray) -> np.ndarray:
    """One-compartment oral solution by superposition of single doses (mg/L), (N, T)."""
    ka, ke, v = params.ka[:, None], (params.CL / params.V)[:, None], params.V[:, None]
    c = np.zeros((params.n_patients, t.size))
    for td, amt in regimen.doses():
        dt = t - td
        after = dt > 0  # a dose at a sampling time is not yet in the sample (trough)
        dtp = np.where(after, dt, 0.0)
        c += np.where(
            after, amt / v * ka / (ka - ke) * (np.exp(-ke * dtp) - np.exp(-ka * dtp)), 0.0
        )
    return c


@pytest.fixture(scope="module")
def population():
    return sample_population(40, seed=7)


@pytest.mark.parametrize(
    "regimen", [reg.qd(), reg.bid(), reg.tid(), reg.from_doses([(0, 80), (30.5, 120)])]
)
def test_concentration_matches_analytic_solution(population, regimen):
    sim = m.simulate(population.params, regimen, HOURLY)
    expected = analytic_conc(population.params, regimen, HOURLY)
    np.testing.assert_allclose(sim.conc_mg_L, expected, rtol=1e-6, atol=1e-12)


def test_value_at_dose_time_is_the_trough():
    p = m.typical_params(1)
    sim = m.simulate(p, reg.qd(), np.array([0.0, 24.0, 24.5]))
    assert sim.conc_mg_L[0, 0] == 0.0
    assert sim.states["Ag"][0, 0] == 0.0  # the 0 h dose is not yet in the gut
    # just before the second dose the gut holds only what is left of the first one
    assert sim.states["Ag"][0, 1] == pytest.approx(100.0 * np.exp(-24.0), abs=1e-6)
    assert sim.states["Ag"][0, 2] > 50.0  # after it, the new dose is there


def test_pd_stays_at_baseline_without_drug(population):
    tiny = reg.from_doses([(200.0, 1.0)])  # the only dose comes after the window
    sim = m.simulate(population.params, tiny, HOURLY)
    np.testing.assert_allclose(
        sim.pd, population.params.R0[:, None] * np.ones((1, HOURLY.size)), rtol=1e-9
    )
    assert np.all(sim.conc_mg_L == 0.0)


def test_pk_is_linear_in_dose(population):
    low = m.simulate(population.params, reg.qd(50.0), HOURLY)
    high = m.simulate(population.params, reg.qd(150.0), HOURLY)
    np.testing.assert_allclose(high.conc_mg_L, 3 * low.conc_mg_L, rtol=1e-6, atol=1e-12)
    assert np.all(high.pd[:, 1:] > low.pd[:, 1:])  # but PD is not linear: it saturates


def test_pd_is_delayed_behind_concentration():
    sim = m.simulate(
        m.typical_params(1), reg.from_doses([(0.0, 100.0)]), np.arange(0.0, 97.0, 0.25)
    )
    t_cmax = sim.times_h[np.argmax(sim.conc_mg_L[0])]
    t_pdmax = sim.times_h[np.argmax(sim.pd[0])]
    assert t_cmax < 5.0
    assert t_pdmax > t_cmax + 10.0  # transit chain (MTT 12 h) plus turnover


def test_vectorised_equals_per_patient(population):
    regimens = [reg.qd(), reg.bid(), reg.tid()] * 13 + [reg.from_doses([(5, 60)])]
    together = m.simulate(population.params, regimens, HOURLY)
    for i in range(0, population.n_patients, 7):
        alone = m.simulate(population.params.subset([i]), regimens[i], HOURLY)
        np.testing.assert_allclose(together.pd[i], alone.pd[0], rtol=1e-7)
        np.testing.assert_allclose(together.conc_mg_L[i], alone.conc_mg_L[0], rtol=1e-6, atol=1e-12)
        for name in m.STATE_NAMES:
            np.testing.assert_allclose(
                together.states[name][i], alone.states[name][0], rtol=1e-6, atol=1e-9
            )


def test_params_from_mapping_and_object():
    d = {k: np.array([v]) for k, v in m.TYPICAL_PARAMS.items()}
    a = m.simulate(d, reg.qd(), HOURLY)
    b = m.simulate(m.typical_params(1), reg.qd(), HOURLY)
    np.testing.assert_array_equal(a.pd, b.pd)


@pytest.mark.parametrize(
    "times, message",
    [
        ([0, 2, 1], "strictly increasing"),
        ([0, 1, 1], "strictly increasing"),
        ([-1, 0], ">= 0"),
        ([0, np.nan], "finite"),
        ([], "non-empty"),
        ([[0, 1]], "1-D"),
    ],
)
def test_bad_times_raise(times, message):
    with pytest.raises(ValueError, match=message):
        m.simulate(m.typical_params(1), reg.qd(), np.array(times, dtype=float))


def test_bad_params_raise():
    good = dict(m.TYPICAL_PARAMS)
    with pytest.raises(ValueError, match="missing PK/PD parameter"):
        m.simulate({k: v for k, v in good.items() if k != "CL"}, reg.qd(), HOURLY)
    with pytest.raises(ValueError, match="unknown PK/PD parameter"):
        m.simulate({**good, "F": 1.0}, reg.qd(), HOURLY)
    with pytest.raises(ValueError, match="'V' contains NaN"):
        m.simulate({**good, "V": np.nan}, reg.qd(), HOURLY)
    with pytest.raises(ValueError, match="'CL' must be > 0"):
        m.simulate({**good, "CL": -1.0}, reg.qd(), HOURLY)
    with pytest.raises(ValueError, match="shape"):
        m.simulate({**good, "CL": np.ones(3), "V": np.ones(2)}, reg.qd(), HOURLY)


def test_bad_regimen_arguments_raise():
    p = m.typical_params(2)
    with pytest.raises(ValueError, match="2 patients"):
        m.simulate(p, [reg.qd()] * 3, HOURLY)
    with pytest.raises(TypeError, match="Regimen"):
        m.simulate(p, [(0, 100)] * 2, HOURLY)


def _with_one_patient(population, **changes):
    params = {k: np.append(v, v[0]) for k, v in population.params.as_dict().items()}
    for name, value in changes.items():
        params[name][-1] = value
    return params


def test_a_stiff_patient_is_integrated_apart_and_correctly(population):
    stiff = _with_one_patient(population, ka=1e3)  # absorption half-life 2.5 s
    rates = m.TRANSIT_TURNOVER.rates(m.structure_params(m.TRANSIT_TURNOVER, stiff))
    assert m.stiff_patients(rates).tolist() == [False] * population.params.n_patients + [True]
    sim = m.simulate(stiff, reg.bid(), HOURLY)
    normal = m.simulate(population.params, reg.bid(), HOURLY)
    np.testing.assert_array_equal(sim.pd[:-1], normal.pd)  # the others are untouched
    expected = analytic_conc(m.as_params(stiff).subset([-1]), reg.bid(), HOURLY)
    np.testing.assert_allclose(sim.conc_mg_L[-1:], expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ka": 1e5}, r"patient\(s\) \[40\]: ka = 1e\+05 1/h is a half-life below one second"),
        ({"V": 1e-6}, r"patient\(s\) \[40\]: CL/V = .* half-life below one second"),
    ],
)
def test_implausible_rates_are_refused_naming_patient_and_parameter(population, changes, message):
    with pytest.raises(ValueError, match=message):
        m.simulate(_with_one_patient(population, **changes), reg.qd(), HOURLY)


def test_stiffness_of_no_rates_is_an_error_not_a_stack_failure():
    """Before: numpy's "need at least one array to stack"."""
    with pytest.raises(ValueError, match="rates must hold at least one rate constant"):
        m.stiff_patients({})


def test_times_beyond_a_sane_horizon_are_refused(population):
    with pytest.raises(ValueError, match="at most 1e\\+06 h"):
        m.simulate(population.params, reg.qd(), [0.0, 1e300])


def test_a_new_structure_is_one_registration(population):
    """Adding a model structure: a right-hand side, initial state and PD read-out."""
    direct = m.Structure(
        name="direct_emax_test",
        parameters=("ka", "CL", "V", "Emax", "EC50", "R0"),
        states=("Ag", "Ac"),
        make_rhs=lambda p: (
            lambda t, y: np.concatenate(
                (
                    -p["ka"] * y[: p["ka"].size],
                    p["ka"] * y[: p["ka"].size] - p["CL"] / p["V"] * y[p["ka"].size :],
                )
            )
        ),
        initial=lambda p: np.zeros((2, p["ka"].size)),
        pd=lambda states, p: (
            p["R0"][:, None]
            * (
                1
                + p["Emax"][:, None]
                * (c := states["Ac"] / p["V"][:, None])
                / (p["EC50"][:, None] + c)
            )
        ),
        rates=lambda p: {"ka": p["ka"], "CL/V": p["CL"] / p["V"]},
    )
    try:
        m.add_structure(direct)
        with pytest.raises(ValueError, match="exists already"):
            m.add_structure(direct)
        sim = m.simulate_structure("direct_emax_test", population.params, reg.qd(), HOURLY)
        default = m.simulate(population.params, reg.qd(), HOURLY)
        np.testing.assert_allclose(sim.conc_mg_L, default.conc_mg_L, rtol=1e-7, atol=1e-12)
        assert np.all(sim.pd >= population.params.R0[:, None])
    finally:
        m.STRUCTURES.pop("direct_emax_test", None)
    with pytest.raises(ValueError, match="needs parameter"):
        m.simulate_structure(m.SECOND_TURNOVER, population.params, reg.qd(), HOURLY)


@contextlib.contextmanager
def _no_hang(seconds: int = 60):
    """Fail (TimeoutError) instead of hanging if the body runs longer than ``seconds``."""
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - not on Windows
        yield
        return

    def _timeout(*_):
        raise TimeoutError(f"still running after {seconds} s: the simulation hangs")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize(
    ("changes", "shown"),
    [({"gam": 2000.0}, r"gam = 2000\b"), ({"EC50": 1e-300}, r"EC50 = 1e-300 mg/L")],
)
def test_a_nan_right_hand_side_raises_naming_patient_and_parameters(changes, shown):
    """EC50**gam underflows to 0, so E = 0/0 at C = 0: this used to hang (a NaN step)."""
    with _no_hang(), pytest.raises(m.NonFiniteStateError, match=r"NaN or inf") as err:
        m.simulate({**m.TYPICAL_PARAMS, **changes}, reg.qd(), [0.0, 24.0])
    message = str(err.value)
    assert "patient(s) [0]; patient 0 has ka = 1 1/h, CL = 15 L/h" in message
    assert re.search(shown, message), message
    assert isinstance(err.value, ValueError)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("ka", [1.0, 1e3])  # 1e3: a stiff patient, PK in closed form
def test_the_nan_patient_is_named_within_a_population(population, ka):
    params = _with_one_patient(population, gam=2000.0, ka=ka)
    with _no_hang(), pytest.raises(ValueError, match=r"patient\(s\) \[40\]; patient 40 has") as err:
        m.simulate(params, reg.qd(), [0.0, 24.0])
    assert f"ka = {ka:g} 1/h" in str(err.value)
    assert err.value.patients.tolist() == [40]


def _custom_structure(name, make_rhs):
    """A one-compartment oral PK structure with the given right-hand side."""
    return m.Structure(
        name=name,
        parameters=("ka", "CL", "V"),
        states=("Ag", "Ac"),
        make_rhs=make_rhs,
        initial=lambda p: np.zeros((2, p["ka"].size)),
        pd=lambda states, p: states["Ac"] / p["V"][:, None],
        rates=lambda p: {"ka": p["ka"], "CL/V": p["CL"] / p["V"]},
    )


def _pk_rhs(p, ke_factor=1.0, nan_when=None, sign=1.0):
    ka, ke = p["ka"], ke_factor * p["CL"] / p["V"]
    bad = np.zeros(ka.size, bool) if nan_when is None else nan_when(p)

    def rhs(_t, y):
        ag, ac = y.reshape(2, -1)
        dac = np.where(bad, np.nan, sign * ka * ag - ke * ac)
        return np.concatenate((-ka * ag, dac))

    return rhs


def test_a_custom_structure_returning_nan_raises_naming_the_patient():
    nan_rhs = _custom_structure(
        "nan_rhs_test", lambda p: _pk_rhs(p, nan_when=lambda q: q["CL"] > 100.0)
    )
    params = {"ka": 1.0, "CL": np.array([10.0, 200.0, 20.0]), "V": 50.0}
    with _no_hang(), pytest.raises(ValueError, match=r"'nan_rhs_test'.*patient\(s\) \[1\]"):
        m.simulate_structure(nan_rhs, params, reg.qd(), HOURLY)


def test_a_runaway_integration_is_capped(monkeypatch):
    """A model far stiffer than its rates say (elimination 3e4/h reported as 0.3/h)."""
    stiff = _custom_structure("hidden_stiff_test", lambda p: _pk_rhs(p, ke_factor=1e5))
    monkeypatch.setattr(m, "MAX_RHS_CALLS_BASE", 2_000)
    monkeypatch.setattr(m, "MAX_RHS_CALLS_PER_H", 10)
    with _no_hang(), pytest.raises(m.IntegrationLimitError, match=r"more than 2240 right-hand"):
        m.simulate_structure(stiff, {"ka": 1.0, "CL": 15.0, "V": 50.0}, reg.qd(), HOURLY)


def test_washout_concentrations_are_never_negative(population):
    """The integrator leaves Ac slightly below 0 (about -5e-12 mg/L) in a long washout;
    the simulator returns those as 0 and every other value bit for bit."""
    sim = m.simulate(population.params, reg.from_doses([(0.0, 100.0)]), np.arange(0, 1001.0, 2))
    raw = sim.states["Ac"] / population.params.V[:, None]
    assert (raw < 0).sum() > 100  # the case this test is about does occur
    assert raw.min() > -m.NEGATIVE_CONC_ABS_MG_L
    assert np.all(sim.conc_mg_L >= 0.0)
    np.testing.assert_array_equal(sim.conc_mg_L, np.where(raw < 0, 0.0, raw))


def test_a_clearly_negative_concentration_is_a_model_error_and_raises():
    wrong_sign = _custom_structure("wrong_sign_test", lambda p: _pk_rhs(p, sign=-1.0))
    with pytest.raises(ValueError, match=r"patient\(s\) \[0\].*below zero beyond"):
        m.simulate_structure(wrong_sign, {"ka": 1.0, "CL": 15.0, "V": 50.0}, reg.qd(), HOURLY)


def _counting(structure):
    """``structure`` with a right-hand side that counts its calls in ``calls[0]``."""
    calls = [0]

    def make_rhs(p):
        rhs = structure.make_rhs(p)

        def counted(t, y):
            calls[0] += 1
            return rhs(t, y)

        return counted

    return dataclasses.replace(structure, make_rhs=make_rhs), calls


@pytest.mark.slow
@pytest.mark.parametrize("linear_pk", [True, False])
def test_stiff_patients_agree_with_the_closed_form_and_cost_no_more_per_patient(linear_pk):
    # all patients stiff (absorption half-life 1 s): PK in closed form, or the implicit
    # integrator told the Jacobian's sparsity; both cost about the same for 10 or 100
    # patients, and agree with the analytic concentration
    structure = dataclasses.replace(m.TRANSIT_TURNOVER, linear_pk=linear_pk)
    calls = {}
    for n in (10, 100):
        p = {k: np.full(n, v) for k, v in m.TYPICAL_PARAMS.items()}
        p["ka"] = np.linspace(2000.0, 2400.0, n)
        counted, calls[n] = _counting(structure)
        sim = m.simulate_structure(counted, p, reg.bid(), HOURLY)
        expected = analytic_conc(m.as_params(p), reg.bid(), HOURLY)
        np.testing.assert_allclose(sim.conc_mg_L, expected, rtol=1e-6, atol=1e-9)
    assert calls[100][0] < 1.5 * calls[10][0], calls


def test_closed_form_pk_matches_the_integrated_model(population):
    # the closed-form path on typical (non-stiff) patients reproduces the full ODE
    p = m.structure_params(m.TRANSIT_TURNOVER, population.params.as_dict())
    regimens = per_patient(reg.from_doses([(0, 100), (7.5, 50), (30, 100)]), p["ka"].size)
    closed = m._integrate_closed_form_pk(m.TRANSIT_TURNOVER, p, regimens, HOURLY, 1e-9, 1e-12)
    full = m.simulate(population.params, regimens, HOURLY)
    for i, name in enumerate(m.STATE_NAMES):
        np.testing.assert_allclose(closed[i], full.states[name], rtol=1e-6, atol=1e-8)
