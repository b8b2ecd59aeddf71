"""Error metrics against the noise-free truth.

* RMSE of predicted vs true PD over all patients and times (biomarker units).
* Relative RMSE = RMSE / mean absolute (true PD - baseline): error as a fraction of the drug
  effect, so it means the same whatever the baseline level.
* The regimen-blind reference: for BID/TID, each test patient's own true QD curve used
  as the "prediction". A model extrapolates only if it is far below this reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(truth))):
        raise ValueError("predictions and truth must be finite")
    return pred, truth


#: Default margin of :func:`verdict`: a value within 15% of its threshold is too close
#: to call, since the mean of a few seeds moves by about that much between seeds.
VERDICT_MARGIN = 0.15


def verdict(
    value: float,
    threshold: float,
    below: str = "met",
    above: str = "missed",
    margin: float = VERDICT_MARGIN,
) -> str:
    """``below`` if ``value`` is clearly under ``threshold``, ``above`` if clearly over,
    else ``"too close to call"``: a verdict that the seed spread cannot flip.

    Clearly means by more than ``margin`` as a fraction of the threshold.

    Examples
    --------
    >>> verdict(3.8, 5.0), verdict(5.2, 5.0), verdict(6.5, 5.0)
    ('met', 'too close to call', 'missed')
    """
    if value <= threshold * (1 - margin):
        return below
    if value >= threshold * (1 + margin):
        return above
    return "too close to call"


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
    >>> relative_rmse([[100.0, 101.0]], [[100.0, 100.0]], [100.0])
    Traceback (most recent call last):
    ...
    ValueError: the truth never leaves the baseline (effect size 0): ...
    """
    error = rmse(pred, truth)
    effect = effect_size(truth, baseline)
    if not np.isfinite(effect):
        raise ValueError(f"baseline must be finite and one per patient, got effect size {effect}")
    if effect == 0:
        raise ValueError(
            f"the truth never leaves the baseline (effect size {effect:g}): an error relative "
            "to the drug effect is undefined; use rmse, or a truth with a drug effect"
        )
    return error / effect


def regimen_effect_error(pred_new, pred_qd, truth_new, truth_qd) -> float:
    """Relative error of the predicted *effect of switching* from QD to a new regimen.

    The effect is the PD difference (N, T) between the new regimen and QD for the same
    patients at the same times: ``pred_new - pred_qd`` predicted, ``truth_new -
    truth_qd`` true. Returns the RMSE of the predicted effect divided by the RMS of the
    true effect (a fraction; 1 is what predicting "no change" scores, so a method that
    only reproduces its QD curve for every regimen scores about 1 however good its QD
    error). Unlike :func:`relative_rmse`, an error the method makes on QD and on the
    new regimen alike cancels: the metric asks about the regimen, not the patient.

    Examples
    --------
    >>> qd, bid = [[100.0, 130.0, 120.0]], [[100.0, 124.0, 124.0]]
    >>> regimen_effect_error(bid, qd, bid, qd)
    0.0
    >>> regimen_effect_error(qd, qd, bid, qd)  # "no change" predicted
    1.0
    >>> round(regimen_effect_error([[102.0, 127.0, 127.0]], [[102.0, 132.0, 123.0]],
    ...                            bid, qd), 3)  # a 2-unit offset cancels
    0.139
    >>> regimen_effect_error(qd, qd, qd, qd)
    Traceback (most recent call last):
    ...
    ValueError: the true regimen effect is 0 everywhere (RMS 0): ...
    """
    p_new, t_new = _pair(pred_new, truth_new)
    p_qd, t_qd = _pair(pred_qd, truth_qd)
    if p_new.shape != p_qd.shape:
        raise ValueError(
            f"pred_new {p_new.shape} and pred_qd {p_qd.shape} must cover the same patients "
            "and times"
        )
    true_effect = t_new - t_qd
    size = float(np.sqrt(np.nanmean(true_effect**2)))
    if not np.isfinite(size) or size == 0:
        raise ValueError(
            f"the true regimen effect is 0 everywhere (RMS {size:g}): an error relative "
            "to it is undefined; compare regimens that differ"
        )
    return rmse(p_new - p_qd, true_effect) / size


