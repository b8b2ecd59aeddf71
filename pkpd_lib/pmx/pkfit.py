"""Classical estimation of individual PK from sparse concentrations.

Empirical Bayes ("POSTHOC") estimates of each patient's ``ka``, ``CL`` and ``V`` under
the closed-form one-compartment model with first-order absorption (the default model's
PK, superposed over doses: :func:`pkpd_lib.pmx.pk.oral_conc`, with its analytic Jacobian
:func:`pkpd_lib.pmx.pk.oral_log_derivatives`): the mode of the posterior under the
population model of :mod:`pkpd_lib.pmx.population` (covariate model and log-normal etas)
and the 10% proportional residual error. All patients are fitted in one call to
``scipy.optimize.least_squares`` with a block-diagonal Jacobian sparsity, so the cost
grows linearly with patients.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.sparse import csr_matrix

from .pk import (
    dose_arrays,
    one_compartment_conc,
    oral_conc,
    oral_log_derivatives,
    times_per_patient,
)
from .population import ETA_SD, individual_params
from .sampling import RESIDUAL_CV

PK_PARAMS = ("ka", "CL", "V")
#: ``xtol``, ``ftol`` and ``gtol`` of the empirical Bayes fit (scipy's defaults are 1e-8).
FIT_TOL = 1e-12


@dataclass(frozen=True)
class PKFit:
    """Empirical Bayes PK estimates.

    Attributes
    ----------
    params : pandas.DataFrame
        Columns ka (1/h), CL (L/h) and V (L), one row per patient.
    etas : pandas.DataFrame
        Their log deviations from the covariate-predicted values, same layout.
    objective : numpy.ndarray
        Each patient's objective at the estimate (N,): sum of squared scaled residuals and
        prior terms, -2 log posterior up to a constant.
    cost : float
        The optimiser's total cost.
    nfev : int
        The optimiser's number of function evaluations.
    seconds : float
        The wall time of the fit.
    """

    params: pd.DataFrame
    etas: pd.DataFrame
    objective: np.ndarray
    cost: float
    nfev: int
    seconds: float


def fit_individual_pk(
    conc_obs,
    times_h,
    regimens,
    covariates: Mapping[str, object] | pd.DataFrame,
    residual_cv: float = RESIDUAL_CV["conc"],
) -> PKFit:
    """Empirical Bayes estimates of ka, CL and V from each patient's concentrations.

    Observations <= 0 (e.g. the pre-dose sample) carry no information on the log scale
    and are left out. The prior is the population model: covariate-predicted typical
    values with log-normal etas of SD :data:`pkpd_lib.pmx.population.ETA_SD`. The
    one-compartment oral model can have more than one local optimum per patient (e.g. ka
    and CL/V trading places); all patients are solved as one problem, which in the
    benchmark reached an equal or lower objective than separate per-patient fits for
    every patient.

    Parameters
    ----------
    conc_obs : array_like
        Observed concentrations (mg/L), (N, T), finite and >= 0.
    times_h : array_like
        Sampling times (h), (T,) or (N, T).
    regimens : Regimen or sequence of Regimen
        One regimen shared by the patients, or one each.
    covariates : mapping or pandas.DataFrame
        ``WT`` (kg), ``AGE`` (years) and ``SEX`` (1 female) of the N patients.
    residual_cv : float
        The proportional residual error (a fraction; the SD of the log residuals), default
        that of the data, :data:`pkpd_lib.pmx.sampling.RESIDUAL_CV` ``["conc"]``.

    Returns
    -------
    PKFit

    Raises
    ------
    ValueError
        ``conc_obs`` not 2-D, not finite or negative; sampling times that
        :func:`pkpd_lib.pmx.pk.times_per_patient` refuses or of another shape; covariates
        that :func:`pkpd_lib.pmx.population.individual_params` refuses or of another
        number of patients.
    """
    conc = np.asarray(conc_obs, dtype=float)
    if conc.ndim != 2:
        raise ValueError(f"conc_obs must be (N, T), got shape {conc.shape}")
    if not np.all(np.isfinite(conc)):
        raise ValueError("conc_obs contains NaN or inf")
    if np.any(conc < 0):
        raise ValueError("concentrations must be >= 0 mg/L")
    n, n_t = conc.shape
    t = times_per_patient(times_h, n)
    if t.shape != conc.shape:
        raise ValueError(f"times_h shape {t.shape} does not match conc_obs shape {conc.shape}")
    typical = individual_params(covariates)
    if typical.n_patients != n:
        raise ValueError(f"covariates describe {typical.n_patients} patients, conc_obs {n}")
    base = np.stack([getattr(typical, k) for k in PK_PARAMS], axis=1)  # (N, 3)
    omega = np.array([ETA_SD[k] for k in PK_PARAMS])
    used = conc > 0
    log_obs = np.log(np.where(used, conc, 1.0))
    dose_t, dose_amt = dose_arrays(regimens, n)  # once, not on every evaluation

    def residuals(flat_eta: np.ndarray) -> np.ndarray:
        eta = flat_eta.reshape(n, 3)
        p = base * np.exp(eta)
        pred = oral_conc(p[:, 0], p[:, 1], p[:, 2], dose_t, dose_amt, t)
        res = np.where(used, (log_obs - np.log(np.maximum(pred, 1e-12))) / residual_cv, 0.0)
        return np.concatenate([res, eta / omega], axis=1).ravel()

    # analytic Jacobian, block-diagonal: patient i's residual rows depend on its 3 etas
    rows = np.arange(n * (n_t + 3)).reshape(n, n_t + 3)
    cols = np.arange(n * 3).reshape(n, 3)
    jac_rows = np.broadcast_to(rows[:, :, None], (n, n_t + 3, 3)).ravel()
    jac_cols = np.broadcast_to(cols[:, None, :], (n, n_t + 3, 3)).ravel()
    prior = np.broadcast_to(np.diag(1.0 / omega), (n, 3, 3))

    def jacobian(flat_eta: np.ndarray) -> csr_matrix:
        p = base * np.exp(flat_eta.reshape(n, 3))
        pred = oral_conc(p[:, 0], p[:, 1], p[:, 2], dose_t, dose_amt, t)
        grad = oral_log_derivatives(p[:, 0], p[:, 1], p[:, 2], dose_t, dose_amt, t)
        live = used & (pred > 1e-12)  # where the residual is not clipped or left out
        d_res = np.where(live[:, :, None], -grad / np.where(live, pred, 1.0)[:, :, None], 0.0)
        values = np.concatenate([d_res / residual_cv, prior], axis=1).ravel()
        return csr_matrix((values, (jac_rows, jac_cols)), shape=(n * (n_t + 3), n * 3))

    t0 = time.perf_counter()
    # tight tolerances, and trust-region steps solved tightly (LSMR to 1e-12): the
    # estimate is the optimum to near machine precision in about 30 evaluations, so the
    # concentrations rebuilt from it (network inputs) agree across CPUs (measured:
    # 3e-10 of their RMS with numpy's AVX-512 paths on and off; scipy's default
    # tolerances and a finite-difference Jacobian: 4e-5)
    sol = least_squares(
        residuals,
        np.zeros(n * 3),
        jac=jacobian,
        method="trf",
        x_scale=1.0,
        xtol=FIT_TOL,
        ftol=FIT_TOL,
        gtol=FIT_TOL,
        tr_options={"atol": FIT_TOL, "btol": FIT_TOL},
    )
    seconds = time.perf_counter() - t0
    eta = sol.x.reshape(n, 3)
    params = pd.DataFrame(base * np.exp(eta), columns=list(PK_PARAMS))
    objective = (residuals(sol.x).reshape(n, n_t + 3) ** 2).sum(axis=1)
    etas = pd.DataFrame(eta, columns=list(PK_PARAMS))
    return PKFit(params, etas, objective, float(sol.cost), sol.nfev, seconds)


def reconstructed_conc(fit: PKFit, regimens, times_h) -> np.ndarray:
    """Noise-free concentration (mg/L), (N, T), of the fitted patients at ``times_h``.

    Parameters
    ----------
    fit : PKFit
        The patients' estimates.
    regimens : Regimen or sequence of Regimen
        One regimen shared by the patients, or one each (not necessarily those of the
        fit's data).
    times_h : array_like
        Times (h), (T,) or (N, T).

    Returns
    -------
    numpy.ndarray
        Concentrations (mg/L), (N, T) (:func:`pkpd_lib.pmx.pk.one_compartment_conc`).
    """
    p = fit.params
    return one_compartment_conc(p["ka"], p["CL"], p["V"], regimens, times_h)
