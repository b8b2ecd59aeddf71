"""Population models of the book's drug for :mod:`pkpd_lib.pmx.nlme`, estimated from data.

Nothing here reads the generating values: the covariate relations are estimated as
power (log-scale) effects, the random effects and residual errors as well.

* PK: one compartment with first-order absorption (ka 1/h, CL L/h, V L), CL on
  ``log(WT/70)`` and ``log(AGE/45)``, V on ``log(WT/70)``, random effects on all three,
  proportional error. Concentrations in closed form by superposition
  (:func:`pkpd_lib.pmx.pk.oral_conc`).
* PD: the drug effect ``E = Emax C^gam / (EC50^gam + C^gam)`` passes ``n_transit``
  transit steps (mean transit time MTT h) into a turnover model whose production it
  stimulates, ``dR/dt = kout R0 (1 + T_last) - kout R``; ``n_transit=3`` is the true
  structure, fewer steps are simpler competitors (0: the effect drives the turnover
  directly). Emax on ``log(AGE/45)``, EC50 on SEX; random effects on R0, EC50 and kout;
  proportional error. Integrated on a grid of :data:`PD_STEP_H` with each linear stage
  solved exactly for its input averaged over the step (second order); the PK comes from
  each patient's individual estimates (sequential, IPP).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from scipy import signal, special

from .model import FEEDBACK_UNITS as _FEEDBACK_MODEL_UNITS
from .model import TYPICAL_PARAMS
from .nlme import NLMEModel, Observations, grid_positions, values_at

# _superposed_conc: the name _pk_predict calls; a fit's store key holds the predict
# function's bytecode and names (pkpd_lib.pmx.nlme), so renaming it would orphan the
# stored fits
from .pk import dose_arrays
from .pk import oral_conc as _superposed_conc
from .population import COVARIATE_EFFECTS, ETA_SD
from .sampling import RESIDUAL_CV

#: Step (h) of the PD grid.
PD_STEP_H = 0.5


def covariate_columns(covariates: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The centred covariates the models use: ``lwt`` = log(WT/70), ``lage`` =
    log(AGE/45), ``sex`` (1 female).

    Parameters
    ----------
    covariates : mapping
        ``WT`` (kg), ``AGE`` (years) and ``SEX`` (0 male, 1 female) of N patients, e.g. a
        DataFrame (not checked).

    Returns
    -------
    dict of str to numpy.ndarray
        ``lwt``, ``lage`` and ``sex``, each (N,).
    """
    wt = np.asarray(covariates["WT"], float)
    age = np.asarray(covariates["AGE"], float)
    return {
        "lwt": np.log(wt / 70.0),
        "lage": np.log(age / 45.0),
        "sex": np.asarray(covariates["SEX"], float),
    }


def pk_observations(conc_obs, times_h, regimens, covariates) -> Observations:
    """Concentration observations (N, K) with each patient's doses.

    Parameters
    ----------
    conc_obs : array_like
        Observed concentrations (mg/L), (N, K); NaN for a missing sample.
    times_h : array_like
        Sampling times (h), (K,) shared or (N, K).
    regimens : Regimen or sequence of Regimen
        One regimen shared by the patients, or one each.
    covariates : mapping
        ``WT``, ``AGE`` and ``SEX`` of the patients (see :func:`covariate_columns`).

    Returns
    -------
    Observations
        For :data:`PK_MODEL`: IDs 0..N-1, the covariate columns of
        :func:`covariate_columns`, and the doses of :func:`pkpd_lib.pmx.pk.dose_arrays`
        in ``extra`` (``"dose_t"`` h and ``"dose_amt"`` mg, (N, E)).
    """
    conc = np.asarray(conc_obs, float)
    n = conc.shape[0]
    t = np.broadcast_to(np.asarray(times_h, float), conc.shape)
    dose_t, dose_amt = dose_arrays(regimens, n)
    return Observations(
        np.arange(n),
        t,
        conc,
        covariate_columns(covariates),
        {"dose_t": dose_t, "dose_amt": dose_amt},
    )


def _pk_predict(p, d: Observations) -> np.ndarray:
    n, r = p["ka"].shape
    rep = lambda a: np.repeat(np.asarray(a, float), r, axis=0)  # noqa: E731
    c = _superposed_conc(
        p["ka"].ravel(),
        p["CL"].ravel(),
        p["V"].ravel(),
        rep(d.extra["dose_t"]),
        rep(d.extra["dose_amt"]),
        rep(d.times_h),
    )
    return c.reshape(n, r, -1)


