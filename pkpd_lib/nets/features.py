"""The network inputs: one table, so adding an input is one edit here.

Each :class:`Feature` says what the input is (per time step or one value per patient),
its unit, its valid values, and how it is built from a data set. The data sets
(:func:`pkpd_lib.study.datasets.network_inputs`) and the networks (their Keras inputs,
scaling and :func:`pkpd_lib.nets.networks.check_inputs`) read this table; the demographic
inputs come from the covariates' definitions in :mod:`pkpd_lib.pmx.population`, and every
input is checked by its one rule (:func:`pkpd_lib.pmx.population.check_valid`).
TensorFlow-free.

To add an input: add a ``Feature`` to :data:`FEATURES` with its builder, then name it in a
:class:`pkpd_lib.nets.networks.NetworkConfig` (``static_features``, or a per-step flag).

Examples
--------
>>> FEATURES["WT"].unit, FEATURES["conc"].per_step
('kg', True)
>>> check_values("SEX", [0, 1, 1])
array([0., 1., 1.])
>>> check_values("WT", [70.0, -3.0])
Traceback (most recent call last):
...
ValueError: feature 'WT' (kg) must be > 0, got -3.0 (patient 1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..pmx.pk import dose_arrays
from ..pmx.population import COVARIATE_NAMES, COVARIATES, Covariate, check_valid


@dataclass(frozen=True)
class Source:
    """What features are built from: a data set, the times and concentrations the network
    reads, and which baseline to use.

    Parameters
    ----------
    data : pkpd_lib.study.datasets.Dataset
        The patients' data set: the builders read its ``population``, ``regimens``,
        ``times_h``, ``pd_obs`` and ``screening_pd``.
    times_h : numpy.ndarray, (N, K)
        The times (h) the network reads, one row per patient.
    conc_obs : numpy.ndarray, (N, K)
        The observed concentrations (mg/L) at those times.
    baseline : {"true", "observed", "screening"}, default "true"
        Which baseline PD ``BASE_PD`` is (see :func:`baseline_pd`).
    """

    data: object
    times_h: np.ndarray
    conc_obs: np.ndarray
    baseline: str = "true"


@dataclass(frozen=True)
class Feature:
    """One network input.

    Parameters
    ----------
    name : str
        The input's name, also its Keras input's name.
    per_step : bool
        True for one value per time step, (N, K); False for one value per patient, (N,).
    unit : str
        Its unit, e.g. ``"mg/L"``.
    description : str
        What it is, in words.
    build : callable
        ``build(source)``: the (N, K) or (N,) array of a :class:`Source`.
    low : float, default -inf
        The smallest valid value.
    low_open : bool, default False
        ``low`` itself is invalid.
    values : tuple of float or None, default None
        The only valid values, if discrete (then ``low`` is not checked).
    """

    name: str
    per_step: bool
    unit: str
    description: str
    build: Callable[[Source], np.ndarray]
    low: float = -np.inf
    low_open: bool = False
    values: tuple[float, ...] | None = None


def baseline_pd(data, kind: str = "true") -> np.ndarray:
    """Each patient's baseline PD (biomarker units).

    Parameters
    ----------
    data : pkpd_lib.study.datasets.Dataset
        The patients' data set.
    kind : {"true", "observed", "screening"}, default "true"
        ``"true"``: the patient's R0 (an oracle: no study knows it exactly).
        ``"observed"``: the single pre-dose PD observation at 0 h, with its 3% residual
        error. ``"screening"``: the mean of the patient's pre-dose screening measurements
        (:func:`pkpd_lib.study.datasets.screening`, three with 3% error each), what a
        study that measures baseline carefully would have.

    Returns
    -------
    numpy.ndarray, (N,)
        The baselines (biomarker units), a new array.

    Raises
    ------
    ValueError
        If ``kind`` is unknown, is ``"observed"`` and the data set's first sampling time
        is not 0 h, or is ``"screening"`` and the data set has no screening measurements
        (``screening_pd`` is None).
    """
    if kind == "true":
        return data.population.params.R0.copy()
    if kind == "observed":
        if data.times_h[0] != 0.0:
            raise ValueError("an observed baseline needs a PD sample at 0 h")
        return data.pd_obs[:, 0].copy()
    if kind == "screening":
        if data.screening_pd is None:
            raise ValueError(
                "baseline kind 'screening' needs screening measurements, but the data set "
                "has none (screening_pd is None)"
            )
        return data.screening_pd.mean(axis=1)
    raise ValueError(f"unknown baseline kind {kind!r}; expected 'true', 'observed' or 'screening'")


def dose_history(regimens: Sequence, times_h) -> tuple[np.ndarray, np.ndarray]:
    """Hours since the last dose given strictly before each time, and its amount (mg).

    Before the first dose both are 0 (a sample at a dose time is the trough, taken before
    that dose).

    Parameters
    ----------
    regimens : sequence of pkpd_lib.pmx.regimens.Regimen
        Each patient's regimen, N of them.
    times_h : array_like, (N, K)
        Each patient's times (h), one row per regimen.

    Returns
    -------
    since : numpy.ndarray, (N, K)
        Hours since the last dose.
    amount : numpy.ndarray, (N, K)
        Its amount (mg).

    Raises
    ------
    ValueError
        If ``times_h`` is not (N, K) with one row per regimen.
    """
    t = np.asarray(times_h, dtype=float)
    if t.ndim != 2 or t.shape[0] != len(regimens):
        raise ValueError(f"times_h must be ({len(regimens)}, K), got {t.shape}")
    dose_t, dose_amt = dose_arrays(regimens, len(regimens))  # (N, E), padded with 0 mg
    # doses are in time order: the last one strictly before t is the count of them, - 1
    before = (dose_amt[:, None, :] > 0) & (dose_t[:, None, :] < t[:, :, None])  # (N, K, E)
    j = before.sum(axis=2) - 1
    has = j >= 0
    last = np.maximum(j, 0)
    since = np.where(has, t - np.take_along_axis(dose_t, last, axis=1), 0.0)
    amount = np.where(has, np.take_along_axis(dose_amt, last, axis=1), 0.0)
    return since, amount


def _covariate_feature(c: Covariate) -> Feature:
    """The network input of a demographic covariate, as :mod:`pkpd_lib.pmx.population`
    defines it (unit, description, valid values)."""
    build = lambda s: s.data.population.covariates[c.name].to_numpy()  # noqa: E731
    return Feature(c.name, False, c.unit, c.description, build, c.low, c.low_open, c.values)


_DOSE = lambda s: dose_history(s.data.regimens, s.times_h)  # noqa: E731

#: Times (h) of the early biomarker samples under QD that a network may read (days 1-2).
EARLY_PD_TIMES_H = (12.0, 24.0, 36.0, 48.0)


def observed_pd_at(data, time_h: float) -> np.ndarray:
    """Each patient's observed PD (biomarker units) at ``time_h`` in ``data``.

    For the early-PD inputs ``data`` must be the patient's QD data, whatever regimen the
    network is asked about.

    Parameters
    ----------
    data : pkpd_lib.study.datasets.Dataset
        The patients' data set, sampled at the same times for all.
    time_h : float
        The sampling time (h), exactly one of ``data.times_h``.

    Returns
    -------
    numpy.ndarray, (N,)
        The observations (biomarker units), a new array.

    Raises
    ------
    ValueError
        If ``data`` has no sample at ``time_h`` (or more than one).
    """
    times = np.asarray(data.times_h, dtype=float)
    hit = np.flatnonzero(times == float(time_h))
    if hit.size != 1:
        raise ValueError(f"the data set has no PD sample at {time_h:g} h")
    return data.pd_obs[:, hit[0]].copy()


def _early_pd(time_h: float) -> Feature:
    return Feature(
        f"PD_QD_{time_h:g}H",
        False,
        "biomarker units",
        f"the patient's observed PD at {time_h:g} h under QD (early response)",
        lambda s: observed_pd_at(s.data, time_h),
        0.0,
    )


#: Every input a network of this package can read, by name.
FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("conc", True, "mg/L", "observed plasma concentration", lambda s: s.conc_obs, 0.0),
        Feature("time_h", True, "h", "sampling time", lambda s: s.times_h, 0.0),
        Feature(
            "hours_since_dose",
            True,
            "h",
            "hours since the last dose given strictly before the time point (0 before any)",
            lambda s: _DOSE(s)[0],
            0.0,
        ),
        Feature(
            "last_dose_mg",
            True,
            "mg",
            "amount of that dose (0 before any)",
            lambda s: _DOSE(s)[1],
            0.0,
        ),
        Feature(
            "BASE_PD",
            False,
            "biomarker units",
            "baseline PD: the true R0 or an observed pre-dose value",
            lambda s: baseline_pd(s.data, s.baseline),
            0.0,
            low_open=True,
        ),
        *(_covariate_feature(c) for c in COVARIATES.values()),
        *(_early_pd(t) for t in EARLY_PD_TIMES_H),
    )
}

#: The per-step inputs every network reads, and the optional sampling-time input.
CONC, TIME = "conc", "time_h"
#: The per-step dose-history inputs (``NetworkConfig.dose_inputs``).
DOSE_FEATURES = ("hours_since_dose", "last_dose_mg")
#: The static inputs of the book's networks, in order: baseline PD and the demographic
#: covariates (:data:`pkpd_lib.pmx.population.COVARIATES`).
STATIC_FEATURES = ("BASE_PD", *COVARIATE_NAMES)
#: The optional static inputs of the patient's early response under QD.
EARLY_PD_FEATURES = tuple(f"PD_QD_{t:g}H" for t in EARLY_PD_TIMES_H)


def check_values(name: str, values) -> np.ndarray:
    """``values`` of feature ``name`` as a float array, checked against its definition.

    Parameters
    ----------
    name : str
        A key of :data:`FEATURES`.
    values : array_like
        Its values, any shape with one patient per row (first index).

    Returns
    -------
    numpy.ndarray
        ``values`` as floats.

    Raises
    ------
    ValueError
        If ``name`` is unknown; or, naming the feature, its unit and the first offending
        patient, if any value is NaN or inf, below ``low`` (or at it, with ``low_open``)
        or not among the feature's ``values``
        (:func:`pkpd_lib.pmx.population.check_valid`).
    """
    if name not in FEATURES:
        raise ValueError(f"unknown feature {name!r}; known: {list(FEATURES)}")
    f = FEATURES[name]
    return check_valid(values, f"feature {name!r} ({f.unit})", f.low, f.low_open, f.values)


def build_inputs(source: Source, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named features of ``source`` as float32 arrays, in the order given.

    The values are not checked (:func:`check_values` does that; the networks call it).

    Parameters
    ----------
    source : Source
        What the features are built from.
    names : sequence of str
        Keys of :data:`FEATURES`.

    Returns
    -------
    dict of str to numpy.ndarray
        Each feature, (N, K) per step or (N,) static, keyed by name.

    Raises
    ------
    KeyError
        If a name is not a feature.
    ValueError
        From a builder: e.g. :func:`baseline_pd`, :func:`observed_pd_at`,
        :func:`dose_history`.
    """
    return {name: FEATURES[name].build(source).astype("float32") for name in names}
