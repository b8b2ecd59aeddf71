"""Sampling designs, the study's seeds and sizes, and residual (measurement) error.

Designs cover the 7-day window 0-168 h. Observations carry proportional residual error,
10% CV on the concentration and 3% CV on PD; they are floored at 0 (a measurement is
never negative). Models are always scored against the noise-free truth.

Every design and every seed of the study is here. To add a design, add an entry to
:data:`DESIGNS`: a function of the split (``"train"``, ``"val"``, ``"test"``) and the
number of patients that returns the sampling times, (K,) for everyone or (N, K) each.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Sampling times of the dense design: hourly, 0..168 h (169 points).
DENSE_TIMES_H = np.arange(0.0, 169.0)
#: Sampling times of the sparse design (7 points).
SPARSE_TIMES_H = np.array([0.0, 2.0, 6.0, 24.0, 72.0, 120.0, 168.0])
#: Proportional residual error (CV) of each observation type.
RESIDUAL_CV = {"conc": 0.10, "pd": 0.03}

#: The study's data sets: patients per split.
STUDY_SIZES = {"train": 1000, "val": 200, "test": 200}
#: Each split's (population seed, observation seed).
STUDY_SEEDS = {"train": (101, 1101), "val": (202, 1202), "test": (303, 1303)}
#: Seeds of each split's random sampling times in the uneven design.
UNEVEN_SEEDS = {"train": 11, "val": 12, "test": 13}

#: Designs with one set of times for every patient.
FIXED_DESIGNS = {"dense": DENSE_TIMES_H, "sparse": SPARSE_TIMES_H}


def design_times(design: str) -> np.ndarray:
    """Sampling times (h) of a design shared by all patients: ``"dense"`` or ``"sparse"``.

    Parameters
    ----------
    design : str
        A name in :data:`FIXED_DESIGNS`.

    Returns
    -------
    numpy.ndarray
        A copy of the design's times (h), (K,).

    Raises
    ------
    ValueError
        A name that is not a design with shared times.
    """
    if design not in FIXED_DESIGNS:
        raise ValueError(
            f"unknown sampling design {design!r} with shared times; "
            f"expected one of {sorted(FIXED_DESIGNS)} (per-patient designs: {sorted(DESIGNS)})"
        )
    return FIXED_DESIGNS[design].copy()


def sampling_times(design: str, split: str, n_patients: int) -> np.ndarray:
    """The sampling times (h) of ``design`` for the ``split``'s ``n_patients``: (K,) when
    shared, (N, K) when each patient has their own. A test patient keeps the same times
    under every regimen.

    Parameters
    ----------
    design : str
        A name in :data:`DESIGNS`.
    split : str
        ``"train"``, ``"val"`` or ``"test"`` (a key of :data:`STUDY_SEEDS`; it picks the
        uneven design's seed in :data:`UNEVEN_SEEDS`).
    n_patients : int
        The number of patients N.

    Returns
    -------
    numpy.ndarray
        Sampling times (h), (K,) or (N, K).

    Raises
    ------
    ValueError
        An unknown design or split.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown sampling design {design!r}; expected one of {sorted(DESIGNS)}")
    if split not in STUDY_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(STUDY_SEEDS)}")
    return DESIGNS[design](split, n_patients)


def add_proportional_error(truth: np.ndarray, cv: float, rng: np.random.Generator) -> np.ndarray:
    """``truth * (1 + cv * eps)``, eps ~ N(0, 1), floored at 0.

    Parameters
    ----------
    truth : array_like
        The noise-free values, finite, any shape.
    cv : float
        The proportional error's CV (a fraction), finite and >= 0.
    rng : numpy.random.Generator
        The generator eps is drawn from.

    Returns
    -------
    numpy.ndarray
        The values with error, the shape of ``truth``, >= 0.

    Raises
    ------
    ValueError
        ``truth`` not finite, or ``cv`` not finite and >= 0.
    """
    truth = np.asarray(truth, dtype=float)
    if not np.all(np.isfinite(truth)):
        raise ValueError("cannot add error to non-finite values")
    if not (np.isfinite(cv) and cv >= 0):
        raise ValueError(f"cv must be a finite number >= 0, got {cv!r}")
    return np.maximum(truth * (1.0 + cv * rng.standard_normal(truth.shape)), 0.0)


