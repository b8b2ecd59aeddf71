"""The book's protocol (page "Study protocol"): replicates of the whole pipeline, the
test sets by name, and the one function that scores a test set.

A *replicate* r is the whole pipeline run again on its own training and validation
patients (sets ``train-r<r>`` and ``val-r<r>``; replicate 0 is the book's): the
population PK and PD fits, each patient's PK, and the networks (an ensemble of five
LSTMs, seeds ``5r`` to ``5r + 4``; one neural ODE, seed ``r``). Everything trained or
fitted goes to, and comes from, the store, like the chapters' models.

A *test set* is named (:data:`TEST_SETS`): ``"development"`` (the old locked set, seen
while the methods were designed), ``"locked-2026-12"`` (drawn once, after the
protocol fixed every choice) or ``"locked-v2"`` (protocol version 2's: the searched
population model, the full grid and the learning curve). Every seed is found by a name
(:func:`pkpd_lib.pmx.sampling.named_seed`), never by a position in a list.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..nets import networks as nw
from ..nets.features import EARLY_PD_FEATURES, EARLY_PD_TIMES_H, observed_pd_at
from ..pmx import nlme, sampling
from ..pmx import popmodels as pm
from ..pmx import regimens as reg
from ..pmx.population import sample_population
from . import datasets, metrics, realistic, search
from .experiments import NEURAL_ODE

#: The headline information settings of the protocol.
SETTINGS = {
    "oracle": realistic.ORACLE,
    "realistic": realistic.REALISTIC,
    "realistic + early PD": replace(realistic.REALISTIC, early_pd=True),
}
#: The replicates scored (the protocol's Budget deviation: three, not five).
REPLICATES = (0, 1, 2)
#: Networks per LSTM ensemble.
ENSEMBLE_SIZE = 5


def ensemble_seeds(replicate: int) -> range:
    """The seeds of replicate ``replicate``'s LSTM ensemble: ``5r`` to ``5r + 4``."""
    _check_replicate(replicate)
    return range(ENSEMBLE_SIZE * replicate, ENSEMBLE_SIZE * (replicate + 1))


def _check_replicate(replicate) -> None:
    if isinstance(replicate, bool) or not isinstance(replicate, int | np.integer) or replicate < 0:
        raise ValueError(f"replicate must be a whole number >= 0, got {replicate!r}")


def training_sets(
    replicate: int, extra_eta_sd: dict[str, float] | None = None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The QD training (1000 patients) and validation (200) data of a replicate, dense.

    Replicate 0 is the book's (:func:`pkpd_lib.study.datasets.study_datasets`, IDs from
    1010001 and 2020001). Replicate r >= 1 draws sets ``train-r<r>`` and ``val-r<r>``:
    first IDs (10 + r) million + 1 and (20 + r) million + 1, population seed
    ``named_seed("<set>/population")``, observation seed
    ``named_seed("<set>/observations/QD")``.

    Examples
    --------
    >>> train, val = training_sets(1)
    >>> int(train.population.ids[0]), int(val.population.ids[0]), val.n_patients
    (11000001, 21000001, 200)
    """
    _check_replicate(replicate)
    if replicate == 0:
        sets = datasets.study_datasets("dense", extra_eta_sd=extra_eta_sd)
        return sets["train"], sets["val"]
    out = []
    for split, base in (("train", 10), ("val", 20)):
        name = f"{split}-r{replicate}"
        pop = sample_population(
            sampling.STUDY_SIZES[split],
            sampling.named_seed(f"{name}/population"),
            (base + replicate) * 1_000_000 + 1,
            extra_eta_sd=extra_eta_sd,
        )
        out.append(
            datasets.simulate_dataset(
                pop, reg.qd(), obs_seed=sampling.named_seed(f"{name}/observations/QD")
            )
        )
    return out[0], out[1]


def population_pk_fit(replicate: int, info: realistic.Information) -> nlme.NLMEFit | None:
    """The replicate's population PK fit (:func:`pkpd_lib.study.realistic.population_pk_fit`
    of its training patients) when ``info`` estimates its PK prior, else None."""
    if info.pk_prior != "estimated":
        return None
    return realistic.population_pk_fit(training_sets(replicate, info.extra_eta_sd)[0])


def population_pd_fits(replicate: int) -> dict[int, nlme.NLMEFit]:
    """The replicate's population PD fits by transit steps
    (:func:`pkpd_lib.study.realistic.population_pd_fits`), to its training patients with
    the realistic setting's PD variability, driven by their PK under its PK fit."""
    info = SETTINGS["realistic"]
    train = training_sets(replicate, info.extra_eta_sd)[0]
    return realistic.population_pd_fits(train, realistic.population_pk_fit(train))