def qd_floor(pred_qd, truth_qd, truth_new) -> float:
    """The ratio a method would score that predicted the regimen effect exactly but kept
    its QD error: RMSE(pred_QD - truth_QD) / RMSE(pred_QD - truth_new).

    Beside every ratio to the regimen-blind reference (which is RMSE(pred_new -
    truth_new) / RMSE(pred_QD - truth_new)): a floor above the bar of "extrapolates"
    (0.5) means the method's QD error alone keeps it from the bar, whatever it learned
    about the regimen. Not a strict bound: errors on QD and on the new regimen can
    cancel.

    Parameters
    ----------
    pred_qd : array_like, (N, T)
        The method's prediction under QD (biomarker units).
    truth_qd, truth_new : array_like, (N, T)
        Noise-free PD of the same patients at the same times under QD and under the new
        regimen.

    Returns
    -------
    float
        The floor (dimensionless).

    Raises
    ------
    ValueError
        If shapes differ, values are not finite, or the QD prediction equals the truth
        under the new regimen everywhere (the reference has no error).

    Examples
    --------
    >>> round(qd_floor([[100.0, 125.0]], [[100.0, 120.0]], [[100.0, 110.0]]), 3)
    0.333
    """
    pred_qd, truth_qd = _pair(pred_qd, truth_qd)
    _, truth_new = _pair(pred_qd, truth_new)
    reference = rmse(pred_qd, truth_new)
    if reference == 0:
        raise ValueError("the QD prediction equals the truth under the new regimen: no floor")
    return rmse(pred_qd, truth_qd) / reference


#: The bar of "extrapolates": a ratio to the regimen-blind reference below it.
EXTRAPOLATION_BAR = 0.5


def _interval_reading(low: float, high: float, bar: float, below: str, above: str, across: str):
    """``below`` when the interval ``[low, high]`` lies below ``bar``, ``above`` when it
    lies above, ``across`` when it contains ``bar``: the protocol's rules share this."""
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"an interval needs finite low <= high, got [{low}, {high}]")
    if high < bar:
        return below
    if low > bar:
        return above
    return across


def extrapolation_verdict(low: float, high: float, bar: float = EXTRAPOLATION_BAR) -> str:
    """The protocol's one rule for a ratio's 95% interval ``[low, high]``: ``"extrapolates"``
    when it lies below ``bar``, ``"does not"`` when above, ``"too close to call"`` when it
    contains ``bar``.

    Parameters
    ----------
    low, high : float
        The interval's ends (``low <= high``).
    bar : float
        The threshold (default :data:`EXTRAPOLATION_BAR`).

    Returns
    -------
    str

    Examples
    --------
    >>> extrapolation_verdict(0.2, 0.4), extrapolation_verdict(0.45, 0.55)
    ('extrapolates', 'too close to call')
    >>> extrapolation_verdict(0.6, 1.2)
    'does not'
    """
    return _interval_reading(low, high, bar, "extrapolates", "does not", "too close to call")


#: The protocol's bar for a method that holds on a dose deviation: relative RMSE (%).
ADHERENCE_BAR = 10.0


def adherence_verdict(low: float, high: float, bar: float = ADHERENCE_BAR) -> str:
    """The protocol's rule for a relative RMSE's (%) 95% interval ``[low, high]`` under a
    dose deviation: ``"holds"`` when it lies below ``bar``, ``"breaks"`` when above,
    ``"too close to call"`` when it contains ``bar``.

    Examples
    --------
    >>> adherence_verdict(4.0, 8.0), adherence_verdict(9.0, 12.0), adherence_verdict(11.0, 14.0)
    ('holds', 'too close to call', 'breaks')
    """
    return _interval_reading(low, high, bar, "holds", "breaks", "too close to call")


def difference_verdict(low: float, high: float) -> str:
    """The protocol's rule for a paired 95% interval ``[low, high]`` of A - B: ``"lower"``
    (A below B) when it lies below 0, ``"higher"`` when above, else ``"no difference
    shown"``. No margin.

    Examples
    --------
    >>> difference_verdict(-0.3, -0.1), difference_verdict(-0.1, 0.2)
    ('lower', 'no difference shown')
    """
    return _interval_reading(low, high, 0.0, "lower", "higher", "no difference shown")


@dataclass(frozen=True)
class Interval:
    """A statistic over pipeline replicates: ``estimate`` (the mean over replicates of
    each replicate's value on all patients), the bootstrap interval ``[low, high]`` at
    ``level``, and ``replicate_sd``, the SD of the replicates' values (0 with one)."""

    estimate: float
    low: float
    high: float
    replicate_sd: float
    level: float


