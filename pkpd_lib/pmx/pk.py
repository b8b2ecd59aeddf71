"""Closed-form one-compartment PK: dose arrays from regimens, the kernels, superposition.

The one home of the closed-form PK of the package: :func:`dose_arrays` turns regimens
into dose arrays (the only place that does), each kernel gives the concentration of one
dose as a function of the time since it, and :func:`superpose` adds the doses up.

Kernels take the model's parameters first, then ``dose_mg`` (mg) and ``t_h`` (h since
the dose, >= 0); rates in 1/h, clearances in L/h, volumes in L, concentrations in mg/L;
arrays broadcast. One compartment with linear elimination ``ke = CL/V``:

* :func:`iv_bolus`: the dose enters the compartment at once.
* :func:`iv_infusion`: at a constant rate (given as a rate or a duration).
* :func:`first_order_absorption`: from a depot at rate ``ka`` (oral; bioavailability
  F = 1), optionally after a lag time; :func:`first_order_absorption_log_derivatives`
  gives its analytic derivatives.
* :func:`transit_absorption`: through one transit compartment and the depot, both at
  rate ``ka`` (a gamma(2, ka) input; warfarin's model).
* :func:`chain_absorption`: through a transit compartment at rate ``ktr`` and the
  depot at rate ``ka`` (nlmixr2's warfarin model).

:func:`oral_conc` and :func:`oral_log_derivatives` are first-order absorption superposed
over dose arrays (the empirical Bayes fit's model and Jacobian); :func:`one_compartment_conc`
is the same from regimens, with the inputs checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .regimens import Regimen, per_patient

# --- doses and sampling times ------------------------------------------------------------


def dose_arrays(regimens: Regimen | Sequence[Regimen], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient dose times (h) and amounts (mg), each (N, E), zero-padded to the
    longest regimen (a padded entry is a 0 mg dose at 0 h, which adds nothing; a
    regimen's own doses are all > 0 mg).

    Parameters
    ----------
    regimens : Regimen or sequence of Regimen
        One :class:`~pkpd_lib.pmx.regimens.Regimen` shared by the ``n`` patients, or one
        each.
    n : int
        The number of patients N.

    Returns
    -------
    times : numpy.ndarray
        Dose times (h), (N, E), E the most doses of any regimen.
    amounts : numpy.ndarray
        Dose amounts (mg), (N, E).

    Raises
    ------
    ValueError
        A number of regimens other than one or ``n``.
    TypeError
        An entry that is not a :class:`~pkpd_lib.pmx.regimens.Regimen`.

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> times, amounts = dose_arrays([regimens.qd(days=2), regimens.qd(days=1)], 2)
    >>> times.tolist(), amounts.tolist()
    ([[0.0, 24.0], [0.0, 0.0]], [[100.0, 100.0], [100.0, 0.0]])
    """
    regs = per_patient(regimens, n)
    e = max(len(r) for r in regs)
    times, amounts = np.zeros((n, e)), np.zeros((n, e))
    for i, r in enumerate(regs):
        times[i, : len(r)], amounts[i, : len(r)] = r.times_h, r.amounts_mg
    return times, amounts


def times_per_patient(times_h, n: int) -> np.ndarray:
    """Sampling times (h) as an (N, T) array.

    Parameters
    ----------
    times_h : array_like
        Sampling times (h): (T,) shared by the ``n`` patients, or (N, T).
    n : int
        The number of patients N.

    Returns
    -------
    numpy.ndarray
        The times (N, T), h (a read-only broadcast view for shared times).

    Raises
    ------
    ValueError
        Unless there is a row per patient and every time is finite, >= 0 and strictly
        increasing within its row.
    """
    t = np.asarray(times_h, dtype=float)
    t = np.broadcast_to(t, (n, t.shape[-1])) if t.ndim == 1 else t
    if t.shape[0] != n:
        raise ValueError(f"times_h has {t.shape[0]} rows for {n} patients")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times_h must be finite and >= 0 h")
    if np.any(np.diff(t, axis=1) <= 0):
        raise ValueError("times_h must be strictly increasing for every patient")
    return t


