"""Variants of the default model, for the chapters that go beyond the study.

The default model in :mod:`pkpd_lib.model` stays as written; a variant is a simulator
with the same signature as :func:`pkpd_lib.model.simulate` (params, regimen, times_h)
returning a :class:`~pkpd_lib.model.Simulation`, so data sets can be built with it
(``datasets.study_datasets(..., simulator=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .model import STATE_NAMES, Params, Simulation, _rhs, as_params, simulation_from_states
from .model import integrate_with_doses as _integrate
from .regimens import Regimen

#: Turnover rate constant of the second biomarker in the chained variant (1/h); its
#: half-life ln 2 / 0.05 = 14 h adds a second layer of delay after R's 7 h.
CHAINED_KOUT2 = 0.05
CHAINED_STATE_NAMES = (*STATE_NAMES, "R2")


def simulate_chained(
    params: Params | Mapping[str, object],
    regimen: Regimen | Sequence[Regimen],
    times_h,
    kout2: float = CHAINED_KOUT2,
) -> Simulation:
    """Default model plus a second indirect response driven by the first biomarker.

    The default model's biomarker ``R`` is no longer observed; it stimulates the
    production of a second biomarker ``R2`` (biomarker units, baseline ``R0``)::

        dR2/dt = kout2 * R0 * (R / R0) - kout2 * R2 = kout2 * (R - R2),   R2(0) = R0

    so the drug's effect reaches the observed ``R2`` through the transit chain and two
    turnover processes in series. ``Simulation.pd`` is ``R2``; ``states`` has all seven.
    """
    if not (np.isfinite(kout2) and kout2 > 0):
        raise ValueError(f"kout2 must be a finite rate > 0 1/h, got {kout2!r}")
    p = as_params(params)
    n = p.n_patients
    base = _rhs(p)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        six = base(t, y[: 6 * n])
        r, r2 = y[5 * n : 6 * n], y[6 * n :]
        return np.concatenate((six, kout2 * (r - r2)))

    y0 = np.zeros((7, n))
    y0[5] = y0[6] = p.R0
    out = _integrate(rhs, y0, regimen, times_h)
    return simulation_from_states(times_h, CHAINED_STATE_NAMES, out, p.V, observed="R2")
