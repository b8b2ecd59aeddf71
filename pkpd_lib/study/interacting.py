"""Protocol version 3: two interacting biomarkers (chapter 20's response and moderator).

The sets, the information every method reads, the methods and their training, and the
scoring of page "Study protocol, version 3", so that chapter 21 shows only what it
teaches. Sets are found by name (:data:`SETS`); their seeds follow from the name
(:func:`pkpd_lib.pmx.sampling.named_seed`), never from a position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..nets import networks as nw
from ..nets.features import CONC, STATIC_FEATURES, Source, build_inputs
from ..pmx import model, nlme
from ..pmx import popmodels as pm
from ..pmx import regimens as reg
from ..pmx.population import Population, sample_population
from ..pmx.sampling import named_seed
from . import datasets, experiments, metrics, realistic

#: The observed biomarkers, in the order of the networks' outputs.
BIOMARKERS = ("R", "M")
#: Between-patient variability added to the default population (SD of log MTT, hence
#: of log ktol), as in chapter 20.
EXTRA_ETA_SD = {"MTT": 0.3}
#: The protocol's sets: patients and first ID.
SETS = {"fb-train": (1000, 80001), "fb-val": (200, 81001), "locked-v3": (200, 82001)}
#: The set scored once.
LOCKED = "locked-v3"
#: The regimens of each set (``"random"``: one randomised schedule per patient).
SET_REGIMENS = {
    "fb-train": ("QD", "random"),
    "fb-val": ("QD", "q18h", "random"),
    LOCKED: ("QD", "BID", "TID", "missed", "stopped"),
}
#: The regimens scored on the locked set against QD.
NEW_REGIMENS = ("BID", "TID", "missed", "stopped")
#: Ensemble seeds of every network set-up.
SEEDS = (0, 1, 2)
#: The study's chosen dense network, and chapter 13's neural ODE.
LSTM = experiments.CHOSEN["dense"]
NEURAL_ODE = experiments.NEURAL_ODE
#: Question 4's set-ups, in the protocol's order of simplicity: (label, config,
#: training schedules).
SETUPS = (
    ("1x16, QD", nw.NetworkConfig(units=(16,), block=4, learning_rate=1e-2), "QD"),
    ("2x16, QD", LSTM, "QD"),
    ("3x16, QD", nw.NetworkConfig(units=(16, 16, 16), block=4, learning_rate=1e-2), "QD"),
    ("2x16, randomised", LSTM, "random"),
)
#: Input history length (added after the locked set was scored, on validation data
#: only; see the protocol's Deviations): networks that see only the last 24, 72 or 168
#: hours of input, with no memory beyond (a causal convolution over that window, then a
#: dense layer), trained on QD like the bench's LSTM.
HISTORY_SETUPS = tuple(
    (
        f"window {h} h, QD",
        nw.NetworkConfig(units=(16, 16), block=4, learning_rate=1e-2, kind="window", history_h=h),
        "QD",
    )
    for h in (24, 72, 168)
)
#: How much memory the network needs (protocol version 4's addendum, validation data
#: only): question 4's "2x16, QD" network with its state set to zero every ``H`` hours,
#: ``H`` in :data:`MEMORY_HOURS`, judged against the same network with its memory uncut.
MEMORY_HOURS = (12, 24, 72)
MEMORY_SETUPS = tuple(
    (
        f"memory {h} h, QD",
        nw.NetworkConfig(units=(16, 16), block=4, learning_rate=1e-2, kind="reset", history_h=h),
        "QD",
    )
    for h in MEMORY_HOURS
)
#: A set-up is as good as the best when its criterion is within this fraction of it.
SETUP_TOLERANCE = 0.10
#: The population model's data: the first patients of ``fb-train`` and their times (h).
POP_FIT_PATIENTS = 50
POP_FIT_TIMES_H = np.arange(0.0, 169.0, 4.0)
#: The bootstrap over locked patients.
N_BOOT = 2000
HOURS = datasets.DENSE_TIMES_H
#: The names :func:`regimen` knows.
REGIMEN_NAMES = ("QD", "BID", "TID", "q18h", "missed", "stopped", "random")


def regimen(name: str, n: int | None = None, set_name: str | None = None):
    """The protocol's regimen ``name``: ``"QD"``, ``"BID"``, ``"TID"``, ``"q18h"`` (75 mg
    every 18 h), ``"missed"`` (QD without the doses at 72 and 96 h), ``"stopped"`` (QD
    doses at 0, 24 and 48 h only), or ``"random"`` (``n`` randomised schedules seeded by
    ``set_name``, :func:`pkpd_lib.pmx.regimens.random_schedules`).

    Examples
    --------
    >>> regimen("missed").times_h.tolist()
    [0.0, 24.0, 48.0, 120.0, 144.0]
    >>> regimen("weekly")
    Traceback (most recent call last):
    ...
    ValueError: unknown regimen 'weekly'; expected one of QD, BID, TID, q18h, missed, ...
    """
    qd = reg.qd()
    if name in ("QD", "BID", "TID"):
        return reg.named(name)
    if name == "q18h":
        return realistic.VALIDATION_REGIMEN
    if name == "missed":
        keep = ~np.isin(qd.times_h, (72.0, 96.0))
        return reg.Regimen(qd.times_h[keep], qd.amounts_mg[keep], "missed")
    if name == "stopped":
        return reg.Regimen(qd.times_h[:3], qd.amounts_mg[:3], "stopped")
    if name == "random":
        if n is None or set_name is None:
            raise ValueError("randomised schedules need the number of patients and the set name")
        return reg.random_schedules(n, seed=named_seed(f"{set_name}/schedules"))
    raise ValueError(f"unknown regimen {name!r}; expected one of {', '.join(REGIMEN_NAMES)}")


def _check_set(set_name: str, regimen_name: str | None = None) -> None:
    if set_name not in SETS:
        raise ValueError(f"unknown set {set_name!r}; expected one of {list(SETS)}")
    if regimen_name is not None and regimen_name not in SET_REGIMENS[set_name]:
        raise ValueError(
            f"set {set_name!r} has no regimen {regimen_name!r}; it has "
            f"{list(SET_REGIMENS[set_name])}"
        )


def population(set_name: str) -> Population:
    """The patients of ``set_name`` (seed ``named_seed("<set>/population")``).

    Examples
    --------
    >>> pop = population("fb-val")
    >>> pop.n_patients, int(pop.ids[0])
    (200, 81001)
    """
    _check_set(set_name)
    n, first_id = SETS[set_name]
    return sample_population(
        n, named_seed(f"{set_name}/population"), first_id, extra_eta_sd=EXTRA_ETA_SD
    )


def dataset(set_name: str, regimen_name: str = "QD") -> datasets.Dataset:
    """The patients of ``set_name`` under ``regimen_name``, both biomarkers observed hourly
    from 0 to 168 h (observation seed ``named_seed("<set>/observations/<regimen>")``).

    Examples
    --------
    >>> d = dataset("fb-val", "q18h")
    >>> list(d.biomarkers_obs), d.biomarkers_obs["M"].shape
    (['R', 'M'], (200, 169))
    >>> dataset("fb-train", "BID")
    Traceback (most recent call last):
    ...
    ValueError: set 'fb-train' has no regimen 'BID'; it has ['QD', 'random']
    """
    _check_set(set_name, regimen_name)
    pop = population(set_name)
    schedule = regimen(regimen_name, pop.n_patients, set_name)
    seed = named_seed(f"{set_name}/observations/{regimen_name}")
    return datasets.simulate_dataset(pop, schedule, HOURS, seed, model.simulate_feedback)


def network_inputs(data: datasets.Dataset) -> dict[str, np.ndarray]:
    """What every network reads: the true concentrations (mg/L, (N, T): the protocol's
    oracle), the screening baseline ``BASE_PD`` and WT, AGE, SEX, each (N,)."""
    times = np.broadcast_to(data.times_h, data.truth.conc_mg_L.shape)
    source = Source(data, times, data.truth.conc_mg_L, "screening")
    return build_inputs(source, (CONC, *STATIC_FEATURES))


def targets(data: datasets.Dataset, biomarkers: Sequence[str] = BIOMARKERS) -> np.ndarray:
    """Observed biomarkers as training targets: (N, T) for one, (N, T, K) for several.

    Examples
    --------
    >>> d = dataset("fb-val")
    >>> targets(d).shape, targets(d, ("M",)).shape
    ((200, 169, 2), (200, 169))
    >>> targets(d, ("PD",))
    Traceback (most recent call last):
    ...
    ValueError: unknown biomarker 'PD'; expected some of ('R', 'M')
    """
    if isinstance(biomarkers, str) or not biomarkers:
        raise ValueError(f"biomarkers must be a non-empty sequence of names, got {biomarkers!r}")
    for b in biomarkers:
        if b not in BIOMARKERS:
            raise ValueError(f"unknown biomarker {b!r}; expected some of {BIOMARKERS}")
    if len(biomarkers) == 1:
        return data.biomarkers_obs[biomarkers[0]]
    return np.stack([data.biomarkers_obs[b] for b in biomarkers], axis=-1)


def truths(data: datasets.Dataset) -> dict[str, np.ndarray]:
    """The noise-free biomarkers, (N, T) each, by name."""
    return {b: data.truth.biomarkers[b] for b in BIOMARKERS}


def train_network(
    config: nw.NetworkConfig,
    seed: int,
    biomarkers: Sequence[str] = BIOMARKERS,
    schedules: str = "QD",
    sets: Mapping[str, datasets.Dataset] | None = None,
) -> nw.TrainingResult:
    """Train (or load from the store) ``config`` with ``seed`` on ``fb-train`` under
    ``schedules`` (``"QD"`` or ``"random"``), early stopping on ``fb-val`` under the same,
    with ``biomarkers`` as targets. ``sets``: the four data sets, keyed
    ``"<set>/<schedules>"``, if already simulated."""
    if schedules not in ("QD", "random"):
        raise ValueError(f"schedules must be 'QD' or 'random', got {schedules!r}")
    sets = dict(sets or {})
    for name in ("fb-train", "fb-val"):
        if f"{name}/{schedules}" not in sets:
            sets[f"{name}/{schedules}"] = dataset(name, schedules)
    train, val = sets[f"fb-train/{schedules}"], sets[f"fb-val/{schedules}"]
    return nw.train_or_load(
        config,
        network_inputs(train),
        targets(train, biomarkers),
        network_inputs(val),
        targets(val, biomarkers),
        seed,
        report_every=None,
    )


def predict(runs: Sequence[nw.TrainingResult], x, biomarkers: Sequence[str] = BIOMARKERS):
    """The ensemble mean of ``runs`` for inputs ``x``, by biomarker, (N, T) each."""
    if not runs:
        raise ValueError("predict needs at least one trained network in runs")
    mean = np.mean([nw.predict_pd(run.model, x) for run in runs], axis=0)
    outputs = 1 if mean.ndim == 2 else mean.shape[-1]
    if outputs != len(biomarkers):
        raise ValueError(
            f"the networks predict {outputs} biomarker(s), but {len(biomarkers)} were named: "
            f"{tuple(biomarkers)}"
        )
    if len(biomarkers) == 1:
        return {biomarkers[0]: mean}
    return {b: mean[..., k] for k, b in enumerate(biomarkers)}


# --- the population model -----------------------------------------------------------------


def population_fit_data(train: datasets.Dataset | None = None) -> nlme.Observations:
    """The population model's data: the first :data:`POP_FIT_PATIENTS` ``fb-train``
    patients' observed R and M every 4 h (:data:`POP_FIT_TIMES_H`) under QD, with their
    true PK (the protocol's oracle) and covariates."""
    train = train if train is not None else dataset("fb-train")
    pop = train.population
    n = POP_FIT_PATIENTS
    index = datasets.grid_index(train.times_h, POP_FIT_TIMES_H)
    return pm.feedback_data(
        reg.qd(),
        POP_FIT_TIMES_H,
        pop.params.subset(np.arange(n)).as_dict(),
        pop.covariates.iloc[:n],
        r_obs=train.biomarkers_obs["R"][:n, index],
        m_obs=train.biomarkers_obs["M"][:n, index],
    )


def population_fit(feedback: bool, data: nlme.Observations | None = None) -> nlme.NLMEFit:
    """FOCE-I fit (stored by the regression check's rules) of
    :func:`pkpd_lib.pmx.popmodels.feedback_model` with or without ``feedback``, from
    :data:`pkpd_lib.pmx.popmodels.FEEDBACK_START`."""
    data = data if data is not None else population_fit_data()
    return nlme.fit_foce(pm.feedback_model(feedback), data, pm.FEEDBACK_START, cache_dir="default")


def population_predictions(
    fit: nlme.NLMEFit, sets: Mapping[str, datasets.Dataset]
) -> dict[str, dict[str, np.ndarray]]:
    """Individual predictions of ``fit`` for the patients of ``sets`` (one data set per
    regimen name, the same patients): random effects are the empirical Bayes estimates
    given the three screening measurements of R; returns ``{regimen: {biomarker: (N,
    T)}}`` on the hourly grid."""
    if not sets:
        raise ValueError("sets must hold at least one data set")
    first = next(iter(sets.values()))
    for name, d in sets.items():
        if not np.array_equal(d.population.ids, first.population.ids):
            raise ValueError(
                f"every data set must hold the same patients; {name!r} does not hold those "
                "of the first"
            )
    pop = first.population
    screening = first.screening_pd
    known = pm.feedback_data(
        reg.qd(),
        np.zeros(screening.shape[1]),
        pop.params.as_dict(),
        pop.covariates,
        r_obs=screening,
        m_obs=np.full(screening.shape, np.nan),
    )
    etas = nlme.conditional_modes(fit, known)
    out = {}
    for name, d in sets.items():
        new = pm.feedback_data(
            reg.per_patient(d.regimens, pop.n_patients), HOURS, pop.params.as_dict(), pop.covariates
        )
        pred = nlme.individual_predictions(fit, new, etas)
        t = HOURS.size
        out[name] = {"R": pred[:, :t], "M": pred[:, t:]}
    return out


# --- scoring -------------------------------------------------------------------------------


def bootstrap(n_patients: int) -> metrics.NestedBootstrap:
    """The protocol's bootstrap over the locked patients (one pipeline replicate)."""
    return metrics.NestedBootstrap(1, n_patients, N_BOOT, named_seed(f"bootstrap/{LOCKED}"))


def _r(a) -> np.ndarray:
    return np.asarray(a, float)[None]


def effect_table(
    preds: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    truth: Mapping[str, Mapping[str, np.ndarray]],
    boot: metrics.NestedBootstrap,
    regimens: Sequence[str] = NEW_REGIMENS,
) -> pd.DataFrame:
    """Regimen-effect error with its 95% interval and verdict, one row per method,
    biomarker and regimen. ``preds[method][regimen][biomarker]`` and
    ``truth[regimen][biomarker]`` are (N, T); every method needs ``"QD"``."""
    rows = []
    for method, by_regimen in preds.items():
        for b in BIOMARKERS:
            for name in regimens:
                iv = boot.regimen_effect(
                    _r(by_regimen[name][b]),
                    _r(by_regimen["QD"][b]),
                    _r(truth[name][b]),
                    _r(truth["QD"][b]),
                )
                rows.append(
                    {
                        "method": method,
                        "biomarker": b,
                        "regimen": name,
                        "error": iv.estimate,
                        "low": iv.low,
                        "high": iv.high,
                        "verdict": metrics.extrapolation_verdict(iv.low, iv.high),
                    }
                )
    return pd.DataFrame(rows).set_index(["method", "biomarker", "regimen"])


def effect_difference(
    first: Mapping[str, Mapping[str, np.ndarray]],
    second: Mapping[str, Mapping[str, np.ndarray]],
    truth: Mapping[str, Mapping[str, np.ndarray]],
    boot: metrics.NestedBootstrap,
    regimens: Sequence[str] = NEW_REGIMENS,
) -> pd.DataFrame:
    """Paired 95% interval of the regimen-effect error of ``first`` minus ``second`` (two
    methods' ``{regimen: {biomarker: (N, T)}}``), per biomarker and regimen, with
    :func:`pkpd_lib.study.metrics.difference_verdict`."""
    rows = []
    for b in BIOMARKERS:
        for name in regimens:
            effect = _r(truth[name][b]) - _r(truth["QD"][b])
            parts = {"size": (effect**2).sum(axis=2)}
            for tag, method in (("1", first), ("2", second)):
                change = _r(method[name][b]) - _r(method["QD"][b])
                parts[tag] = ((change - effect) ** 2).sum(axis=2)
            iv = boot.interval(
                parts, lambda s: np.sqrt(s["1"] / s["size"]) - np.sqrt(s["2"] / s["size"])
            )
            rows.append(
                {
                    "biomarker": b,
                    "regimen": name,
                    "difference": iv.estimate,
                    "low": iv.low,
                    "high": iv.high,
                    "verdict": metrics.difference_verdict(iv.low, iv.high),
                }
            )
    return pd.DataFrame(rows).set_index(["biomarker", "regimen"])


def qd_errors(
    preds: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    truth: Mapping[str, Mapping[str, np.ndarray]],
    baseline: np.ndarray,
) -> pd.DataFrame:
    """Relative RMSE (%) on QD, one row per method, one column per biomarker."""
    return pd.DataFrame(
        {
            method: {
                b: 100 * metrics.relative_rmse(by[("QD")][b], truth["QD"][b], baseline)
                for b in BIOMARKERS
            }
            for method, by in preds.items()
        }
    ).T


def rebound(
    preds: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    truth: Mapping[str, Mapping[str, np.ndarray]],
    after_h: float = 48.0,
) -> pd.Series:
    """The rebound under ``stopped``: the mean over patients of each method's highest R
    after ``after_h`` (the last dose) minus the patient's true baseline R(0), in
    biomarker units, with the truth's first. Arrays are (N, T) on the hourly grid from
    0 h.

    Examples
    --------
    >>> r = np.array([[100.0, 90.0, 104.0, 101.0]])
    >>> rebound({"flat": {"stopped": {"R": r * 0 + 100.0}}}, {"stopped": {"R": r}}, 0.5)
    truth    4.0
    flat     0.0
    Name: mean rebound of R above its baseline after the last dose, dtype: float64
    """
    base = truth["stopped"]["R"][:, 0]
    late = np.arange(truth["stopped"]["R"].shape[1], dtype=float) > after_h  # hourly from 0 h
    if not late.any():
        raise ValueError(f"after_h={after_h!r} leaves no time after it on the grid")
    out = {"truth": float((truth["stopped"]["R"][:, late].max(axis=1) - base).mean())}
    for method, by in preds.items():
        out[method] = float((by["stopped"]["R"][:, late].max(axis=1) - base).mean())
    return pd.Series(out, name="mean rebound of R above its baseline after the last dose")


def validation_criterion(runs, sets: Mapping[str, datasets.Dataset]) -> float:
    """Question 4's criterion: the regimen-effect error of ``runs`` (an ensemble) under
    q18h on ``fb-val`` against QD, averaged over the two biomarkers. ``sets`` holds
    ``"fb-val/QD"`` and ``"fb-val/q18h"``."""
    qd, new = sets["fb-val/QD"], sets["fb-val/q18h"]
    p_qd, p_new = predict(runs, network_inputs(qd)), predict(runs, network_inputs(new))
    t_qd, t_new = truths(qd), truths(new)
    return float(
        np.mean(
            [metrics.regimen_effect_error(p_new[b], p_qd[b], t_new[b], t_qd[b]) for b in BIOMARKERS]
        )
    )


def sufficient_memory(criteria: Mapping[int, float], uncut: float) -> int | None:
    """The addendum's answer: the shortest memory (h) whose criterion is within
    :data:`SETUP_TOLERANCE` of the uncut network's, or None if none is.

    Parameters
    ----------
    criteria : mapping of int to float
        Question 4's criterion for each memory of :data:`MEMORY_HOURS` (h).
    uncut : float
        The criterion of the same network with its memory uncut.

    Returns
    -------
    int or None
        The shortest sufficient memory (h), or None.

    Examples
    --------
    >>> sufficient_memory({12: 0.9, 24: 0.33, 72: 0.30}, uncut=0.31)
    24
    >>> sufficient_memory({12: 0.9, 24: 0.8, 72: 0.5}, uncut=0.31) is None
    True
    """
    if sorted(criteria) != sorted(MEMORY_HOURS):
        raise ValueError(f"criteria must cover the memories {MEMORY_HOURS} h, got {list(criteria)}")
    values = np.array([criteria[h] for h in MEMORY_HOURS] + [uncut], float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"criteria must be finite, got {dict(criteria)} and uncut {uncut}")
    limit = uncut * (1 + SETUP_TOLERANCE)
    return next((h for h in MEMORY_HOURS if criteria[h] <= limit), None)


def kept_setup(criteria: Mapping[str, float]) -> str:
    """The protocol's choice: the first set-up of :data:`SETUPS` whose criterion is within
    :data:`SETUP_TOLERANCE` of the lowest.

    Examples
    --------
    >>> kept_setup({"1x16, QD": 0.30, "2x16, QD": 0.20, "3x16, QD": 0.19,
    ...             "2x16, randomised": 0.21})
    '2x16, QD'
    """
    labels = [label for label, _, _ in SETUPS]
    if set(criteria) != set(labels):
        raise ValueError(f"criteria must cover the set-ups {labels}, got {list(criteria)}")
    values = np.array([criteria[label] for label in labels], float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"criteria must be finite, got {dict(criteria)}")
    best = values.min()
    return next(
        label for label, v in zip(labels, values, strict=True) if v <= best * (1 + SETUP_TOLERANCE)
    )