#: The population PK model (see the module docstring).
PK_MODEL = NLMEModel(
    "one compartment, first-order absorption",
    ("ka", "CL", "V"),
    dict.fromkeys(("ka", "CL", "V"), "log"),
    ("ka", "CL", "V"),
    _pk_predict,
    error=("prop",),
    covariates={"CL": ("lwt", "lage"), "V": ("lwt",)},
    units={"ka": "1/h", "CL": "L/h", "V": "L"},
)
#: Micrograms per milligram. Sparse PK is fitted in µg/L: late QD troughs reach 1e-8 mg/L,
#: where a 10% proportional error falls under the estimator's smallest residual SD
#: (:data:`pkpd_lib.pmx.nlme.SD_FLOOR`, 1e-6 in the DV's unit).
UG_PER_MG = 1000.0


def _pk_predict_ug_per_l(p, d: Observations) -> np.ndarray:
    return UG_PER_MG * _pk_predict(p, d)


#: :data:`PK_MODEL` with concentrations in µg/L (DV = 1000 x mg/L).
PK_MODEL_UG_PER_L = dataclasses.replace(
    PK_MODEL, name="one compartment, first-order absorption, ug per L", predict=_pk_predict_ug_per_l
)
#: The first starting point of :data:`PK_STARTS`.
PK_START = {"ka": 0.5, "CL": 10.0, "V": 30.0}
#: Three starting points (a modeller's guesses, none of them the generating values): the
#: fit with the lowest objective is kept, as a modeller does when seven samples leave
#: the absorption rate weakly determined (a second optimum with fast absorption exists).
PK_STARTS = (PK_START, {"ka": 2.0, "CL": 25.0, "V": 80.0}, {"ka": 0.25, "CL": 6.0, "V": 100.0})


def individual_conc(pk_params: Mapping[str, np.ndarray], regimens, times_h) -> np.ndarray:
    """Concentrations (N, T) from individual PK parameters (ka, CL, V arrays (N,)).

    Parameters
    ----------
    pk_params : mapping
        ``ka`` (1/h), ``CL`` (L/h) and ``V`` (L), each (N,).
    regimens : Regimen or sequence of Regimen
        One regimen shared by the patients, or one each.
    times_h : array_like
        Times (h): (T,) shared by the patients, or (N, T), each patient's own.

    Returns
    -------
    numpy.ndarray
        Concentrations (mg/L), (N, T); a dose at a time counts after it (trough).

    Raises
    ------
    ValueError
        If ``times_h`` is neither (T,) nor (N, T) with a row per patient.

    Examples
    --------
    >>> from pkpd_lib.pmx.regimens import qd
    >>> pk = {"ka": np.array([1.0, 1.0]), "CL": np.array([2.0, 4.0]), "V": np.array([20.0] * 2)}
    >>> individual_conc(pk, qd(), [0.0, 2.0, 4.0]).shape
    (2, 3)
    >>> individual_conc(pk, qd(), [[0.0, 2.0], [1.0, 3.0]]).shape
    (2, 2)
    >>> individual_conc(pk, qd(), np.zeros((3, 2)))
    Traceback (most recent call last):
    ...
    ValueError: times_h must be (T,) or (N, T) = (2, T) for 2 patients, got shape (3, 2)
    """
    n = np.asarray(pk_params["CL"]).size
    dose_t, dose_amt = dose_arrays(regimens, n)
    t = np.asarray(times_h, float)
    if t.ndim == 2 and t.shape[0] == n:
        pass  # each patient's own times
    elif t.ndim <= 1:
        t = np.broadcast_to(t, (n, t.size))
    else:
        raise ValueError(
            f"times_h must be (T,) or (N, T) = ({n}, T) for {n} patients, got shape {t.shape}"
        )
    return _superposed_conc(
        np.asarray(pk_params["ka"], float),
        np.asarray(pk_params["CL"], float),
        np.asarray(pk_params["V"], float),
        dose_t,
        dose_amt,
        t,
    )