class NestedBootstrap:
    """Paired nested bootstrap over pipeline replicates and patients.

    Each draw resamples the ``n_replicates`` replicates of the whole pipeline (training
    population, fits, networks) and the ``n_patients`` test patients (never time points:
    a patient's errors over time are correlated) with replacement, computes the statistic
    for each drawn replicate on the drawn patients and averages over the drawn
    replicates; the interval is the percentile interval of those averages. The same test
    patients are scored in every replicate, so one patient draw serves every drawn
    replicate. The draws are made once, so every statistic computed with one
    ``NestedBootstrap`` uses the same draws: differences between methods, settings or
    regimens are paired.

    Parameters
    ----------
    n_replicates, n_patients : int
        R replicates scored on the same N patients (R >= 1, N >= 2).
    n_boot : int
        Number of draws B.
    seed : int
        Seed of the draws (e.g. :func:`pkpd_lib.pmx.sampling.named_seed`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(3, 50, 4))          # 3 replicates, 50 patients
    >>> boot = NestedBootstrap(3, 50, n_boot=500, seed=1)
    >>> ratio = boot.ratio(truth + 0.1, truth + 0.5, truth)
    >>> round(ratio.estimate, 2), bool(ratio.low <= ratio.estimate <= ratio.high)
    (0.2, True)
    """

    def __init__(self, n_replicates: int, n_patients: int, n_boot: int = 2000, seed: int = 0):
        for name, value, least in (
            ("n_replicates", n_replicates, 1),
            ("n_patients", n_patients, 2),
            ("n_boot", n_boot, 1),
        ):
            if not (isinstance(value, int | np.integer) and value >= least):
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        self.n_replicates, self.n_patients, self.n_boot = n_replicates, n_patients, n_boot
        rng = np.random.default_rng(seed)
        self.replicates = rng.integers(0, n_replicates, size=(n_boot, n_replicates))
        drawn = rng.integers(0, n_patients, size=(n_boot, n_patients))
        self.counts = np.zeros((n_boot, n_patients))
        np.add.at(self.counts, (np.arange(n_boot)[:, None], drawn), 1.0)

    def interval(
        self,
        parts: Mapping[str, np.ndarray],
        statistic: Callable[[Mapping[str, np.ndarray]], np.ndarray],
        level: float = 0.95,
    ) -> Interval:
        """The :class:`Interval` of a statistic built from per-patient additive terms.

        Parameters
        ----------
        parts : mapping of str to array_like, (R, N)
            Per replicate and patient, terms that add over patients (e.g. a patient's
            sum of squared errors over time).
        statistic : callable
            Maps the same names to their sums over (drawn) patients, arrays (..., R), to
            the statistic per replicate (..., R).
        level : float
            Coverage of the interval.

        Returns
        -------
        Interval
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level!r}")
        arrays = {}
        for name, value in parts.items():
            a = np.asarray(value, float)
            if a.shape != (self.n_replicates, self.n_patients):
                raise ValueError(
                    f"part {name!r} has shape {a.shape}; expected (replicates, patients) = "
                    f"{(self.n_replicates, self.n_patients)}"
                )
            if not np.all(np.isfinite(a)):
                raise ValueError(f"part {name!r} contains NaN or inf")
            arrays[name] = a
        per_replicate = np.asarray(statistic({k: a.sum(axis=1) for k, a in arrays.items()}))
        drawn = {
            k: np.take_along_axis(self.counts @ a.T, self.replicates, axis=1)
            for k, a in arrays.items()
        }
        boot = np.asarray(statistic(drawn)).mean(axis=1)
        low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
        sd = float(per_replicate.std(ddof=1)) if self.n_replicates > 1 else 0.0
        return Interval(float(per_replicate.mean()), float(low), float(high), sd, level)

    def _squared_errors(self, pred, truth) -> np.ndarray:
        pred, truth = _pair(pred, truth)
        if pred.ndim != 3 or pred.shape[:2] != (self.n_replicates, self.n_patients):
            raise ValueError(
                f"predictions must be (replicates, patients, times) = "
                f"({self.n_replicates}, {self.n_patients}, T), got {pred.shape}"
            )
        return ((pred - truth) ** 2).sum(axis=2)

    def ratio(self, pred, reference, truth, level: float = 0.95) -> Interval:
        """RMSE of ``pred`` over RMSE of ``reference``, both (R, N, T) against ``truth``
        (R, N, T or broadcastable), e.g. the ratio to the regimen-blind reference."""
        truth = np.broadcast_to(np.asarray(truth, float), np.shape(pred))
        parts = {
            "a": self._squared_errors(pred, truth),
            "b": self._squared_errors(reference, truth),
        }
        return self.interval(parts, lambda s: np.sqrt(s["a"] / s["b"]), level)

    def relative_rmse(self, pred, truth, baseline, level: float = 0.95) -> Interval:
        """Relative RMSE (%) of ``pred`` (R, N, T) with each patient's ``baseline``
        (N,) or (R, N) as the effect size's reference (:func:`relative_rmse`)."""
        truth = np.broadcast_to(np.asarray(truth, float), np.shape(pred))
        base = np.broadcast_to(np.asarray(baseline, float), (self.n_replicates, self.n_patients))
        parts = {
            "se": self._squared_errors(pred, truth),
            "effect": np.abs(truth - base[..., None]).sum(axis=2),
        }
        n_points = self.n_patients * truth.shape[-1]
        return self.interval(
            parts, lambda s: 100 * np.sqrt(s["se"] * n_points) / s["effect"], level
        )

    def regimen_effect(self, pred_new, pred_qd, truth_new, truth_qd, level=0.95) -> Interval:
        """:func:`regimen_effect_error` of predictions (R, N, T) under the new regimen
        and QD against the truths (broadcastable to (R, N, T))."""
        shape = np.shape(pred_new)
        true_effect = np.broadcast_to(np.asarray(truth_new, float), shape) - np.broadcast_to(
            np.asarray(truth_qd, float), shape
        )
        predicted = np.asarray(pred_new, float) - np.asarray(pred_qd, float)
        parts = {
            "error": self._squared_errors(predicted, true_effect),
            "size": (true_effect**2).sum(axis=2),
        }
        return self.interval(parts, lambda s: np.sqrt(s["error"] / s["size"]), level)

    def qd_floor(self, pred_qd, truth_qd, truth_new, level: float = 0.95) -> Interval:
        """:func:`qd_floor` of QD predictions (R, N, T) against the truths."""
        shape = np.shape(pred_qd)
        parts = {
            "qd": self._squared_errors(pred_qd, np.broadcast_to(truth_qd, shape)),
            "new": self._squared_errors(pred_qd, np.broadcast_to(truth_new, shape)),
        }
        return self.interval(parts, lambda s: np.sqrt(s["qd"] / s["new"]), level)

    def ratio_difference(self, first, second, truth, level: float = 0.95) -> Interval:
        """Paired interval of the difference of two ratios, ``first`` minus ``second``,
        each a (prediction, reference) pair of (R, N, T) arrays against ``truth``; read
        it with :func:`difference_verdict`."""
        shape = np.shape(first[0])
        truth = np.broadcast_to(np.asarray(truth, float), shape)
        parts = {
            "a1": self._squared_errors(first[0], truth),
            "b1": self._squared_errors(first[1], truth),
            "a2": self._squared_errors(second[0], truth),
            "b2": self._squared_errors(second[1], truth),
        }
        return self.interval(
            parts, lambda s: np.sqrt(s["a1"] / s["b1"]) - np.sqrt(s["a2"] / s["b2"]), level
        )