def kept_pd_structure() -> int:
    """The population PD structure (transit steps) the protocol's rule keeps: the lower
    OFV (as many parameters, so the lower AIC) on replicate 0's training data, chosen
    once and applied to every replicate."""
    fits = population_pd_fits(0)
    return min(fits, key=lambda steps: fits[steps].ofv)


def population_pd_data(replicate: int, setting: str):
    """The population PD fits' data and starting values for a replicate and a setting
    (:func:`pkpd_lib.study.realistic.population_pd_data`): the first 100 training
    patients' PD every 4 h (with the setting's PD variability), driven by their PK
    under the replicate's population PK fit, or by their true PK where the setting
    observes concentrations (the oracle)."""
    _check_replicate(replicate)
    info = SETTINGS[setting]
    train = training_sets(replicate, info.extra_eta_sd)[0]
    if info.conc == "observed":
        pk = train.population.params.as_dict()
    else:
        pk = realistic.population_pk_fit(train)
    return realistic.population_pd_data(train, pk)


def population_model_search(progress=None) -> search.Search:
    """Protocol version 2's population-model search (:func:`pkpd_lib.study.search.run`)
    on replicate 0's training data in the realistic setting: the first 100 patients'
    PD every 4 h, driven by their PK under the replicate's population PK fit."""
    data, start = population_pd_data(0, "realistic")
    return search.run(data, start, progress=progress)


@functools.cache
def searched_model() -> search.Candidate:
    """The final model of :func:`population_model_search` (from the store; the search
    is read once per session)."""
    return population_model_search().final


def searched_model_fit(candidate: search.Candidate, replicate: int, setting: str) -> nlme.NLMEFit:
    """The search's final model (``candidate``) fitted to a replicate's training data in
    a setting (:func:`population_pd_data`), from the protocol's start, without a new
    search (from and to the store). The realistic settings share their training data,
    so they share this fit."""
    data, start = population_pd_data(replicate, setting)
    return search.fit_candidate(candidate, data, start)


@dataclass
class TrainingData:
    """A replicate's network inputs and targets under one setting (QD, observed PD),
    and the population PK fit that predicted concentrations come from (None if none)."""

    train_x: dict
    train_y: np.ndarray
    val_x: dict
    val_y: np.ndarray
    pk_fit: nlme.NLMEFit | None


def training_data(replicate: int, info: realistic.Information) -> TrainingData:
    """The inputs of ``info`` for the replicate's training and validation patients, each
    read from its own QD data (as :func:`pkpd_lib.study.realistic.locked_study` does for
    replicate 0, so the book's stored networks are found)."""
    train, val = training_sets(replicate, info.extra_eta_sd)
    pk_fit = population_pk_fit(replicate, info)
    x = {}
    for name, d in (("train", train), ("val", val)):
        fit = realistic._qd_fit(info, d, pk_fit)
        x[name] = realistic._inputs(info, d, fit, d)
    return TrainingData(x["train"], train.pd_obs, x["val"], val.pd_obs, pk_fit)


def node_config(info: realistic.Information) -> nw.NetworkConfig:
    """The protocol's neural ODE (:data:`pkpd_lib.study.experiments.NEURAL_ODE`),
    reading the early-PD inputs too when ``info`` has them."""
    if not info.early_pd:
        return NEURAL_ODE
    return replace(NEURAL_ODE, static_features=(*NEURAL_ODE.static_features, *EARLY_PD_FEATURES))


def lstm_ensemble(replicate: int, info: realistic.Information, data: TrainingData | None = None):
    """The replicate's LSTM ensemble under ``info``: :data:`ENSEMBLE_SIZE` networks of
    ``info.config`` (seeds :func:`ensemble_seeds`), trained or loaded from the store."""
    data = training_data(replicate, info) if data is None else data
    return [
        nw.train_or_load(
            info.config,
            data.train_x,
            data.train_y,
            data.val_x,
            data.val_y,
            seed=s,
            report_every=None,
        )
        for s in ensemble_seeds(replicate)
    ]


def neural_ode(replicate: int, info: realistic.Information, data: TrainingData | None = None):
    """The replicate's neural ODE under ``info`` (:func:`node_config`, seed ``r``),
    trained or loaded from the store."""
    _check_replicate(replicate)
    data = training_data(replicate, info) if data is None else data
    return nw.train_or_load(
        node_config(info),
        data.train_x,
        data.train_y,
        data.val_x,
        data.val_y,
        seed=int(replicate),
        report_every=None,
    )


#: Protocol version 2's learning curve: the training-set sizes (the first ``n`` patients
#: of each replicate's training set; 1000, the whole set, is the bench's networks) and
#: the setting it is drawn in.
LEARNING_CURVE_SIZES = (100, 250, 500, 1000)
LEARNING_CURVE_SETTING = "realistic + early PD"


