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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy.integrate import solve_ivp

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

#: State names, in the order of the ODE state vector.
STATE_NAMES = ("Ag", "Ac", "T1", "T2", "T3", "R")
STATE_UNITS = {"Ag": "mg", "Ac": "mg", "T1": "-", "T2": "-", "T3": "-", "R": "biomarker units"}


@dataclass(frozen=True)
class Params:
    """Individual PK/PD parameters of N patients, each an array of shape (N,).

    Units: ka 1/h, CL L/h, V L, Emax dimensionless, EC50 mg/L, gam dimensionless,
    MTT h, kout 1/h, R0 biomarker units.
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
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def subset(self, index) -> Params:
        """Parameters of the selected patients (any numpy index)."""
        return Params(**{k: np.atleast_1d(v[index]) for k, v in self.as_dict().items()})


def as_params(params: Params | Mapping[str, object] | object) -> Params:
    """Coerce a :class:`Params`, a mapping or any object with the parameter attributes."""
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
    """The typical-value parameters, repeated for ``n`` identical patients."""
    return Params(**{k: np.full(n, v) for k, v in TYPICAL_PARAMS.items()})


@dataclass(frozen=True)
class Simulation:
    """Noise-free model output for N patients at T requested times.

    ``conc_mg_L`` and ``pd`` have shape (N, T); ``states`` maps each state name in
    :data:`STATE_NAMES` to an (N, T) array. A value at a dose time is the one just before
    that dose (the trough).
    """

    times_h: np.ndarray
    conc_mg_L: np.ndarray
    pd: np.ndarray
    states: dict[str, np.ndarray]


def _rhs(p: Params):
    ka, ke, ktr = p.ka, p.CL / p.V, 3.0 / p.MTT
    emax, ec50_g, gam = p.Emax, p.EC50**p.gam, p.gam
    kout, kin = p.kout, p.kout * p.R0
    inv_v = 1.0 / p.V
    n = p.n_patients

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        ag, ac, t1, t2, t3, r = y.reshape(6, n)
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
    if np.any(np.diff(times) <= 0):
        raise ValueError("times_h must be strictly increasing")
    return times


def _dose_matrix(regimens: Sequence[Regimen], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of dose times (E,) and per-patient amounts (E, N), 0 where a patient has none."""
    event_times = np.unique(np.concatenate([r.times_h for r in regimens]))
    amounts = np.zeros((event_times.size, n))
    for j, r in enumerate(regimens):
        np.add.at(amounts[:, j], np.searchsorted(event_times, r.times_h), r.amounts_mg)
    return event_times, amounts


def integrate_with_doses(
    rhs,
    y0: np.ndarray,
    regimen: Regimen | Sequence[Regimen],
    times_h,
    dose_state: int = 0,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> np.ndarray:
    """Integrate a vectorised ODE for N patients with bolus doses; (S, N, T) states.

    ``rhs(t, y)`` takes and returns the flat state vector of S states x N patients
    (state-major, as ``y0.ravel()`` of the (S, N) array ``y0``). Each dose is added to
    state ``dose_state`` of its patient; integration (DOP853) runs piecewise between
    dose events. At an output time equal to a dose time the state just before the dose
    is reported (the trough). Any model with bolus doses can reuse this.
    """
    y = np.array(y0, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y0 must be (states, patients), got shape {y.shape}")
    n_states, n = y.shape
    times = _check_times(times_h)
    event_times, amounts = _dose_matrix(per_patient(regimen, n), n)
    out = np.empty((n_states, n, times.size))
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
            sol = solve_ivp(
                rhs, (t_now, t_end), y.ravel(), method="DOP853", t_eval=t_eval, rtol=rtol, atol=atol
            )
            if not sol.success:  # pragma: no cover - integrator failure is exceptional
                raise RuntimeError(f"ODE integration failed on {t_now}-{t_end} h: {sol.message}")
            seg = sol.y.reshape(n_states, n, t_eval.size)
            out[:, :, done : done + n_seg] = seg[:, :, :n_seg]
            y = seg[:, :, -1].copy()
            t_now = float(t_end)
        else:  # outputs at this very time (t == 0 before the first dose)
            out[:, :, done : done + n_seg] = y[:, :, None]
        done += n_seg
        if dose is not None:
            y[dose_state] += dose
    return out


def simulate(
    params: Params | Mapping[str, object],
    regimen: Regimen | Sequence[Regimen],
    times_h,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> Simulation:
    """Simulate the default PK/PD model for N patients.

    Parameters
    ----------
    params
        Individual parameters (see :class:`Params`; a mapping of arrays works too), N patients.
    regimen
        One :class:`~pkpd_lib.regimens.Regimen` shared by all patients, or a sequence of N
        regimens, one per patient.
    times_h
        Strictly increasing output times in hours, >= 0. At a time where a dose is given,
        the reported value is the one just *before* that dose (the trough).
    rtol, atol
        Tolerances of the integrator (DOP853).

    Returns
    -------
    Simulation
        Concentration C (mg/L), PD (biomarker units) and all six states, each (N, T).
    """
    p = as_params(params)
    y0 = np.zeros((len(STATE_NAMES), p.n_patients))
    y0[STATE_NAMES.index("R")] = p.R0
    out = integrate_with_doses(_rhs(p), y0, regimen, times_h, rtol=rtol, atol=atol)
    return simulation_from_states(times_h, STATE_NAMES, out, p.V, observed="R")


def simulation_from_states(
    times_h, state_names: Sequence[str], out: np.ndarray, V, observed: str
) -> Simulation:
    """Wrap integrated states (S, N, T) of a model with a central amount ``"Ac"`` (mg) and
    volume ``V`` (L, (N,)) as a :class:`Simulation` whose PD is state ``observed``."""
    states = {name: out[i] for i, name in enumerate(state_names)}
    return Simulation(
        times_h=_check_times(times_h),
        conc_mg_L=states["Ac"] / np.asarray(V, float)[:, None],
        pd=states[observed],
        states=states,
    )