def patient_scores(members, truth, sd_floor: float) -> np.ndarray:
    """One conformal score per patient: the largest, over the patient's times, of the
    error of the ensemble mean in units of the ensemble's SD (floored at ``sd_floor``).

    A patient's errors over time are correlated, so one score per patient (not per time
    point) keeps the calibration's exchangeability: the interval
    ``mean +- multiplier * max(sd, sd_floor)`` then holds a patient's whole curve.

    Parameters
    ----------
    members : array_like, (M, N, T)
        Predictions of M >= 2 ensemble members (biomarker units).
    truth : array_like, (N, T)
        Noise-free PD.
    sd_floor : float
        Smallest SD used (biomarker units, > 0), so that a point where the members
        happen to agree does not dominate the score.

    Returns
    -------
    numpy.ndarray, (N,)

    Examples
    --------
    >>> members = [[[100.0, 110.0]], [[102.0, 114.0]]]
    >>> patient_scores(members, [[101.0, 116.0]], sd_floor=0.5).tolist()
    [2.0]
    """
    members = np.asarray(members, float)
    if members.ndim != 3 or members.shape[0] < 2:
        raise ValueError(f"members must be (M >= 2, N, T), got shape {members.shape}")
    mean, truth = _pair(members.mean(axis=0), truth)
    if not (np.isfinite(sd_floor) and sd_floor > 0):
        raise ValueError(f"sd_floor must be a finite number > 0, got {sd_floor!r}")
    sd = np.maximum(members.std(axis=0), sd_floor)
    return (np.abs(truth - mean) / sd).max(axis=1)


