"""The default mechanistic PK/PD model of the hypothetical drug.

PK: one compartment, first-order absorption, linear elimination (amounts in mg, time in h)::

    dAg/dt = -ka*Ag                       (each dose AMT is added to Ag at its time; F = 1)
    dAc/dt =  ka*Ag - (CL/V)*Ac           C = Ac/V   [mg/L]

PD: sigmoid Emax drive -> 3 transit compartments -> indirect response (stimulated production)::

    E      = Emax*C^gam / (EC50^gam + C^gam)
    dT1/dt = ktr*(E  - T1);  dT2/dt = ktr*(T1 - T2);  dT3/dt = ktr*(T2 - T3);  ktr = 3/MTT
    dR/dt  = kin*(1 + T3) - kout*R,  kin = kout*R0,  R(0) = R0

All patients are integrated together as one vectorised ODE system (6 states per patient),
piecewise between dose events, with scipy's ``solve_ivp``.

Every model structure of the book lives here, each a :class:`Structure` (parameters,
states, a right-hand side, the initial state and how PD is read from the states)
simulated by the one dosed integrator, :func:`simulate_structure`: the default
(:data:`TRANSIT_TURNOVER`), the richer-PD variant with a second turnover
(:data:`SECOND_TURNOVER`), the effect-compartment model of the classical comparison
(:data:`EFFECT_COMPARTMENT`) and two interacting biomarkers, a response and its
moderator (:data:`FEEDBACK_TOLERANCE`). To add one, build a :class:`Structure` and pass it to
:func:`add_structure`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy import sparse
from scipy.integrate import solve_ivp

from . import pk
from .pk import dose_arrays
from .regimens import Regimen, per_patient

#: Parameter names, in the order used throughout the package, with their units.
PARAM_UNITS = {
    "ka": "1/h",
    "CL": "L/h",
    "V": "L",
    "Emax": "-",
    "EC50": "mg/L",
    "gam": "-",
    "MTT": "h",
    "kout": "1/h",
    "R0": "biomarker units",
}
PARAM_NAMES = tuple(PARAM_UNITS)

#: Typical values of the default model (a 70 kg, 45 year old man).
TYPICAL_PARAMS = {
    "ka": 1.0,
    "CL": 15.0,
    "V": 50.0,
    "Emax": 1.0,
    "EC50": 0.5,
    "gam": 2.0,
    "MTT": 12.0,
    "kout": 0.1,
    "R0": 100.0,
}

#: A patient whose fastest rate constant exceeds this (1/h) is stiff for the explicit
#: integrator: it is integrated apart, with an implicit method, so it cannot slow the rest.
STIFF_RATE_PER_H = 50.0
#: The implicit method for stiff patients (scipy's ``solve_ivp``), with the Jacobian's
#: sparsity given: each patient's states depend only on its own.
STIFF_METHOD = "Radau"
#: Rate constants above this (1/h), i.e. half-lives below one second, are refused as
#: implausible (usually a unit error, e.g. V in mL).
MAX_RATE_PER_H = 3600.0 * np.log(2.0)
#: Output times beyond this (h, about 114 years) are refused.
MAX_TIME_H = 1e6
#: Right-hand-side calls allowed for one integrated segment (between dose events): this
#: many, plus :data:`MAX_RHS_CALLS_PER_H` per hour of the segment (times one plus the
#: number of state values for LSODA, whose finite-difference Jacobian costs a call per
#: value; one plus the number of states for BDF and Radau, given the Jacobian's
#: sparsity). A correct model needs under 100 calls per hour; the cap turns a runaway
#: integration (a model far stiffer than its ``rates`` say) into an error, not a hang.
MAX_RHS_CALLS_BASE = 100_000
MAX_RHS_CALLS_PER_H = 10_000
#: The integrator's error leaves concentrations slightly below zero in the washout (seen
#: down to -2e-8 mg/L in a 1000-patient run); those are returned as 0. More negative than
#: -max(NEGATIVE_CONC_ABS_MG_L, NEGATIVE_CONC_REL * total dose / V) (mg/L) is a model
#: error and raises ``ValueError``.
NEGATIVE_CONC_ABS_MG_L = 1e-9
NEGATIVE_CONC_REL = 1e-6

#: State names, in the order of the ODE state vector.
STATE_NAMES = ("Ag", "Ac", "T1", "T2", "T3", "R")
STATE_UNITS = {"Ag": "mg", "Ac": "mg", "T1": "-", "T2": "-", "T3": "-", "R": "biomarker units"}


class NonFiniteStateError(ValueError):
    """The right-hand side returned, or a state became, NaN or inf.

    Parameters
    ----------
    message : str
        The error message.
    patients : array_like of int
        Indices of the patients concerned (in the integrated group for
        :func:`integrate_with_doses`, in the population for :func:`simulate_structure`);
        kept as the attribute ``patients``, an int array.
    time_h : float
        The time (h) at which it was found; kept as the attribute ``time_h``.
    """

    def __init__(self, message: str, patients, time_h: float) -> None:
        super().__init__(message)
        self.patients = np.asarray(patients, dtype=int)
        self.time_h = float(time_h)


class IntegrationLimitError(RuntimeError):
    """An integrated segment needed more right-hand-side calls than the cap allows (see
    :data:`MAX_RHS_CALLS_BASE`).

    Parameters
    ----------
    message : str
        The error message.
    patients : array_like of int
        Indices of the patients concerned, as in :class:`NonFiniteStateError`; kept as the
        attribute ``patients``, an int array.
    time_h : float
        The time (h) at which the cap was reached; kept as the attribute ``time_h``.
    """

    def __init__(self, message: str, patients, time_h: float) -> None:
        super().__init__(message)
        self.patients = np.asarray(patients, dtype=int)
        self.time_h = float(time_h)


@dataclass(frozen=True)
class Params:
    """Individual PK/PD parameters of N patients, each an array of shape (N,).

    Each is given as a scalar or an (N,) array (a scalar is repeated for every patient)
    and stored as a read-only float array (N,).

    Parameters
    ----------
    ka : float or array_like
        Absorption rate constant (1/h).
    CL : float or array_like
        Clearance (L/h).
    V : float or array_like
        Volume of distribution (L).
    Emax : float or array_like
        Maximal stimulation of the biomarker's production (dimensionless).
    EC50 : float or array_like
        Concentration of half the maximal effect (mg/L).
    gam : float or array_like
        Hill coefficient of the Emax model (dimensionless).
    MTT : float or array_like
        Mean transit time of the three transit compartments (h).
    kout : float or array_like
        Turnover rate constant of the biomarker (1/h).
    R0 : float or array_like
        Baseline of the biomarker (biomarker units).

    Raises
    ------
    ValueError
        A parameter that is neither a scalar nor of the patients' shape (N,), that contains
        NaN or inf, or that is not > 0.

    Examples
    --------
    >>> Params(**{**TYPICAL_PARAMS, "CL": [10.0, 20.0]}).n_patients
    2
    >>> Params(**{**TYPICAL_PARAMS, "V": -1.0})
    Traceback (most recent call last):
    ...
    ValueError: parameter 'V' must be > 0, got min np.float64(-1.0)
    """

    ka: np.ndarray
    CL: np.ndarray
    V: np.ndarray
    Emax: np.ndarray
    EC50: np.ndarray
    gam: np.ndarray
    MTT: np.ndarray
    kout: np.ndarray
    R0: np.ndarray

    def __post_init__(self) -> None:
        arrays = {
            f.name: np.atleast_1d(np.asarray(getattr(self, f.name), float)) for f in fields(self)
        }
        n = max(a.size for a in arrays.values())
        for name, a in arrays.items():
            if a.ndim != 1 or a.size not in (1, n):
                raise ValueError(
                    f"parameter {name!r} has shape {a.shape}; expected a scalar or shape ({n},)"
                )
            if not np.all(np.isfinite(a)):
                raise ValueError(f"parameter {name!r} contains NaN or inf")
            if np.any(a <= 0):
                raise ValueError(f"parameter {name!r} must be > 0, got min {a.min()!r}")
            a = np.broadcast_to(a, (n,)).copy()
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def n_patients(self) -> int:
        return self.ka.size

    def as_dict(self) -> dict[str, np.ndarray]:
        """The parameters by name, in the order of :data:`PARAM_NAMES`.

        Returns
        -------
        dict of str to numpy.ndarray
            Each parameter's (N,) array (the stored read-only arrays, not copies).
        """
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def subset(self, index) -> Params:
        """Parameters of the selected patients (any numpy index).

        Parameters
        ----------
        index : int, slice or array_like
            A numpy index into the N patients: an integer, a slice, integer positions or a
            boolean mask (N,).

        Returns
        -------
        Params
            The selected patients' parameters (one patient for an integer index).
        """
        return Params(**{k: np.atleast_1d(v[index]) for k, v in self.as_dict().items()})


def as_params(params: Params | Mapping[str, object] | object) -> Params:
    """Coerce a :class:`Params`, a mapping or any object with the parameter attributes.

    Parameters
    ----------
    params : Params, mapping or object
        A :class:`Params` (returned as it is); a mapping with exactly the names of
        :data:`PARAM_NAMES` as keys; or any object with those attributes (others are
        ignored). Values as :class:`Params` takes them.

    Returns
    -------
    Params

    Raises
    ------
    ValueError
        A mapping that lacks a parameter or has an unknown one (naming them), or values
        that :class:`Params` refuses.
    TypeError
        An object that is neither a :class:`Params` nor a mapping and lacks some of the
        attributes (naming them).

    Examples
    --------
    >>> as_params({**TYPICAL_PARAMS, "ka": [1.0, 2.0]}).n_patients
    2
    """
    if isinstance(params, Params):
        return params
    if isinstance(params, Mapping):
        missing = [k for k in PARAM_NAMES if k not in params]
        extra = [k for k in params if k not in PARAM_NAMES]
        if missing:
            raise ValueError(f"missing PK/PD parameter(s) {missing}; expected {list(PARAM_NAMES)}")
        if extra:
            raise ValueError(f"unknown PK/PD parameter(s) {extra}; expected {list(PARAM_NAMES)}")
        return Params(**{k: params[k] for k in PARAM_NAMES})
    missing = [k for k in PARAM_NAMES if not hasattr(params, k)]
    if missing:
        raise TypeError(
            f"params must be a Params, a mapping or an object with attributes {list(PARAM_NAMES)};"
            f" missing {missing}"
        )
    return Params(**{k: getattr(params, k) for k in PARAM_NAMES})


def typical_params(n: int = 1) -> Params:
    """The typical-value parameters, repeated for ``n`` identical patients.

    Parameters
    ----------
    n : int
        The number of patients (default 1).

    Returns
    -------
    Params
        :data:`TYPICAL_PARAMS`, each an (n,) array.

    Examples
    --------
    >>> typical_params(2).CL.tolist()
    [15.0, 15.0]
    """
    return Params(**{k: np.full(n, v) for k, v in TYPICAL_PARAMS.items()})


@dataclass(frozen=True)
class Simulation:
    """Noise-free model output for N patients at T requested times.

    A value at a dose time is the one just before that dose (the trough).

    Attributes
    ----------
    times_h : numpy.ndarray
        The output times (h), (T,).
    conc_mg_L : numpy.ndarray
        Concentration (mg/L), (N, T): ``Ac / V`` with the integrator's tiny negative values
        in the washout set to 0 (see :data:`NEGATIVE_CONC_ABS_MG_L`).
    pd : numpy.ndarray
        The observed PD (biomarker units), (N, T).
    states : dict of str to numpy.ndarray
        Each state name in :data:`STATE_NAMES` (for :func:`simulate_structure`: the
        structure's states) mapped to an (N, T) array, as integrated (not clipped).
    biomarkers : dict of str to numpy.ndarray
        Every observed biomarker by name, each (N, T) (biomarker units), the first
        ``pd`` itself: ``{"PD": pd}`` for a structure with one (see
        :attr:`Structure.outputs`).

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> sim = simulate(typical_params(), regimens.qd(), [0.0, 1.0])
    >>> sorted(sim.states), sim.conc_mg_L.shape
    (['Ac', 'Ag', 'R', 'T1', 'T2', 'T3'], (1, 2))
    """

    times_h: np.ndarray
    conc_mg_L: np.ndarray
    pd: np.ndarray
    states: dict[str, np.ndarray]
    biomarkers: dict[str, np.ndarray] | None = None

    def __post_init__(self):
        if self.biomarkers is None:
            object.__setattr__(self, "biomarkers", {"PD": self.pd})


def _transit_turnover_rhs(p: Mapping[str, np.ndarray]):
    ka, ke, ktr = p["ka"], p["CL"] / p["V"], 3.0 / p["MTT"]
    emax, ec50_g, gam = p["Emax"], p["EC50"] ** p["gam"], p["gam"]
    kout, kin = p["kout"], p["kout"] * p["R0"]
    inv_v = 1.0 / p["V"]
    n = ka.size

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        ag, ac, t1, t2, t3, r = y[: 6 * n].reshape(6, n)
        c_g = np.maximum(ac * inv_v, 0.0) ** gam
        effect = emax * c_g / (ec50_g + c_g)
        return np.concatenate(
            (
                -ka * ag,
                ka * ag - ke * ac,
                ktr * (effect - t1),
                ktr * (t1 - t2),
                ktr * (t2 - t3),
                kin * (1.0 + t3) - kout * r,
            )
        )

    return rhs


def _check_times(times_h) -> np.ndarray:
    times = np.asarray(times_h, dtype=float)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"times_h must be a non-empty 1-D array, got shape {times.shape}")
    if not np.all(np.isfinite(times)):
        raise ValueError("times_h must be finite (found NaN or inf)")
    if np.any(times < 0):
        raise ValueError("times_h must be >= 0 h (the simulation starts at 0 h)")
    if np.any(times > MAX_TIME_H):
        raise ValueError(f"times_h must be at most {MAX_TIME_H:g} h, got {times.max():g}")
    if np.any(np.diff(times) <= 0):
        raise ValueError("times_h must be strictly increasing")
    return times


def _dose_matrix(regimen: Regimen | Sequence[Regimen], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of dose times (E,) and per-patient amounts (E, N), 0 where a patient has none
    (from :func:`pkpd_lib.pmx.pk.dose_arrays`; its padding is the 0 mg entries)."""
    times, amounts = dose_arrays(regimen, n)
    given = amounts > 0
    event_times = np.unique(times[given])
    per_event = np.zeros((event_times.size, n))
    for j in range(n):
        doses = given[j]
        np.add.at(per_event[:, j], np.searchsorted(event_times, times[j, doses]), amounts[j, doses])
    return event_times, per_event


def integrate_with_doses(
    rhs,
    y0: np.ndarray,
    regimen: Regimen | Sequence[Regimen],
    times_h,
    dose_state: int = 0,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> np.ndarray:
    """Integrate a vectorised ODE for N patients with bolus doses; (S, N, T) states.

    Integration runs piecewise between dose events; at an output time equal to a dose
    time the state just before the dose is reported (the trough). Any model with bolus
    doses can reuse this.

    A right-hand side or state that turns NaN or inf raises :class:`NonFiniteStateError`
    and a segment that needs too many calls of ``rhs`` raises
    :class:`IntegrationLimitError`: neither can run forever. Neither check changes a
    finite result.

    Parameters
    ----------
    rhs : callable
        ``rhs(t, y)``: the derivatives at time ``t`` (h) of the flat state vector ``y`` of
        S states x N patients (state-major, as ``y0.ravel()``), in the same layout.
    y0 : array_like
        The (S, N) state at 0 h, finite.
    regimen : Regimen or sequence of Regimen
        One :class:`~pkpd_lib.pmx.regimens.Regimen` shared by the N patients, or one each.
    times_h : array_like
        Output times (h), (T,): non-empty, finite, >= 0, strictly increasing and at most
        :data:`MAX_TIME_H`.
    dose_state : int
        The state (row of ``y0``) each dose's amount is added to, for its patient.
    rtol, atol : float
        Tolerances of scipy's ``solve_ivp``.
    method : str
        The ``solve_ivp`` method: explicit ``"DOP853"`` by default; the implicit
        ``"Radau"`` or ``"BDF"`` for stiff patients, told that each patient's states
        depend only on its own, so the Jacobian costs S evaluations of ``rhs``, not S x N.

    Returns
    -------
    numpy.ndarray
        The states (S, N, T) at ``times_h``.

    Raises
    ------
    ValueError
        ``y0`` that is not 2-D, ``times_h`` that breaks the rules above, or a number of
        regimens other than one or N.
    NonFiniteStateError
        ``y0``, a state or the right-hand side is NaN or inf (naming the patients, by
        index in ``y0``).
    IntegrationLimitError
        A segment needs more calls of ``rhs`` than :data:`MAX_RHS_CALLS_BASE` plus
        :data:`MAX_RHS_CALLS_PER_H` per hour of the segment.

    Examples
    --------
    One state decaying at 0.5/h, a bolus of 10 at 0 h and at 2 h (reported just before):

    >>> import numpy as np
    >>> from pkpd_lib.pmx import regimens
    >>> out = integrate_with_doses(lambda t, y: -0.5 * y, np.zeros((1, 1)),
    ...                            regimens.from_doses([(0, 10.0), (2, 10.0)]), [1.0, 2.0, 3.0])
    >>> out[0, 0].round(3)
    array([6.065, 3.679, 8.297])
    """
    y = np.array(y0, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y0 must be (states, patients), got shape {y.shape}")
    n_states, n = y.shape
    times = _check_times(times_h)
    event_times, amounts = _dose_matrix(regimen, n)
    _check_finite_states(y, 0.0, "the initial state")
    out = np.empty((n_states, n, times.size))
    implicit = {}
    if method in ("BDF", "Radau"):
        # a patient's states depend only on its own states: the Jacobian is S x S blocks
        # of diagonals, estimated from S evaluations of ``rhs`` instead of S x N
        implicit["jac_sparsity"] = sparse.kron(np.ones((n_states, n_states)), sparse.eye(n))
    t_now, done = 0.0, 0  # done: how many output times are filled
    # Segment ends: every dose time, then the last output time. Each output time is filled
    # by the segment that ends at or after it, so a time equal to a dose time gets the
    # state just before that dose.
    for t_end, dose in [*zip(event_times, amounts, strict=True), (times[-1], None)]:
        if done == times.size:
            break
        n_seg = int(np.searchsorted(times, t_end, side="right")) - done
        if t_end > t_now:
            seg_times = times[done : done + n_seg]
            t_eval = seg_times if n_seg and seg_times[-1] == t_end else np.append(seg_times, t_end)
            max_calls = MAX_RHS_CALLS_BASE + MAX_RHS_CALLS_PER_H * (t_end - t_now) * (
                1 + (y.size if method == "LSODA" else n_states if implicit else 0)
            )
            sol = solve_ivp(
                _guarded_rhs(rhs, y.shape, max_calls, t_now, t_end),
                (t_now, t_end),
                y.ravel(),
                method=method,
                t_eval=t_eval,
                rtol=rtol,
                atol=atol,
                **implicit,
            )
            if not sol.success:  # pragma: no cover - integrator failure is exceptional
                raise RuntimeError(f"ODE integration failed on {t_now}-{t_end} h: {sol.message}")
            seg = sol.y.reshape(n_states, n, t_eval.size)
            _check_finite_states(seg, t_end, f"a state on {t_now:g}-{t_end:g} h")
            out[:, :, done : done + n_seg] = seg[:, :, :n_seg]
            y = seg[:, :, -1].copy()
            t_now = float(t_end)
        else:  # outputs at this very time (t == 0 before the first dose)
            out[:, :, done : done + n_seg] = y[:, :, None]
        done += n_seg
        if dose is not None:
            y[dose_state] += dose
    return out


def _check_finite_states(y: np.ndarray, time_h: float, what: str) -> None:
    """Raise :class:`NonFiniteStateError` if ``y`` (S, N, ...) holds NaN or inf."""
    finite = np.isfinite(y).all(axis=tuple(i for i in range(y.ndim) if i != 1))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise NonFiniteStateError(f"{what} is NaN or inf", bad, time_h)


def _guarded_rhs(rhs, shape: tuple[int, int], max_calls: float, t_start: float, t_end: float):
    """``rhs`` that raises instead of returning NaN/inf or running past ``max_calls``.

    Parameters
    ----------
    rhs
        The right-hand side ``rhs(t, y)`` over the flat state vector (state-major).
    shape
        ``(S, N)``: states and patients, to name the patients at fault.
    max_calls
        Calls allowed before :class:`IntegrationLimitError` is raised.
    t_start, t_end
        The segment (h), for the messages.
    """
    n_states, n = shape
    calls = 0

    def guarded(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > max_calls:
            raise IntegrationLimitError(
                f"more than {max_calls:.0f} right-hand-side calls on {t_start:g}-{t_end:g} h "
                f"(stopped at t = {t:.6g} h): the model is far stiffer than its rates say",
                np.arange(n),
                t,
            )
        f = rhs(t, y)
        if not np.all(np.isfinite(f)):
            f_arr, y_arr = np.asarray(f, dtype=float), np.asarray(y, dtype=float)
            if f_arr.size == n_states * n and y_arr.size == n_states * n:
                finite = np.isfinite(f_arr.reshape(n_states, n)) & np.isfinite(
                    y_arr.reshape(n_states, n)
                )
                bad = np.flatnonzero(~finite.all(axis=0))
            else:
                bad = np.arange(n)
            raise NonFiniteStateError(
                f"the right-hand side returned NaN or inf at t = {t:.6g} h", bad, t
            )
        return f

    return guarded


@dataclass(frozen=True)
class Structure:
    """A model structure, simulated by :func:`simulate_structure`.

    Parameters
    ----------
    name : str
        Its name in :data:`STRUCTURES` (unique).
    parameters : tuple of str
        Names of the per-patient parameters it reads (each > 0; ``ka``, ``CL`` and ``V``
        are always among them: doses go into the depot ``Ag``, and the concentration is
        ``Ac / V``).
    states : tuple of str
        State names, starting ``("Ag", "Ac")``.
    make_rhs : callable
        ``make_rhs(p)``: given a mapping of (N,) parameter arrays, the vectorised
        right-hand side ``rhs(t, y)`` over the flat state vector (state-major, S x N).
    initial : callable
        ``initial(p)``: the (S, N) state at 0 h.
    pd : callable
        ``pd(states, p)``: the observed PD (N, T) from the states (each (N, T)).
    rates : callable
        ``rates(p)``: its first-order rate constants (1/h), by name, which decide which
        patients are stiff.
    description : str
        A description in words.
    linear_pk : bool
        Its ``Ag`` and ``Ac`` follow the linear one-compartment model (``dAg/dt = -ka Ag``,
        ``dAc/dt = ka Ag - CL/V Ac``, both 0 at 0 h), so a patient stiff only through
        ``ka`` or ``CL/V`` gets them in closed form and only the other states are
        integrated (see :func:`simulate_structure`).
    outputs : callable, optional
        ``outputs(states, p)``: every observed biomarker by name, each (N, T), the first
        the one ``pd`` gives; for a structure with more than one observed biomarker
        (:data:`FEEDBACK_TOLERANCE`). None: ``pd`` alone, named ``"PD"``.

    Examples
    --------
    >>> sorted(STRUCTURES)
    ['effect_compartment', 'feedback_tolerance', 'second_turnover', 'transit_turnover']
    >>> EFFECT_COMPARTMENT.states
    ('Ag', 'Ac', 'Ce')
    """

    name: str
    parameters: tuple[str, ...]
    states: tuple[str, ...]
    make_rhs: Callable[[Mapping[str, np.ndarray]], Callable]
    initial: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    pd: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]
    rates: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    description: str = ""
    linear_pk: bool = False
    outputs: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], dict] | None = None


#: Every model structure by name (see :func:`add_structure`).
STRUCTURES: dict[str, Structure] = {}


def add_structure(structure: Structure) -> Structure:
    """Register ``structure`` under its name (names are unique) and return it.

    Parameters
    ----------
    structure : Structure
        The structure to add to :data:`STRUCTURES`.

    Returns
    -------
    Structure
        ``structure`` itself.

    Raises
    ------
    ValueError
        A structure of that name exists already, or its states do not start with
        ``("Ag", "Ac")`` or its parameters lack ``ka``, ``CL`` or ``V``.

    Examples
    --------
    >>> add_structure(TRANSIT_TURNOVER)
    Traceback (most recent call last):
    ...
    ValueError: a structure named 'transit_turnover' exists already
    """
    if structure.name in STRUCTURES:
        raise ValueError(f"a structure named {structure.name!r} exists already")
    if structure.states[:2] != ("Ag", "Ac") or not {"ka", "CL", "V"} <= set(structure.parameters):
        raise ValueError("a structure starts with states ('Ag', 'Ac') and reads ka, CL and V")
    STRUCTURES[structure.name] = structure
    return structure


def _pk_rates(p) -> dict[str, np.ndarray]:
    return {"ka": p["ka"], "CL/V": p["CL"] / p["V"]}


def _turnover_initial(p) -> np.ndarray:
    y0 = np.zeros((len(STATE_NAMES), p["ka"].size))
    y0[STATE_NAMES.index("R")] = p["R0"]
    return y0


#: The default structure: transit compartments into a stimulated turnover (see the module
#: docstring).
TRANSIT_TURNOVER = add_structure(
    Structure(
        name="transit_turnover",
        parameters=PARAM_NAMES,
        states=STATE_NAMES,
        make_rhs=_transit_turnover_rhs,
        initial=_turnover_initial,
        pd=lambda states, p: states["R"],
        rates=lambda p: {**_pk_rates(p), "3/MTT": 3.0 / p["MTT"], "kout": p["kout"]},
        description="the default model: sigmoid Emax -> 3 transit compartments -> turnover",
        linear_pk=True,
    )
)


def _second_turnover_rhs(p):
    base, kout2, n = _transit_turnover_rhs(p), p["kout2"], p["ka"].size

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        r, r2 = y[5 * n : 6 * n], y[6 * n :]
        return np.concatenate((base(t, y), kout2 * (r - r2)))

    return rhs


def _second_turnover_initial(p) -> np.ndarray:
    y0 = np.zeros((len(STATE_NAMES) + 1, p["ka"].size))
    y0[5] = y0[6] = p["R0"]
    return y0


#: The richer-PD variant: the default model's ``R`` drives a second biomarker ``R2``
#: (observed) through a second turnover, ``dR2/dt = kout2 * (R - R2)``, ``R2(0) = R0``.
SECOND_TURNOVER = add_structure(
    Structure(
        name="second_turnover",
        parameters=(*PARAM_NAMES, "kout2"),
        states=(*STATE_NAMES, "R2"),
        make_rhs=_second_turnover_rhs,
        initial=_second_turnover_initial,
        pd=lambda states, p: states["R2"],
        rates=lambda p: {**TRANSIT_TURNOVER.rates(p), "kout2": p["kout2"]},
        description="the default model with a second turnover after R (richer PD)",
        linear_pk=True,
    )
)


def _effect_compartment_rhs(p):
    ka, ke, ke0, v, n = p["ka"], p["CL"] / p["V"], p["ke0"], p["V"], p["ka"].size

    def rhs(_t, y):
        ag, ac, ce = y.reshape(3, n)
        return np.concatenate((-ka * ag, ka * ag - ke * ac, ke0 * (ac / v - ce)))

    return rhs


def _effect_compartment_pd(states, p) -> np.ndarray:
    gam = p["gam"][:, None]
    ce_g = np.maximum(states["Ce"], 0.0) ** gam
    emax, ec50, r0 = p["Emax"][:, None], p["EC50"][:, None], p["R0"][:, None]
    return r0 * (1 + emax * ce_g / (ec50**gam + ce_g))


#: A simpler PD structure (misspecified for the default drug): an effect compartment
#: (``ke0`` 1/h) and a direct sigmoid Emax, ``PD = R0 (1 + Emax Ce^g / (EC50^g + Ce^g))``.
EFFECT_COMPARTMENT = add_structure(
    Structure(
        name="effect_compartment",
        parameters=("ka", "CL", "V", "Emax", "EC50", "gam", "ke0", "R0"),
        states=("Ag", "Ac", "Ce"),
        make_rhs=_effect_compartment_rhs,
        initial=lambda p: np.zeros((3, p["ka"].size)),
        pd=_effect_compartment_pd,
        rates=lambda p: {**_pk_rates(p), "ke0": p["ke0"]},
        description="effect compartment and direct sigmoid Emax on the biomarker",
        linear_pk=True,
    )
)


#: Units of the parameters of :data:`FEEDBACK_TOLERANCE` beyond the PK ones.
FEEDBACK_UNITS = {
    "Imax": "-",
    "IC50": "mg/L",
    "gam": "-",
    "kout": "1/h",
    "R0": "biomarker units",
    "ktol": "1/h",
}

#: Typical values of :data:`FEEDBACK_TOLERANCE`: the default drug's PK, a drug that
#: inhibits at most 90% of the response's production (IC50 0.3 mg/L, Hill 2), the
#: response's turnover as the default model's (kout 0.1/h, a 7 h half-life, baseline
#: 100) and a slower moderator (ktol 0.03/h, a 23 h half-life): tolerance builds over
#: days, and differently under QD, BID and TID (100 mg a day: on day 7 the response
#: averages 86, 81 and 78, and rebounds to 108, 111 and 112 after the last dose).
FEEDBACK_TYPICAL = {
    "ka": 1.0,
    "CL": 15.0,
    "V": 50.0,
    "Imax": 0.9,
    "IC50": 0.3,
    "gam": 2.0,
    "kout": 0.1,
    "R0": 100.0,
    "ktol": 0.03,
}


def _feedback_rhs(p):
    imax = p["Imax"]
    if np.any(imax >= 1.0):
        bad = np.flatnonzero(imax >= 1.0)
        raise ValueError(
            f"Imax must be < 1 (the fraction of production the drug can inhibit), got "
            f"{imax[bad[0]]:.6g} for patient(s) {bad[:5].tolist()}"
        )
    ka, ke, inv_v = p["ka"], p["CL"] / p["V"], 1.0 / p["V"]
    ic50_g, gam, kout, r0, ktol = p["IC50"] ** p["gam"], p["gam"], p["kout"], p["R0"], p["ktol"]
    kin = kout * r0
    n = ka.size

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        ag, ac, r, m = y.reshape(4, n)
        c_g = np.maximum(ac * inv_v, 0.0) ** gam
        inhibition = imax * c_g / (ic50_g + c_g)
        return np.concatenate(
            (
                -ka * ag,
                ka * ag - ke * ac,
                kin * (1.0 - inhibition) * r0 / m - kout * r,
                ktol * (r - m),
            )
        )

    return rhs


def _feedback_initial(p) -> np.ndarray:
    y0 = np.zeros((4, p["ka"].size))
    y0[2] = y0[3] = p["R0"]
    return y0


#: Interacting biomarkers: a response ``R`` and its moderator ``M``, both observed, that
#: act on each other (a tolerance / moderator model after Gabrielsson and Peletier). The
#: drug inhibits the production of ``R``; ``M`` follows ``R`` and divides its
#: production, so as ``R`` falls, ``M`` falls after it and production recovers
#: (tolerance)::
#:
#:     I      = Imax*C^gam / (IC50^gam + C^gam)            (0 < Imax < 1)
#:     dR/dt  = kout*R0*(1 - I)*R0/M - kout*R,  R(0) = R0
#:     dM/dt  = ktol*(R - M),                   M(0) = R0
#:
#: Under a constant concentration both settle at ``R0*sqrt(1 - I)`` (without the
#: moderator ``R`` would settle at ``R0*(1 - I)``); after the last dose ``M`` is still
#: low, so ``R`` rises above its baseline (rebound) before both return to ``R0``.
FEEDBACK_TOLERANCE = add_structure(
    Structure(
        name="feedback_tolerance",
        parameters=tuple(("ka", "CL", "V", *FEEDBACK_UNITS)),
        states=("Ag", "Ac", "R", "M"),
        make_rhs=_feedback_rhs,
        initial=_feedback_initial,
        pd=lambda states, p: states["R"],
        rates=lambda p: {**_pk_rates(p), "kout": p["kout"], "ktol": p["ktol"]},
        description="inhibited production of R, divided by its moderator M (both observed)",
        linear_pk=True,
        outputs=lambda states, p: {"R": states["R"], "M": states["M"]},
    )
)


def structure_params(structure: Structure, params: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The parameters ``structure`` reads, as (N,) float arrays, each finite and > 0.

    Parameters
    ----------
    structure : Structure
        The structure whose :attr:`~Structure.parameters` are taken.
    params : mapping
        Parameter values by name, each a scalar or (N,) (a scalar is repeated for every
        patient); names the structure does not read are ignored.

    Returns
    -------
    dict of str to numpy.ndarray
        Each of the structure's parameters, (N,).

    Raises
    ------
    ValueError
        A parameter the structure reads is missing, neither a scalar nor (N,), not finite
        or not > 0.

    Examples
    --------
    >>> structure_params(EFFECT_COMPARTMENT, {**TYPICAL_PARAMS, "ke0": 0.5})["ke0"]
    array([0.5])
    """
    missing = [k for k in structure.parameters if k not in params]
    if missing:
        raise ValueError(f"structure {structure.name!r} needs parameter(s) {missing}")
    arrays = {k: np.atleast_1d(np.asarray(params[k], float)) for k in structure.parameters}
    n = max(a.size for a in arrays.values())
    for name, a in arrays.items():
        if a.ndim != 1 or a.size not in (1, n):
            raise ValueError(f"parameter {name!r} has shape {a.shape}; expected () or ({n},)")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"parameter {name!r} must be finite and > 0")
    return {k: np.broadcast_to(a, (n,)).astype(float) for k, a in arrays.items()}


#: The rates of the linear PK part that the closed form takes over (see
#: :func:`_closed_form_pk`), by their name in the built-in structures' ``rates``.
PK_RATE_NAMES = ("ka", "CL/V")


def _closed_form_pk(p: Mapping[str, np.ndarray], dose_t, dose_amt, t) -> np.ndarray:
    """Amounts in the depot and the central compartment (mg), (2, N, T), of the linear
    one-compartment model at times ``t`` (T,), doses (N, E) of
    :func:`pkpd_lib.pmx.pk.dose_arrays` superposed (:mod:`pkpd_lib.pmx.pk`'s kernels).
    A dose at exactly a time counts after it (the trough convention)."""
    # the depot empties at rate ka: an IV bolus kernel with CL/V = ka and V = 1 L
    depot = pk.superpose(pk.iv_bolus, dose_t, dose_amt, t, cl=p["ka"], v=1.0)
    central = p["V"][:, None] * pk.oral_conc(p["ka"], p["CL"], p["V"], dose_t, dose_amt, t)
    return np.stack([depot, central])


def _integrate_closed_form_pk(structure, q, regimens, times, rtol, atol) -> np.ndarray:
    """States (S, N, T) of ``structure`` (``linear_pk``) with ``Ag`` and ``Ac`` in closed
    form and the other states integrated with DOP853, whatever ``ka`` and ``CL/V``: the
    stiffness sits in the PK part alone. The integrated system carries a counter in
    place of the PK states, which receives the doses, so integration still runs
    piecewise between dose times (where the concentration has a kink)."""
    n = q["ka"].size
    dose_t, dose_amt = dose_arrays(regimens, n)
    full_rhs = structure.make_rhs(q)
    y0 = structure.initial(q)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        amounts_mg = _closed_form_pk(q, dose_t, dose_amt, [t])[:, :, 0]
        d = full_rhs(t, np.concatenate((amounts_mg.ravel(), y[n:])))
        return np.concatenate((np.zeros(n), d[2 * n :]))

    rest = integrate_with_doses(
        rhs, np.vstack([np.zeros((1, n)), y0[2:]]), regimens, times, rtol=rtol, atol=atol
    )
    return np.concatenate((_closed_form_pk(q, dose_t, dose_amt, times), rest[1:]))


def simulate_structure(
    structure: Structure | str,
    params: Params | Mapping[str, object],
    regimen: Regimen | Sequence[Regimen],
    times_h,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> Simulation:
    """Simulate any :class:`Structure` for N patients (see :func:`simulate`).

    Patients that :func:`stiff_patients` flags are integrated apart, so one stiff
    patient cannot slow the others (integrated with DOP853): when the structure's PK is
    linear (``linear_pk``) and only ``ka`` or ``CL/V`` is fast, its ``Ag`` and ``Ac``
    come in closed form and the other states are integrated with DOP853 (200 patients
    with ka 2400/h as fast as typical ones); otherwise with the implicit
    :data:`STIFF_METHOD`, told the Jacobian's sparsity.

    Parameters
    ----------
    structure : Structure or str
        The structure, or its name in :data:`STRUCTURES`.
    params : Params or mapping
        Individual parameters of N patients: those the structure reads, each a scalar or
        (N,) (see :func:`structure_params`).
    regimen : Regimen or sequence of Regimen
        One :class:`~pkpd_lib.pmx.regimens.Regimen` shared by all patients, or one each.
    times_h : array_like
        Strictly increasing output times (h), >= 0, (T,); at a dose time the value just
        before the dose (the trough).
    rtol, atol : float
        Tolerances of the integrator.

    Returns
    -------
    Simulation
        Concentration (mg/L), PD (the structure's ``pd``) and the structure's states, each
        (N, T).

    Raises
    ------
    ValueError
        An unknown structure name; parameters :func:`structure_params` refuses; a rate
        that is implausible (:func:`stiff_patients`); bad ``times_h``; a concentration
        below zero beyond the integrator's error.
    NonFiniteStateError
        A ``ValueError``: the right-hand side turned NaN or inf; names the patients (index)
        and the first one's parameter values.
    IntegrationLimitError
        A runaway integration.

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> p = {**TYPICAL_PARAMS, "ke0": 0.5}
    >>> simulate_structure("effect_compartment", p, regimens.qd(), [0.0, 2.0]).pd.round(1)
    array([[100. , 161.2]])
    """
    if isinstance(structure, str):
        if structure not in STRUCTURES:
            raise ValueError(f"unknown structure {structure!r}; expected one of {list(STRUCTURES)}")
        structure = STRUCTURES[structure]
    if isinstance(params, Params):
        params = params.as_dict()
    p = structure_params(structure, params)
    n = p["ka"].size
    rates = structure.rates(p)
    stiff = stiff_patients(rates)
    closed = np.zeros(n, bool)
    if structure.linear_pk and stiff.any():
        rest = {k: v for k, v in rates.items() if k not in PK_RATE_NAMES}
        closed = stiff & ~(stiff_patients(rest) if rest else closed)
        closed &= ~np.any(structure.initial(p)[:2] != 0, axis=0)
    regimens = per_patient(regimen, n)
    times = _check_times(times_h)
    out = np.empty((len(structure.states), n, times.size))
    groups = ((~stiff, "DOP853"), (closed, "closed-form PK"), (stiff & ~closed, STIFF_METHOD))
    for group, method in groups:
        if group.any():
            q = {k: v[group] for k, v in p.items()}
            group_regimens = [r for r, g in zip(regimens, group, strict=True) if g]
            try:
                if method == "closed-form PK":
                    out[:, group] = _integrate_closed_form_pk(
                        structure, q, group_regimens, times, rtol, atol
                    )
                    continue
                out[:, group] = integrate_with_doses(
                    structure.make_rhs(q),
                    structure.initial(q),
                    group_regimens,
                    times,
                    rtol=rtol,
                    atol=atol,
                    method=method,
                )
            except (NonFiniteStateError, IntegrationLimitError) as err:
                index = np.flatnonzero(group)[err.patients]
                raise type(err)(
                    f"structure {structure.name!r} ({method}): {err}, for "
                    f"{_describe_patients(p, index)}; check these values",
                    index,
                    err.time_h,
                ) from err
    states = {name: out[i] for i, name in enumerate(structure.states)}
    total_dose_mg = np.array([r.total_mg for r in regimens])
    pd_ = structure.pd(states, p)
    return Simulation(
        times_h=times,
        conc_mg_L=_clip_solver_noise(states["Ac"] / p["V"][:, None], total_dose_mg, p),
        pd=pd_,
        states=states,
        biomarkers=None if structure.outputs is None else structure.outputs(states, p),
    )


def _describe_patients(p: Mapping[str, np.ndarray], index: np.ndarray) -> str:
    """``"patient(s) [i, ...]; patient i has ka = ... 1/h, ..."`` for error messages."""
    units = {**PARAM_UNITS, **FEEDBACK_UNITS, "kout2": "1/h", "ke0": "1/h"}
    text = f"patient(s) {index[:5].tolist()}" + (f" (of {index.size})" if index.size > 5 else "")
    if index.size:
        i = index[0]
        values = ", ".join(
            f"{k} = {v[i]:.6g} {units.get(k, '').strip('-')}".rstrip() for k, v in p.items()
        )
        text += f"; patient {i} has {values}"
    return text


def _clip_solver_noise(
    conc_mg_L: np.ndarray, total_dose_mg: np.ndarray, p: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Concentrations (N, T) with the integrator's slightly negative values set to 0.

    Parameters
    ----------
    conc_mg_L
        Concentrations (mg/L) as integrated, (N, T).
    total_dose_mg
        Each patient's total dose (mg), (N,): with ``V`` it scales the tolerance.
    p
        The patients' parameters, each (N,); ``V`` in L.

    Returns
    -------
    numpy.ndarray
        ``conc_mg_L`` itself if nothing is negative, otherwise a copy with each negative
        value set to 0 (every other value unchanged).

    Raises
    ------
    ValueError
        If a value is below -max(:data:`NEGATIVE_CONC_ABS_MG_L`,
        :data:`NEGATIVE_CONC_REL` * total dose / V): not integration noise but a model
        error. The message names the patient and its parameters.
    """
    negative = conc_mg_L < 0.0
    if not negative.any():
        return conc_mg_L
    allowed = np.maximum(NEGATIVE_CONC_ABS_MG_L, NEGATIVE_CONC_REL * total_dose_mg / p["V"])
    too_low = conc_mg_L < -allowed[:, None]
    if too_low.any():
        patients = np.flatnonzero(too_low.any(axis=1))
        i = patients[0]
        raise ValueError(
            f"{_describe_patients(p, patients)}: concentration {conc_mg_L[i].min():.3g} mg/L "
            f"is below zero beyond the integrator's error (allowed down to {-allowed[i]:.3g} "
            "mg/L); the model produces negative amounts"
        )
    return np.where(negative, 0.0, conc_mg_L)


def simulate(
    params: Params | Mapping[str, object],
    regimen: Regimen | Sequence[Regimen],
    times_h,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> Simulation:
    """Simulate the default PK/PD model (:data:`TRANSIT_TURNOVER`) for N patients.

    Parameters
    ----------
    params
        Individual parameters (see :class:`Params`; a mapping of arrays works too), N patients.
    regimen
        One :class:`~pkpd_lib.pmx.regimens.Regimen` shared by all patients, or a sequence of N
        regimens, one per patient.
    times_h
        Strictly increasing output times in hours, >= 0. At a time where a dose is given,
        the reported value is the one just *before* that dose (the trough).
    rtol, atol
        Tolerances of the integrator: DOP853 (explicit), and the implicit
        :data:`STIFF_METHOD` for the patients :func:`stiff_patients` flags, which are
        integrated apart.

    Returns
    -------
    Simulation
        Concentration C (mg/L, >= 0), PD (biomarker units) and all six states, each (N, T).

    Raises
    ------
    NonFiniteStateError
        A ``ValueError``: the model turned NaN or inf (e.g. ``EC50**gam`` underflows to 0
        for a huge ``gam`` or a tiny EC50); names the patient (index) and its parameters.
    IntegrationLimitError
        A segment needed more right-hand-side calls than :data:`MAX_RHS_CALLS_BASE`
        allows (a runaway integration).

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> sim = simulate(typical_params(), regimens.qd(), [0.0, 2.0, 24.0])
    >>> sim.pd.round(2)
    array([[100.  , 100.04, 118.61]])
    """
    return simulate_structure(
        TRANSIT_TURNOVER, as_params(params), regimen, times_h, rtol=rtol, atol=atol
    )


def simulate_second_turnover(
    params: Params | Mapping[str, object],
    regimen: Regimen | Sequence[Regimen],
    times_h,
    kout2: float = 0.05,
) -> Simulation:
    """The richer-PD variant (:data:`SECOND_TURNOVER`): the default model whose biomarker
    ``R`` stimulates a second one, ``R2`` (observed, baseline R0).

    It takes :func:`simulate`'s three arguments, so data sets can be built with it (not
    its tolerances: the defaults are used).

    Parameters
    ----------
    params : Params or mapping
        Individual parameters of the default model, N patients (see :class:`Params`).
    regimen : Regimen or sequence of Regimen
        One regimen shared by all patients, or one each.
    times_h : array_like
        Strictly increasing output times (h), >= 0, (T,).
    kout2 : float
        The turnover rate constant of ``R2`` (1/h), the same for every patient (default
        0.05: a 14 h half-life after R's 7 h).

    Returns
    -------
    Simulation
        As :func:`simulate`, with ``pd`` the second biomarker ``R2`` (biomarker units) and
        ``R2`` among the states.

    Raises
    ------
    ValueError
        ``kout2`` not a finite rate > 0, or as :func:`simulate`.

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> sim = simulate_second_turnover(typical_params(), regimens.qd(), [0.0, 24.0])
    >>> bool(sim.pd[0, 1] < simulate(typical_params(), regimens.qd(), [0.0, 24.0]).pd[0, 1])
    True
    """
    if not (np.isfinite(kout2) and kout2 > 0):
        raise ValueError(f"kout2 must be a finite rate > 0 1/h, got {kout2!r}")
    p = as_params(params).as_dict()
    return simulate_structure(SECOND_TURNOVER, {**p, "kout2": kout2}, regimen, times_h)


def feedback_params(params: Params | Mapping[str, object]) -> dict[str, np.ndarray]:
    """The parameters of :data:`FEEDBACK_TOLERANCE` for patients of the default model's
    population, so that its covariate model and variability carry over.

    ``ka``, ``CL``, ``V``, ``gam``, ``kout`` and ``R0`` are the patients' own (with the
    default model's variability and covariate effects); the potency follows theirs,
    ``IC50 = EC50 * 0.3 / 0.5`` (the default model's effect of sex); the moderator's
    turnover time follows the default model's delay, ``ktol = 0.03 * 12 / MTT`` (1/h), so
    a variability given to ``MTT`` (``extra_eta_sd``) is one of ``ktol``; ``Imax`` is
    0.9 for everyone (see :data:`FEEDBACK_TYPICAL`).

    Parameters
    ----------
    params : Params or mapping
        Individual parameters of the default model, N patients (see :class:`Params`).

    Returns
    -------
    dict of str to numpy.ndarray
        The parameters :data:`FEEDBACK_TOLERANCE` reads, each (N,).

    Examples
    --------
    >>> {k: float(v[0]) for k, v in feedback_params(typical_params()).items()} == (
    ...     FEEDBACK_TYPICAL)
    True
    """
    p = as_params(params).as_dict()
    n = p["ka"].size
    scale = {
        "IC50": p["EC50"] / TYPICAL_PARAMS["EC50"],
        "ktol": TYPICAL_PARAMS["MTT"] / p["MTT"],
    }
    out = {}
    for name in FEEDBACK_TOLERANCE.parameters:
        if name in scale:
            out[name] = FEEDBACK_TYPICAL[name] * scale[name]
        elif name == "Imax":
            out[name] = np.full(n, FEEDBACK_TYPICAL["Imax"])
        else:
            out[name] = np.asarray(p[name], float)
    return out


def simulate_feedback(
    params: Params | Mapping[str, object],
    regimen: Regimen | Sequence[Regimen],
    times_h,
) -> Simulation:
    """Interacting biomarkers (:data:`FEEDBACK_TOLERANCE`) for patients of the default
    model's population (:func:`feedback_params`): ``pd`` is the response ``R``, and
    ``biomarkers`` holds ``R`` and its moderator ``M`` (biomarker units).

    It takes :func:`simulate`'s three arguments, so data sets can be built with it.

    Parameters
    ----------
    params : Params or mapping
        Individual parameters of the default model, N patients (see :class:`Params`),
        turned into the feedback model's by :func:`feedback_params`.
    regimen : Regimen or sequence of Regimen
        One regimen shared by all patients, or one each.
    times_h : array_like
        Strictly increasing output times (h), >= 0, (T,).

    Returns
    -------
    Simulation
        Concentrations (mg/L), ``pd`` the response ``R`` and ``biomarkers`` ``R`` and
        ``M`` (biomarker units), each (N, T).

    Raises
    ------
    ValueError
        As :func:`simulate_structure`.

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> sim = simulate_feedback(typical_params(), regimens.qd(), [0.0, 4.0, 24.0])
    >>> {k: v.round(1).tolist() for k, v in sim.biomarkers.items()}
    {'R': [[100.0, 73.8, 98.6]], 'M': [[100.0, 98.5, 90.6]]}
    """
    return simulate_structure(FEEDBACK_TOLERANCE, feedback_params(params), regimen, times_h)


def stiff_patients(rates: Mapping[str, np.ndarray]) -> np.ndarray:
    """Boolean mask (N,) of patients too stiff for the explicit integrator: any of their
    first-order ``rates`` above :data:`STIFF_RATE_PER_H`.

    Parameters
    ----------
    rates : mapping of str to numpy.ndarray
        First-order rate constants (1/h) by name, each (N,), at least one (e.g.
        ``Structure.rates``).

    Returns
    -------
    numpy.ndarray
        Boolean mask (N,).

    Raises
    ------
    ValueError
        If ``rates`` is empty; or naming the patient and rate if one is implausible (a
        half-life below one second: above :data:`MAX_RATE_PER_H`).

    Examples
    --------
    >>> import numpy as np
    >>> stiff_patients({"ka": np.array([1.0, 1000.0])}).tolist()
    [False, True]
    >>> stiff_patients({})
    Traceback (most recent call last):
    ...
    ValueError: rates must hold at least one rate constant (1/h, each (N,)), got none
    """
    if len(rates) == 0:
        raise ValueError("rates must hold at least one rate constant (1/h, each (N,)), got none")
    for name, rate in rates.items():
        bad = np.flatnonzero(rate > MAX_RATE_PER_H)
        if bad.size:
            raise ValueError(
                f"patient(s) {bad[:5].tolist()}: {name} = {rate[bad[0]]:.3g} 1/h is a "
                "half-life below one second; check the parameter's units"
            )
    return np.max(np.stack(list(rates.values())), axis=0) > STIFF_RATE_PER_H