# --- kernels: one dose -------------------------------------------------------------------


def iv_bolus(cl, v, dose_mg, t_h) -> np.ndarray:
    """Concentration (mg/L) ``t_h`` hours after an intravenous bolus of ``dose_mg``:
    ``D / V exp(-CL/V t)``.

    Parameters
    ----------
    cl, v : array_like
        Clearance (L/h) and volume (L).
    dose_mg, t_h : array_like
        The dose (mg) and the time since it (h, >= 0).

    Returns
    -------
    numpy.ndarray
        The concentration (mg/L), the broadcast shape of the arguments.

    Examples
    --------
    >>> iv_bolus(5.0, 50.0, 100.0, [0.0, 10.0 * np.log(2)]).round(6).tolist()
    [2.0, 1.0]
    """
    ke = np.asarray(cl, float) / np.asarray(v, float)
    return np.asarray(dose_mg, float) * np.exp(-ke * np.asarray(t_h, float)) / v


def iv_infusion(cl, v, dose_mg, t_h, *, rate_mg_h=None, duration_h=None) -> np.ndarray:
    """Concentration (mg/L) ``t_h`` hours after the start of a constant-rate infusion of
    ``dose_mg``, given with either ``rate_mg_h`` (mg/h) or ``duration_h`` (h):
    ``R / CL (1 - exp(-ke t))`` while it runs, then decaying from its end value.

    Parameters
    ----------
    cl, v : array_like
        Clearance (L/h) and volume (L).
    dose_mg, t_h : array_like
        The dose (mg) and the time since the infusion started (h, >= 0).
    rate_mg_h, duration_h : array_like
        Exactly one of them: the infusion rate (mg/h) or its duration (h), > 0.

    Returns
    -------
    numpy.ndarray
        The concentration (mg/L), the broadcast shape of the arguments.

    Raises
    ------
    ValueError
        Both or neither of ``rate_mg_h`` and ``duration_h`` given, or the one given not
        finite and > 0.

    Examples
    --------
    A 100 mg infusion over 2 h is a bolus in the limit of a short one:

    >>> float(iv_infusion(5.0, 50.0, 100.0, 2.0, duration_h=2.0).round(4))
    1.8127
    >>> short = iv_infusion(5.0, 50.0, 100.0, 12.0, duration_h=1e-6)
    >>> bool(np.isclose(short, iv_bolus(5.0, 50.0, 100.0, 12.0)))
    True
    """
    if (rate_mg_h is None) == (duration_h is None):
        raise ValueError("give the infusion's rate_mg_h or its duration_h, not both or neither")
    dose = np.asarray(dose_mg, float)
    given = np.asarray(rate_mg_h if duration_h is None else duration_h, float)
    if np.any(~np.isfinite(given)) or np.any(given <= 0):
        raise ValueError("the infusion's rate or duration must be finite and > 0")
    if duration_h is None:
        rate, duration = given, dose / given
    else:
        rate, duration = dose / given, given
    cl = np.asarray(cl, float)
    ke = cl / np.asarray(v, float)
    t = np.asarray(t_h, float)
    running = np.minimum(t, duration)
    return rate / cl * -np.expm1(-ke * running) * np.exp(-ke * (t - running))