def conformal_quantile(scores, level: float = 0.9) -> float:
    """The split-conformal multiplier from ``n`` calibration scores: the
    ceil((n + 1) level)-th smallest (inf when that exceeds n: too few patients).

    Examples
    --------
    >>> conformal_quantile(np.arange(1.0, 11.0), level=0.8)
    9.0
    >>> conformal_quantile([1.0, 2.0], level=0.9)
    inf
    """
    scores = np.sort(np.asarray(scores, float).ravel())
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("conformal scores must be finite and at least one")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    k = int(np.ceil((scores.size + 1) * level))
    return float(scores[k - 1]) if k <= scores.size else float("inf")


def coverage_verdict(low: float, high: float, level: float = 0.9) -> str:
    """The protocol's reading of a coverage's 95% interval ``[low, high]`` (fractions)
    for an interval asked to cover ``level``: ``"covers as asked"`` when it contains
    ``level``, ``"under-covers"`` when it lies below, ``"over-covers"`` when above.

    Examples
    --------
    >>> coverage_verdict(0.84, 0.93), coverage_verdict(0.70, 0.86)
    ('covers as asked', 'under-covers')
    """
    return _interval_reading(low, high, level, "under-covers", "over-covers", "covers as asked")


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


# --- what a clinical pharmacologist reads (the chapter "The study under realistic
# conditions") ---------------------------------------------------------------------------


def last_day(times_h, hours: float = 24.0) -> np.ndarray:
    """Boolean mask of the times (h) in the last ``hours`` of the window (day 7: 144-168 h).

    Examples
    --------
    >>> last_day([0.0, 100.0, 150.0, 168.0]).tolist()
    [False, False, True, True]
    """
    t = np.asarray(times_h, float)
    return t >= t.max() - hours


def day_summaries(pd_values, times_h, hours: float = 24.0) -> pd.DataFrame:
    """Per patient, over the last ``hours`` of the window: the PD AUC (units x h,
    trapezoid), maximum and minimum (biomarker units).

    Examples
    --------
    >>> day_summaries([[100.0, 110.0, 100.0]], [0.0, 12.0, 24.0]).round(1).values.tolist()
    [[2520.0, 110.0, 100.0]]
    """
    values = np.asarray(pd_values, float)
    keep = last_day(times_h, hours)
    t, v = np.asarray(times_h, float)[keep], values[:, keep]
    return pd.DataFrame(
        {"AUC": np.trapezoid(v, t, axis=1), "max": v.max(axis=1), "min": v.min(axis=1)}
    )


def clinical_errors(pred, truth, times_h, baseline) -> pd.Series:
    """Errors a clinical pharmacologist reads, for predictions of N patients (N, T).

    Relative RMSE (%), bias (mean signed error as % of the effect size), and the mean
    absolute error (%) of each patient's day-7 PD AUC, maximum and minimum, each
    relative to the patient's true value's change from baseline (AUC above baseline,
    max - baseline, min - baseline), so that it measures the drug effect, not the
    baseline level.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(0.0, 49.0)
    >>> truth = np.array([100 + 10 * np.sin(t / 5)])
    >>> float(clinical_errors(truth, truth, t, [100.0]).abs().max())
    0.0
    """
    pred, truth = _pair(pred, truth)
    base = np.asarray(baseline, float).reshape(-1)
    effect = effect_size(truth, base)
    p, t = day_summaries(pred, times_h), day_summaries(truth, times_h)
    hours = np.ptp(np.asarray(times_h, float)[last_day(times_h)])
    above = {"AUC": base * hours, "max": base, "min": base}
    out = {
        "rel_RMSE_%": 100 * relative_rmse(pred, truth, base),
        "bias_%": 100 * float(np.mean(pred - truth)) / effect,
    }
    for name, b in above.items():
        true_change = np.abs(t[name].to_numpy() - b)
        err = np.abs(p[name].to_numpy() - t[name].to_numpy())
        out[f"day-7 {name} error_%"] = 100 * float(np.mean(err) / np.mean(true_change))
    return pd.Series(out)


