"""Population (nonlinear mixed-effects) models estimated by FOCE-I, with scipy.

A model (:class:`NLMEModel`) says how individual parameters follow from fixed effects,
covariates and random effects, and predicts each subject's observations from its
parameters. :func:`fit_foce` estimates, from data alone:

* fixed effects ``theta`` (the typical value of each parameter, on its transformed scale:
  log for positive parameters, logit for fractions) and covariate effects ``beta``
  (``log p = theta + sum(beta * covariate) + eta``);
* the between-subject SDs ``omega`` of the random effects ``eta`` (diagonal);
* residual error: additive and/or proportional, ``sd = sqrt(add**2 + (prop * f)**2)``.

The objective is NONMEM's FOCE with interaction: for each subject the conditional mode
``eta*`` of the random effects is found (Levenberg-Marquardt with Fisher scoring, on all
subjects at once, finite-difference Jacobians; the residual SD is evaluated at the
individual prediction), and the likelihood is the Laplace approximation around it with
the expected-information Hessian,

``OFV = sum_i [ sum_j (log(2 pi sd_ij**2) + r_ij**2) + eta_i' Omega^-1 eta_i
+ log|Omega| + log|J_i' W_i J_i + Omega^-1| ]``, ``W = 1/sd**2 + 2 (sd'/sd)**2``,

which equals -2 log-likelihood up to the approximation. The outer problem is minimised
by scipy's BFGS (central-difference gradients); standard errors come from the
finite-difference Hessian of the OFV (covariance ``2 H^-1``, NONMEM's R matrix). Every
quantity is on the scale its name says.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import expit, logit

from .files import (
    StoreMissError,
    default_cache_dir,
    miss_is_error,
    update_digest,
    write_text_atomic,
)

TRANSFORMS = ("log", "logit", "none")


@dataclass(frozen=True)
class NLMEModel:
    """A population model.

    ``params``: individual parameter names, each with its transform (``"log"`` for
    positive parameters, ``"logit"`` for fractions, ``"none"``) in ``transforms``.
    ``random``: the parameters with a random effect.
    ``covariates``: for each parameter, the covariate columns (already centred and
    scaled, e.g. ``log(WT/70)``) whose coefficients are estimated. ``predict(params,
    data)``: predictions (N, R, K) from a mapping of parameter arrays (N, R) (R copies of
    each subject, for Jacobians) and the :class:`Observations`. ``error``: which residual
    error terms are estimated, a subset of ``("add", "prop")``. ``units``: unit of each
    parameter, for tables.
    """

    name: str
    params: tuple[str, ...]
    transforms: Mapping[str, str]
    random: tuple[str, ...]
    predict: Callable[[Mapping[str, np.ndarray], object], np.ndarray]
    error: tuple[str, ...] = ("prop",)
    covariates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.params:
            if self.transforms.get(p) not in TRANSFORMS:
                raise ValueError(f"parameter {p!r} needs a transform in {TRANSFORMS}")
        unknown = (set(self.random) | set(self.covariates)) - set(self.params)
        if unknown:
            raise ValueError(f"random effects or covariates on unknown parameters {unknown}")
        if not self.error or set(self.error) - {"add", "prop"}:
            raise ValueError(
                f"error must be a non-empty subset of ('add', 'prop'), got {self.error}"
            )

    @property
    def beta_names(self) -> tuple[str, ...]:
        return tuple(f"{p}~{c}" for p in self.params for c in self.covariates.get(p, ()))


@dataclass(frozen=True)
class Observations:
    """One endpoint's observations: ``times_h`` and ``dv`` (N, K), NaN in ``dv`` where a
    subject has fewer than K; ``covariates`` (N,) arrays by name; ``extra``: anything
    else the model's ``predict`` reads (doses, individual PK parameters). A ``dv`` that
    is all NaN is a design: the times to predict or simulate, nothing to estimate from.
    """

    ids: np.ndarray
    times_h: np.ndarray
    dv: np.ndarray
    covariates: Mapping[str, np.ndarray] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, y = np.asarray(self.times_h, float), np.asarray(self.dv, float)
        if t.shape != y.shape or t.ndim != 2:
            raise ValueError(f"times_h and dv must both be (N, K), got {t.shape} and {y.shape}")
        if not np.isfinite(t).all():
            raise ValueError("times_h must be finite (pad with any time and NaN in dv)")
        if np.isinf(y).any():
            raise ValueError("dv must not be infinite")
        seen = (~np.isnan(y)).sum(axis=1)
        if seen.min() == 0 and seen.max() > 0:
            raise ValueError("every subject needs at least one observation")
        for name, v in self.covariates.items():
            v = np.asarray(v, float)
            if v.shape != (t.shape[0],) or not np.isfinite(v).all():
                raise ValueError(f"covariate {name!r} must be {t.shape[0]} finite numbers")

    @property
    def n_subjects(self) -> int:
        return self.dv.shape[0]

    @property
    def n_observations(self) -> int:
        return int((~np.isnan(self.dv)).sum())

    def require_observations(self) -> None:
        """A ``ValueError`` unless there is something to estimate from."""
        if self.n_observations == 0:
            raise ValueError("every subject needs at least one observation to estimate from")


def to_natural(transform: str, x):
    """A parameter on its natural scale from its transformed value."""
    if transform == "none":
        return np.asarray(x, float)
    return np.exp(x) if transform == "log" else expit(x)


def to_transformed(transform: str, value):
    """A parameter's transformed value (log or logit) from its natural scale."""
    value = np.asarray(value, float)
    if transform == "none":
        return value
    if transform == "log":
        if np.any(value <= 0):
            raise ValueError(f"a log-transformed parameter must be > 0, got {value}")
        return np.log(value)
    if np.any((value <= 0) | (value >= 1)):
        raise ValueError(f"a logit-transformed parameter must be in (0, 1), got {value}")
    return logit(value)