def observe(
    conc_mg_L: np.ndarray, pd_values: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Observed concentration (mg/L) and PD from noise-free arrays of the same shape.

    Concentration errors are drawn first, then PD errors, from one generator seeded with
    ``seed``, so the same seed always gives the same observations.

    Parameters
    ----------
    conc_mg_L : array_like
        Noise-free concentrations (mg/L), e.g. (N, T).
    pd_values : array_like
        Noise-free PD (biomarker units), the shape of ``conc_mg_L``.
    seed : int
        Seed of the generator.

    Returns
    -------
    conc_obs : numpy.ndarray
        Concentrations with :data:`RESIDUAL_CV` ``["conc"]`` proportional error (mg/L),
        floored at 0.
    pd_obs : numpy.ndarray
        PD with :data:`RESIDUAL_CV` ``["pd"]`` proportional error (biomarker units),
        floored at 0.

    Raises
    ------
    ValueError
        Arrays of different shapes, or values that are not finite.
    """
    conc_mg_L = np.asarray(conc_mg_L, dtype=float)
    pd_values = np.asarray(pd_values, dtype=float)
    if conc_mg_L.shape != pd_values.shape:
        raise ValueError(
            f"concentration shape {conc_mg_L.shape} differs from PD shape {pd_values.shape}"
        )
    rng = np.random.default_rng(seed)
    conc_obs = add_proportional_error(conc_mg_L, RESIDUAL_CV["conc"], rng)
    pd_obs = add_proportional_error(pd_values, RESIDUAL_CV["pd"], rng)
    return conc_obs, pd_obs


def uneven_times(n_patients: int, seed: int, n_samples: int = 7, t_max_h: int = 168) -> np.ndarray:
    """Randomly uneven sampling: each patient's own ``n_samples`` whole-hour times (N, K).

    Every patient has a pre-dose sample at 0 h; the other ``n_samples - 1`` times are
    drawn without replacement from 1..``t_max_h`` h and sorted.

    Parameters
    ----------
    n_patients : int
        The number of patients N, a whole number >= 1.
    seed : int
        Seed of the generator.
    n_samples : int
        Samples per patient K, 2 to ``t_max_h + 1`` (default 7).
    t_max_h : int
        The latest possible sample (h, default 168).

    Returns
    -------
    numpy.ndarray
        Sampling times (h), (N, K), each row increasing from 0.

    Raises
    ------
    ValueError
        ``n_patients`` not a whole number >= 1, or ``n_samples`` out of its range.
    """
    if not (isinstance(n_patients, int | np.integer) and n_patients >= 1):
        raise ValueError(f"n_patients must be a whole number >= 1, got {n_patients!r}")
    if not (2 <= n_samples <= t_max_h + 1):
        raise ValueError(f"n_samples must be between 2 and {t_max_h + 1}, got {n_samples}")
    rng = np.random.default_rng(seed)
    later = np.stack(
        [
            np.sort(rng.choice(np.arange(1, t_max_h + 1), n_samples - 1, replace=False))
            for _ in range(n_patients)
        ]
    )
    return np.concatenate([np.zeros((n_patients, 1)), later.astype(float)], axis=1)


#: Every design by name (see the module docstring to add one).
DESIGNS = {
    "dense": lambda split, n: DENSE_TIMES_H.copy(),
    "sparse": lambda split, n: SPARSE_TIMES_H.copy(),
    "uneven": lambda split, n: uneven_times(n, seed=UNEVEN_SEEDS[split]),
}


def named_seed(name: str) -> int:
    """The seed of a named random draw: the first four bytes of the SHA-256 of ``name``.

    Seeds found by name, never by a position in a list or a dict, stay the same when
    draws are added, removed or reordered (the protocol's rule; e.g.
    ``"locked-2026-12/population"``, ``"locked-2026-12/observations/BID"``).

    Parameters
    ----------
    name : str
        What the draw is, e.g. ``"<set>/population"``. Not empty.

    Returns
    -------
    int
        A seed in 0 .. 2**32 - 1 for :func:`numpy.random.default_rng`.

    Raises
    ------
    ValueError
        If ``name`` is not a non-empty string.

    Examples
    --------
    >>> named_seed("locked-2026-12/population")
    883692799
    >>> named_seed("locked-2026-12/observations/QD")
    1756336419
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a seed's name must be a non-empty string, got {name!r}")
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big")