def linear_recurrence(u, decay) -> np.ndarray:
    """``s[n] = decay * s[n-1] + u[n]`` along the last axis, from ``s[-1] = 0``: a
    first-order linear filter with one ``decay`` per row (broadcast against
    ``u[..., 0]``), computed by a doubling scan (log2 of the length in whole-array
    passes) instead of a Python loop over the steps.

    Parameters
    ----------
    u : array_like
        The input, (..., G).
    decay : array_like
        The factor per step, broadcast against ``u[..., 0]``.

    Returns
    -------
    numpy.ndarray
        ``s``, the broadcast shape of ``u`` and ``decay[..., None]``.

    Examples
    --------
    >>> linear_recurrence([[1.0, 0.0, 0.0, 2.0]], [0.5])
    array([[1.   , 0.5  , 0.25 , 2.125]])
    """
    u = np.asarray(u, float)
    power = np.asarray(decay, float)[..., None]
    s = np.array(np.broadcast_to(u, np.broadcast_shapes(u.shape, power.shape)))
    shift = 1
    while shift < s.shape[-1]:
        s[..., shift:] = s[..., shift:] + power * s[..., :-shift]
        power = power * power
        shift *= 2
    return s


def transit_turnover_grid(
    p: Mapping[str, np.ndarray], conc_mid, n_transit: int, step_h: float = PD_STEP_H
) -> np.ndarray:
    """PD on the grid 0, step_h, ... from mid-step concentrations; see the module
    docstring.

    Parameters
    ----------
    p : mapping
        ``Emax``, ``EC50`` (mg/L), ``gam``, ``R0`` (biomarker units), ``kout`` (1/h) and,
        with transit steps, ``MTT`` (h): arrays (N, R) (or broadcastable).
    conc_mid : array_like
        Concentrations (mg/L) at the middle of each step, (N, G).
    n_transit : int
        Transit steps between the drug effect and the turnover (0: none).
    step_h : float
        The grid's step (h), default :data:`PD_STEP_H`.

    Returns
    -------
    numpy.ndarray
        PD (biomarker units) at 0, step_h, ..., G step_h: (N, R, G+1) for (N, R)
        parameters, starting at ``R0``.
    """
    drive = _transit_drive(p, conc_mid, n_transit, step_h)
    r0, kout = np.asarray(p["R0"], float), np.asarray(p["kout"], float)
    b = np.exp(-kout * step_h)
    gain = (1.0 - b) * r0
    out = np.empty((*drive.shape[:-1], drive.shape[-1] + 1))
    r = np.broadcast_to(r0, out.shape[:-1]).astype(float)
    out[..., 0] = r
    for n in range(drive.shape[-1]):
        r = r * b + gain * (1.0 + drive[..., n])
        out[..., n + 1] = r
    return out


def _transit_drive(p: Mapping[str, np.ndarray], conc_mid, n_transit: int, step_h: float):
    """The sigmoid Emax drive ``Emax C^gam / (EC50^gam + C^gam)`` (N, R, G) from mid-step
    concentrations (N, G), after ``n_transit`` transit steps of mean transit time
    ``MTT`` (h)."""
    c = np.asarray(conc_mid, float)[:, None, :]
    emax, ec50, gam = (np.asarray(p[k], float)[..., None] for k in ("Emax", "EC50", "gam"))
    cg = np.power(np.maximum(c, 0.0), gam)
    drive = emax * cg / (np.power(ec50, gam) + cg)  # (N, R, G)
    if n_transit:
        a = np.exp(-n_transit / np.asarray(p["MTT"], float) * step_h)
        drive = _transit_chain(drive, a, n_transit)
    return drive


def _transit_chain(drive, a, n_transit: int) -> np.ndarray:
    """The drive (..., G) after ``n_transit`` transit stages with decay ``a`` per step:
    each stage solved exactly for its input held over the step, the next stage reading
    the stage's mean over the step (trapezoid). One IIR filter (scipy) when every row
    has the same ``a`` (MTT without random effects), a scan per stage otherwise."""
    a = np.broadcast_to(np.asarray(a, float), drive.shape[:-1])
    if np.ptp(a) == 0.0:
        a0 = float(a.flat[0])
        num, den = np.array([1.0]), np.array([1.0])
        for _ in range(n_transit):
            num = np.convolve(num, [0.5 * (1.0 - a0), 0.5 * (1.0 - a0)])
            den = np.convolve(den, [1.0, -a0])
        return signal.lfilter(num, den, drive, axis=-1)
    for _ in range(n_transit):
        stage = linear_recurrence((1.0 - a[..., None]) * drive, a)
        before = np.concatenate([np.zeros_like(stage[..., :1]), stage[..., :-1]], axis=-1)
        drive = 0.5 * (before + stage)
    return drive