def first_patients(data: TrainingData, n: int) -> TrainingData:
    """``data`` with only its first ``n`` training patients (every validation patient
    kept: early stopping sees the same 200 at every size).

    Raises
    ------
    ValueError
        If ``n`` is not a whole number from 1 to the number of training patients.
    """
    total = data.train_y.shape[0]
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= total:
        raise ValueError(f"n must be a whole number from 1 to {total}, got {n!r}")
    shared = sorted(k for k, v in data.train_x.items() if np.shape(v)[:1] != (total,))
    if shared:
        raise ValueError(f"train_x {shared} do not have one row per training patient ({total})")
    return replace(
        data,
        train_x={k: v[:n] for k, v in data.train_x.items()},
        train_y=data.train_y[:n],
    )


def learning_curve_networks(replicate: int, n: int, data: TrainingData | None = None):
    """The replicate's LSTM ensemble and neural ODE in
    :data:`LEARNING_CURVE_SETTING`, trained on its first ``n`` training patients (from
    and to the store): ``(ensemble, node)``."""
    info = SETTINGS[LEARNING_CURVE_SETTING]
    data = training_data(replicate, info) if data is None else data
    subset = first_patients(data, n)
    return lstm_ensemble(replicate, info, subset), neural_ode(replicate, info, subset)


@dataclass(frozen=True)
class TestSet:
    """A named test population: ``size`` patients from ``first_id``, sampled with
    ``population_seed``, observed under QD with ``qd_seed``; under any other schedule
    with ``named_seed("<name>/observations/<schedule name>")``; scored by protocol
    ``version``."""

    name: str
    size: int
    first_id: int
    population_seed: int
    qd_seed: int
    #: The protocol version that scores the set (:func:`score`): 1 (chapter 18's bench)
    #: or 2 (the searched population model, the full grid and the learning curve).
    version: int = 1

    def observation_seed(self, schedule_name: str) -> int:
        """The observation seed of the set under the schedule named ``schedule_name``."""
        if schedule_name == "QD":
            return self.qd_seed
        return sampling.named_seed(f"{self.name}/observations/{schedule_name}")

    def qd_data(self, info: realistic.Information) -> datasets.Dataset:
        """The set's patients (with the PD variability of ``info``) and their QD data:
        what is known before a new regimen."""
        pop = sample_population(
            self.size, self.population_seed, self.first_id, extra_eta_sd=info.extra_eta_sd
        )
        return datasets.simulate_dataset(pop, reg.qd(), obs_seed=self.qd_seed)


#: The locked test set's name (the protocol's; its seeds follow from it).
LOCKED = "locked-2026-12"
#: Protocol version 2's locked test set (page "Study protocol, version 2").
LOCKED_V2 = "locked-v2"


#: The protocol's test sets: the development set (the old locked set's seeds and IDs)
#: and the locked sets of versions 1 and 2, each drawn once.
def _locked_set(name: str, first_id: int, version: int) -> TestSet:
    """A locked set of 200 patients whose seeds follow from its name:
    ``named_seed("<name>/population")`` and ``named_seed("<name>/observations/QD")``."""
    return TestSet(
        name,
        200,
        first_id,
        sampling.named_seed(f"{name}/population"),
        sampling.named_seed(f"{name}/observations/QD"),
        version,
    )


TEST_SETS = {
    "development": TestSet(
        "development", 200, realistic.LOCKED_FIRST_ID, *realistic.LOCKED_TEST_SEEDS
    ),
    LOCKED: _locked_set(LOCKED, 50001, version=1),
    LOCKED_V2: _locked_set(LOCKED_V2, 70001, version=2),
}


#: The protocol's scenarios: the switch time (h), and the settings scored in each.
#: S48 (primary): QD for two days, the regimen asked about from 48 h, scored after 48 h.
#: S0: the regimen asked about from the first dose, the QD data from an earlier week.
SCENARIOS = {"S48": realistic.SWITCH_AT_H, "S0": 0.0}
SCENARIO_SETTINGS = {"S48": tuple(SETTINGS), "S0": ("oracle", "realistic")}


#: The day of treatment of the scored deviations of QD.
DEVIATION_DAY = 4
#: The scored deviations of QD (:func:`pkpd_lib.pmx.regimens.adherence_regimens`): in S48
#: they keep their own dose times, so they stay on day :data:`DEVIATION_DAY`.
DEVIATIONS = tuple(reg.adherence_regimens(day=DEVIATION_DAY))


def scored_regimens() -> dict[str, reg.Regimen]:
    """The regimens scored: QD, BID, TID (100 mg a day) and the day-4 deviations of
    :func:`pkpd_lib.pmx.regimens.adherence_regimens` (:data:`DEVIATIONS`)."""
    out = {r: reg.named(r) for r in ("QD", "BID", "TID")}
    return out | reg.adherence_regimens(day=DEVIATION_DAY)


