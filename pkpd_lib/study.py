"""The book's study: its data, its chosen networks, and their evaluation.

Chapters and the command line (``python -m pkpd_lib train``) use these functions so that
every model in the book is trained and scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import datasets, metrics, pkfit
from . import networks as nw
from . import regimens as reg

REGIMENS = ("QD", "BID", "TID")

#: The sizes compared in the construction chapter (LSTM units per layer).
SIZES = ((8,), (16,), (32,), (16, 16))

#: The book's chosen network for each sampling design. Dense: hourly concentrations,
#: 4 h per LSTM step. Sparse: the 7 samples as a 7-step sequence with their times.
CHOSEN = {
    "dense": nw.NetworkConfig(units=(16, 16), block=4, batch_size=32, learning_rate=1e-2),
    "sparse": nw.NetworkConfig(
        units=(16, 16), block=1, time_input=True, batch_size=32, learning_rate=1e-2
    ),
}

#: The textbook set-up used as the speed baseline: one time point per LSTM step, Keras
#: defaults (batch 32, Adam 1e-3).
NAIVE = nw.NetworkConfig(units=(16, 16), block=1, batch_size=32, learning_rate=1e-3)


@dataclass
class StudyData:
    """Network-ready arrays of one design: inputs (feature mappings), observed PD
    targets, and for the test patients the noise-free truth per regimen."""

    design: str
    train_x: dict
    train_y: np.ndarray
    val_x: dict
    val_y: np.ndarray
    val_truth: np.ndarray
    test_x: dict[str, dict]
    test_truth: dict[str, np.ndarray]
    test_baseline: np.ndarray
    sets: dict[str, datasets.Dataset]


def study_data(
    design: str = "dense", baseline: str = "true", time_input: bool | None = None
) -> StudyData:
    """Simulate the study's data sets for ``design`` and convert them for the networks."""
    if time_input is None:
        time_input = CHOSEN[design].time_input
    sets = datasets.study_datasets(design)

    def x(d):
        return datasets.network_inputs(d, baseline=baseline, time_input=time_input)

    return StudyData(
        design=design,
        train_x=x(sets["train"]),
        train_y=sets["train"].pd_obs,
        val_x=x(sets["val"]),
        val_y=sets["val"].pd_obs,
        val_truth=sets["val"].truth.pd,
        test_x={r: x(sets[f"test_{r}"]) for r in REGIMENS},
        test_truth={r: sets[f"test_{r}"].truth.pd for r in REGIMENS},
        test_baseline=sets["test_QD"].population.params.R0,
        sets=sets,
    )


def fit(
    data: StudyData, config: nw.NetworkConfig | None = None, seed: int = 0, **kw
) -> nw.TrainingResult:
    """Train (or load from the cache) ``config`` on ``data`` with ``seed``."""
    config = config or CHOSEN[data.design]
    return nw.train_or_load(config, data.train_x, data.train_y, data.val_x, data.val_y, seed, **kw)


def predict_test(model, data: StudyData) -> dict[str, np.ndarray]:
    """Predicted PD of the test patients under each regimen."""
    return {r: nw.predict_pd(model, data.test_x[r]) for r in REGIMENS}


def evaluate(model, data: StudyData) -> pd.DataFrame:
    """Score table (see :func:`pkpd_lib.metrics.score_table`) on the test patients."""
    return metrics.score_table(predict_test(model, data), data.test_truth, data.test_baseline)


def validation_rel_rmse(model, data: StudyData) -> float:
    """Relative RMSE (%) on the QD validation patients, against the noise-free truth."""
    pred = nw.predict_pd(model, data.val_x)
    base = np.asarray(data.val_x["BASE_PD"], float)
    return 100 * metrics.relative_rmse(pred, data.val_truth, base)


def scenario(
    data: StudyData, regimen: reg.Regimen, obs_seed: int = 9000
) -> tuple[dict, np.ndarray]:
    """The test patients of ``data`` under any ``regimen``: network inputs (observed
    concentrations on the design's grid) and the noise-free PD truth, (N, T)."""
    population = data.sets["test_QD"].population
    times = data.sets["test_QD"].times_h
    dense = datasets.simulate_dataset(population, regimen, datasets.DENSE_TIMES_H, obs_seed)
    d = dense.at_times(times)
    time_input = "time_h" in data.test_x["QD"]
    return datasets.network_inputs(d, time_input=time_input), d.truth.pd


def ensemble_predict(models, x) -> np.ndarray:
    """Predictions of every model in ``models`` for inputs ``x``, stacked: (M, N, T)."""
    return np.stack([nw.predict_pd(m, x) for m in models])


def hybrid_inputs(samples: datasets.Samples) -> tuple[dict, pkfit.PKFit]:
    """Inputs for an hourly network from sparse samples: each patient's PK is fitted
    (empirical Bayes, :func:`pkpd_lib.pkfit.fit_individual_pk`) to the sampled
    concentrations and the fitted model's hourly concentration (0..168 h) replaces the
    ``conc`` input. Returns the inputs and the fit."""
    d = samples.data
    fit = pkfit.fit_individual_pk(
        samples.conc_obs, samples.times_h, d.regimens, d.population.covariates
    )
    x = datasets.network_inputs(d)
    x["conc"] = pkfit.reconstructed_conc(fit, d.regimens, datasets.DENSE_TIMES_H).astype("float32")
    return x, fit