def pd_observations(
    pd_obs, times_h, conc_mid, covariates, step_h: float = PD_STEP_H
) -> Observations:
    """PD observations (N, K) at ``times_h`` (multiples of ``step_h``) with the patients'
    mid-step concentrations on the PD grid (N, G).

    Parameters
    ----------
    pd_obs : array_like
        Observed PD (biomarker units), (N, K); NaN where missing.
    times_h : array_like
        Sampling times (h), (K,) or (N, K), multiples of ``step_h``.
    conc_mid : array_like
        Each patient's concentration (mg/L) at the middle of each grid step, (N, G) (see
        :func:`mid_grid`), covering the sampling times.
    covariates : mapping
        ``WT``, ``AGE`` and ``SEX`` of the patients (see :func:`covariate_columns`).
    step_h : float
        The grid's step (h), default :data:`PD_STEP_H`.

    Returns
    -------
    Observations
        For :func:`pd_model`: IDs 0..N-1, the covariate columns of
        :func:`covariate_columns`, and in ``extra`` ``"conc_mid"`` and ``"grid_index"``
        (each sample's position on the grid, (N, K)).

    Raises
    ------
    ValueError
        Sampling times that are not multiples of ``step_h``.
    """
    y = np.asarray(pd_obs, float)
    t = np.broadcast_to(np.asarray(times_h, float), y.shape)
    index = grid_positions(t, step_h, "PD times")
    return Observations(
        np.arange(y.shape[0]),
        t,
        y,
        covariate_columns(covariates),
        {"conc_mid": np.asarray(conc_mid, float), "grid_index": index},
    )


def mid_grid(t_end_h: float, step_h: float = PD_STEP_H) -> np.ndarray:
    """Mid-step times (h) of the PD grid up to ``t_end_h``.

    Parameters
    ----------
    t_end_h : float
        The end of the grid (h).
    step_h : float
        The grid's step (h), default :data:`PD_STEP_H`.

    Returns
    -------
    numpy.ndarray
        ``step_h / 2, 3 step_h / 2, ...``, below ``t_end_h``.
    """
    return np.arange(step_h / 2, t_end_h, step_h)


def pd_model(n_transit: int) -> NLMEModel:
    """The PD model with ``n_transit`` transit steps (3 is the true structure).

    Parameters
    ----------
    n_transit : int
        Transit steps between the drug effect and the turnover (0: the effect drives the
        turnover directly, and the model has no ``MTT``).

    Returns
    -------
    NLMEModel
        Parameters ``R0``, ``Emax``, ``EC50``, ``gam``, ``MTT`` (with transit steps) and
        ``kout``, all log-transformed; random effects on ``R0``, ``EC50`` and ``kout``;
        ``Emax`` on ``lage`` and ``EC50`` on ``sex``; a proportional error. Its data come
        from :func:`pd_observations` or :func:`pd_data`.
    """
    params = ("R0", "Emax", "EC50", "gam", *(("MTT",) if n_transit else ()), "kout")

    def predict(p, d: Observations) -> np.ndarray:
        grid = transit_turnover_grid(p, d.extra["conc_mid"], n_transit)
        return values_at(grid, d.extra["grid_index"])

    return NLMEModel(
        f"turnover with {n_transit} transit step{'s' if n_transit != 1 else ''}",
        params,
        dict.fromkeys(params, "log"),
        ("R0", "EC50", "kout"),
        predict,
        error=("prop",),
        covariates={"Emax": ("lage",), "EC50": ("sex",)},
        units={
            "R0": "biomarker units",
            "Emax": "-",
            "EC50": "mg/L",
            "gam": "-",
            "MTT": "h",
            "kout": "1/h",
        },
    )


#: Starting values for the PD models (a modeller's guesses, not the generating values).
PD_START = {"R0": 90.0, "Emax": 0.5, "EC50": 1.0, "gam": 1.0, "MTT": 24.0, "kout": 0.05}


def pd_data(regimens, times_h, pk_params, covariates, pd_obs=None) -> Observations:
    """PD observations of patients with individual PK parameters ``pk_params`` under
    ``regimens`` at ``times_h``: their observed PD (N, K), or none (all missing) to
    predict or simulate a regimen the patients have not had.

    Parameters
    ----------
    regimens : Regimen or sequence of Regimen
        One regimen shared by the patients, or one each.
    times_h : array_like
        Sampling times (h), (K,) or (N, K), multiples of :data:`PD_STEP_H`.
    pk_params : mapping
        ``ka`` (1/h), ``CL`` (L/h) and ``V`` (L), each (N,).
    covariates : mapping
        ``WT``, ``AGE`` and ``SEX`` of the patients (see :func:`covariate_columns`).
    pd_obs : array_like, optional
        Observed PD (biomarker units), (N, K); None: all missing.

    Returns
    -------
    Observations
        As :func:`pd_observations`, with the concentrations from :func:`individual_conc`
        on the grid of :func:`mid_grid` up to the last sampling time.

    Raises
    ------
    ValueError
        Sampling times that are not multiples of :data:`PD_STEP_H`.
    """
    t = np.asarray(times_h, float)
    conc_mid = individual_conc(pk_params, regimens, mid_grid(t.max()))
    y = np.full((conc_mid.shape[0], t.shape[-1]), np.nan) if pd_obs is None else pd_obs
    return pd_observations(y, t, conc_mid, covariates)