def first_order_absorption(ka, cl, v, dose_mg, t_h, *, tlag_h=None) -> np.ndarray:
    """Concentration (mg/L) ``t_h`` hours after an oral dose of ``dose_mg`` absorbed at
    rate ``ka``, optionally after a lag time ``tlag_h`` (h):
    ``D ka / V (exp(-ke t) - exp(-ka t)) / (ka - ke)``, ``ke = CL/V``, and where
    ``|ka - ke| < 1e-8 ka`` its limit ``D ka / V t exp(-ke t)``.

    Parameters
    ----------
    ka, cl, v : array_like
        Absorption rate (1/h), clearance (L/h) and volume (L).
    dose_mg, t_h : array_like
        The dose (mg) and the time since it (h, >= 0).
    tlag_h : array_like, optional
        Absorption starts ``tlag_h`` after the dose (0 before).

    Returns
    -------
    numpy.ndarray
        The concentration (mg/L), the broadcast shape of the arguments.

    Examples
    --------
    >>> first_order_absorption(1.0, 15.0, 50.0, 100.0, [0.0, 1.0, 24.0]).round(4).tolist()
    [0.0, 1.0655, 0.0021]
    >>> first_order_absorption(0.3, 15.0, 50.0, 100.0, 10.0).round(6)  # ka = ke
    np.float64(0.298722)
    >>> first_order_absorption(1.0, 15.0, 50.0, 100.0, [0.5, 1.5], tlag_h=0.5).round(4).tolist()
    [0.0, 1.0655]
    """
    ka, cl, v, dose_mg, t_h = (np.asarray(a, float) for a in (ka, cl, v, dose_mg, t_h))
    if tlag_h is not None:
        t_h = np.maximum(t_h - np.asarray(tlag_h, float), 0.0)
    ke = cl / v
    diff = ka - ke
    near = np.abs(diff) < 1e-8 * ka
    safe = np.where(near, 1.0, diff)
    shape = np.where(near, t_h * np.exp(-ke * t_h), (np.exp(-ke * t_h) - np.exp(-ka * t_h)) / safe)
    return dose_mg * ka * shape / v


