"""Study data sets: simulated virtual patients, NONMEM-style tables and network arrays.

The study design (see ``shared/design/reference-model.md``): 1000 training and 200
validation patients under QD, and 200 test patients, never trained on, simulated under
QD, BID and TID (the same patients under all three). Each data set keeps the noise-free
truth beside the observations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import regimens as reg
from .model import Simulation, simulate
from .population import COVARIATE_NAMES, Population, sample_population
from .sampling import DENSE_TIMES_H, design_times, observe

#: Compartment numbers used in the NONMEM-style table.
CMT_DEPOT, CMT_CENTRAL, CMT_RESPONSE = 1, 2, 6
NONMEM_COLUMNS = ("ID", "TIME", "AMT", "EVID", "MDV", "CMT", "DV", *COVARIATE_NAMES)
_INT_COLUMNS = ("ID", "EVID", "MDV", "CMT", "SEX")

#: Seeds of the study's data sets: (population seed, observation seed).
STUDY_SEEDS = {"train": (101, 1101), "val": (202, 1202), "test": (303, 1303)}
STUDY_SIZES = {"train": 1000, "val": 200, "test": 200}
#: Static (per-patient) network features, in order: baseline PD and demographics.
STATIC_FEATURES = ("BASE_PD", "WT", "AGE", "SEX")


def grid_index(grid_h, times_h) -> np.ndarray:
    """Positions of ``times_h`` (any shape) in the sorted 1-D ``grid_h``; raises
    ``ValueError`` unless every time is one of the grid's times."""
    grid, times = np.asarray(grid_h, dtype=float), np.asarray(times_h, dtype=float)
    idx = np.searchsorted(grid, times)
    if np.any(idx >= grid.size) or not np.array_equal(grid[idx], times):
        raise ValueError("requested times are not all among the sampling times of the grid")
    return idx