@dataclass
class Case:
    """One setting's test patients in one scenario, with PK from one replicate's fit.

    ``inputs`` and ``truth`` (N, T) by regimen name; ``schedules``: the schedule each
    patient took under it (switched at ``at_h`` in S48); ``qd``: the QD data (what is
    known before the new regimen); ``pk``: each patient's estimated PK (``ka``, ``CL``,
    ``V``) or None when concentrations are observed; ``window``: the times scored."""

    inputs: dict[str, dict]
    truth: dict[str, np.ndarray]
    schedules: dict[str, reg.Regimen]
    qd: datasets.Dataset
    pk: dict | None
    window: np.ndarray

    @property
    def true_r0(self) -> np.ndarray:
        """Each patient's true baseline (the noise-free PD before the first dose, at
        0 h): the reference of every relative error's effect size, read by the scorer
        only."""
        if self.qd.times_h[0] != 0.0:
            raise ValueError(f"the QD data must start at 0 h, got {self.qd.times_h[0]:g} h")
        return self.qd.truth.pd[:, 0]


def scenario_case(
    test_set: TestSet,
    info: realistic.Information,
    scenario: str,
    regimens: dict[str, reg.Regimen],
    pk_fit: nlme.NLMEFit | None = None,
) -> Case:
    """The inputs and truths of ``test_set`` under ``info`` in ``scenario`` (a key of
    :data:`SCENARIOS`); ``pk_fit``: the replicate's population PK fit when ``info``
    estimates its PK prior. Each regimen's key must be its name (observations are seeded
    by it), ``"QD"`` must be QD, and in S48 the :data:`DEVIATIONS` keep their own dose
    times."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {sorted(SCENARIOS)}")
    if "QD" not in regimens:
        raise ValueError(f"regimens must include 'QD' (the reference), got {sorted(regimens)}")
    renamed = {k: r.name for k, r in regimens.items() if k != r.name}
    if renamed:
        raise ValueError(f"each regimen's key must be its name, got {renamed}")
    if regimens["QD"].doses() != reg.qd().doses():
        raise ValueError("regimens['QD'] must be QD (100 mg every 24 h), the reference")
    if info.pk_prior == "estimated" and pk_fit is None:
        raise ValueError(f"setting {info.label!r} needs the replicate's population PK fit")
    qd = test_set.qd_data(info)
    at_h = SCENARIOS[scenario]
    if at_h == 0.0:
        fit = realistic._qd_fit(info, qd, pk_fit)
        schedules = dict(regimens)
        inputs, truth = {}, {}
        for name, regimen in regimens.items():
            d = (
                qd
                if name == "QD"
                else datasets.simulate_dataset(
                    qd.population, regimen, obs_seed=test_set.observation_seed(regimen.name)
                )
            )
            inputs[name] = realistic._inputs(info, d, fit, qd)
            truth[name] = d.truth.pd
    else:
        fit = realistic._qd_fit(info, qd, pk_fit, realistic.SWITCH_PK_TIMES_H)
        unshifted = tuple(name for name in regimens if name in DEVIATIONS)
        cases = realistic.switch_cases(info, qd, fit, regimens, test_set.name, at_h, unshifted)
        inputs = {name: x for name, (x, _) in cases.items()}
        truth = {name: y for name, (_, y) in cases.items()}
        schedules = realistic.switch_schedules(regimens, at_h, unshifted)
    pk = fit if isinstance(fit, dict) else None
    return Case(inputs, truth, schedules, qd, pk, qd.times_h >= at_h)


def population_model_predictions(
    pd_fit: nlme.NLMEFit, case: Case, early_pd: bool, true_baseline: bool = False
) -> dict[str, np.ndarray]:
    """The population model's individual predictions (N, T) by regimen.

    Each patient's PK is the case's estimate, or, where the setting observes the
    concentrations (the oracle, ``case.pk`` None), its true PK. Its PD random effects
    are the empirical Bayes estimates from what the setting knows (three screening
    samples at 0 h, and with ``early_pd`` the QD PD at
    :data:`pkpd_lib.nets.features.EARLY_PD_TIMES_H`); with ``true_baseline`` (the
    oracle, whose networks read each patient's true R0) they are 0 but R0's, set so that
    R0 is the patient's true baseline (``case.true_r0``).
    """
    qd, covs = case.qd, case.qd.population.covariates
    pk = qd.population.params.as_dict() if case.pk is None else case.pk
    times = [0.0] * qd.screening_pd.shape[1]
    values = [qd.screening_pd]
    if early_pd:
        times += list(EARLY_PD_TIMES_H)
        values += [observed_pd_at(qd, t)[:, None] for t in EARLY_PD_TIMES_H]
    known = pm.pd_data(
        regimens=qd.regimens,
        times_h=np.array(times),
        pk_params=pk,
        covariates=covs,
        pd_obs=np.column_stack(values),
    )
    n = qd.n_patients
    if true_baseline:
        random = pd_fit.model.random
        if "R0" not in random:
            raise ValueError("a true baseline needs a model with a random effect on R0")
        etas = np.zeros((n, len(random)))
        typical_r0 = nlme.individual_parameters(pd_fit, known, etas)["R0"]
        etas[:, random.index("R0")] = np.log(case.true_r0 / typical_r0)
    else:
        etas = nlme.conditional_modes(pd_fit, known)
    out = {}
    for name, schedule in case.schedules.items():
        data = pm.pd_data(
            regimens=reg.per_patient(schedule, n),
            times_h=qd.times_h,
            pk_params=pk,
            covariates=covs,
        )
        out[name] = nlme.individual_predictions(pd_fit, data, etas)
    return out


#: The conformal interval's level, and the floor of the ensemble SD in a patient's
#: score (biomarker units; :func:`pkpd_lib.study.metrics.patient_scores`).
COVERAGE_LEVEL = 0.9
SD_FLOOR = 0.5

#: The methods' names in the score tables.
LSTM, NODE = "LSTM, ensemble of 5", "neural ODE"
MODEL, COMPETITOR, TYPICAL = (
    "population model",
    "population model, competitor",
    "population-typical",
)
#: Protocol version 2's reference that reads an oracle: version 1's population model,
#: handed the true structure (3 transit steps, the true covariate relations).
TRUE_STRUCTURE = "population model, true structure (oracle)"
#: The transit steps of the structure that generated the data (the book's drug).
TRUE_TRANSIT_STEPS = 3


@dataclass
class Scores:
    """What :func:`score` returns.

    ``table``: one row per scenario, setting, method and regimen: relative RMSE (%,
    against each patient's true R0), and for every regimen but QD the ratio to the
    method's own QD prediction with its 95% interval and verdict
    (:func:`pkpd_lib.study.metrics.extrapolation_verdict`), the regimen-effect error with
    its interval, and the QD floor; every interval with the between-replicate SD beside
    it. ``differences``: paired intervals of each method's ratio and regimen-effect error
    minus another's (``versus``: the LSTM ensemble for every method, the neural ODE for
    the population model too), read by
    :func:`pkpd_lib.study.metrics.difference_verdict`. ``replicates``: per method, the
    replicates it was scored in. ``coverage``: per scenario, setting and regimen, the
    share of patients whose whole curve (over the window) lies inside the LSTM
    ensemble's conformal interval (level :data:`COVERAGE_LEVEL`; multiplier from the
    ``calibration`` patients under q18h switched to at the scenario's time and scored
    over its window, one per replicate), with its interval
    and :func:`pkpd_lib.study.metrics.coverage_verdict`. ``structures``: per replicate, the
    population PD structure (transit steps) with the lower OFV on that replicate's
    training data; the model scored is replicate 0's pick in every replicate
    (:func:`kept_pd_structure`). ``version``: the protocol that scored the set.
    ``learning_curve`` (version 2): per method (:data:`LSTM`, :data:`NODE`), training
    patients ``n`` (:data:`LEARNING_CURVE_SIZES`) and regimen (BID, TID), in S48 and
    :data:`LEARNING_CURVE_SETTING`, the regimen-effect error with its interval and the
    paired interval of it minus the population model's (:func:`learning_curve_verdict`
    reads it)."""

    test_set: str
    table: pd.DataFrame
    differences: pd.DataFrame
    coverage: pd.DataFrame
    replicates: dict[str, tuple[int, ...]]
    structures: dict[int, int]
    version: int = 1
    learning_curve: pd.DataFrame | None = None


def _with_interval(table: pd.DataFrame, column: str, digits: int) -> pd.Series:
    """``column`` with its 95% interval as text, e.g. ``0.50 (0.44-0.55)``."""
    low, high = table[f"{column} 95% low"], table[f"{column} 95% high"]
    return pd.Series(
        [
            f"{v:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"
            for v, lo, hi in zip(table[column], low, high, strict=True)
        ],
        index=table.index,
    )


def summary(scores: Scores, scenario: str, regimens=("BID", "TID")) -> pd.DataFrame:
    """The rows of ``scores.table`` for ``scenario`` and ``regimens``, one row per
    setting and method: the relative RMSE (%) under QD, and per regimen the ratio and the
    regimen-effect error with their 95% intervals, the verdict, the QD floor and the
    relative RMSE (%)."""
    every = scores.table.xs(scenario, level="scenario")
    qd = every.xs("QD", level="regimen")["error %"].astype(float).round(1)
    table = every
    table = table[table.index.get_level_values("regimen").isin(regimens)]
    out = pd.DataFrame(
        {
            "ratio (95%)": _with_interval(table, "ratio", 2),
            "extrapolates?": table["extrapolates?"],
            "regimen-effect error (95%)": _with_interval(table, "regimen-effect error", 2),
            "QD floor": table["QD floor"].astype(float).round(2),
            "error %": table["error %"].astype(float).round(1),
        }
    )
    out = out.unstack("regimen").swaplevel(axis=1)
    order = list(dict.fromkeys(c for _, c in out.columns))
    columns = [(g, c) for g in regimens for c in order]
    out = out[columns].reindex(table.index.droplevel("regimen").unique())
    out.insert(0, ("QD", "error %"), qd.reindex(out.index))
    return out


def _interval_columns(prefix: str, interval, scale: float = 1.0) -> dict[str, float]:
    return {
        prefix: scale * interval.estimate,
        f"{prefix} 95% low": scale * interval.low,
        f"{prefix} 95% high": scale * interval.high,
        f"{prefix} replicate SD": scale * interval.replicate_sd,
    }


def score(
    test_set: str = "development",
    replicates=(0,),
    n_boot: int = 2000,
    progress: bool = True,
) -> Scores:
    """Score every method, setting, scenario and regimen of the protocol on a test set.

    The one function that reads a test set's truths. For each replicate in
    ``replicates`` it loads (or trains and fits) the replicate's networks and population
    models, predicts the test patients from what each setting knows, and scores the
    predictions against the noise-free truth over the scenario's window, with one
    :class:`pkpd_lib.study.metrics.NestedBootstrap` (seed
    ``named_seed("bootstrap/<test set>")``) for every interval, so every difference is
    paired.

    Parameters
    ----------
    test_set : str
        A key of :data:`TEST_SETS`.
    replicates : sequence of int
        The replicates of the whole pipeline (every method is scored in each).
    n_boot : int
        Bootstrap draws.
    progress : bool
        Print a line per replicate.

    Returns
    -------
    Scores
    """
    if test_set not in TEST_SETS:
        raise ValueError(f"unknown test set {test_set!r}; expected one of {sorted(TEST_SETS)}")
    replicates = tuple(replicates)
    if not replicates or len(set(replicates)) != len(replicates):
        raise ValueError(f"replicates must be distinct and at least one, got {replicates!r}")
    for r in replicates:
        _check_replicate(r)
    tset = TEST_SETS[test_set]
    version = tset.version
    regimens = scored_regimens()
    preds: dict[tuple, dict[str, list]] = {}
    truths: dict[tuple, dict[str, np.ndarray]] = {}
    true_r0: dict[tuple, np.ndarray] = {}
    curve: dict[tuple, dict[str, list]] = {}  # version 2: (method, n) -> regimen -> (N, T)
    kept = kept_pd_structure()
    searched = searched_model() if version == 2 else None
    structures, covered, multipliers = {}, {}, {}
    started = time.time()
    for k, r in enumerate(replicates):
        pd_fits = population_pd_fits(r)
        structures[r] = min(pd_fits, key=lambda steps: pd_fits[steps].ofv)
        (other,) = (steps for steps in pd_fits if steps != kept)
        rivals = {MODEL: pd_fits[kept], COMPETITOR: pd_fits[other]}
        if version == 2:  # one fit to the oracle data, one shared by the realistic settings
            searched_fits = {
                data: searched_model_fit(searched, r, data) for data in ("oracle", "realistic")
            }
        for name, info in SETTINGS.items():
            if version == 2:
                observed = info.conc == "observed"
                rivals = {MODEL: searched_fits["oracle" if observed else "realistic"]}
                if not observed:
                    rivals[TRUE_STRUCTURE] = pd_fits[TRUE_TRANSIT_STEPS]
            data = training_data(r, info)
            lstm = lstm_ensemble(r, info, data)
            node = neural_ode(r, info, data)
            for scenario, names in SCENARIO_SETTINGS.items():
                if name not in names:
                    continue
                case = scenario_case(tset, info, scenario, regimens, data.pk_fit)
                key = (scenario, name)
                multiplier = _multiplier(info, scenario, lstm, data.pk_fit)
                multipliers.setdefault(key, []).append(multiplier)
                truth = {g: y[:, case.window] for g, y in case.truth.items()}
                if key in truths and any(
                    not np.array_equal(truths[key][g], y) for g, y in truth.items()
                ):
                    raise RuntimeError(f"{key}: the truths differ between replicates")
                truths[key], true_r0[key] = truth, case.true_r0
                members = {g: _members(lstm, x) for g, x in case.inputs.items()}
                out = {LSTM: {g: m.mean(axis=0) for g, m in members.items()}}
                out[NODE] = {g: nw.predict_pd(node.model, x) for g, x in case.inputs.items()}
                for g, m in members.items():
                    inside = (
                        metrics.patient_scores(m[:, :, case.window], truths[key][g], SD_FLOOR)
                        <= multiplier
                    )
                    covered.setdefault((*key, g), []).append(inside.astype(float))
                if version == 2 and case.pk is None:
                    # the oracle: true concentrations and true baseline, the other random
                    # effects 0, which is the typical curve given what the oracle knows
                    out[MODEL] = population_model_predictions(
                        rivals[MODEL], case, info.early_pd, true_baseline=True
                    )
                    out[TYPICAL] = out[MODEL]
                if version == 2 and scenario == "S48" and name == LEARNING_CURVE_SETTING:
                    _learning_curve_predictions(curve, r, data, case, out)
                if case.pk is not None:
                    for m, fit in rivals.items():
                        out[m] = population_model_predictions(fit, case, info.early_pd)
                    base = realistic.baseline_of(case.inputs["QD"])
                    out[TYPICAL] = {
                        g: realistic.fitted_typical_curve(
                            data.pk_fit, rivals[MODEL], case.qd.population, base, s, case.qd.times_h
                        )
                        for g, s in case.schedules.items()
                    }
                for m, by_regimen in out.items():
                    slot = preds.setdefault((scenario, name, m), {})
                    for g, p in by_regimen.items():
                        slot.setdefault(g, []).append(p[:, case.window])
        if progress:
            print(
                f"replicate {r} ({k + 1} of {len(replicates)}) scored: "
                f"{time.time() - started:.0f} s",
                flush=True,
            )
    n_rep = len(replicates)
    boot = metrics.NestedBootstrap(
        n_rep, tset.size, n_boot=n_boot, seed=sampling.named_seed(f"bootstrap/{test_set}")
    )

    def stacked(key, regimen):  # (R, N, T): one prediction per replicate
        return np.asarray(preds[key][regimen])

    rows, diffs = {}, {}
    for scenario, name, method in preds:
        truth = truths[scenario, name]
        qd_pred = stacked((scenario, name, method), "QD")
        for g in regimens:
            pred = stacked((scenario, name, method), g)
            row = _interval_columns(
                "error %", boot.relative_rmse(pred, truth[g], true_r0[scenario, name])
            )
            if g != "QD":
                ratio = boot.ratio(pred, qd_pred, truth[g])
                row |= _interval_columns("ratio", ratio)
                row["extrapolates?"] = metrics.extrapolation_verdict(ratio.low, ratio.high)
                row |= _interval_columns(
                    "regimen-effect error",
                    boot.regimen_effect(pred, qd_pred, truth[g], truth["QD"]),
                )
                row["QD floor"] = boot.qd_floor(qd_pred, truth["QD"], truth[g]).estimate
                for versus in _compared_with(method, version):
                    other = (scenario, name, versus)
                    if other not in preds:
                        continue
                    second = (stacked(other, g), stacked(other, "QD"))
                    d = boot.ratio_difference((pred, qd_pred), second, truth[g])
                    e = _effect_difference(boot, (pred, qd_pred), second, truth[g], truth["QD"])
                    diffs[scenario, name, method, versus, g] = {
                        **_interval_columns("ratio difference", d),
                        "ratio is": metrics.difference_verdict(d.low, d.high),
                        **_interval_columns("effect error difference", e),
                        "effect error is": metrics.difference_verdict(e.low, e.high),
                    }
            rows[scenario, name, method, g] = row
    coverage = {}
    for (scenario, name, g), inside in covered.items():
        inside = np.asarray(inside)
        share = boot.interval(
            {"inside": inside, "n": np.ones_like(inside)}, lambda s: s["inside"] / s["n"]
        )
        coverage[scenario, name, g] = {
            "multiplier": float(np.mean(multipliers[scenario, name])),
            **_interval_columns("whole curve inside %", share, 100.0),
            "reading": metrics.coverage_verdict(share.low, share.high, COVERAGE_LEVEL),
        }
    index = ["scenario", "setting", "method", "regimen"]
    table = pd.DataFrame(rows).T.rename_axis(index)
    differences = pd.DataFrame(diffs).T.rename_axis(
        ["scenario", "setting", "method", "versus", "regimen"]
    )
    coverage = pd.DataFrame(coverage).T.rename_axis(["scenario", "setting", "regimen"])
    used = {m: replicates for (_, _, m) in preds}
    learning = None
    if version == 2:
        learning = _learning_curve_table(boot, curve, preds, truths)
    return Scores(test_set, table, differences, coverage, used, structures, version, learning)


def _compared_with(method: str, version: int = 1) -> tuple[str, ...]:
    """The methods a method's paired differences are taken against: every method against
    the LSTM ensemble, the population model against the neural ODE too, and (version 2)
    the true-structure model against the searched one."""
    if method == LSTM:
        return ()
    if method == MODEL:
        return (LSTM, NODE)
    if version == 2 and method == TRUE_STRUCTURE:
        return (LSTM, MODEL)
    return (LSTM,)


def _learning_curve_predictions(curve, replicate, data, case, full) -> None:
    """Add to ``curve`` the replicate's learning-curve networks' predictions (every size
    but the whole training set, whose networks are ``full``'s LSTM and NODE rows)."""
    total = data.train_y.shape[0]
    if LEARNING_CURVE_SIZES[-1] != total:
        raise ValueError(
            f"the learning curve ends at {LEARNING_CURVE_SIZES[-1]} patients, "
            f"the training set has {total}"
        )
    for n in LEARNING_CURVE_SIZES:
        if n == total:
            by_method = {LSTM: full[LSTM], NODE: full[NODE]}
        else:
            ensemble, node = learning_curve_networks(replicate, n, data)
            by_method = {
                LSTM: {g: _members(ensemble, x).mean(axis=0) for g, x in case.inputs.items()},
                NODE: {g: nw.predict_pd(node.model, x) for g, x in case.inputs.items()},
            }
        for method, by_regimen in by_method.items():
            slot = curve.setdefault((method, n), {})
            for g, p in by_regimen.items():
                slot.setdefault(g, []).append(p[:, case.window])


def _learning_curve_table(boot, curve, preds, truths) -> pd.DataFrame:
    """The learning curve's rows: per method, size and regimen (BID, TID), the
    regimen-effect error and the paired interval of it minus the population model's."""
    key = ("S48", LEARNING_CURVE_SETTING)
    truth = truths[key]
    model = {g: np.asarray(p) for g, p in preds[(*key, MODEL)].items()}
    rows = {}
    for (method, n), by_regimen in curve.items():
        qd = np.asarray(by_regimen["QD"])
        for g in ("BID", "TID"):
            pred = np.asarray(by_regimen[g])
            e = boot.regimen_effect(pred, qd, truth[g], truth["QD"])
            d = _effect_difference(boot, (pred, qd), (model[g], model["QD"]), truth[g], truth["QD"])
            rows[method, n, g] = {
                **_interval_columns("regimen-effect error", e),
                **_interval_columns("minus population model", d),
                "is": metrics.difference_verdict(d.low, d.high),
            }
    return pd.DataFrame(rows).T.rename_axis(["method", "patients", "regimen"])


def learning_curve_verdict(scores: Scores, method: str = LSTM) -> int | None:
    """Protocol version 2's verdict: the smallest number of training patients from which
    ``method``'s regimen-effect error is lower than the population model's (the paired
    95% interval of the difference below 0) under both BID and TID; None if there is
    none ("not within 1000 patients")."""
    if scores.learning_curve is None:
        raise ValueError(f"{scores.test_set!r} was scored by protocol version 1: no learning curve")
    rows = scores.learning_curve.xs(method, level="method")["is"].unstack("regimen")
    wins = rows.index[(rows[["BID", "TID"]] == "lower").all(axis=1)]
    return int(min(wins)) if len(wins) else None


def _multiplier(info, scenario: str, lstm, pk_fit) -> float:
    """The conformal multiplier of an LSTM ensemble in ``scenario``: the calibration
    patients under q18h, switched to it at the scenario's time, each scored over the
    scenario's window (:func:`pkpd_lib.study.realistic.calibration_case`)."""
    at_h = SCENARIOS[scenario]
    x, truth = realistic.calibration_case(info, pk_fit, at_h=at_h)
    window = sampling.DENSE_TIMES_H >= at_h
    scores = metrics.patient_scores(_members(lstm, x)[:, :, window], truth[:, window], SD_FLOOR)
    return metrics.conformal_quantile(scores, COVERAGE_LEVEL)


def _members(runs, x) -> np.ndarray:
    """The ensemble members' predictions (M, N, T)."""
    return np.stack([nw.predict_pd(run.model, x) for run in runs])


def _effect_difference(boot, first, second, truth_new, truth_qd):
    """Paired interval of the regimen-effect error of ``first`` minus ``second``, each a
    (prediction under the new regimen, prediction under QD) pair (R, N, T)."""
    shape = np.shape(first[0])
    effect = np.broadcast_to(truth_new, shape) - np.broadcast_to(truth_qd, shape)
    parts = {"size": (effect**2).sum(axis=2)}
    for tag, (new, qd) in (("1", first), ("2", second)):
        parts[tag] = ((np.asarray(new) - np.asarray(qd) - effect) ** 2).sum(axis=2)
    return boot.interval(parts, lambda s: np.sqrt(s["1"] / s["size"]) - np.sqrt(s["2"] / s["size"]))