def values_at(grid, index) -> np.ndarray:
    """Gather predictions at the observed times from values on a time grid: ``grid``
    (N, R, G) per subject and replicate, ``index`` (N, K) each observation's grid
    position; returns (N, R, K). For models integrated on a grid (turnover PD)."""
    grid = np.asarray(grid)
    index = np.asarray(index)
    wide = np.broadcast_to(index[:, None, :], (*grid.shape[:2], index.shape[1]))
    return np.take_along_axis(grid, wide, axis=-1)


class _Problem:
    """The packed outer vector of a model and data, and the FOCE-I objective."""

    def __init__(self, model: NLMEModel, data: Observations, fixed: Mapping[str, float]):
        self.model, self.data = model, data
        unknown = set(fixed) - set(model.params)
        if unknown:
            raise ValueError(f"cannot fix unknown parameter(s) {sorted(unknown)}")
        self.fixed = {k: float(to_transformed(model.transforms[k], v)) for k, v in fixed.items()}
        self.fixed_natural = dict(fixed)
        self.free = [p for p in model.params if p not in fixed]
        self.p, self.q = len(self.free), len(model.random)
        self.betas = model.beta_names
        self.n_err = len(model.error)
        self.size = self.p + len(self.betas) + self.q + self.n_err
        self.y = np.asarray(data.dv, float)
        self.mask = ~np.isnan(self.y)
        self.y0 = np.where(self.mask, self.y, 0.0)
        self.eta = np.zeros((data.n_subjects, self.q))
        self.rand_index = [model.params.index(r) for r in model.random]

    def names(self) -> list[str]:
        return [
            *(f"theta_{p}" for p in self.free),
            *(f"beta_{b}" for b in self.betas),
            *(f"omega_{r}" for r in self.model.random),
            *(f"sigma_{e}" for e in self.model.error),
        ]

    def unpack(self, x):
        x = np.asarray(x, float)
        p, nb, q = self.p, len(self.betas), self.q
        free = dict(zip(self.free, x[:p], strict=True))
        theta = np.array([free.get(name, self.fixed.get(name)) for name in self.model.params])
        beta = x[p : p + nb]
        omega = np.exp(x[p + nb : p + nb + q])
        sigma = dict(zip(self.model.error, np.exp(x[p + nb + q :]), strict=True))
        return theta, beta, omega, sigma

    def individual(self, theta, beta, eta):
        """Natural-scale parameters (N, R) for random effects ``eta`` (N, R, q)."""
        m, out, k = self.model, {}, 0
        for i, name in enumerate(m.params):
            value = np.full(eta.shape[:2], theta[i])
            for c in m.covariates.get(name, ()):
                value = value + beta[k] * np.asarray(self.data.covariates[c], float)[:, None]
                k += 1
            if name in m.random:
                value = value + eta[:, :, m.random.index(name)]
            out[name] = to_natural(m.transforms[name], value)
        return out

    def predict(self, theta, beta, eta):
        # trial values far out (a line search's) may overflow; such predictions are
        # replaced by a huge value, which the objective rejects
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            f = self.model.predict(self.individual(theta, beta, eta), self.data)
            f = np.asarray(f, float)
        return np.where(np.isfinite(f), f, 1e10)

    def sd(self, f, sigma):
        var = sigma.get("add", 0.0) ** 2 + (sigma.get("prop", 0.0) * f) ** 2
        return np.sqrt(np.maximum(var, 1e-12))

    def subject_terms(self, f, sigma, eta, omega):
        """sum_j (log(2 pi sd**2) + r**2) + eta' Omega^-1 eta for each subject: (N, R)."""
        sd = self.sd(f, sigma)
        r = (self.y0[:, None, :] - f) / sd
        terms = np.where(self.mask[:, None, :], np.log(2 * np.pi * sd**2) + r**2, 0.0)
        return terms.sum(axis=-1) + ((eta / omega) ** 2).sum(axis=-1)

    def _linearised(self, theta, beta, eta, omega, sigma, h: float = 1e-5):
        """Objective terms, Hessian and gradient (of half the objective) at ``eta`` (N, q).

        The gradient includes the residual SD's dependence on the prediction (the
        interaction); the Hessian is the expected (Fisher) information
        ``J' diag(1/sd**2 + 2 (sd'/sd)**2) J + Omega^-1``."""
        steps = np.vstack([np.zeros(self.q), h * np.eye(self.q)])  # (q + 1, q)
        f_all = self.predict(theta, beta, eta[:, None, :] + steps[None])
        f = f_all[:, 0]
        jac = (f_all[:, 1:] - f[:, None]) / h  # (N, q, K)
        g = self.subject_terms(f_all[:, :1], sigma, eta[:, None], omega)[:, 0]
        sd = self.sd(f, sigma)
        sd_slope = sigma.get("prop", 0.0) ** 2 * f / sd  # d sd / d f
        r = (self.y0 - f) / sd
        d_half = np.where(self.mask, sd_slope / sd - r * (1.0 + r * sd_slope) / sd, 0.0)
        info = np.where(self.mask, 1.0 / sd**2 + 2.0 * (sd_slope / sd) ** 2, 0.0)
        hess = (jac * info[:, None, :]) @ jac.transpose(0, 2, 1) + np.diag(1.0 / omega**2)[None]
        grad = (jac @ d_half[:, :, None])[:, :, 0] + eta / omega**2
        return g, hess, grad

    def conditional_modes(self, x, eta_start, max_iter: int = 100, tol: float = 1e-8):
        """Each subject's mode of the random effects (Levenberg-Marquardt, all subjects
        at once), its objective terms and Gauss-Newton Hessian."""
        theta, beta, omega, sigma = self.unpack(x)
        n, q = self.data.n_subjects, self.q
        eta = np.array(eta_start, float)
        lam = np.full(n, 1e-3)
        active = np.ones(n, bool)
        g, hess, grad = self._linearised(theta, beta, eta, omega, sigma)
        for _ in range(max_iter):
            diag = np.diagonal(hess, axis1=1, axis2=2)
            damped = hess + lam[:, None, None] * np.eye(q)[None] * diag[:, :, None]
            step = -np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
            step[~active] = 0.0
            trial = eta + step
            g_trial, h_trial, grad_trial = self._linearised(theta, beta, trial, omega, sigma)
            better = active & (g_trial <= g)
            eta = np.where(better[:, None], trial, eta)
            g = np.where(better, g_trial, g)
            hess = np.where(better[:, None, None], h_trial, hess)
            grad = np.where(better[:, None], grad_trial, grad)
            lam = np.where(better, np.maximum(lam / 10, 1e-12), lam * 10)
            converged = (better & (np.abs(step).max(axis=1) < tol)) | (lam > 1e10)
            active &= ~converged
            if not active.any():
                break
        return eta, g, hess, omega

    def ofv(self, x, eta_start=None) -> float:
        start = self.eta if eta_start is None else eta_start
        eta, g, hess, omega = self.conditional_modes(x, start)
        _, logdet_h = np.linalg.slogdet(hess)
        value = float(np.sum(g + 2 * np.log(omega).sum() + logdet_h))
        return value if np.isfinite(value) else 1e20


