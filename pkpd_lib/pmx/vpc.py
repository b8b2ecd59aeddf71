"""Visual predictive checks (VPC) and their prediction-corrected form (pcVPC).

A VPC asks whether a fitted population model can reproduce the spread of the data it
is meant to describe: the observed percentiles at each sampling time are compared with
the same percentiles in many data sets simulated from the model for the same subjects
(new random effects and residual errors), summarised by an interval. The
prediction-corrected form (Bergstrand et al., AAPS J 2011;13:143) first scales each
observation and simulation by ``PRED_bin / PRED``, the ratio of the time's median
population prediction to the subject's own, so that subjects with different
covariates (or doses) can share a bin without inflating its spread. Here each nominal
sampling time is its own bin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The percentiles drawn (10th, median, 90th).
PERCENTILES = (10, 50, 90)
#: The interval drawn around each percentile: these percentiles of its simulated replicates.
INTERVAL = (5, 95)


#: A (pc)VPC passes with at least this share (%) of observed percentiles inside their
#: intervals (a right model puts about 90% inside) and fails under :data:`FAIL_BELOW_PCT`.
PASS_AT_PCT = 80.0
#: Under this share (%) of percentiles inside, a (pc)VPC fails; in between it is marginal.
FAIL_BELOW_PCT = 50.0


def verdict(inside_pct: float) -> str:
    """The protocol's reading of a (pc)VPC from the share of observed percentiles inside
    their simulated intervals.

    Parameters
    ----------
    inside_pct : float
        Share (%, 0-100) of the observed percentiles (all times, all percentiles) inside
        their intervals, e.g. ``100 * vpc_table(...)["inside"].mean()``.

    Returns
    -------
    str
        ``"passes"`` (at least :data:`PASS_AT_PCT`), ``"fails"`` (under
        :data:`FAIL_BELOW_PCT`) or ``"marginal"``.

    Raises
    ------
    ValueError
        If ``inside_pct`` is not a number from 0 to 100.

    Examples
    --------
    >>> verdict(92.0), verdict(72.0), verdict(20.0)
    ('passes', 'marginal', 'fails')
    """
    if not (np.isfinite(inside_pct) and 0.0 <= inside_pct <= 100.0):
        raise ValueError(f"inside_pct must be a share from 0 to 100 %, got {inside_pct!r}")
    if inside_pct >= PASS_AT_PCT:
        return "passes"
    if inside_pct < FAIL_BELOW_PCT:
        return "fails"
    return "marginal"


def _check(observed, simulated) -> tuple[np.ndarray, np.ndarray]:
    obs = np.asarray(observed, float)
    sims = np.asarray(simulated, float)
    if obs.ndim != 2 or sims.ndim != 3 or sims.shape[1:] != obs.shape:
        raise ValueError(
            f"observed must be (N, T) and simulated (replicates, N, T); got "
            f"{obs.shape} and {sims.shape}"
        )
    if np.isinf(obs).any():
        i, j = np.argwhere(np.isinf(obs))[0]
        raise ValueError(
            f"observed must be finite (NaN marks a missing sample), got {obs[i, j]} for "
            f"patient {i} at time column {j}"
        )
    seen = ~np.isnan(obs)
    bad = ~np.isfinite(sims) & seen
    if bad.any():
        r, i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"simulated must be finite where a sample was observed, got {sims[r, i, j]} in "
            f"{int(bad.any(axis=0).sum())} sample(s), first replicate {r}, patient {i}, "
            f"time column {j}"
        )
    return obs, sims


def prediction_corrected(values, pred) -> np.ndarray:
    """``values * median(PRED at the time) / PRED`` for (..., N, T) values and (N, T)
    population predictions, one bin per time (column).

    Parameters
    ----------
    values : array_like
        Observations or simulations, (..., N, T) (e.g. (replicates, N, T)).
    pred : array_like
        Population predictions PRED (N, T), in the unit of ``values``, all finite and > 0.

    Returns
    -------
    numpy.ndarray
        The prediction-corrected values, the shape of ``values``.

    Raises
    ------
    ValueError
        ``pred`` with a value that is not finite or not > 0.
    """
    pred = np.asarray(pred, float)
    if np.any(pred <= 0) or not np.isfinite(pred).all():
        raise ValueError("population predictions must be positive and finite")
    return np.asarray(values, float) * (np.median(pred, axis=0) / pred)


def vpc_table(
    observed, simulated, times_h, percentiles=PERCENTILES, interval=INTERVAL
) -> pd.DataFrame:
    """Observed percentiles at each time and the ``interval`` of the same percentiles
    across the simulated replicates.

    Parameters
    ----------
    observed : array_like
        Observations (N, T), finite, NaN for a missing sample (the same samples are
        dropped from the simulations); every time needs at least one.
    simulated : array_like
        Simulated observations (replicates, N, T), finite where a sample was observed.
    times_h : array_like
        The nominal sampling time (h) of each column, (T,).
    percentiles : sequence of float
        The percentiles to compare (default :data:`PERCENTILES`).
    interval : tuple of float
        The percentiles of the replicates that bound each interval (default
        :data:`INTERVAL`, a 90% interval).

    Returns
    -------
    pandas.DataFrame
        One row per (time, percentile), indexed by ``"time (h)"`` and ``"percentile"``,
        with columns ``observed``, ``low``, ``high`` (in the unit of ``observed``) and
        ``inside`` (bool: ``low <= observed <= high``).

    Raises
    ------
    ValueError
        Shapes that do not match, an infinite observation, a simulated value that is not
        finite where a sample was observed, a ``times_h`` without one entry per column, or
        a time without any observation.

    Examples
    --------
    Data drawn from the model itself: each observed percentile falls inside its 90%
    interval with probability 0.9 (here all six do).

    >>> rng = np.random.default_rng(3)
    >>> sims = rng.normal(size=(200, 100, 2))
    >>> table = vpc_table(rng.normal(size=(100, 2)), sims, [1.0, 2.0])
    >>> table.shape, int(table["inside"].sum())
    ((6, 4), 6)
    """
    obs, sims = _check(observed, simulated)
    times = np.asarray(times_h, float)
    if times.shape != (obs.shape[1],):
        raise ValueError(f"times_h must have one entry per column ({obs.shape[1]})")
    empty = np.flatnonzero(np.isnan(obs).all(axis=0))
    if empty.size:
        raise ValueError(
            f"no observation at time(s) {times[empty].tolist()} h (column(s) "
            f"{empty.tolist()}): drop those columns, they have no percentiles"
        )
    rows = []
    for j, t in enumerate(times):
        seen = ~np.isnan(obs[:, j])
        observed_q = np.percentile(obs[seen, j], percentiles)
        per_replicate = np.percentile(sims[:, seen, j], percentiles, axis=1)
        low, high = np.percentile(per_replicate, interval, axis=1)
        for q, o, lo, hi in zip(percentiles, observed_q, low, high, strict=True):
            rows.append((t, q, o, lo, hi, lo <= o <= hi))
    return pd.DataFrame(
        rows, columns=["time (h)", "percentile", "observed", "low", "high", "inside"]
    ).set_index(["time (h)", "percentile"])


def plot_vpc(ax, table: pd.DataFrame, ylabel: str, title: str = "") -> None:
    """Observed percentiles (points and lines) over the simulated intervals (bands):
    the median in red, the outer percentiles in blue.

    The middle one of the table's percentiles is drawn in red (the median for the
    default :data:`PERCENTILES`), the others in blue.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes to draw on.
    table : pandas.DataFrame
        A table of :func:`vpc_table`.
    ylabel : str
        The y-axis label (the quantity and its unit).
    title : str
        The axes' title; none when empty (default).
    """
    percentiles = table.index.get_level_values("percentile").unique()
    for k, q in enumerate(percentiles):
        part = table.xs(q, level="percentile")
        middle = k == len(percentiles) // 2
        color = "tab:red" if middle else "tab:blue"
        t = part.index.to_numpy()
        ax.fill_between(t, part["low"], part["high"], color=color, alpha=0.2, lw=0)
        ax.plot(t, part["observed"], "o-", color=color, ms=2.5, lw=1, label=f"P{q}")
    ax.set_xlabel("Time (h)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