@dataclass(frozen=True)
class Dataset:
    """Virtual patients under one regimen (or one each), sampled at ``times_h``.

    ``regimen`` is one :class:`~pkpd_lib.regimens.Regimen` shared by all patients or a
    tuple of one per patient. ``truth`` holds the noise-free simulation; ``conc_obs``
    (mg/L) and ``pd_obs`` (biomarker units) are the observations with residual error,
    each (N, T).
    """

    population: Population
    regimen: reg.Regimen | tuple[reg.Regimen, ...]
    times_h: np.ndarray
    truth: Simulation
    conc_obs: np.ndarray
    pd_obs: np.ndarray

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
        truth = Simulation(
            times_h=times_h,
            conc_mg_L=self.truth.conc_mg_L[:, idx],
            pd=self.truth.pd[:, idx],
            states={k: v[:, idx] for k, v in self.truth.states.items()},
        )
        return replace(
            self,
            times_h=times_h,
            truth=truth,
            conc_obs=self.conc_obs[:, idx],
            pd_obs=self.pd_obs[:, idx],
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
    :func:`~pkpd_lib.model.simulate` or a variant with its signature."""
    if not isinstance(regimen, reg.Regimen):
        regimen = tuple(regimen)
    truth = simulator(population.params, regimen, times_h)
    conc_obs, pd_obs = observe(truth.conc_mg_L, truth.pd, seed=obs_seed)
    return Dataset(population, regimen, truth.times_h, truth, conc_obs, pd_obs)


def study_datasets(
    design: str = "dense",
    daily_dose_mg: float = 100.0,
    train_regimen: str = "QD",
    simulator=simulate,
    extra_eta_sd: dict[str, float] | None = None,
) -> dict[str, Dataset]:
    """The study's data sets for a sampling design.

    Keys: ``"train"`` and ``"val"`` (QD; or with ``train_regimen="random"`` each patient
    on its own randomised schedule, :func:`pkpd_lib.regimens.random_schedules`), and
    ``"test_QD"``, ``"test_BID"``, ``"test_TID"`` (the same 200 test patients under each
    regimen). Everything is simulated on the hourly grid and then restricted to the
    design's times, so the sparse observations are a subset of the dense ones.
    ``simulator`` and ``extra_eta_sd`` select a model variant (see
    :mod:`pkpd_lib.variants`) and extra between-patient variability
    (:func:`pkpd_lib.population.sample_population`).
    """
    times = design_times(design)
    out = {}
    for split in ("train", "val"):
        pop_seed, obs_seed = STUDY_SEEDS[split]
        pop = sample_population(
            STUDY_SIZES[split], pop_seed, 1 + 10000 * pop_seed, extra_eta_sd=extra_eta_sd
        )
        if train_regimen == "random":
            regimen = reg.random_schedules(
                pop.n_patients, seed=pop_seed + 7, daily_dose_mg=daily_dose_mg
            )
        elif train_regimen == "QD":
            regimen = reg.qd(daily_dose_mg)
        else:
            raise ValueError(f"unknown train_regimen {train_regimen!r}; expected 'QD' or 'random'")
        out[split] = simulate_dataset(pop, regimen, DENSE_TIMES_H, obs_seed, simulator)
    pop_seed, obs_seed = STUDY_SEEDS["test"]
    pop = sample_population(
        STUDY_SIZES["test"], pop_seed, 1 + 10000 * pop_seed, extra_eta_sd=extra_eta_sd
    )
    for k, name in enumerate(("QD", "BID", "TID")):
        out[f"test_{name}"] = simulate_dataset(
            pop, reg.named(name, daily_dose_mg), DENSE_TIMES_H, obs_seed + k, simulator
        )
    return {k: v.at_times(times) for k, v in out.items()}


def baseline_pd(data: Dataset, kind: str = "true") -> np.ndarray:
    """Each patient's baseline PD (biomarker units).

    ``"true"``: the patient's R0, as if baseline were known precisely (e.g. the mean of
    many screening visits). ``"observed"``: the single pre-dose PD observation at 0 h,
    with its 3% residual error.
    """
    if kind == "true":
        return data.population.params.R0.copy()
    if kind == "observed":
        if data.times_h[0] != 0.0:
            raise ValueError("an observed baseline needs a PD sample at 0 h")
        return data.pd_obs[:, 0].copy()
    raise ValueError(f"unknown baseline kind {kind!r}; expected 'true' or 'observed'")


def network_inputs(
    data: Dataset, baseline: str = "true", time_input: bool = False
) -> dict[str, np.ndarray]:
    """Inputs of the sequence networks, keyed by feature name.

    ``"conc"``: observed concentrations (N, T) in mg/L; ``"time_h"`` (only if
    ``time_input``): sampling times (N, T) in h; and one (N,) array per static feature
    in :data:`STATIC_FEATURES` (baseline PD, WT kg, AGE years, SEX 1 = female).
    """
    cov = data.population.covariates
    x = {"conc": data.conc_obs.astype("float32")}
    if time_input:
        x["time_h"] = np.broadcast_to(data.times_h, data.conc_obs.shape).astype("float32")
    x["BASE_PD"] = baseline_pd(data, baseline).astype("float32")
    for name in COVARIATE_NAMES:
        x[name] = cov[name].to_numpy(dtype="float32")
    return x


# --- NONMEM-style long table -------------------------------------------------------------


def to_nonmem(data: Dataset) -> pd.DataFrame:
    """A NONMEM-style long table of ``data``.

    Columns: ID, TIME (h), AMT (mg), EVID (1 dose, 0 observation), MDV, CMT (1 depot for
    doses, 2 central for concentration in mg/L, 6 response for PD), DV, WT (kg), AGE
    (years), SEX (1 = female). Rows are sorted by ID and TIME; at a time with both a dose
    and samples, the samples come first (they are pre-dose troughs).
    """
    pop, n, t = data.population, data.n_patients, data.times_h
    cov = pop.covariates.reset_index(drop=True)
    regs = data.regimens
    counts = [len(r) for r in regs]
    doses = pd.DataFrame(
        {
            "ID": np.repeat(pop.ids, counts),
            "TIME": np.concatenate([r.times_h for r in regs]),
            "AMT": np.concatenate([r.amounts_mg for r in regs]),
            "EVID": 1,
            "MDV": 1,
            "CMT": CMT_DEPOT,
            "DV": 0.0,
            "_patient": np.repeat(np.arange(n), counts),
        }
    )
    obs = []
    for cmt, dv in ((CMT_CENTRAL, data.conc_obs), (CMT_RESPONSE, data.pd_obs)):
        obs.append(
            pd.DataFrame(
                {
                    "ID": np.repeat(pop.ids, t.size),
                    "TIME": np.tile(t, n),
                    "AMT": 0.0,
                    "EVID": 0,
                    "MDV": 0,
                    "CMT": cmt,
                    "DV": dv.reshape(-1),
                    "_patient": np.repeat(np.arange(n), t.size),
                }
            )
        )
    df = pd.concat([doses, *obs], ignore_index=True)
    df = df.sort_values(["_patient", "TIME", "EVID", "CMT"], kind="stable", ignore_index=True)
    for name in COVARIATE_NAMES:
        df[name] = cov[name].to_numpy()[df["_patient"].to_numpy()]
    df = df.drop(columns="_patient")
    return _nonmem_dtypes(df[list(NONMEM_COLUMNS)])


def _nonmem_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype({c: ("int64" if c in _INT_COLUMNS else "float64") for c in NONMEM_COLUMNS})


def write_nonmem_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a NONMEM-style table to CSV; floats keep every digit (exact round trip)."""
    check_nonmem(table)
    path = Path(path)
    table.to_csv(path, index=False, float_format="%.17g")
    return path


