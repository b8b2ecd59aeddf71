"""The book's study: its data, its chosen networks, and their evaluation.

Chapters and the command line (``python -m pkpd_lib train``) use these functions so that
every model in the book is trained and scored the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..nets import networks as nw
from ..pmx import pkfit, sampling
from ..pmx import regimens as reg
from . import datasets, metrics

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

#: The neural ODE of the chapter "Beside a neural ODE": 4 latent states, a 16-unit tanh
#: derivative network, larger batches and a longer patience than the LSTM (it learns
#: more slowly per epoch). Batch size and maximum epochs are the protocol's pick from
#: :data:`NEURAL_ODE_GRID` (:func:`cheapest_within` of the validation errors under q18h,
#: chapter 13): 1600 epochs at batch 250 scored 3.76% against 4.34% at 800 epochs, and
#: batch 100 stopped early at 5.73%.
NEURAL_ODE = nw.NetworkConfig(
    kind="node",
    units=(16,),
    latent=4,
    block=1,
    batch_size=250,
    learning_rate=2e-2,
    patience=30,
    max_epochs=1600,
)


#: The protocol's grid for the neural ODE (oracle setting, seed 0, early stopping on the
#: validation patients): batch sizes and maximum epochs.
NEURAL_ODE_GRID = {"batch_size": (100, 250), "max_epochs": (800, 1600)}
#: A grid cell is as good as the best when its validation error is within this
#: fraction of the lowest (relative).
NEURAL_ODE_TOLERANCE = 0.02


def cheapest_within(
    errors: dict[tuple[int, int], float], tolerance: float = NEURAL_ODE_TOLERANCE
) -> tuple[int, int]:
    """The protocol's rule for a training grid: of the cells ``(batch_size, max_epochs)``
    whose validation error is within ``tolerance`` (relative) of the lowest, the cheapest,
    fewer epochs first, then the larger batch (fewer steps an epoch).

    Parameters
    ----------
    errors : dict
        Validation error (e.g. relative RMSE, %) by ``(batch_size, max_epochs)``.
    tolerance : float
        The relative margin, >= 0.

    Returns
    -------
    tuple of int
        The chosen ``(batch_size, max_epochs)``.

    Raises
    ------
    ValueError
        No cell, an error that is not finite, or a negative tolerance.

    Examples
    --------
    >>> cheapest_within({(250, 800): 3.05, (100, 800): 3.20, (250, 1600): 3.00})
    (250, 800)
    >>> cheapest_within({(250, 800): 3.20, (100, 800): 3.02, (250, 1600): 3.00})
    (100, 800)
    """
    if not errors:
        raise ValueError("no grid cell to choose from")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    bad = [cell for cell, e in errors.items() if not np.isfinite(e)]
    if bad:
        raise ValueError(f"validation errors must be finite; not for {bad}")
    best = min(errors.values())
    good = [cell for cell, e in errors.items() if e <= best * (1 + tolerance)]
    return min(good, key=lambda cell: (cell[1], -cell[0]))


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
    design: str = "dense", baseline: str = "true", time_input: bool | None = None, **variant
) -> StudyData:
    """Simulate the study's data sets for ``design`` and convert them for the networks.

    ``variant`` is passed to :func:`pkpd_lib.study.datasets.study_datasets` (e.g. ``simulator``,
    ``extra_eta_sd``, ``train_regimen``)."""
    if time_input is None:
        time_input = CHOSEN[design].time_input
    sets = datasets.study_datasets(design, **variant)

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
    """Score table (see :func:`pkpd_lib.study.metrics.score_table`) on the test patients."""
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
    (empirical Bayes, :func:`pkpd_lib.pmx.pkfit.fit_individual_pk`) to the sampled
    concentrations and the fitted model's hourly concentration (0..168 h) replaces the
    ``conc`` input. Returns the inputs and the fit."""
    d = samples.data
    fit = pkfit.fit_individual_pk(
        samples.conc_obs, samples.times_h, d.regimens, d.population.covariates
    )
    x = datasets.network_inputs(d)
    x["conc"] = pkfit.reconstructed_conc(fit, d.regimens, datasets.DENSE_TIMES_H).astype("float32")
    return x, fit


# --- sparse and uneven sampling (the chapter "Sparse data that extrapolates") -----------

#: Sequence network with the dose history as extra per-step inputs.
SEQUENCE_WITH_DOSES = nw.NetworkConfig(
    units=(16, 16), block=1, time_input=True, dose_inputs=True, batch_size=32, learning_rate=1e-2
)


def design_samples(sets: dict[str, datasets.Dataset], design: str) -> dict[str, datasets.Samples]:
    """Observations of hourly data sets under a sparse design.

    ``"sparse"``: the study's 7 times for everyone. ``"uneven"``: each patient's own 7
    random whole hours (0 h and 6 later ones, :func:`pkpd_lib.pmx.sampling.uneven_times`);
    a test patient keeps the same times under every regimen. Designs and their seeds are
    defined in :mod:`pkpd_lib.pmx.sampling`.
    """
    if design == "dense":
        raise ValueError("design_samples is for sparse designs; expected 'sparse' or 'uneven'")
    return {
        name: datasets.sample_at(
            d, sampling.sampling_times(design, name.split("_")[0], d.n_patients)
        )
        for name, d in sets.items()
    }


@dataclass
class SparseRun:
    """Test predictions of a sparse-trained method: at each test patient's sampled times
    (N, K) per regimen, on the hourly grid (N, 169) where the method has one, and the
    wall time of fitting and training in seconds."""

    at_samples: dict[str, np.ndarray]
    hourly: dict[str, np.ndarray] | None
    seconds: float


def run_sparse_method(
    kind: str, samples: dict[str, datasets.Samples], dose_inputs: bool = False, seed: int = 0
) -> SparseRun:
    """Train one method on ``samples["train"]`` / ``["val"]`` and predict the test sets.

    ``kind="sequence"``: the K samples as a K-step sequence (chapter 6's network, plus the
    dose history if ``dose_inputs``). ``kind="hybrid"``: each patient's PK is fitted to
    the sparse concentrations and the hourly network (``CHOSEN["dense"]``) reads the
    fitted hourly profile; its loss uses only the sampled PD (NaN elsewhere).
    """
    t0 = time.perf_counter()
    if kind == "sequence":
        config = SEQUENCE_WITH_DOSES if dose_inputs else CHOSEN["sparse"]
        x = {k: datasets.sequence_inputs(s, dose_inputs=dose_inputs) for k, s in samples.items()}
        y_train, y_val = samples["train"].pd_obs, samples["val"].pd_obs
    elif kind == "hybrid":
        config = CHOSEN["dense"]
        x = {k: hybrid_inputs(s)[0] for k, s in samples.items()}
        y_train, y_val = (datasets.masked_targets(samples[k]) for k in ("train", "val"))
    else:
        raise ValueError(f"unknown method kind {kind!r}; expected 'sequence' or 'hybrid'")
    run = nw.train_or_load(
        config, x["train"], y_train, x["val"], y_val, seed=seed, report_every=None
    )
    preds = {r: nw.predict_pd(run.model, x[f"test_{r}"]) for r in REGIMENS}
    if kind == "sequence":
        return SparseRun(preds, None, time.perf_counter() - t0)
    rows = np.arange(samples["test_QD"].times_h.shape[0])[:, None]
    at = {
        r: p[rows, datasets.grid_index(datasets.DENSE_TIMES_H, samples[f"test_{r}"].times_h)]
        for r, p in preds.items()
    }
    return SparseRun(at, preds, time.perf_counter() - t0)
