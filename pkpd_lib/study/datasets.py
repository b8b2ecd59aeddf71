"""Study data sets: simulated virtual patients and network arrays (NONMEM-style tables:
:mod:`pkpd_lib.pmx.nonmem`).

The study design (see ``shared/design/reference-model.md``): 1000 training and 200
validation patients under QD, and 200 test patients, never trained on, simulated under
QD, BID and TID (the same patients under all three). Each data set keeps the noise-free
truth beside the observations.

The examples assume ``np`` (numpy), the modules ``population`` and ``regimens`` of
:mod:`pkpd_lib.pmx`, two virtual patients ``pop = population.sample_population(2,
seed=1)`` and their data set ``d = simulate_dataset(pop, regimens.qd(), [0.0, 1.0,
2.0])``: under QD, sampled at 0, 1 and 2 h.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..memo import Memo, content_key, read_only
from ..nets.features import CONC, DOSE_FEATURES, STATIC_FEATURES, TIME, Source, build_inputs
from ..pmx import regimens as reg
from ..pmx.model import TYPICAL_PARAMS, Params, Simulation, simulate
from ..pmx.population import Population, sample_population
from ..pmx.sampling import (
    DENSE_TIMES_H,
    RESIDUAL_CV,
    STUDY_SEEDS,
    STUDY_SIZES,
    add_proportional_error,
    design_times,
    observe,
)


def grid_index(grid_h, times_h) -> np.ndarray:
    """Positions of ``times_h`` (any shape) in the sorted 1-D ``grid_h``; raises
    ``ValueError`` unless every time is one of the grid's times.

    Examples
    --------
    >>> grid_index([0.0, 1.0, 2.0, 3.0], [[1.0, 3.0]]).tolist()
    [[1, 3]]
    """
    grid, times = np.asarray(grid_h, dtype=float), np.asarray(times_h, dtype=float)
    idx = np.searchsorted(grid, times)
    if np.any(idx >= grid.size) or not np.array_equal(grid[idx], times):
        raise ValueError("requested times are not all among the sampling times of the grid")
    return idx


@dataclass(frozen=True)
class Dataset:
    """Virtual patients under one regimen (or one each), sampled at ``times_h``.

    ``regimen`` is one :class:`~pkpd_lib.pmx.regimens.Regimen` shared by all patients or a
    tuple of one per patient. ``truth`` holds the noise-free simulation; ``conc_obs``
    (mg/L) and ``pd_obs`` (biomarker units) are the observations with residual error,
    each (N, T). ``screening_pd`` (N, :data:`SCREENING_SAMPLES`): pre-dose PD
    measurements of each patient before the study (3% error each), the same for a
    patient under every regimen. ``biomarkers_obs``: every observed biomarker by name
    (the names of ``truth.biomarkers``), each (N, T), the first ``pd_obs`` itself;
    ``{"PD": pd_obs}`` for a model with one (the default).

    Examples
    --------
    >>> d.at_times([2.0]).pd_obs.shape, d.screening_pd.shape
    ((2, 1), (2, 3))
    """

    population: Population
    regimen: reg.Regimen | tuple[reg.Regimen, ...]
    times_h: np.ndarray
    truth: Simulation
    conc_obs: np.ndarray
    pd_obs: np.ndarray
    screening_pd: np.ndarray | None = None
    biomarkers_obs: dict[str, np.ndarray] | None = None

    def __post_init__(self):
        if self.biomarkers_obs is None:
            object.__setattr__(self, "biomarkers_obs", {"PD": self.pd_obs})
        names, true_names = list(self.biomarkers_obs), list(self.truth.biomarkers)
        if names != true_names:
            raise ValueError(f"observed biomarkers {names} are not the simulated {true_names}")
        if self.biomarkers_obs[names[0]] is not self.pd_obs:
            raise ValueError(f"the first observed biomarker ({names[0]!r}) must be pd_obs")
        for name, values in self.biomarkers_obs.items():
            if np.shape(values) != np.shape(self.pd_obs):
                raise ValueError(
                    f"observed biomarker {name!r} has shape {np.shape(values)}, pd_obs "
                    f"{np.shape(self.pd_obs)}"
                )

    @property
    def n_patients(self) -> int:
        return self.population.n_patients

    @property
    def regimens(self) -> list[reg.Regimen]:
        """Each patient's regimen."""
        return reg.per_patient(self.regimen, self.n_patients)

    def at_times(self, times_h) -> Dataset:
        """The same patients and observations restricted to a subset of the sampling times."""
        times_h = np.asarray(times_h, dtype=float)
        idx = grid_index(self.times_h, times_h)
        true = {k: v[:, idx] for k, v in self.truth.biomarkers.items()}
        truth = Simulation(
            times_h=times_h,
            conc_mg_L=self.truth.conc_mg_L[:, idx],
            pd=next(iter(true.values())),
            states={k: v[:, idx] for k, v in self.truth.states.items()},
            biomarkers=true,
        )
        observed = {k: v[:, idx] for k, v in self.biomarkers_obs.items()}
        return replace(
            self,
            times_h=times_h,
            truth=truth,
            conc_obs=self.conc_obs[:, idx],
            pd_obs=next(iter(observed.values())),
            biomarkers_obs=observed,
        )