@dataclass
class NLMEFit:
    """The result of :func:`fit_foce`. ``estimates``: a table of every estimated
    quantity (fixed effects as typical values on their natural scale, covariate
    effects, omega as SDs of eta, residual error), with standard errors on the
    estimation scale and the relative standard error (%). ``etas`` (N, q): each subject's
    conditional mode; ``individual``: its parameters (N,) on the natural scale."""

    model: NLMEModel
    ofv: float
    x: np.ndarray
    estimates: pd.DataFrame
    etas: np.ndarray
    individual: dict[str, np.ndarray]
    n_iterations: int
    seconds: float
    converged: bool
    fixed: dict[str, float] = field(default_factory=dict)

    def typical(self, name: str) -> float:
        """The typical value of parameter ``name`` (natural scale), estimated or fixed."""
        if name in self.fixed:
            return self.fixed[name]
        return float(self.estimates.loc[f"theta_{name}", "estimate"])


def _hessian(fun, x, step: float = 1e-2) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function. The step (1% on the log
    scale) is wide on purpose: the OFV carries noise of about 1e-3 from its inner
    optimisations, which a step of 1e-3 would turn into curvature errors of the
    order of the curvature itself."""
    n = x.size
    h = np.zeros((n, n))
    e = np.eye(n) * step
    f0 = fun(x)
    for i in range(n):
        h[i, i] = (fun(x + e[i]) - 2 * f0 + fun(x - e[i])) / step**2
        for j in range(i):
            v = (
                fun(x + e[i] + e[j])
                - fun(x + e[i] - e[j])
                - fun(x - e[i] + e[j])
                + fun(x - e[i] - e[j])
            ) / (4 * step**2)
            h[i, j] = h[j, i] = v
    return h


def start_vector(
    model: NLMEModel,
    typical: Mapping[str, float],
    omega_sd: Mapping[str, float] | float = 0.5,
    sigma: Mapping[str, float] | None = None,
    fixed: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The packed starting point: typical values on the natural scale, omega as SDs of
    eta (one number for all), residual error terms (default 0.1 each); covariate effects
    start at 0."""
    fixed = fixed or {}
    free = [p for p in model.params if p not in fixed]
    missing = [p for p in free if p not in typical]
    if missing:
        raise ValueError(f"starting values missing for {missing}")
    theta = [float(to_transformed(model.transforms[p], typical[p])) for p in free]
    if not isinstance(omega_sd, Mapping):
        omega_sd = dict.fromkeys(model.random, float(omega_sd))
    sigma = sigma or dict.fromkeys(model.error, 0.1)
    return np.array(
        [
            *theta,
            *np.zeros(len(model.beta_names)),
            *np.log([omega_sd[r] for r in model.random]),
            *np.log([sigma[e] for e in model.error]),
        ]
    )


