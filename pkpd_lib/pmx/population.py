"""Virtual patients: demographics, covariate models and between-patient variability.

Demographics: WT ~ Normal(75, 15) kg clipped to [40, 130]; AGE ~ Uniform(18, 80) years;
SEX ~ Bernoulli(0.5) with 1 = female.

Individual parameters (log-normal between-patient variability, SD of eta)::

    ka   = 1.0  * exp(eta 0.3)                                          1/h
    CL   = 15   * (WT/70)^0.75 * (AGE/45)^-0.3 * exp(eta 0.3)          L/h
    V    = 50   * (WT/70) * exp(eta 0.3)                                L
    Emax = 1.0  * (AGE/45)^-0.3
    EC50 = 0.5  * (1 - 0.3*SEX)                                         mg/L
    gam = 2, MTT = 12 h, kout = 0.1 1/h
    R0   = 100  * exp(eta 0.2)                                          biomarker units

Random numbers come from numpy's PCG64 generator, whose streams are the same on every
platform, so a seed fixes the patients everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .model import PARAM_NAMES, TYPICAL_PARAMS, Params

#: Between-patient variability: SD of the log-normal eta for each parameter that has one.
ETA_SD = {"ka": 0.3, "CL": 0.3, "V": 0.3, "R0": 0.2}

#: Covariate effects: exponents of WT/70 and AGE/45 (power models) and the fractional
#: change of EC50 in women (``1 + effect * SEX``).
COVARIATE_EFFECTS = {"CL~WT": 0.75, "CL~AGE": -0.3, "V~WT": 1.0, "Emax~AGE": -0.3, "EC50~SEX": -0.3}


@dataclass(frozen=True)
class Covariate:
    """A demographic covariate: its unit, description and valid values. The network inputs
    of the same names (:mod:`pkpd_lib.nets.features`) are built from these definitions.

    Parameters
    ----------
    name : str
        The covariate's name (e.g. ``"WT"``).
    unit : str
        Its unit, in words (e.g. ``"kg"``).
    description : str
        What it is, in words.
    low : float
        The lowest valid value (default -inf).
    low_open : bool
        Whether ``low`` itself is invalid.
    values : tuple of float, optional
        The only valid values, if discrete (e.g. ``(0.0, 1.0)``); None: any value from
        ``low`` on.
    """

    name: str
    unit: str
    description: str
    low: float = -np.inf
    low_open: bool = False
    values: tuple[float, ...] | None = None


#: The demographic covariates, by name: WT (kg), AGE (years), SEX (0 male, 1 female).
COVARIATES: dict[str, Covariate] = {
    c.name: c
    for c in (
        Covariate("WT", "kg", "body weight", 0.0, low_open=True),
        Covariate("AGE", "years", "age", 0.0, low_open=True),
        Covariate("SEX", "0 male, 1 female", "sex", values=(0.0, 1.0)),
    )
}
#: Their names, in order, and units.
COVARIATE_NAMES = tuple(COVARIATES)
COVARIATE_UNITS = {name: c.unit for name, c in COVARIATES.items()}


def check_valid(
    values,
    what: str,
    low: float = -np.inf,
    low_open: bool = False,
    allowed: tuple[float, ...] | None = None,
) -> np.ndarray:
    """``values`` as a float array; ``ValueError`` if any value is NaN or inf, not among
    ``allowed`` (if given), or below ``low`` (or at it, with ``low_open``). The one rule
    for covariates and network inputs.

    Parameters
    ----------
    values : array_like
        The values, one per patient (any shape; the first index is the patient).
    what : str
        The quantity and its unit, which the message starts with.
    low : float
        The lowest valid value (default -inf); not read when ``allowed`` is given.
    low_open : bool
        Whether ``low`` itself is invalid.
    allowed : tuple of float, optional
        The only valid values.

    Returns
    -------
    numpy.ndarray
        ``values`` as floats.

    Raises
    ------
    ValueError
        Starting with ``what`` and naming the first offending patient (the first index).

    Examples
    --------
    >>> check_valid([1.0, 0.0], "dose (mg)", 0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: dose (mg) must be > 0, got 0.0 (patient 1)
    """
    a = np.asarray(values, dtype=float)
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{what} contains NaN or inf (patient {np.argwhere(bad)[0][0]})")
    if allowed is not None:
        bad = ~np.isin(a, allowed)
        rule = f"be one of {list(allowed)}"
    else:
        bad = (a <= low) if low_open else (a < low)
        rule = f"be {'>' if low_open else '>='} {low:g}"
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise ValueError(f"{what} must {rule}, got {float(a[first])!r} (patient {first[0]})")
    return a


def check_covariate(name: str, values) -> np.ndarray:
    """``values`` of covariate ``name`` as a float array, checked by :func:`check_valid`
    against its definition in :data:`COVARIATES`; the message names it as the network
    input of the same name would (``feature 'WT' (kg) ...``).

    Parameters
    ----------
    name : str
        A covariate of :data:`COVARIATES`: ``"WT"`` (kg), ``"AGE"`` (years) or ``"SEX"``
        (0 male, 1 female).
    values : array_like
        Its values, one per patient.

    Returns
    -------
    numpy.ndarray
        ``values`` as floats.

    Raises
    ------
    ValueError
        An unknown covariate, or a value :func:`check_valid` refuses.

    Examples
    --------
    >>> check_covariate("WT", [70.0, -3.0])
    Traceback (most recent call last):
    ...
    ValueError: feature 'WT' (kg) must be > 0, got -3.0 (patient 1)
    """
    if name not in COVARIATES:
        raise ValueError(f"unknown covariate {name!r}; known: {list(COVARIATES)}")
    c = COVARIATES[name]
    return check_valid(values, f"feature {name!r} ({c.unit})", c.low, c.low_open, c.values)


@dataclass(frozen=True)
class Population:
    """N virtual patients: demographics, the individual parameters and the etas that
    produced them.

    Attributes
    ----------
    ids : numpy.ndarray
        Patient IDs, (N,).
    covariates : pandas.DataFrame
        Demographics, one row per patient: ``WT`` (kg), ``AGE`` (years), ``SEX`` (1 =
        female).
    params : Params
        The individual parameters (see :class:`~pkpd_lib.pmx.model.Params`), each (N,).
    etas : pandas.DataFrame
        The random effects (log deviations), one column per parameter that has one, one
        row per patient.

    Examples
    --------
    >>> pop = sample_population(2, seed=1)
    >>> pop.n_patients, list(pop.table().columns[:4])
    (2, ['ID', 'WT', 'AGE', 'SEX'])
    """

    ids: np.ndarray
    covariates: pd.DataFrame
    params: Params
    etas: pd.DataFrame

    @property
    def n_patients(self) -> int:
        return self.ids.size

    def table(self) -> pd.DataFrame:
        """One row per patient: ID, covariates and individual parameters.

        Returns
        -------
        pandas.DataFrame
            Columns ``ID``, ``WT``, ``AGE``, ``SEX``, then the parameters of
            :data:`~pkpd_lib.pmx.model.PARAM_NAMES` in their units.
        """
        df = pd.DataFrame({"ID": self.ids})
        df = pd.concat([df, self.covariates.reset_index(drop=True)], axis=1)
        for k, v in self.params.as_dict().items():
            df[k] = v
        return df


def check_covariates(covariates: Mapping[str, object] | pd.DataFrame) -> dict[str, np.ndarray]:
    """Validate WT (kg), AGE (years) and SEX (0/1) arrays; return them as float arrays.

    Parameters
    ----------
    covariates : mapping or pandas.DataFrame
        ``WT``, ``AGE`` and ``SEX`` values, one per patient (flattened); other keys or
        columns are ignored.

    Returns
    -------
    dict of str to numpy.ndarray
        ``WT``, ``AGE`` and ``SEX`` as float arrays (N,).

    Raises
    ------
    ValueError
        A missing covariate, an invalid value (:func:`check_covariate`) or covariates of
        different lengths.

    Examples
    --------
    >>> check_covariates({"WT": [70], "AGE": [45], "SEX": [1]})["SEX"]
    array([1.])
    """
    out = {}
    for name in COVARIATE_NAMES:
        if name not in covariates:
            raise ValueError(f"missing covariate {name!r}; expected {list(COVARIATE_NAMES)}")
        out[name] = check_covariate(name, np.asarray(covariates[name], dtype=float).reshape(-1))
    sizes = {a.size for a in out.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"covariates have different lengths: { {k: v.size for k, v in out.items()} }"
        )
    return out


def individual_params(
    covariates: Mapping[str, object] | pd.DataFrame,
    etas: Mapping[str, object] | None = None,
    typical: Mapping[str, float] = TYPICAL_PARAMS,
) -> Params:
    """Apply the covariate model and etas to typical values.

    The default model has etas on the parameters in :data:`ETA_SD`; variants may add etas
    on any parameter (e.g. unexplained between-patient PD variability on ``EC50``).

    Parameters
    ----------
    covariates : mapping or pandas.DataFrame
        ``WT`` (kg), ``AGE`` (years) and ``SEX`` (1 female) of N patients (see
        :func:`check_covariates`).
    etas : mapping, optional
        Parameter names to arrays (N,) of log deviations (missing ones are 0, i.e. the
        covariate-predicted typical patient).
    typical : mapping
        Typical values of every parameter, in their units (default
        :data:`~pkpd_lib.pmx.model.TYPICAL_PARAMS`).

    Returns
    -------
    Params
        The individual parameters, each (N,).

    Raises
    ------
    ValueError
        Covariates :func:`check_covariates` refuses, etas of an unknown parameter, an eta
        that is not N finite numbers, or parameters :class:`~pkpd_lib.pmx.model.Params`
        refuses.

    Examples
    --------
    >>> p = individual_params({"WT": [70.0, 140.0], "AGE": [45.0, 45.0], "SEX": [0, 0]})
    >>> (p.V / p.V[0]).tolist()
    [1.0, 2.0]
    """
    cov = check_covariates(covariates)
    etas = {} if etas is None else {k: etas[k] for k in etas}
    unknown = set(etas) - set(PARAM_NAMES)
    if unknown:
        raise ValueError(f"etas given for unknown parameter(s) {sorted(unknown)}")
    n = cov["WT"].size

    def eta(name: str) -> np.ndarray:
        e = np.asarray(etas.get(name, np.zeros(n)), dtype=float).reshape(-1)
        if e.size != n or not np.all(np.isfinite(e)):
            raise ValueError(f"eta for {name!r} must be {n} finite numbers")
        return np.exp(e)

    wt, age, sex = cov["WT"], cov["AGE"], cov["SEX"]
    t, e = typical, COVARIATE_EFFECTS
    return Params(
        ka=t["ka"] * eta("ka"),
        CL=t["CL"] * (wt / 70) ** e["CL~WT"] * (age / 45) ** e["CL~AGE"] * eta("CL"),
        V=t["V"] * (wt / 70) ** e["V~WT"] * eta("V"),
        Emax=t["Emax"] * (age / 45) ** e["Emax~AGE"] * eta("Emax"),
        EC50=t["EC50"] * (1 + e["EC50~SEX"] * sex) * eta("EC50"),
        gam=t["gam"] * eta("gam"),
        MTT=t["MTT"] * eta("MTT"),
        kout=t["kout"] * eta("kout"),
        R0=t["R0"] * eta("R0"),
    )


def sample_population(
    n: int,
    seed: int,
    first_id: int = 1,
    extra_eta_sd: Mapping[str, float] | None = None,
    typical: Mapping[str, float] = TYPICAL_PARAMS,
) -> Population:
    """Sample ``n`` virtual patients from ``seed`` (IDs ``first_id`` .. ``first_id + n - 1``).

    Those etas of ``extra_eta_sd`` are drawn after all others, so the patients'
    covariates and default etas are the same with or without them.

    Parameters
    ----------
    n : int
        The number of patients, a whole number >= 1.
    seed : int
        Seed of numpy's PCG64 generator.
    first_id : int
        The first patient's ID (default 1).
    extra_eta_sd : mapping, optional
        Between-patient variability beyond the default model's: SDs of eta (>= 0) by
        parameter, e.g. ``{"EC50": 0.3}``.
    typical : mapping
        The typical values (another drug; see :data:`pkpd_lib.pmx.model.TYPICAL_PARAMS`),
        with the same covariate model and variability.

    Returns
    -------
    Population

    Raises
    ------
    ValueError
        ``n`` not a whole number >= 1, an ``extra_eta_sd`` on a parameter that already has
        variability or on an unknown one, or one that is not a finite SD >= 0.

    Examples
    --------
    >>> from pkpd_lib.pmx.model import TYPICAL_PARAMS
    >>> slow = sample_population(3, seed=1, typical={**TYPICAL_PARAMS, "CL": 5.0})
    >>> bool((slow.params.CL < sample_population(3, seed=1).params.CL).all())
    True
    """
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    covariates = pd.DataFrame(
        {
            "WT": np.clip(rng.normal(75.0, 15.0, n), 40.0, 130.0),
            "AGE": rng.uniform(18.0, 80.0, n),
            "SEX": rng.binomial(1, 0.5, n).astype(int),
        }
    )
    etas = pd.DataFrame({k: rng.normal(0.0, sd, n) for k, sd in ETA_SD.items()})
    for k, sd in (extra_eta_sd or {}).items():
        if k in etas:
            raise ValueError(f"{k!r} already has between-patient variability in the default model")
        if not (np.isfinite(sd) and sd >= 0):
            raise ValueError(f"extra_eta_sd[{k!r}] must be a finite SD >= 0, got {sd!r}")
        etas[k] = rng.normal(0.0, sd, n)
    params = individual_params(covariates, etas, typical=typical)
    ids = np.arange(first_id, first_id + n)
    return Population(ids=ids, covariates=covariates, params=params, etas=etas)