def simulate_dataset(
    population: Population,
    regimen: reg.Regimen | list[reg.Regimen],
    times_h=DENSE_TIMES_H,
    obs_seed: int = 0,
    simulator=simulate,
) -> Dataset:
    """Simulate ``population`` under ``regimen`` (one, or one per patient) and add
    residual error from ``obs_seed``. ``simulator`` is the default model's
    :func:`~pkpd_lib.pmx.model.simulate` or a variant with its signature. A model with
    several observed biomarkers (e.g. :func:`~pkpd_lib.pmx.model.simulate_feedback`)
    gets the PD error on each: the first's as for one, each other's from a generator of
    its own (``[obs_seed, k]`` for the k-th), so adding one changes none of the others.

    Examples
    --------
    >>> d3 = simulate_dataset(population.sample_population(3, seed=1), regimens.qd(), [0.0, 24.0])
    >>> d3.n_patients, d3.pd_obs.shape
    (3, (3, 2))
    """
    if not isinstance(regimen, reg.Regimen):
        regimen = tuple(regimen)
    truth = _simulated_truth(simulator, population.params, regimen, times_h)
    conc_obs, pd_obs = observe(truth.conc_mg_L, truth.pd, seed=obs_seed)
    (first, *others) = truth.biomarkers
    observed = {first: pd_obs}
    for k, name in enumerate(others, start=1):
        rng = np.random.default_rng([obs_seed, k])
        observed[name] = add_proportional_error(truth.biomarkers[name], RESIDUAL_CV["pd"], rng)
    return Dataset(
        population,
        regimen,
        truth.times_h,
        truth,
        conc_obs,
        pd_obs,
        screening(population),
        biomarkers_obs=observed,
    )


#: Noise-free simulations made in this process, by what determines them: scoring a
#: protocol simulates the same patients under the same regimen for every method and
#: replicate, and the ODE integration is most of that time. Their arrays are read-only,
#: so no caller can change what another one reads.
_TRUTHS = Memo(kept=32)


def _simulated_truth(simulator, params, regimen, times_h) -> Simulation:
    """``simulator(params, regimen, times_h)``, computed once per process for the same
    simulator (the same object), parameters, regimen(s) and times."""
    if type(params) is not Params:  # only what is known to be immutable is reused
        return simulator(params, regimen, times_h)
    key = content_key(params, regimen, np.asarray(times_h, dtype=float))
    hit = _TRUTHS.get(key)
    if hit is not None and hit[0] is simulator:
        return hit[1]
    truth = simulator(params, regimen, times_h)
    read_only(
        truth.times_h,
        truth.conc_mg_L,
        truth.pd,
        *truth.states.values(),
        *truth.biomarkers.values(),
    )
    _TRUTHS.put(key, (simulator, truth))
    return truth


#: Pre-dose PD measurements per patient at screening (see :func:`screening`).
SCREENING_SAMPLES = 3


def screening(population: Population) -> np.ndarray:
    """Pre-dose PD measurements (N, :data:`SCREENING_SAMPLES`), each the true baseline
    R0 with 3% proportional error, from a generator seeded by the patients' IDs: a
    patient's screening values do not depend on the regimen they are later given.

    Examples
    --------
    >>> bool((screening(pop) == screening(pop)).all())
    True
    """
    rng = np.random.default_rng([int(i) for i in population.ids[:1]] + [population.n_patients, 7])
    r0 = np.repeat(population.params.R0[:, None], SCREENING_SAMPLES, axis=1)
    return add_proportional_error(r0, RESIDUAL_CV["pd"], rng)