def generating_values(extra_eta_sd: Mapping[str, float] | None = None) -> dict[str, float]:
    """The values that generated the book's data, named as the fits name their estimates
    (``theta_CL``, ``beta_CL~lwt``, ``omega_EC50``, ``sigma_prop``, ...; PK and PD
    together; ``omega`` is the SD of eta), for the patients of
    :func:`pkpd_lib.pmx.population.sample_population` with ``extra_eta_sd``. For comparing
    estimates with the truth in a simulation study; no fit reads them.

    Parameters
    ----------
    extra_eta_sd : mapping, optional
        The extra between-patient SDs the patients were sampled with (as
        :func:`~pkpd_lib.pmx.population.sample_population` takes them).

    Returns
    -------
    dict of str to float
        Typical values ``theta_*`` in the parameters' units, covariate coefficients
        ``beta_*`` (the EC50 effect as ``log(1 + effect)``, the fits' log-linear form),
        ``omega_*``, and ``sigma_prop`` (concentration) and ``sigma_prop (PD)``.

    Examples
    --------
    >>> truth = generating_values({"EC50": 0.3})
    >>> truth["theta_CL"], truth["beta_CL~lwt"], truth["omega_EC50"], truth["sigma_prop"]
    (15.0, 0.75, 0.3, 0.1)
    """
    e = COVARIATE_EFFECTS
    out = {f"theta_{k}": float(v) for k, v in TYPICAL_PARAMS.items()}
    out |= {
        "beta_CL~lwt": e["CL~WT"],
        "beta_CL~lage": e["CL~AGE"],
        "beta_V~lwt": e["V~WT"],
        "beta_Emax~lage": e["Emax~AGE"],
        # the fits' EC50 effect is log-linear: log(1 + effect)
        "beta_EC50~sex": float(np.log1p(e["EC50~SEX"])),
    }
    out |= {f"omega_{k}": float(v) for k, v in {**ETA_SD, **(extra_eta_sd or {})}.items()}
    out["sigma_prop"] = RESIDUAL_CV["conc"]
    out["sigma_prop (PD)"] = RESIDUAL_CV["pd"]
    return out


# --- the population-model search (protocol version 2) ------------------------------------

#: The indirect-response mechanisms the search compares (Dayneka, Garg and Jusko 1993),
#: by name, with their type: the drive stimulates the production (type III, the book's
#: true structure) or inhibits the loss (type II). Both raise the biomarker; types I and
#: IV lower it.
MECHANISMS = {"stimulated production": "III", "inhibited loss": "II"}
#: The random effects of the search's base model (those of :func:`pd_model`).
BASE_RANDOM = ("R0", "EC50", "kout")


def inhibited_loss_grid(
    p: Mapping[str, np.ndarray], conc_mid, n_transit: int, step_h: float = PD_STEP_H
) -> np.ndarray:
    """PD on the grid 0, step_h, ... of a turnover whose loss the drive inhibits
    (indirect response type II): ``dR/dt = kout R0 - kout (1 - I) R``, ``R(0) = R0``,
    ``I`` the drive of :func:`transit_turnover_grid` with ``Emax`` a fraction (< 1).
    Each step is solved exactly for the drive held at its mid-step value.

    Parameters
    ----------
    p : mapping
        ``Emax`` (a fraction), ``EC50`` (mg/L), ``gam``, ``R0`` (biomarker units),
        ``kout`` (1/h) and, with transit steps, ``MTT`` (h): arrays (N, R).
    conc_mid : array_like
        Concentrations (mg/L) at the middle of each step, (N, G).
    n_transit : int
        Transit steps between the drug effect and the turnover (0: none).
    step_h : float
        The grid's step (h), default :data:`PD_STEP_H`.

    Returns
    -------
    numpy.ndarray
        PD (biomarker units) at 0, step_h, ..., G step_h, (N, R, G+1), from ``R0``.
    """
    drive = _transit_drive(p, conc_mid, n_transit, step_h)
    r0 = np.asarray(p["R0"], float)
    kout = np.asarray(p["kout"], float)[..., None]
    kept = 1.0 - drive  # the share of the loss left, in [0, 1]
    # over a step: r += (kin - k r) h exprel(-k h), k = kout kept, kin = kout R0; finite
    # as kept -> 0 (no loss left: the production accumulates)
    gain = kout * step_h * special.exprel(-kout * kept * step_h)
    out = np.empty((*drive.shape[:-1], drive.shape[-1] + 1))
    r = np.broadcast_to(r0, out.shape[:-1]).astype(float)
    out[..., 0] = r
    for n in range(drive.shape[-1]):
        r = r + (r0 - kept[..., n] * r) * gain[..., n]
        out[..., n + 1] = r
    return out