def fit_foce(
    model: NLMEModel,
    data: Observations,
    typical: Mapping[str, float],
    omega_sd: Mapping[str, float] | float = 0.5,
    sigma: Mapping[str, float] | None = None,
    standard_errors: bool = True,
    max_iter: int = 200,
    fixed: Mapping[str, float] | None = None,
    restarts: int = 3,
    ofv_tol: float = 0.01,
    cache_dir: str | Path | None = None,
) -> NLMEFit:
    """Estimate ``model`` from ``data`` by FOCE-I, starting from ``typical`` values
    (natural scale), ``omega_sd`` and ``sigma`` (see :func:`start_vector`). ``fixed``:
    parameters held at a value (natural scale) instead of estimated. The outer gradient
    is by central differences; the fit counts as converged when BFGS ends with the
    largest OFV gradient below 0.1 per unit of the estimation scale; a BFGS run that
    stalls before that (its Hessian estimate gone stale) is restarted from where it
    ended, up to ``restarts`` times. It also counts as converged, and stops, when three
    BFGS iterations in a row lower the OFV by less than ``ofv_tol`` in all (the estimates
    then move in digits no inference reads; NONMEM's default stops on significant
    digits of the estimates, to the same effect).

    ``cache_dir``: a folder where the fit is stored under a key of the model, data,
    starting values and settings, and loaded from when asked again (``"default"``: the
    ``fits`` folder of :func:`pkpd_lib.files.default_cache_dir`; ``None``: always
    estimate). A loaded fit is the stored one to the last bit, so everything computed
    from it reproduces exactly. With ``$PKPD_CACHE_MISS=error`` a fit missing from the
    default store raises :class:`~pkpd_lib.files.StoreMissError`. The key holds the
    model's name, structure and the bytecode of its ``predict`` (not of the functions
    that calls): after changing those, clear the store or bump :data:`FIT_FORMAT`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> t = np.tile([0.5, 1, 2, 4, 8, 12.0], (40, 1))
    >>> k = 0.2 * np.exp(0.3 * rng.normal(size=(40, 1)))
    >>> y = 10 * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
    >>> decay = NLMEModel("decay", ("C0", "k"), {"C0": "log", "k": "log"}, ("k",),
    ...                   lambda p, d: p["C0"][..., None] * np.exp(-p["k"][..., None]
    ...                                                            * d.times_h[:, None]))
    >>> fit = fit_foce(decay, Observations(np.arange(40), t, y), {"C0": 5.0, "k": 0.5})
    >>> round(fit.typical("C0"), 1), round(fit.typical("k"), 2)
    (10.0, 0.2)
    """
    data.require_observations()
    fixed = dict(fixed or {})
    problem = _Problem(model, data, fixed)
    x0 = start_vector(model, typical, omega_sd, sigma, fixed)
    settings = (standard_errors, max_iter, restarts, ofv_tol)
    if cache_dir is not None:
        strict = cache_dir == "default" and miss_is_error()
        folder = default_cache_dir() / "fits" if cache_dir == "default" else Path(cache_dir)
        key = _fit_key(model, data, x0, fixed, settings)
        slug = "".join(c if c.isalnum() else "_" for c in model.name)[:40].strip("_")
        path = folder / f"{slug}_{key}.json"
        if path.is_file():
            return _load_fit(problem, json.loads(path.read_text()))
        if strict:
            raise StoreMissError(
                f"the FOCE-I fit of {model.name!r} (key {key}) is not in the store {folder} "
                "and $PKPD_CACHE_MISS=error forbids estimating it: its model, data, start "
                "or settings changed. Re-execute the chapters (python3 tools/tasks.py "
                "execute) to fit and store it."
            )
        fit = fit_foce(
            model,
            data,
            typical,
            omega_sd,
            sigma,
            standard_errors=standard_errors,
            max_iter=max_iter,
            fixed=fixed,
            restarts=restarts,
            ofv_tol=ofv_tol,
        )
        stored = {
            "x": fit.x.tolist(),
            "ofv": fit.ofv,
            "se": fit.estimates["SE (estimation scale)"].tolist(),
            "etas": fit.etas.tolist(),
            "n_iterations": fit.n_iterations,
            "seconds": fit.seconds,
            "converged": fit.converged,
        }
        write_text_atomic(path, json.dumps(stored), overwrite=True)
        return _load_fit(problem, stored)
    t0 = time.perf_counter()

    history: list[float] = []
    stalled = [False]

    def callback(intermediate_result):
        problem.eta = problem.conditional_modes(intermediate_result.x, problem.eta)[0]
        history.append(float(intermediate_result.fun) * scale)
        if len(history) > 3 and history[-4] - history[-1] < ofv_tol:
            stalled[0] = True
            raise StopIteration

    # per-observation scale: BFGS's first steps (along the raw gradient) stay O(1) on the
    # log scale whatever the data set's size
    scale = max(1.0, data.n_observations / 10.0)

    def scaled(x):
        return problem.ofv(x) / scale

    x, iterations = x0, 0
    for _ in range(restarts + 1):
        result = optimize.minimize(
            scaled,
            x,
            method="BFGS",
            jac="3-point",
            callback=callback,
            options={
                "maxiter": max_iter,
                "gtol": 1e-2 / scale,
                "finite_diff_rel_step": 1e-4,
            },
        )
        x, iterations = result.x, iterations + int(result.nit)
        if stalled[0] or np.abs(result.jac).max() * scale < 0.1:
            break
    problem.eta = problem.conditional_modes(x, problem.eta)[0]
    ofv = problem.ofv(x)
    se = np.full(x.size, np.nan)
    if standard_errors:
        hess = _hessian(problem.ofv, x)
        with np.errstate(invalid="ignore"):
            cov = 2.0 * np.linalg.pinv(hess)
            se = np.sqrt(np.diag(cov))
    converged = bool(stalled[0] or np.abs(result.jac).max() * scale < 0.1)
    return _finish(problem, x, ofv, se, iterations, time.perf_counter() - t0, converged)


