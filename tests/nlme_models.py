"""The decay model the estimator's tests fit, built in one place: ``C0 exp(-k t)`` with a
random effect on k, and data simulated from it (imported by the test_nlme* files)."""

import dataclasses

import numpy as np

from pkpd_lib.pmx import nlme

#: Where the decay fits start (typical values: C0, k 1/h).
DECAY_START = {"C0": 5.0, "k": 0.5}


def _predict(p, d):
    return p["C0"][..., None] * np.exp(-p["k"][..., None] * d.times_h[:, None])


def decay_model(name="decay", effects=(), error=("prop",), covariates=None, **options):
    """C0 exp(-k t) (C0 in the DV's unit, k 1/h, both log-transformed) with a random
    effect on k, covariate ``effects`` (:class:`~pkpd_lib.pmx.nlme.CovariateEffect`),
    residual ``error`` terms (or a mapping per output) and ``covariates`` on the
    transformed scale; ``options`` as for :class:`~pkpd_lib.pmx.nlme.NLMEModel` (e.g.
    ``units``)."""
    return nlme.NLMEModel(
        name,
        ("C0", "k"),
        {"C0": "log", "k": "log"},
        ("k",),
        _predict,
        error=error,
        covariates=covariates or {},
        effects=effects,
        **options,
    )


def decay_data(n=20, seed=0, output=None, unit=1.0):
    """Observations of the decay model: C0 10, k 0.2 1/h (SD 0.3 of log k between
    subjects), 5% proportional error, samples at 0.5, 1, 2, 4, 8 and 12 h; ``output``
    (N, 6) tags each observation's output (see :class:`~pkpd_lib.pmx.nlme.Observations`);
    ``unit`` scales the DV (1e-6: the same data in a unit a million times larger)."""
    rng = np.random.default_rng(seed)
    t = np.tile([0.5, 1, 2, 4, 8, 12.0], (n, 1))
    k = 0.2 * np.exp(0.3 * rng.normal(size=(n, 1)))
    y = 10 * unit * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
    return nlme.Observations(np.arange(n), t, y, output=output)


def decay_edited(edit, **options):
    """The decay model (``options`` as for :func:`decay_model`) with its predictions
    (N, R, K) changed in place by ``edit(out, p)``."""
    base = decay_model(**options)

    def predict(p, d):
        out = np.array(base.predict(p, d), float)
        edit(out, p)
        return out

    return dataclasses.replace(base, predict=predict)


def level_model():
    """y_ij = m + eta_i + eps_ij (additive error): a random intercept, for which the
    Laplace approximation is exact."""
    return nlme.NLMEModel(
        "level",
        ("m",),
        {"m": "none"},
        ("m",),
        lambda p, d: np.broadcast_to(p["m"][..., None], (*p["m"].shape, d.times_h.shape[1])),
        error=("add",),
    )


def floor_model():
    """Decay to a floor: C0 (1 - F (1 - exp(-k t))), F a fraction (logit), a random
    effect on k."""
    return nlme.NLMEModel(
        "decay to a floor",
        ("C0", "F", "k"),
        {"C0": "log", "F": "logit", "k": "log"},
        ("k",),
        lambda p, d: (
            p["C0"][..., None]
            * (1 - p["F"][..., None] * (1 - np.exp(-p["k"][..., None] * d.times_h[:, None])))
        ),
    )