def search_model(
    n_transit: int,
    mechanism: str = "stimulated production",
    random: tuple[str, ...] = BASE_RANDOM,
    covariates: Mapping[str, tuple[str, ...]] | None = None,
) -> NLMEModel:
    """A candidate of the population-model search: ``mechanism`` through ``n_transit``
    transit steps, random effects on ``random``, covariate relations ``covariates``.

    Parameters
    ----------
    n_transit : int
        Transit steps between the drug effect and the turnover (0 to 5 in the search; 0:
        no ``MTT``).
    mechanism : str
        A key of :data:`MECHANISMS`: ``"stimulated production"``
        (:func:`transit_turnover_grid`, ``Emax`` > 0 on the log scale) or ``"inhibited
        loss"`` (:func:`inhibited_loss_grid`, ``Emax`` a fraction on the logit scale).
    random : tuple of str
        The parameters with a random effect (default :data:`BASE_RANDOM`).
    covariates : mapping, optional
        Covariate columns of :func:`covariate_columns` (``lwt``, ``lage``, ``sex``) per
        parameter, each log-linear on the parameter's scale (power models for ``lwt``
        and ``lage``); None: none.

    Returns
    -------
    NLMEModel
        Parameters ``R0``, ``Emax``, ``EC50``, ``gam``, ``MTT`` (with transit steps) and
        ``kout``; proportional error; data from :func:`pd_observations` or
        :func:`pd_data`. ``search_model(3, random=BASE_RANDOM, covariates={"Emax":
        ("lage",), "EC50": ("sex",)})`` predicts as :func:`pd_model` ``(3)``.

    Raises
    ------
    ValueError
        An unknown mechanism, a negative or non-integer ``n_transit``, or random effects
        or covariates on a parameter the model lacks (naming it).

    Examples
    --------
    >>> m = search_model(2, "inhibited loss", random=("R0", "kout"))
    >>> m.params, m.transforms["Emax"], m.random
    (('R0', 'Emax', 'EC50', 'gam', 'MTT', 'kout'), 'logit', ('R0', 'kout'))
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; expected one of {list(MECHANISMS)}")
    if isinstance(n_transit, bool) or not isinstance(n_transit, int | np.integer) or n_transit < 0:
        raise ValueError(f"n_transit must be a whole number >= 0, got {n_transit!r}")
    n_transit = int(n_transit)
    params = ("R0", "Emax", "EC50", "gam", *(("MTT",) if n_transit else ()), "kout")
    covariates = {k: tuple(v) for k, v in (covariates or {}).items()}
    lacking = sorted((set(random) | set(covariates)) - set(params))
    if lacking:
        raise ValueError(
            f"random effects or covariates on {lacking}, which a model of {n_transit} "
            f"transit steps lacks (its parameters: {params})"
        )
    inhibits = mechanism == "inhibited loss"

    def predict(p, d: Observations) -> np.ndarray:
        grid_of = inhibited_loss_grid if inhibits else transit_turnover_grid
        grid = grid_of(p, d.extra["conc_mid"], n_transit)
        return values_at(grid, d.extra["grid_index"])

    effects = "; ".join(f"{k}~{'+'.join(v)}" for k, v in covariates.items() if v)
    return NLMEModel(
        f"{mechanism}, {n_transit} transit, eta {'/'.join(random)}"
        + (f", {effects}" if effects else ""),
        params,
        {**dict.fromkeys(params, "log"), **({"Emax": "logit"} if inhibits else {})},
        tuple(random),
        predict,
        error=("prop",),
        covariates={k: v for k, v in covariates.items() if v},
        units={
            "R0": "biomarker units",
            "Emax": "-",
            "EC50": "mg/L",
            "gam": "-",
            "MTT": "h",
            "kout": "1/h",
        },
    )


# --- interacting biomarkers: a response and its moderator ------------------------------

#: Parameters of :func:`feedback_model`, in its order, with their units (those of
#: :data:`pkpd_lib.pmx.model.FEEDBACK_UNITS`).
FEEDBACK_UNITS = {
    name: _FEEDBACK_MODEL_UNITS[name] for name in ("R0", "Imax", "IC50", "gam", "kout", "ktol")
}


def feedback_grid(
    p: Mapping[str, np.ndarray],
    conc_mid,
    conc_edge,
    feedback: bool = True,
    step_h: float = PD_STEP_H,
) -> tuple[np.ndarray, np.ndarray]:
    """The response ``R`` and its moderator ``M`` on the grid 0, step_h, ... from
    mid-step concentrations (see :data:`pkpd_lib.pmx.model.FEEDBACK_TOLERANCE`)::

        I     = Imax C^gam / (IC50^gam + C^gam)
        dR/dt = kout R0 (1 - I) (R0/M if feedback else 1) - kout R,   R(0) = R0
        dM/dt = ktol (R - M),                                          M(0) = R0

    Each step of ``step_h`` takes the fraction produced, ``1 - I``, as its average over
    the step (Simpson's rule from the concentrations at the step's start, middle and
    end: the concentration is smooth within a step, as doses fall on the grid's edges)
    and splits the coupling: ``M`` over half the step with ``R`` held, ``R`` over the
    step with ``M`` held at that half-step value, ``M`` over the step with ``R`` at its
    mean over the step, each of these linear stages solved exactly. Within 1e-3 of the
    simulation (:func:`pkpd_lib.pmx.model.simulate_feedback`, tested), at a few numpy
    operations per step.

    Parameters
    ----------
    p : mapping
        ``R0`` (biomarker units), ``Imax`` (0-1), ``IC50`` (mg/L), ``gam``, ``kout`` and
        ``ktol`` (1/h): arrays (N, R) (or broadcastable).
    conc_mid : array_like
        Concentrations (mg/L) at the middle of each step, (N, G).
    conc_edge : array_like
        Concentrations (mg/L) at 0, step_h, ..., G step_h, (N, G+1).
    feedback : bool
        The moderator divides the production of ``R`` (the true structure); False: it
        follows ``R`` without acting back on it (a structure without feedback).
    step_h : float
        The grid's step (h), default :data:`PD_STEP_H`.

    Returns
    -------
    R, M : numpy.ndarray
        Each (N, R, G+1) in biomarker units, starting at ``R0``.
    """
    imax, ic50, gam = (np.asarray(p[k], float)[..., None] for k in ("Imax", "IC50", "gam"))

    def fraction_produced(conc):  # 1 - I, (N, R, G or G+1)
        cg = np.power(np.maximum(np.asarray(conc, float), 0.0)[:, None, :], gam)
        return 1.0 - imax * cg / (np.power(ic50, gam) + cg)

    at_edge = fraction_produced(conc_edge)
    production = (at_edge[..., :-1] + 4.0 * fraction_produced(conc_mid) + at_edge[..., 1:]) / 6
    r0, kout, ktol = (np.asarray(p[k], float) for k in ("R0", "kout", "ktol"))
    shape = np.broadcast_shapes(production.shape[:-1], r0.shape, kout.shape, ktol.shape)
    b = np.exp(-kout * step_h)  # R's decay over a step
    half, whole = np.exp(-0.5 * ktol * step_h), np.exp(-ktol * step_h)  # M's
    gain = (1.0 - b) * r0 * (r0 if feedback else 1.0)
    r_out = np.empty((*shape, production.shape[-1] + 1))
    m_out = np.empty_like(r_out)
    r = m = np.broadcast_to(r0, shape).astype(float)
    r_out[..., 0] = m_out[..., 0] = r
    for n in range(production.shape[-1]):
        if feedback:
            r_new = r * b + gain * production[..., n] / (r + (m - r) * half)
        else:
            r_new = r * b + gain * production[..., n]
        mean = 0.5 * (r + r_new)
        m = mean + (m - mean) * whole
        r = r_new
        r_out[..., n + 1], m_out[..., n + 1] = r, m
    return r_out, m_out


def feedback_model(feedback: bool = True) -> NLMEModel:
    """The population model of two interacting biomarkers, ``R`` and ``M`` fitted
    together, each with its own proportional error (:func:`feedback_grid`).

    Parameters
    ----------
    feedback : bool
        The true structure (the moderator divides the production of ``R``), or the
        structure without feedback (``M`` follows ``R`` and nothing else): the same
        parameters, so the two OFVs compare directly.

    Returns
    -------
    NLMEModel
        Parameters :data:`FEEDBACK_UNITS` (``Imax`` on the logit scale, the others on
        the log scale); random effects on ``R0``, ``IC50`` and ``ktol``; ``IC50`` on
        ``sex``; outputs ``"R"`` and ``"M"``. Its data come from :func:`feedback_data`.
    """
    params = tuple(FEEDBACK_UNITS)

    def predict(p, d: Observations) -> dict[str, np.ndarray]:
        r, m = feedback_grid(p, d.extra["conc_mid"], d.extra["conc_edge"], feedback)
        index = d.extra["grid_index"]
        return {"R": values_at(r, index), "M": values_at(m, index)}

    return NLMEModel(
        f"response and moderator, {'with' if feedback else 'without'} feedback",
        params,
        {**dict.fromkeys(params, "log"), "Imax": "logit"},
        ("R0", "IC50", "ktol"),
        predict,
        error={"R": ("prop",), "M": ("prop",)},
        covariates={"IC50": ("sex",)},
        units=FEEDBACK_UNITS,
    )


#: Starting values of :func:`feedback_model` (a modeller's guesses, not the generating
#: values).
FEEDBACK_START = {"R0": 90.0, "Imax": 0.5, "IC50": 1.0, "gam": 1.0, "kout": 0.05, "ktol": 0.05}


def feedback_data(regimens, times_h, pk_params, covariates, r_obs=None, m_obs=None) -> Observations:
    """Observations of both biomarkers of patients with individual PK parameters
    ``pk_params`` under ``regimens``, for :func:`feedback_model`: per patient the
    ``R`` samples (output 0) then the ``M`` samples (output 1).

    Parameters
    ----------
    regimens : Regimen or sequence of Regimen
        One regimen shared by the patients, or one each.
    times_h : array_like
        Sampling times (h), (K,) or (N, K), multiples of :data:`PD_STEP_H`; both
        biomarkers are sampled at them.
    pk_params : mapping
        ``ka`` (1/h), ``CL`` (L/h) and ``V`` (L), each (N,).
    covariates : mapping
        ``WT``, ``AGE`` and ``SEX`` of the patients (see :func:`covariate_columns`).
    r_obs, m_obs : array_like, optional
        Observed ``R`` and ``M`` (biomarker units), (N, K) each; None: all missing (to
        predict or simulate a regimen).

    Returns
    -------
    Observations
        IDs 0..N-1, times and DVs (N, 2K), ``output`` 0 or 1, the covariate columns of
        :func:`covariate_columns`, and in ``extra`` ``"conc_mid"`` (N, G),
        ``"conc_edge"`` (N, G+1) and ``"grid_index"`` (N, 2K).

    Examples
    --------
    >>> from pkpd_lib.pmx import regimens
    >>> d = feedback_data(regimens.qd(), [0.0, 24.0], {"ka": [1.0], "CL": [15.0], "V": [50.0]},
    ...                   {"WT": [70.0], "AGE": [45.0], "SEX": [0]})
    >>> d.output.tolist(), d.extra["grid_index"].tolist()
    ([[0, 0, 1, 1]], [[0, 48, 0, 48]])
    """
    t = np.asarray(times_h, float)
    mid = mid_grid(t.max())
    conc_mid = individual_conc(pk_params, regimens, mid)
    conc_edge = individual_conc(pk_params, regimens, np.arange(mid.size + 1) * PD_STEP_H)
    n = conc_mid.shape[0]
    t = np.broadcast_to(t, (n, t.shape[-1]))
    missing = np.full(t.shape, np.nan)
    r = missing if r_obs is None else np.asarray(r_obs, float)
    m = missing if m_obs is None else np.asarray(m_obs, float)
    both = np.hstack([t, t])
    return Observations(
        np.arange(n),
        both,
        np.hstack([r, m]),
        covariate_columns(covariates),
        {
            "conc_mid": conc_mid,
            "conc_edge": conc_edge,
            "grid_index": grid_positions(both, PD_STEP_H, "PD times"),
        },
        output=np.hstack([np.zeros(t.shape, int), np.ones(t.shape, int)]),
    )