def first_order_absorption_log_derivatives(
    ka, cl, v, dose_mg, t_h
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`first_order_absorption` ``f`` (mg/L) and its derivatives (mg/L) with respect
    to ``log ka`` and ``log CL``; the one with respect to ``log V`` is ``-f - df/dlog CL``.

    With ``g = (exp(-ke t) - exp(-ka t)) / (ka - ke)`` and ``f = D ka g / V``:
    ``df/dlog ka = f + D ka^2 / V dg/dka`` and ``df/dlog CL = D ka ke / V dg/dke``;
    where ``ka = ke = k`` both derivatives of ``g`` tend to ``-t^2 exp(-k t) / 2``.

    Parameters
    ----------
    ka, cl, v : array_like
        Absorption rate (1/h), clearance (L/h) and volume (L).
    dose_mg, t_h : array_like
        The dose (mg) and the time since it (h, >= 0); no lag time.

    Returns
    -------
    f, df_dlog_ka, df_dlog_cl : numpy.ndarray
        The concentration and its two derivatives (mg/L), each the broadcast shape of the
        arguments.

    Examples
    --------
    >>> f, d_ka, d_cl = first_order_absorption_log_derivatives(1.0, 15.0, 50.0, 100.0, 1.0)
    >>> h = 1e-6
    >>> up = first_order_absorption(np.exp(h), 15.0, 50.0, 100.0, 1.0)
    >>> bool(np.isclose(d_ka, (up - f) / h, rtol=1e-5))
    True
    """
    ka, cl, v, dose_mg, t_h = (np.asarray(a, float) for a in (ka, cl, v, dose_mg, t_h))
    ke = cl / v
    diff = ka - ke
    near = np.abs(diff) < 1e-8 * ka
    safe = np.where(near, 1.0, diff)
    e_a, e_e = np.exp(-ka * t_h), np.exp(-ke * t_h)
    g = np.where(near, t_h * e_e, (e_e - e_a) / safe)
    limit = -0.5 * t_h**2 * e_e
    dg_dka = np.where(near, limit, (t_h * e_a - g) / safe)
    dg_dke = np.where(near, limit, (g - t_h * e_e) / safe)
    scale = dose_mg * ka / v
    f = scale * g
    return f, f + scale * ka * dg_dka, scale * ke * dg_dke


def transit_absorption(ka, cl, v, dose_mg, t_h) -> np.ndarray:
    """Concentration (mg/L) ``t_h`` hours after a dose of ``dose_mg`` that passes two
    equal first-order steps (a transit compartment and absorption, both at rate ``ka``
    1/h) into one compartment with elimination ``CL/V``: the dose reaches the
    compartment as a gamma(2, ka) input, in closed form. Arrays broadcast.

    Where ``|ka - CL/V| < 1e-6 ka`` the formula is evaluated with that difference set to
    ``1e-6 ka`` (approximating the limit of equal rates).

    Parameters
    ----------
    ka, cl, v : array_like
        Transit and absorption rate (1/h), clearance (L/h) and volume (L).
    dose_mg, t_h : array_like
        The dose (mg) and the time since it (h, >= 0).

    Returns
    -------
    numpy.ndarray
        The concentration (mg/L), the broadcast shape of the arguments.

    Examples
    --------
    >>> np.round(transit_absorption(1.0, 0.14, 7.4, 100.0, [0.0, 2.0, 24.0, 96.0]), 2).tolist()
    [0.0, 7.89, 8.92, 2.28]
    """
    ka = np.asarray(ka, float)
    ke = np.asarray(cl, float) / np.asarray(v, float)
    t = np.asarray(t_h, float)
    b = ka - ke
    b = np.where(np.abs(b) < 1e-6 * ka, 1e-6 * ka, b)  # equal rates: the limit
    bt = b * t
    # exp(-ke t) - exp(-ka t) (1 + bt), without cancellation where |bt| is small
    small = np.clip(bt, -1.0, 1.0)
    near = np.exp(-ke * t) * (-np.expm1(-small) - small * np.exp(-small))
    far = np.exp(-ke * t) - np.exp(-ka * t) * (1.0 + bt)
    shape = np.where(np.abs(bt) < 1.0, near, far)
    amount = np.asarray(dose_mg, float) * ka**2 * shape / b**2
    return amount / np.asarray(v, float)


def _chain_shape(x, y) -> np.ndarray:
    """The second divided difference of ``exp(-u)`` at ``0 <= x <= y``:
    ``(phi(x) - exp(-x) phi(y - x)) / y`` with ``phi(z) = (1 - exp(-z)) / z``, and its
    Taylor series where ``y < 1e-3`` (where the difference would cancel)."""
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))

    def phi(z):
        safe = np.where(z > 0, z, 1.0)
        return np.where(z > 0, -np.expm1(-safe) / safe, 1.0)

    safe_y = np.where(y >= 1e-3, y, 1.0)
    exact = (phi(x) - np.exp(-x) * phi(y - x)) / safe_y
    series = (
        0.5
        - (x + y) / 6.0
        + (x * x + x * y + y * y) / 24.0
        - (x**3 + x * x * y + x * y * y + y**3) / 120.0
    )
    return np.where(y >= 1e-3, exact, series)


def chain_absorption(ktr, ka, cl, v, dose_mg, t_h) -> np.ndarray:
    """Concentration (mg/L) ``t_h`` hours after a dose of ``dose_mg`` that passes a
    transit compartment (rate ``ktr``, 1/h) and the depot (rate ``ka``, 1/h) into one
    compartment with elimination ``CL/V``, in closed form. Arrays broadcast.

    The amount in the compartment is ``dose * ktr * ka * f[ktr, ka, ke]``, the second
    divided difference of ``f(r) = exp(-r t)`` over the three rates; it is computed
    from the smallest rate up, without cancellation, so any two or all three rates may
    be equal (``ktr == ka`` is :func:`transit_absorption`). After one dose the
    concentration is symmetric in ``ktr`` and ``ka``.

    Parameters
    ----------
    ktr, ka, cl, v : array_like
        Transit rate (1/h), absorption rate (1/h), clearance (L/h) and volume (L).
    dose_mg, t_h : array_like
        The dose (mg) and the time since it (h, >= 0).

    Returns
    -------
    numpy.ndarray
        The concentration (mg/L), the broadcast shape of the arguments.

    Examples
    --------
    >>> np.round(chain_absorption(1.1, 0.9, 0.13, 7.9, 100.0, [0.0, 2.0, 24.0]), 2).tolist()
    [0.0, 7.35, 8.82]
    >>> bool(np.isclose(chain_absorption(1.0, 1.0, 0.14, 7.4, 100.0, 2.0),
    ...                 transit_absorption(1.0, 0.14, 7.4, 100.0, 2.0)))
    True
    """
    ktr, ka = np.asarray(ktr, float), np.asarray(ka, float)
    v = np.asarray(v, float)
    ke = np.asarray(cl, float) / v
    t = np.asarray(t_h, float)
    rates = np.sort(np.stack(np.broadcast_arrays(ktr, ka, ke)), axis=0)
    low, mid, high = rates[0], rates[1], rates[2]
    shape = t * t * np.exp(-low * t) * _chain_shape((mid - low) * t, (high - low) * t)
    return np.asarray(dose_mg, float) * ktr * ka * shape / v


# --- superposition -----------------------------------------------------------------------

SAMPLE_AT_DOSE = ("before", "after")
ORDERS = ("pairwise", "sequential")


def superpose(
    kernel: Callable,
    dose_times_h,
    amounts_mg,
    times_h,
    *,
    sample_at_dose: str = "before",
    order: str = "pairwise",
    **params,
):
    """The concentrations (N, T) of a kernel superposed over each patient's doses.

    Parameters
    ----------
    kernel : callable
        ``kernel(**params, dose_mg=..., t_h=...)``, e.g. :func:`first_order_absorption`;
        it may return a tuple of arrays, each superposed (then a tuple comes back).
    dose_times_h, amounts_mg : numpy.ndarray
        (N, E) dose times (h) and amounts (mg), e.g. from :func:`dose_arrays`.
    times_h : numpy.ndarray
        Sampling times (h), (N, T), or (T,) for all patients.
    sample_at_dose : {"before", "after"}
        A sample at a dose's time is taken before the dose (the trough, as in
        :func:`pkpd_lib.pmx.model.simulate`) or after it.
    order : {"pairwise", "sequential"}
        How the doses' contributions are added: along the last axis of an (N, T, E)
        array (numpy's pairwise sum, the PK fits'), or one dose after another along the
        middle axis of an (N, E, T) array (the warfarin chapter's). Equal in exact
        arithmetic; the choice only keeps each caller's results to the last bit.
    **params
        The kernel's parameters: (N,) arrays (one value per patient) or scalars.

    Returns
    -------
    numpy.ndarray or tuple of numpy.ndarray
        The superposed values (N, T), in the kernel's unit (mg/L for the kernels of this
        module); a tuple of them where the kernel returns a tuple.

    Raises
    ------
    ValueError
        An unknown ``sample_at_dose`` or ``order``, or a kernel parameter that is neither
        a scalar nor (N,).

    Examples
    --------
    Two 100 mg doses 12 h apart, sampled at 12 h (before the second) and 13 h:

    >>> dose_t, amounts = np.array([[0.0, 12.0]]), np.array([[100.0, 100.0]])
    >>> c = superpose(first_order_absorption, dose_t, amounts, [12.0, 13.0],
    ...               ka=[1.0], cl=[15.0], v=[50.0])
    >>> c.round(4).tolist()
    [[0.0781, 1.1234]]
    >>> one = first_order_absorption(1.0, 15.0, 50.0, 100.0, np.array([12.0, 13.0, 1.0]))
    >>> bool(np.isclose(c[0, 1], one[1] + one[2]))
    True
    """
    if sample_at_dose not in SAMPLE_AT_DOSE:
        raise ValueError(f"sample_at_dose must be one of {SAMPLE_AT_DOSE}, got {sample_at_dose!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    dose_t, dose_amt = np.asarray(dose_times_h, float), np.asarray(amounts_mg, float)
    t = np.asarray(times_h, float)
    t = t[None, :] if t.ndim == 1 else t
    if order == "pairwise":  # (N, T, E), summed along the doses' (last) axis
        dt = t[:, :, None] - dose_t[:, None, :]
        amount, axis = dose_amt[:, None, :], 2
    else:  # (N, E, T), summed dose after dose
        dt = t[:, None, :] - dose_t[:, :, None]
        amount, axis = dose_amt[:, :, None], 1
    after = dt > 0 if sample_at_dose == "before" else dt >= 0
    dt = np.where(after, dt, 0.0)
    per_patient_params = {k: _per_patient(p) for k, p in params.items()}
    per_dose = kernel(**per_patient_params, dose_mg=amount, t_h=dt)
    if isinstance(per_dose, tuple):
        return tuple(np.where(after, c, 0.0).sum(axis=axis) for c in per_dose)
    return np.where(after, per_dose, 0.0).sum(axis=axis)


def _per_patient(value):
    """A kernel parameter for :func:`superpose`: (N,) as (N, 1, 1), a scalar as it is."""
    a = np.asarray(value, float)
    if a.ndim == 0:
        return a
    if a.ndim != 1:
        raise ValueError(f"a kernel parameter must be (N,) or a scalar, got shape {a.shape}")
    return a[:, None, None]


# --- the oral model on dose arrays and on regimens ---------------------------------------


def oral_conc(ka, cl, v, dose_times_h, amounts_mg, times_h) -> np.ndarray:
    """:func:`first_order_absorption` superposed (:func:`superpose`, troughs); unchecked
    (see :func:`one_compartment_conc`).

    Parameters
    ----------
    ka, cl, v : numpy.ndarray
        Absorption rate (1/h), clearance (L/h) and volume (L) of each patient, (N,).
    dose_times_h, amounts_mg : numpy.ndarray
        Dose times (h) and amounts (mg), (N, E), e.g. from :func:`dose_arrays`.
    times_h : numpy.ndarray
        Sampling times (h), (N, T), or (T,) for all patients.

    Returns
    -------
    numpy.ndarray
        The concentrations (mg/L), (N, T).
    """
    return superpose(first_order_absorption, dose_times_h, amounts_mg, times_h, ka=ka, cl=cl, v=v)


def oral_log_derivatives(ka, cl, v, dose_times_h, amounts_mg, times_h) -> np.ndarray:
    """Derivatives (mg/L), (N, T, 3), of :func:`oral_conc` with respect to ``log ka``,
    ``log CL`` and ``log V`` (:func:`first_order_absorption_log_derivatives`
    superposed): the analytic Jacobian of the empirical Bayes fit
    (:func:`pkpd_lib.pmx.pkfit.fit_individual_pk`).

    Parameters
    ----------
    ka, cl, v : numpy.ndarray
        Absorption rate (1/h), clearance (L/h) and volume (L) of each patient, (N,).
    dose_times_h, amounts_mg : numpy.ndarray
        Dose times (h) and amounts (mg), (N, E).
    times_h : numpy.ndarray
        Sampling times (h), (N, T).

    Returns
    -------
    numpy.ndarray
        The derivatives (mg/L), (N, T, 3): along the last axis with respect to ``log ka``,
        ``log CL`` and ``log V``.
    """
    f, d_ka, d_cl = superpose(
        first_order_absorption_log_derivatives,
        dose_times_h,
        amounts_mg,
        times_h,
        ka=ka,
        cl=cl,
        v=v,
    )
    return np.stack([d_ka, d_cl, -f - d_cl], axis=2)


def one_compartment_conc(ka, CL, V, regimens, times_h) -> np.ndarray:
    """Concentration (mg/L), shape (N, T), of the oral one-compartment model.

    A dose at exactly a sampling time counts after the sample (trough), as in
    :func:`pkpd_lib.pmx.model.simulate`.

    Parameters
    ----------
    ka, CL, V : array_like
        Absorption rate (1/h), clearance (L/h) and volume (L), each (N,) (not checked).
    regimens : Regimen or sequence of Regimen
        One :class:`~pkpd_lib.pmx.regimens.Regimen` or one per patient.
    times_h : array_like
        Sampling times (h), (T,) or (N, T).

    Returns
    -------
    numpy.ndarray
        The concentrations (mg/L), (N, T).

    Raises
    ------
    ValueError
        Sampling times that :func:`times_per_patient` refuses, or a number of regimens
        other than one or N.

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> one_compartment_conc([1.0], [15.0], [50.0], regimens.qd(), [1.0, 24.0]).round(4)
    array([[1.0655, 0.0021]])
    """
    ka, cl, v = (np.atleast_1d(np.asarray(a, float)) for a in (ka, CL, V))
    n = ka.size
    return oral_conc(ka, cl, v, *dose_arrays(regimens, n), times_per_patient(times_h, n))