#: Bumped when the estimator or the stored form of a fit changes, so that fits stored
#: earlier are not reused.
FIT_FORMAT = 1


def _fit_key(model: NLMEModel, data: Observations, x0, fixed, settings) -> str:
    """The store key of a fit: model structure, its predict function's bytecode, the
    data (to about 6 significant digits, see :func:`pkpd_lib.files.update_digest`), the
    starting vector, fixed values and estimator settings."""
    h = hashlib.sha256(f"format={FIT_FORMAT};{model.name}".encode())
    code = getattr(model.predict, "__code__", None)
    closure = [
        c.cell_contents
        for c in getattr(model.predict, "__closure__", None) or ()
        if isinstance(c.cell_contents, int | float | str | tuple | np.ndarray)
    ]
    structure = {
        "params": model.params,
        "transforms": dict(model.transforms),
        "random": model.random,
        "error": model.error,
        "covariates": {k: tuple(v) for k, v in model.covariates.items()},
        "predict": (code.co_code.hex(), repr(code.co_names)) if code else repr(model.predict),
        "closure": closure,
    }
    for part in (structure, data.ids, data.times_h, data.dv, dict(data.covariates)):
        update_digest(h, part)
    update_digest(h, dict(data.extra))
    update_digest(h, {"x0": x0, "fixed": dict(fixed), "settings": settings})
    return h.hexdigest()[:16]


