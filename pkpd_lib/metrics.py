"""Error metrics against the noise-free truth.

* RMSE of predicted vs true PD over all patients and times (biomarker units).
* Relative RMSE = RMSE / mean absolute (true PD - baseline): error as a fraction of the drug
  effect, so it means the same whatever the baseline level.
* The regimen-blind reference: for BID/TID, each test patient's own true QD curve used
  as the "prediction". A model extrapolates only if it is far below this reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(truth))):
        raise ValueError("predictions and truth must be finite")
    return pred, truth


def rmse(pred, truth) -> float:
    """Root mean squared error over all elements (units of the inputs).

    Examples
    --------
    >>> rmse([1.0, 2.0], [1.0, 4.0])
    1.4142135623730951
    """
    pred, truth = _pair(pred, truth)
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def effect_size(truth, baseline) -> float:
    """Mean absolute (true PD - baseline) over all patients and times: the drug effect size.

    Examples
    --------
    >>> effect_size([[100.0, 120.0, 140.0]], baseline=[100.0])
    20.0
    """
    truth = np.asarray(truth, float)
    baseline = np.asarray(baseline, float).reshape(-1, *([1] * (truth.ndim - 1)))
    return float(np.mean(np.abs(truth - baseline)))


def relative_rmse(pred, truth, baseline) -> float:
    """RMSE divided by :func:`effect_size` (a fraction; multiply by 100 for %).

    Examples
    --------
    >>> round(relative_rmse([[100.0, 118.0, 142.0]], [[100.0, 120.0, 140.0]], [100.0]), 3)
    0.082
    """
    return rmse(pred, truth) / effect_size(truth, baseline)


def score_table(
    predictions: Mapping[str, np.ndarray],
    truths: Mapping[str, np.ndarray],
    baseline: np.ndarray,
    reference: str | None = "QD",
) -> pd.DataFrame:
    """One row per regimen: RMSE, relative RMSE (%), and the regimen-blind reference.

    ``predictions`` and ``truths`` map regimen names to (N, T) PD arrays for the same
    patients. The reference for each regimen is the truth of ``reference`` (each
    patient's own true QD curve); its row for ``reference`` itself is 0 by definition.
    ``ratio`` = model RMSE / reference RMSE: success is far below 1.

    Examples
    --------
    >>> import numpy as np
    >>> truth = {"QD": np.array([[100.0, 130.0]]), "BID": np.array([[100.0, 120.0]])}
    >>> pred = {"QD": np.array([[100.0, 129.0]]), "BID": np.array([[100.0, 122.0]])}
    >>> score_table(pred, truth, baseline=np.array([100.0])).round(2)["ratio"].tolist()
    [nan, 0.2]
    """
    rows = []
    for name, pred in predictions.items():
        truth = truths[name]
        row = {
            "regimen": name,
            "RMSE": rmse(pred, truth),
            "rel_RMSE_%": 100 * relative_rmse(pred, truth, baseline),
        }
        if reference is not None:
            ref = truths[reference]
            row["ref_RMSE"] = rmse(ref, truth)
            row["ref_rel_RMSE_%"] = 100 * relative_rmse(ref, truth, baseline)
            row["ratio"] = row["RMSE"] / row["ref_RMSE"] if row["ref_RMSE"] > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("regimen")


def summarize_seeds(tables: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean, SD, min and max over seeds of every column of per-seed score tables.

    Examples
    --------
    >>> import pandas as pd
    >>> t = {s: pd.DataFrame({"rel_RMSE_%": [2.0 + s]}, index=pd.Index(["QD"], name="regimen"))
    ...      for s in (0, 1)}
    >>> summarize_seeds(t)["rel_RMSE_%"]["mean"].tolist()
    [2.5]
    """
    stacked = pd.concat(tables, names=["seed"])
    return stacked.groupby(level="regimen", sort=False).agg(["mean", "std", "min", "max"])


def ensemble_interval(members, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of an ensemble's predictions.

    ``members`` is (M, N, T): M networks' predictions (e.g. trained from different
    seeds). The interval is the empirical quantiles (1 - level)/2 and (1 + level)/2 over
    the members; with few members it is close to their range.

    Examples
    --------
    >>> lo, hi = ensemble_interval([[1.0], [2.0], [3.0]], level=0.5)
    >>> float(lo[0]), float(hi[0])
    (1.5, 2.5)
    """
    members = np.asarray(members, float)
    if members.ndim < 2 or members.shape[0] < 2:
        raise ValueError("an ensemble needs at least 2 members along the first axis")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    lo, hi = np.quantile(members, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def coverage(lower, upper, truth) -> float:
    """Fraction of true values inside [lower, upper] (all patients and times).

    Examples
    --------
    >>> coverage([0.0, 0.0], [1.0, 1.0], [0.5, 2.0])
    0.5
    """
    lower, truth = _pair(lower, truth)
    upper, _ = _pair(upper, truth)
    if np.any(lower > upper):
        raise ValueError("lower bounds must not exceed upper bounds")
    return float(np.mean((truth >= lower) & (truth <= upper)))