def read_nonmem_csv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_nonmem_csv` (columns checked, dtypes restored)."""
    df = pd.read_csv(path, float_precision="round_trip")
    check_nonmem(df)
    return _nonmem_dtypes(df[list(NONMEM_COLUMNS)])


def check_nonmem(table: pd.DataFrame) -> None:
    """Raise ``ValueError`` if a NONMEM-style table lacks columns or has bad values."""
    missing = [c for c in NONMEM_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"NONMEM table lacks column(s) {missing}")
    if table[list(NONMEM_COLUMNS)].isna().any().any():
        bad = table.columns[table.isna().any()].tolist()
        raise ValueError(f"NONMEM table has missing values in {bad}")
    if not set(np.unique(table["EVID"])) <= {0, 1}:
        raise ValueError("EVID must be 0 (observation) or 1 (dose)")
    if (table["AMT"] < 0).any():
        raise ValueError("AMT must be >= 0 mg")
    for _, times in table.groupby("ID", sort=False)["TIME"]:
        if np.any(np.diff(times.to_numpy()) < 0):
            raise ValueError("TIME must be sorted within each ID")


def observations_from_nonmem(
    table: pd.DataFrame, cmt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pivot the observations of compartment ``cmt`` to arrays.

    Returns ``(ids, times_h, dv)`` with ``dv`` of shape (N, T); every ID must be sampled
    at the same times.
    """
    check_nonmem(table)
    obs = table[(table["EVID"] == 0) & (table["CMT"] == cmt)]
    if obs.empty:
        raise ValueError(f"no observations with CMT == {cmt}")
    wide = obs.pivot(index="ID", columns="TIME", values="DV")
    if wide.isna().any().any():
        raise ValueError("patients are not all sampled at the same times")
    return wide.index.to_numpy(), wide.columns.to_numpy(dtype=float), wide.to_numpy()


# --- each patient's own sampling times ---------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Observations at each patient's own sampling times, drawn from an hourly ``data``.

    ``times_h``, ``conc_obs`` (mg/L), ``pd_obs`` and ``pd_true`` (biomarker units) are
    (N, K): row i holds patient i's K samples in time order.
    """

    data: Dataset
    times_h: np.ndarray
    conc_obs: np.ndarray
    pd_obs: np.ndarray
    pd_true: np.ndarray


def sample_at(data: Dataset, times_h) -> Samples:
    """Pick each patient's samples from ``data``: ``times_h`` is (K,) for a shared design or
    (N, K) for each patient's own times; every time must be one of ``data.times_h``."""
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


def dose_history(regimens: list[reg.Regimen], times_h) -> tuple[np.ndarray, np.ndarray]:
    """Hours since the last dose given strictly before each time, and its amount (mg).

    ``times_h`` is (N, K), one row per regimen. Before the first dose both are 0 (a
    sample at a dose time is the trough, taken before that dose).
    """
    t = np.asarray(times_h, dtype=float)
    if t.ndim != 2 or t.shape[0] != len(regimens):
        raise ValueError(f"times_h must be ({len(regimens)}, K), got {t.shape}")
    since, amount = np.zeros_like(t), np.zeros_like(t)
    for i, r in enumerate(regimens):
        j = np.searchsorted(r.times_h, t[i], side="left") - 1  # last dose strictly before
        has = j >= 0
        since[i, has] = t[i, has] - r.times_h[j[has]]
        amount[i, has] = r.amounts_mg[j[has]]
    return since, amount


def sequence_inputs(
    samples: Samples, baseline: str = "true", dose_inputs: bool = False
) -> dict[str, np.ndarray]:
    """Inputs of a network that reads the K samples as a K-step sequence: ``conc``,
    ``time_h``, optionally the dose history (``hours_since_dose``, ``last_dose_mg``), and
    the static features."""
    x = network_inputs(samples.data, baseline=baseline)
    x["conc"] = samples.conc_obs.astype("float32")
    x["time_h"] = samples.times_h.astype("float32")
    if dose_inputs:
        since, amount = dose_history(samples.data.regimens, samples.times_h)
        x["hours_since_dose"] = since.astype("float32")
        x["last_dose_mg"] = amount.astype("float32")
    return x


def masked_targets(samples: Samples, grid_h=DENSE_TIMES_H) -> np.ndarray:
    """Observed PD placed on ``grid_h`` (N, G), NaN where the patient was not sampled."""
    idx = grid_index(grid_h, samples.times_h)
    out = np.full((samples.times_h.shape[0], np.size(grid_h)), np.nan)
    np.put_along_axis(out, idx, samples.pd_obs, axis=1)
    return out