#: The training schedules :func:`study_datasets` knows.
TRAIN_REGIMENS = ("QD", "random", "deviating")


def training_regimens(kind: str, n: int, seed: int, daily_dose_mg: float = 100.0):
    """The schedules of ``n`` training patients: ``"QD"`` for everyone, ``"random"``
    (each patient's own randomised schedule, :func:`pkpd_lib.pmx.regimens.random_schedules`)
    or ``"deviating"`` (randomised with missed, doubled and stopped doses,
    :func:`pkpd_lib.pmx.regimens.deviating_schedules`).

    Examples
    --------
    >>> training_regimens("QD", 3, seed=1).name, len(training_regimens("random", 3, seed=1))
    ('QD', 3)
    """
    if kind == "QD":
        return reg.qd(daily_dose_mg)
    if kind == "random":
        return reg.random_schedules(n, seed=seed + 7, daily_dose_mg=daily_dose_mg)
    if kind == "deviating":
        return reg.deviating_schedules(n, seed=seed + 7, daily_dose_mg=daily_dose_mg)
    raise ValueError(f"unknown train_regimen {kind!r}; expected one of {list(TRAIN_REGIMENS)}")


def study_datasets(
    design: str = "dense",
    daily_dose_mg: float = 100.0,
    train_regimen: str = "QD",
    simulator=simulate,
    extra_eta_sd: dict[str, float] | None = None,
    typical: dict[str, float] | None = None,
) -> dict[str, Dataset]:
    """The study's data sets for a sampling design.

    Keys: ``"train"`` and ``"val"`` (under ``train_regimen``, see
    :func:`training_regimens`), and
    ``"test_QD"``, ``"test_BID"``, ``"test_TID"`` (the same 200 test patients under each
    regimen). Everything is simulated on the hourly grid and then restricted to the
    design's times, so the sparse observations are a subset of the dense ones.
    ``simulator`` and ``extra_eta_sd`` select a model variant (see
    :func:`pkpd_lib.pmx.model.simulate_second_turnover`) and extra between-patient variability
    (:func:`pkpd_lib.pmx.population.sample_population`); ``typical`` replaces the typical
    parameter values (another drug, same covariate model and variability).

    Examples
    --------
    >>> sets = study_datasets("sparse")
    >>> {name: d.pd_obs.shape for name, d in sets.items()}["test_TID"]
    (200, 7)
    """
    times = design_times(design)
    pop_kw = {"extra_eta_sd": extra_eta_sd, "typical": typical or TYPICAL_PARAMS}
    out = {}
    for split in ("train", "val"):
        pop_seed, obs_seed = STUDY_SEEDS[split]
        pop = sample_population(STUDY_SIZES[split], pop_seed, 1 + 10000 * pop_seed, **pop_kw)
        regimen = training_regimens(train_regimen, pop.n_patients, pop_seed, daily_dose_mg)
        out[split] = simulate_dataset(pop, regimen, DENSE_TIMES_H, obs_seed, simulator)
    pop_seed, obs_seed = STUDY_SEEDS["test"]
    pop = sample_population(STUDY_SIZES["test"], pop_seed, 1 + 10000 * pop_seed, **pop_kw)
    for k, name in enumerate(("QD", "BID", "TID")):
        out[f"test_{name}"] = simulate_dataset(
            pop, reg.named(name, daily_dose_mg), DENSE_TIMES_H, obs_seed + k, simulator
        )
    return {k: v.at_times(times) for k, v in out.items()}


def network_inputs(
    data: Dataset, baseline: str = "true", time_input: bool = False
) -> dict[str, np.ndarray]:
    """Inputs of the sequence networks, keyed by feature name (:mod:`pkpd_lib.nets.features`).

    ``"conc"``: observed concentrations (N, T) in mg/L; ``"time_h"`` (only if
    ``time_input``): sampling times (N, T) in h; and one (N,) array per static feature
    in :data:`STATIC_FEATURES` (baseline PD, WT kg, AGE years, SEX 1 = female).

    Examples
    --------
    >>> {k: v.shape for k, v in network_inputs(d).items()}
    {'conc': (2, 3), 'BASE_PD': (2,), 'WT': (2,), 'AGE': (2,), 'SEX': (2,)}
    """
    times = np.broadcast_to(data.times_h, data.conc_obs.shape)
    names = (CONC, *((TIME,) if time_input else ()), *STATIC_FEATURES)
    return build_inputs(Source(data, times, data.conc_obs, baseline), names)


