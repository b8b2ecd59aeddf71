"""Plot helpers with labelled axes and units (matplotlib)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

CONC_LABEL = "Concentration C (mg/L)"
PD_LABEL = "PD biomarker (units)"
TIME_LABEL = "Time (h)"
REGIMEN_COLORS = {"QD": "tab:blue", "BID": "tab:orange", "TID": "tab:green"}


def day_ticks(ax, t_max_h: float = 168.0) -> None:
    """Ticks every 24 h on a time axis in hours."""
    ax.set_xticks(np.arange(0, t_max_h + 1, 24))
    ax.set_xlim(0, t_max_h)
    ax.set_xlabel(TIME_LABEL)


def percentile_band(ax, times_h, values, color, label, percentiles=(5, 50, 95)) -> None:
    """Median line and a shaded 5-95th percentile band of (N, T) ``values``."""
    lo, mid, hi = np.percentile(values, percentiles, axis=0)
    ax.fill_between(times_h, lo, hi, color=color, alpha=0.2, lw=0)
    ax.plot(
        times_h,
        mid,
        color=color,
        lw=1.5,
        label=f"{label} median, {percentiles[0]}-{percentiles[-1]}%",
    )


def spaghetti(ax, times_h, values, color, n: int = 20, **kw) -> None:
    """The first ``n`` individual curves of (N, T) ``values``, thin and translucent."""
    ax.plot(times_h, values[:n].T, color=color, lw=0.6, alpha=0.5, **kw)


def observed_vs_predicted(ax, truth, pred, label: str = "") -> None:
    """Goodness-of-fit: predicted against true PD with the identity line."""
    truth, pred = np.ravel(truth), np.ravel(pred)
    ax.plot(truth, pred, ".", ms=1.5, alpha=0.3)
    lims = [min(truth.min(), pred.min()), max(truth.max(), pred.max())]
    ax.plot(lims, lims, "k--", lw=1)
    ax.set_xlabel(f"True {PD_LABEL}")
    ax.set_ylabel(f"Predicted {PD_LABEL}")
    ax.set_title(label)


def residuals_vs_time(ax, times_h, truth, pred, label: str = "") -> None:
    """Prediction error (predicted - true) against time, with its 5-50-95th percentiles."""
    err = np.asarray(pred) - np.asarray(truth)
    ax.plot(
        np.broadcast_to(times_h, err.shape).ravel(),
        err.ravel(),
        ".",
        ms=1,
        alpha=0.15,
        color="grey",
    )
    percentile_band(ax, times_h, err, "tab:red", "error")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("Predicted - true PD (units)")
    ax.set_title(label)


def figure(nrows: int = 1, ncols: int = 1, width: float = 4.2, height: float = 3.2, **kw):
    """A figure of ``nrows`` x ``ncols`` panels with constrained layout."""
    return plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kw
    )


def draw_sequence_model(ax, n_steps: int = 5, block: int = 4) -> None:
    """Schematic of the sequence network unrolled over time: per step a block of
    concentrations plus the static features enter an LSTM cell, whose hidden state
    carries forward, and a dense read-out emits that block's PD."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    def box(x, y, text, color):
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.4, y - 0.22), 0.8, 0.44, boxstyle="round,pad=0.02", fc=color, ec="k"
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, lw=1))

    for i in range(n_steps):
        x = 1.2 * i
        last = i == n_steps - 1
        step = "k" if last else str(i + 1)
        box(x, 0, f"C[{block} h]\n+ static", "#dbe9f6")
        box(x, 1, "LSTM", "#fde0c5")
        box(x, 2, f"PD[{block} h]", "#d5f0d5")
        arrow(x, 0.22, x, 0.78)
        arrow(x, 1.22, x, 1.78)
        if not last:
            arrow(x + 0.4, 1, x + 0.8, 1)
        ax.text(x, -0.45, f"step {step}", ha="center", fontsize=8)
    ax.set_xlim(-0.6, 1.2 * n_steps - 0.6)
    ax.set_ylim(-0.7, 2.4)
    ax.axis("off")