def _load_fit(problem: _Problem, stored: Mapping) -> NLMEFit:
    problem.eta = np.asarray(stored["etas"], float).reshape(problem.data.n_subjects, problem.q)
    return _finish(
        problem,
        np.asarray(stored["x"], float),
        float(stored["ofv"]),
        np.asarray(stored["se"], float),
        int(stored["n_iterations"]),
        float(stored["seconds"]),
        bool(stored["converged"]),
    )


def _finish(problem: _Problem, x, ofv, se, iterations, seconds, converged) -> NLMEFit:
    """The fit's tables at the estimate ``x``, with the subjects' modes in ``problem.eta``."""
    model, fixed = problem.model, problem.fixed_natural
    names = problem.names()
    natural = []
    for name, value in zip(names, x, strict=True):
        kind, _, what = name.partition("_")
        if kind == "theta":
            natural.append(float(to_natural(model.transforms[what], value)))
        elif kind in ("omega", "sigma"):
            natural.append(float(np.exp(value)))
        else:
            natural.append(float(value))
    estimates = pd.DataFrame(
        {
            "estimate": natural,
            "SE (estimation scale)": se,
            "RSE %": [
                100 * s if n.startswith(("omega", "sigma")) or _is_log(model, n) else np.nan
                for n, s in zip(names, se, strict=True)
            ],
        },
        index=pd.Index(names, name="parameter"),
    )
    theta, beta, _, _ = problem.unpack(x)
    individual = {
        k: v[:, 0] for k, v in problem.individual(theta, beta, problem.eta[:, None]).items()
    }
    return NLMEFit(
        model,
        ofv,
        x,
        estimates,
        problem.eta.copy(),
        individual,
        iterations,
        seconds,
        converged,
        fixed,
    )