# --- each patient's own sampling times ---------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Observations at each patient's own sampling times, drawn from an hourly ``data``.

    ``times_h``, ``conc_obs`` (mg/L), ``pd_obs`` and ``pd_true`` (biomarker units) are
    (N, K): row i holds patient i's K samples in time order.

    Examples
    --------
    >>> sample_at(d, [0.0, 2.0]).pd_obs.shape
    (2, 2)
    """

    data: Dataset
    times_h: np.ndarray
    conc_obs: np.ndarray
    pd_obs: np.ndarray
    pd_true: np.ndarray


def sample_at(data: Dataset, times_h) -> Samples:
    """Pick each patient's samples from ``data``: ``times_h`` is (K,) for a shared design or
    (N, K) for each patient's own times; every time must be one of ``data.times_h``.

    Examples
    --------
    >>> sample_at(d, [[0.0, 2.0], [1.0, 2.0]]).times_h.tolist()
    [[0.0, 2.0], [1.0, 2.0]]
    """
    t = np.asarray(times_h, dtype=float)
    t = np.broadcast_to(t, (data.n_patients, t.shape[-1])) if t.ndim == 1 else t
    if t.ndim != 2 or t.shape[0] != data.n_patients:
        raise ValueError(f"times_h must be (K,) or ({data.n_patients}, K), got {t.shape}")
    if np.any(np.diff(t, axis=1) <= 0):
        raise ValueError("each patient's sampling times must be strictly increasing")
    idx = grid_index(data.times_h, t)
    rows = np.arange(data.n_patients)[:, None]
    return Samples(
        data, t.copy(), data.conc_obs[rows, idx], data.pd_obs[rows, idx], data.truth.pd[rows, idx]
    )


def sequence_inputs(
    samples: Samples, baseline: str = "true", dose_inputs: bool = False
) -> dict[str, np.ndarray]:
    """Inputs of a network that reads the K samples as a K-step sequence: ``conc``,
    ``time_h``, optionally the dose history (``hours_since_dose``, ``last_dose_mg``), and
    the static features.

    Examples
    --------
    >>> list(sequence_inputs(sample_at(d, [0.0, 2.0]), dose_inputs=True))[:4]
    ['conc', 'time_h', 'hours_since_dose', 'last_dose_mg']
    """
    names = (CONC, TIME, *(DOSE_FEATURES if dose_inputs else ()), *STATIC_FEATURES)
    source = Source(samples.data, samples.times_h, samples.conc_obs, baseline)
    return build_inputs(source, names)


def masked_targets(samples: Samples, grid_h=DENSE_TIMES_H) -> np.ndarray:
    """Observed PD placed on ``grid_h`` (N, G), NaN where the patient was not sampled.

    Examples
    --------
    >>> bool(np.isnan(masked_targets(sample_at(d, [0.0, 2.0]), [0.0, 1.0, 2.0])[0, 1]))
    True
    """
    idx = grid_index(grid_h, samples.times_h)
    out = np.full((samples.times_h.shape[0], np.size(grid_h)), np.nan)
    np.put_along_axis(out, idx, samples.pd_obs, axis=1)
    return out


def interpolated_conc(samples: Samples, grid_h=DENSE_TIMES_H) -> np.ndarray:
    """Each patient's sampled concentrations (mg/L) linearly interpolated onto ``grid_h``
    (N, G), held constant outside the first and last sample: an hourly input that carries
    exactly the information of the samples.

    Examples
    --------
    >>> s = sample_at(d, [0.0, 2.0])
    >>> c = interpolated_conc(s, [0.0, 1.0, 2.0])
    >>> bool(np.isclose(c[0, 1], s.conc_obs[0].mean()))
    True
    """
    grid = np.asarray(grid_h, dtype=float)
    return np.stack(
        [np.interp(grid, t, c) for t, c in zip(samples.times_h, samples.conc_obs, strict=True)]
    )
