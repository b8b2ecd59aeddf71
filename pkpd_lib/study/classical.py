"""Classical PK/PD modelling of the same data, for comparison with the networks.

The sequential approach of pharmacometrics: each patient's PK is fitted first
(:func:`pkpd_lib.pmx.pkfit.fit_individual_pk`), then population PD parameters are fitted to
all patients' PD observations with the individual PK fixed. Two PD structures:

``"turnover"``
    the true structure: sigmoid Emax -> 3 transit compartments -> indirect response
    (parameters Emax, EC50 mg/L, gam, MTT h, kout 1/h).
``"effect_compartment"``
    a simpler, misspecified one: an effect compartment (ke0 1/h) and a direct sigmoid
    Emax on the biomarker, ``PD = R0 * (1 + Emax Ce^gam / (EC50^gam + Ce^gam))``.

Both carry the covariate effects a modeller would test: ``Emax * (AGE/45)^Emax_AGE`` and
``EC50 * (1 - EC50_SEX * SEX)``. The baseline ``R0`` is an input, as for the networks.
Fits are least squares on the 3% proportional PD error (``scipy.optimize.least_squares``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ..memo import Memo, content_key
from ..pmx.model import EFFECT_COMPARTMENT, TRANSIT_TURNOVER, simulate_structure
from ..pmx.pk import dose_arrays
from ..pmx.pkfit import PKFit, fit_individual_pk
from ..pmx.population import check_covariates
from ..pmx.sampling import RESIDUAL_CV
from .datasets import Dataset

#: Parameters of each PD structure, with start values (deliberately not the truth) and
#: bounds. The first block is log-transformed in the fit; covariate effects are not.
PD_START_VALUES = {
    "turnover": {"Emax": 0.5, "EC50": 1.0, "gam": 1.0, "MTT": 6.0, "kout": 0.2},
    "effect_compartment": {"Emax": 0.5, "EC50": 1.0, "gam": 1.0, "ke0": 0.1},
}
#: The model structure (:mod:`pkpd_lib.pmx.model`) behind each PD structure's name.
MODEL_STRUCTURES = {"turnover": TRANSIT_TURNOVER, "effect_compartment": EFFECT_COMPARTMENT}
#: Covariate coefficients of the sequential PD fit: (start value, (lower, upper) bounds).
COVARIATE_STARTS_AND_BOUNDS = {"Emax_AGE": (0.0, (-3.0, 3.0)), "EC50_SEX": (0.0, (-0.9, 0.9))}


@dataclass(frozen=True)
class PDFit:
    """A fitted population PD model: ``structure``, ``theta`` (parameter name -> value),
    the least-squares ``cost``, function evaluations ``nfev`` and wall ``seconds``."""

    structure: str
    theta: dict[str, float]
    cost: float
    nfev: int
    seconds: float


def _check_structure(structure: str) -> None:
    if structure not in PD_START_VALUES:
        raise ValueError(
            f"unknown PD structure {structure!r}; expected one of {list(PD_START_VALUES)}"
        )


def predict_pd_from_pk(
    structure: str,
    theta: Mapping[str, float],
    pk_params: pd.DataFrame,
    covariates,
    baseline_pd,
    regimens,
    times_h,
) -> np.ndarray:
    """PD (biomarker units), (N, T), that the population PD model ``structure`` with
    parameters ``theta`` predicts for N patients with individual PK ``pk_params``
    (columns ka 1/h, CL L/h, V L), covariates, baselines and regimens. The structures
    are :data:`pkpd_lib.pmx.model.TRANSIT_TURNOVER` and
    :data:`pkpd_lib.pmx.model.EFFECT_COMPARTMENT`."""
    _check_structure(structure)
    cov = check_covariates(covariates)
    r0 = np.asarray(baseline_pd, float).reshape(-1)
    emax = theta["Emax"] * (cov["AGE"] / 45) ** theta["Emax_AGE"]
    ec50 = theta["EC50"] * (1 - theta["EC50_SEX"] * cov["SEX"])
    pk = {k: pk_params[k].to_numpy(float) for k in ("ka", "CL", "V")}
    shared = {k: theta[k] for k in PD_START_VALUES[structure] if k not in ("Emax", "EC50")}
    params = {**pk, **shared, "Emax": emax, "EC50": ec50, "R0": r0}
    return simulate_structure(
        MODEL_STRUCTURES[structure], params, regimens, times_h, rtol=1e-6, atol=1e-9
    ).pd


def fit_population_pd(
    structure: str,
    pk_params: pd.DataFrame,
    covariates,
    baseline_pd,
    regimens,
    times_h,
    pd_obs,
) -> PDFit:
    """Fit the population PD parameters of ``structure`` to observed PD (N, T).

    The individual PK (``pk_params``) is fixed; residuals are scaled by the 3%
    proportional PD error. Returns the estimates and the cost of the fit.
    """
    _check_structure(structure)
    y = np.asarray(pd_obs, float)
    if y.ndim != 2 or not np.all(np.isfinite(y)):
        raise ValueError("pd_obs must be a finite (N, T) array")
    log_names = list(PD_START_VALUES[structure])
    names = log_names + list(COVARIATE_STARTS_AND_BOUNDS)
    x0 = np.r_[np.log([PD_START_VALUES[structure][k] for k in log_names]), [0.0, 0.0]]
    lower = np.r_[
        np.full(len(log_names), -np.inf), [b[0] for _, b in COVARIATE_STARTS_AND_BOUNDS.values()]
    ]
    upper = np.r_[
        np.full(len(log_names), np.inf), [b[1] for _, b in COVARIATE_STARTS_AND_BOUNDS.values()]
    ]
    scale = RESIDUAL_CV["pd"] * np.asarray(baseline_pd, float).reshape(-1, 1)

    def theta_of(x):
        return {
            k: float(np.exp(v)) if k in log_names else float(v)
            for k, v in zip(names, x, strict=True)
        }

    def residuals(x):
        pred = predict_pd_from_pk(
            structure, theta_of(x), pk_params, covariates, baseline_pd, regimens, times_h
        )
        return ((y - pred) / scale).ravel()

    t0 = time.perf_counter()
    sol = least_squares(residuals, x0, bounds=(lower, upper), method="trf", x_scale=1.0)
    return PDFit(structure, theta_of(sol.x), float(sol.cost), sol.nfev, time.perf_counter() - t0)


#: Empirical Bayes PK fits of the data sets seen in this process, by content: a chapter
#: fits several PD structures to one training set and predicts each on the same test
#: sets, and the PK fit (about a minute for 1000 patients) is the same every time.
_PK_FITS = Memo(kept=8)


def dataset_pk(data: Dataset) -> PKFit:
    """Empirical Bayes PK of every patient of ``data`` from its observed concentrations
    (:func:`~pkpd_lib.pmx.pkfit.fit_individual_pk`), fitted once per data set in a
    process: the fit is deterministic, so a data set with the same concentrations,
    times, regimens and covariates gets the same estimates again.

    Parameters
    ----------
    data : Dataset
        Its ``conc_obs`` (mg/L), ``times_h``, ``regimens`` and covariates are read.

    Returns
    -------
    PKFit
        A copy of the process's fit: the caller may change it.
    """
    times, amounts = dose_arrays(data.regimens, data.n_patients)
    covariates = data.population.covariates
    key = content_key(
        *(
            np.asarray(part, dtype=float)
            for part in (data.conc_obs, data.times_h, times, amounts, covariates.to_numpy(float))
        ),
        tuple(covariates.columns),
    )
    fit = _PK_FITS.get(key)
    if fit is None:
        fit = _PK_FITS.put(
            key, fit_individual_pk(data.conc_obs, data.times_h, data.regimens, covariates)
        )
    return replace(
        fit, params=fit.params.copy(), etas=fit.etas.copy(), objective=fit.objective.copy()
    )


def fit_sequential(structure: str, train: Dataset) -> tuple[PDFit, PKFit]:
    """The sequential PK/PD fit of a data set: empirical Bayes PK of every patient from
    the observed concentrations (:func:`dataset_pk`, once per data set), then the
    population PD of ``structure`` from the observed PD. The baseline is the patient's
    true R0, as for the networks."""
    pk = dataset_pk(train)
    pd_fit = fit_population_pd(
        structure,
        pk.params,
        train.population.covariates,
        train.population.params.R0,
        train.regimens,
        train.times_h,
        train.pd_obs,
    )
    return pd_fit, pk


def predict_dataset(fit: PDFit, data: Dataset) -> np.ndarray:
    """Predict the PD (N, T) of new patients from what the networks also see: their
    observed concentrations (PK fitted by empirical Bayes), covariates and baseline."""
    pk = dataset_pk(data)
    return predict_pd_from_pk(
        fit.structure,
        fit.theta,
        pk.params,
        data.population.covariates,
        data.population.params.R0,
        data.regimens,
        data.times_h,
    )