def _is_log(model: NLMEModel, name: str) -> bool:
    kind, _, what = name.partition("_")
    return kind == "theta" and model.transforms[what] == "log"


def population_predictions(fit: NLMEFit, data: Observations) -> np.ndarray:
    """Predictions (N, K) of the typical subject (all eta = 0) with each subject's
    covariates (PRED)."""
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, _, _ = problem.unpack(fit.x)
    return problem.predict(theta, beta, np.zeros((data.n_subjects, 1, problem.q)))[:, 0]


def individual_predictions(fit: NLMEFit, data: Observations, etas=None) -> np.ndarray:
    """Predictions (N, K) with each subject's conditional modes (IPRED)."""
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, _, _ = problem.unpack(fit.x)
    etas = fit.etas if etas is None else np.asarray(etas, float)
    return problem.predict(theta, beta, etas[:, None])[:, 0]


def conditional_modes(fit: NLMEFit, data: Observations) -> np.ndarray:
    """Each subject's mode of the random effects (N, q) given its data and the fitted
    population model (empirical Bayes / MAP estimates), for subjects the fit has not
    seen: e.g. a new patient's few samples."""
    data.require_observations()
    problem = _Problem(fit.model, data, fit.fixed)
    eta = np.zeros((data.n_subjects, problem.q))
    return problem.conditional_modes(fit.x, eta)[0]


def individual_parameters(fit: NLMEFit, data: Observations, etas) -> dict[str, np.ndarray]:
    """Natural-scale parameters (N,) of the subjects of ``data`` (their covariates) with
    random effects ``etas`` (N, q), e.g. from :func:`conditional_modes`."""
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, _, _ = problem.unpack(fit.x)
    eta = np.asarray(etas, float)[:, None]
    return {k: v[:, 0] for k, v in problem.individual(theta, beta, eta).items()}


def simulate_population(
    fit: NLMEFit, data: Observations, n_replicates: int, seed: int = 0
) -> np.ndarray:
    """Observations simulated from the fitted model (new etas and residual errors) for
    the subjects of ``data``: (n_replicates, N, K). For visual predictive checks."""
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, omega, sigma = problem.unpack(fit.x)
    rng = np.random.default_rng(seed)
    eta = rng.normal(size=(data.n_subjects, n_replicates, problem.q)) * omega
    f = problem.predict(theta, beta, eta)
    sim = f + problem.sd(f, sigma) * rng.normal(size=f.shape)
    return np.moveaxis(sim, 1, 0)


def compare_estimates(fits: Sequence[NLMEFit]) -> pd.DataFrame:
    """Estimates of several fits side by side, with their OFV (e.g. from different
    starting points)."""
    table = pd.concat({i: f.estimates["estimate"] for i, f in enumerate(fits)}, axis=1)
    table.loc["OFV"] = [f.ofv for f in fits]
    return table