def ranking_share(preds: Mapping[str, np.ndarray], truths: Mapping[str, np.ndarray], times_h):
    """Share of patients whose regimens the predictions rank in the true order of their
    day-7 PD AUC (e.g. QD < BID < TID for this drug).

    Examples
    --------
    >>> import numpy as np
    >>> truth = {"QD": np.array([[1.0, 1.0]]), "TID": np.array([[2.0, 2.0]])}
    >>> ranking_share(truth, truth, [0.0, 24.0])
    1.0
    """
    names = list(truths)
    true_auc = np.stack([day_summaries(truths[r], times_h)["AUC"] for r in names], axis=1)
    pred_auc = np.stack([day_summaries(preds[r], times_h)["AUC"] for r in names], axis=1)
    same = np.all(np.argsort(true_auc, axis=1) == np.argsort(pred_auc, axis=1), axis=1)
    return float(np.mean(same))


def bootstrap_ratio(pred, reference, truth, n_boot: int = 2000, seed: int = 0, level=0.95):
    """The ratio of two methods' RMSEs (``pred`` over ``reference``, each (N, T) against
    ``truth``) with a patient-level bootstrap percentile interval: ``(ratio, low, high)``.

    Patients, not time points, are resampled, because a patient's errors over time are
    correlated.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(50, 4))
    >>> ratio, low, high = bootstrap_ratio(truth + 0.1, truth + 0.5, truth)
    >>> round(ratio, 2), bool(low <= ratio <= high)
    (0.2, True)
    """
    pred, truth = _pair(pred, truth)
    reference, _ = _pair(reference, truth)
    se_pred = ((pred - truth) ** 2).mean(axis=1)
    se_ref = ((reference - truth) ** 2).mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, truth.shape[0], size=(n_boot, truth.shape[0]))
    ratios = np.sqrt(se_pred[idx].mean(axis=1) / se_ref[idx].mean(axis=1))
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(np.sqrt(se_pred.mean() / se_ref.mean())), float(low), float(high)


def conformal_multiplier(members_cal, truth_cal, level: float = 0.9) -> float:
    """Split-conformal calibration of an ensemble's interval on held-out patients.

    ``members_cal`` (M, N, T) are the ensemble members' predictions for calibration
    patients whose truth ``truth_cal`` (N, T) is known. Each point's score is its error
    in units of the ensemble's spread, ``|truth - mean| / sd``; the multiplier is the
    score quantile at ``level`` with the finite-sample correction. The calibrated
    interval is ``mean +- multiplier * sd`` (:func:`conformal_interval`); it covers
    ``level`` of new points from the same distribution, not of a new regimen.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(200, 5))
    >>> members = truth + rng.normal(size=(5, 200, 5)) + rng.normal(size=(200, 5))
    >>> k = conformal_multiplier(members, truth)
    >>> lo, hi = conformal_interval(members, k)
    >>> round(coverage(lo, hi, truth), 2)
    0.9
    """
    members = np.asarray(members_cal, float)
    truth = np.asarray(truth_cal, float)
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    mean, sd = members.mean(axis=0), members.std(axis=0)
    scores = np.abs(truth - mean) / np.maximum(sd, 1e-12)
    n = scores.size
    q = min(1.0, np.ceil((n + 1) * level) / n)
    return float(np.quantile(scores, q, method="higher"))


def conformal_interval(members, multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated interval ``mean +- multiplier * sd`` of an ensemble (M, N, T)."""
    members = np.asarray(members, float)
    mean, sd = members.mean(axis=0), members.std(axis=0)
    return mean - multiplier * sd, mean + multiplier * sd


def bootstrap_coverage(lower, upper, truth, n_boot: int = 2000, seed: int = 0, level=0.95):
    """Coverage of an interval with a patient-level bootstrap percentile interval:
    ``(coverage, low, high)``.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((100, 3)); truth[:10] = 5.0
    >>> cov, low, high = bootstrap_coverage(truth * 0 - 1, truth * 0 + 1, truth)
    >>> cov, bool(low < cov < high)
    (0.9, True)
    """
    lower, truth = _pair(lower, truth)
    upper, _ = _pair(upper, truth)
    inside = ((truth >= lower) & (truth <= upper)).mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, truth.shape[0], size=(n_boot, truth.shape[0]))
    boot = inside[idx].mean(axis=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(inside.mean()), float(low), float(high)
