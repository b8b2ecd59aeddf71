"""Population (nonlinear mixed-effects) models estimated by FOCE-I, with scipy.

A model (:class:`NLMEModel`) says how individual parameters follow from fixed effects,
covariates and random effects, and predicts each subject's observations from its
parameters. :func:`fit_foce` estimates, from data alone:

* fixed effects ``theta`` (the typical value of each parameter, on its transformed scale:
  log for positive parameters, logit for fractions) and covariate effects ``beta``
  (``log p = theta + sum(beta * covariate) + eta``), or covariate effects in the forms
  practice uses, each a factor on the typical value (power on a reference value,
  linear centred, categorical: :class:`CovariateEffect`);
* the between-subject SDs ``omega`` of the random effects ``eta`` (diagonal);
* residual error: additive and/or proportional, ``sd = sqrt(add**2 + (prop * f)**2)``;
  for several observed quantities fitted together (e.g. concentrations and a
  response), an error model for each (:attr:`NLMEModel.error` per output, observations
  tagged by :attr:`Observations.output`).

Models with a closed form write ``predict`` directly; for ODE models (nonlinear ones
too) :func:`ode_predict` builds it from the right-hand side, integrating every subject
at once with its own doses.

The objective is NONMEM's FOCE with interaction: for each subject the conditional mode
``eta*`` of the random effects is found (Levenberg-Marquardt with Fisher scoring, on all
subjects at once, finite-difference Jacobians; the residual SD is evaluated at the
individual prediction), and the likelihood is the Laplace approximation around it with
the expected-information Hessian,

``OFV = sum_i [ sum_j (log(2 pi sd_ij**2) + r_ij**2) + eta_i' Omega^-1 eta_i
+ log|Omega| + log|J_i' W_i J_i + Omega^-1| ]``, ``W = 1/sd**2 + 2 (sd'/sd)**2``,

which equals -2 log-likelihood up to the approximation. The outer problem is minimised
by scipy's BFGS (central-difference gradients). Standard errors come from NONMEM's
covariance step (:class:`CovarianceStep`): the R matrix (the finite-difference Hessian
of the OFV) and the S matrix (the sum over subjects of the outer products of their OFV
gradients) give the sandwich ``R^-1 S R^-1`` (NONMEM's default) or ``2 R^-1``
(``MATRIX=R``); a singular or indefinite R is reported, never inverted past, and the
condition number of the correlation matrix is given. :meth:`NLMEFit.table` reports
estimates, SE, RSE, confidence intervals and shrinkage. Every quantity is on the scale
its name says.

Comparing with NONMEM: the OFV above includes ``n_observations * log(2 pi)``, which
NONMEM's objective function value (OBJV) leaves out; :attr:`NLMEFit.ofv_nonmem` is the
OFV without it (differences of OFVs between models of the same data are the same
either way). ``omega`` and ``sigma`` here are standard deviations (of eta, and of the
additive error in the DV's unit or the proportional error as a fraction), while NONMEM
reports the variances ``$OMEGA`` and ``$SIGMA``: :meth:`NLMEFit.variances` gives
``omega**2`` and ``sigma**2`` with their standard errors, and
``NLMEFit.table(variances=True)`` reports them so.

What the estimator refuses or flags instead of fitting through it: starting values that
are not finite or out of range, SDs that are not finite and > 0, covariates the data
lack, predictions that are NaN or infinite at the starting values, data whose DV are
all 0, and a proportional error with predictions of exactly 0 or DV of the opposite
sign (:func:`fit_foce`). A fit reports why it stopped
(:attr:`NLMEFit.convergence`), names the parameters that end at a bound of their scale
(:attr:`NLMEFit.at_bound`, with an :class:`NLMEWarning`), and warns when the covariance
step fails or observations have a residual SD under the objective's floor
(:data:`SD_FLOOR`).

Predictions that fail (NaN or infinite, for an observation) follow one rule, which
never lets a failure pass unseen:

* at the starting values, or at the estimate the search ends at: a ``ValueError``
  naming the subjects, their observations and their parameters (a failure at the
  estimate is not a fit: nothing is returned or stored);
* at a trial point of the search in between (a line-search or finite-difference point
  of BFGS, a trial step of a subject's mode): the objective there is computed with
  :data:`FAILED_PREDICTION` in place of each failed prediction, a stand-in that lets
  the search pass through such points, as correct models need (see
  ``_Problem.conditional_modes`` for the case), and the fit counts the trial points of
  BFGS whose OFV rested on it (:attr:`NLMEFit.failed_trials`, also said in
  :attr:`NLMEFit.convergence`); a trial point whose OFV is not finite is rejected (OFV
  :data:`NOT_FINITE_OFV`, which the line search backs off from) and counted the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import expit, logit

from ..files import (
    StoreMissError,
    data_signature,
    exclusive_lock,
    locate_stored,
    report_retrained,
    retrain_here,
    signature_structure,
    signatures_match,
    write_text_atomic,
)
from ..reproducibility import RETRAIN_FIT_TABLE_RTOL, RETRAIN_RTOL
from .model import IntegrationLimitError, NonFiniteStateError, integrate_with_doses
from .regimens import Regimen

TRANSFORMS = ("log", "logit", "none")
#: The forms of :class:`CovariateEffect`: the factor each multiplies a typical value by.
COVARIATE_FORMS = ("power", "linear", "exponential", "categorical", "categorical_exp")

#: A fit counts as converged when the largest component of the OFV's gradient at the
#: estimate is below this (OFV units per unit of the estimation scale: log, logit or
#: natural; log for omega and sigma). For a parameter with standard error ``s`` the
#: curvature of the OFV is about ``2 / s**2``, so the estimate then lies within
#: ``s**2 / 2`` of the optimum (0.005 for ``s = 0.1``, a twentieth of a standard error)
#: and the OFV within ``s**2 / 4`` of its minimum. The gradient is computed at the
#: estimate from central differences of steps :data:`GRADIENT_STEP` and half of it
#: (Richardson's extrapolation), not taken from BFGS, whose steps (1e-4) turn the OFV's
#: noise from the inner optimisations (1e-4 to 1e-3) into gradients of about 1 (the
#: own-data page's PK fit, at its optimum: 1.1 from BFGS, under 0.1 from this); read
#: :attr:`NLMEFit.convergence` for why a fit stopped.
CONVERGED_GRADIENT = 1.0
#: The step (on the estimation scale) of the gradient that decides convergence, as wide
#: as the R matrix's: the OFV's noise of up to 1e-3 makes errors of up to about 0.15 in
#: it. Central differences of this step and half of it are extrapolated (Richardson),
#: which cancels their error of order ``step**2`` (1.9 at the optimum of a decay model
#: whose C0 has an RSE of 0.5%).
GRADIENT_STEP = 1e-2
#: A logit-scale parameter beyond this (in absolute value) is at or near a bound: the
#: fraction is within 1e-3 of 0 or 1, closer than data determine a fraction (its SE on
#: the logit scale is then large, and the OFV barely changes on to the bound itself).
LOGIT_BOUND = 7.0
#: An omega (SD of eta) below this is at its lower bound: no variability is estimated.
OMEGA_BOUND = 1e-3
#: For models of :func:`ode_predict`, each step of the search for a subject's mode of
#: the random effects is shortened to at most this many SDs of eta in any component:
#: a far trial point costs an integration (often a stiff one), and the search's
#: Gauss-Newton steps can be far where a subject's data leave a direction undetermined.
#: Models with a ``predict`` of their own are not limited.
ETA_STEP_LIMIT = 2.0
#: The covariance matrices of the estimates :func:`fit_foce` computes (its ``covariance``
#: argument), as NONMEM's ``$COVARIANCE MATRIX=``: ``"sandwich"`` ``R^-1 S R^-1``
#: (NONMEM's default) and ``"r"`` ``2 R^-1`` (``MATRIX=R``); see :class:`CovarianceStep`.
COVARIANCE_KINDS = ("sandwich", "r")
#: The R (or S) matrix is singular when the smallest eigenvalue of its correlation form
#: (the matrix scaled to a unit diagonal) is below this in absolute value, and indefinite
#: (not positive definite: the estimate is not a minimum) when it is below minus this.
#: R is a finite-difference Hessian of an OFV with noise from its inner optimisations:
#: a direction the data do not determine can come out slightly negative (indefinite)
#: instead of 0; the message names the parameters of that direction either way.
SINGULAR_TOLERANCE = 1e-6
#: The smallest residual SD the objective allows (in the DV's unit; the residual variance
#: is floored at its square, 1e-12): an observation whose SD would be smaller (a
#: proportional error on a prediction under ``1e-6 / prop``) is weighted as if its SD
#: were this, and the FOCE-I gradient of its subject's modes is then inexact. A fit says
#: so (:class:`NLMEWarning`); express the DV in a smaller unit (ug/L instead of mg/L).
SD_FLOOR = 1e-6
#: What a failed (NaN or infinite) prediction is replaced by in the objective at a trial
#: point of the search (in the DV's unit; see the module's rule for failed predictions).
FAILED_PREDICTION = 1e10
#: The largest step (SDs of eta) of the second search for a subject whose empirical
#: Bayes search failed (:func:`conditional_modes`).
RETRY_STEP_LIMIT = 1.0
#: The OFV given to a trial point where it is not finite: a value BFGS's line search
#: backs off from.
NOT_FINITE_OFV = 1e20


class NLMEWarning(UserWarning):
    """A fit's result or data that needs a look: a parameter at a bound, observations
    a proportional error cannot explain."""


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate's effect on a parameter's typical value, in a form practice uses: the
    typical value ``TV`` of ``param`` is multiplied, for each subject, by a factor of
    the subject's value ``c`` of ``covariate`` and a coefficient ``theta`` that is
    estimated (or fixed, or started from a value) like a typical value:

    =====================  ===========================================================
    form                   factor
    =====================  ===========================================================
    ``"power"``            ``(c / reference) ** theta`` (allometry: ``WT / 70``)
    ``"linear"``           ``1 + theta * (c - reference)`` (centred on ``reference``)
    ``"exponential"``      ``exp(theta * (c - reference))``
    ``"categorical"``      ``1 + theta`` where ``c == level``, else 1
    ``"categorical_exp"``  ``exp(theta)`` where ``c == level``, else 1
    =====================  ===========================================================

    For a log-transformed parameter ``P = TV * factor * exp(eta)``; for an untransformed
    one (``"none"``) ``P = TV * factor + eta``. A logit-transformed parameter (a
    fraction) takes covariates on its logit scale instead (:attr:`NLMEModel.covariates`).
    The coefficient is named ``"param~covariate"`` (:attr:`name`): give its starting
    value among the typical values of :func:`fit_foce` (default 0, no effect) and fix it
    with ``fixed`` (e.g. ``{"CL~WT": 0.75}``); the fit's table lists it as
    ``beta_param~covariate``.

    Parameters
    ----------
    param : str
        The parameter whose typical value the covariate changes.
    covariate : str
        The covariate's name in :attr:`Observations.covariates`, in its own unit (e.g.
        WT in kg, AGE in years, SEX 0 or 1).
    form : str
        One of :data:`COVARIATE_FORMS`.
    reference : float, optional
        The covariate's reference value, in its unit (required for ``"power"``, > 0,
        ``"linear"`` and ``"exponential"``); the typical value is that of a subject
        with this value.
    level : float
        For the categorical forms: the category with the effect (default 1, e.g. SEX
        1); subjects of any other value have the typical value.

    Examples
    --------
    >>> weight = CovariateEffect("CL", "WT", "power", reference=70.0)
    >>> weight.name, weight.factor(0.75, np.array([70.0, 140.0])).round(4).tolist()
    ('CL~WT', [1.0, 1.6818])
    >>> CovariateEffect("CL", "SEX", "categorical").factor(-0.2, np.array([0.0, 1.0])).tolist()
    [1.0, 0.8]
    >>> CovariateEffect("CL", "WT", "cubic")
    Traceback (most recent call last):
    ...
    ValueError: covariate effect 'CL~WT': unknown form 'cubic'; the forms are ('power', \
'linear', 'exponential', 'categorical', 'categorical_exp')
    """

    param: str
    covariate: str
    form: str
    reference: float | None = None
    level: float = 1.0

    def __post_init__(self) -> None:
        if self.form not in COVARIATE_FORMS:
            raise ValueError(
                f"covariate effect {self.name!r}: unknown form {self.form!r}; the forms are "
                f"{COVARIATE_FORMS}"
            )
        if self.form in ("power", "linear", "exponential"):
            try:
                reference = float(self.reference)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                reference = np.nan
            if not np.isfinite(reference) or (self.form == "power" and reference <= 0):
                need = "> 0" if self.form == "power" else "finite"
                raise ValueError(
                    f"covariate effect {self.name!r} ({self.form}) needs a reference value "
                    f"{need} in the covariate's unit, got {self.reference!r}"
                )
        if not np.isfinite(float(self.level)):
            raise ValueError(f"covariate effect {self.name!r}: level must be finite")

    @property
    def name(self) -> str:
        """The coefficient's name, ``"param~covariate"``."""
        return f"{self.param}~{self.covariate}"

    def factor(self, coefficient, values) -> np.ndarray:
        """The factor on the typical value.

        Parameters
        ----------
        coefficient : float
            The coefficient ``theta`` (dimensionless for ``power`` and the categorical
            forms, per unit of the covariate for ``linear`` and ``exponential``).
        values : array_like
            The subjects' covariate values, in the covariate's unit, any shape.

        Returns
        -------
        numpy.ndarray
            The factor (dimensionless), the shape of ``values``.

        Examples
        --------
        >>> age = CovariateEffect("V", "AGE", "linear", reference=40.0)
        >>> age.factor(0.01, [30.0, 40.0, 60.0]).tolist()
        [0.9, 1.0, 1.2]
        """
        c = np.asarray(values, float)
        if self.form == "power":
            return (c / self.reference) ** coefficient
        if self.form == "linear":
            return 1.0 + coefficient * (c - self.reference)
        if self.form == "exponential":
            return np.exp(coefficient * (c - self.reference))
        at_level = c == self.level
        if self.form == "categorical":
            return np.where(at_level, 1.0 + coefficient, 1.0)
        return np.where(at_level, np.exp(coefficient), 1.0)


@dataclass(frozen=True)
class NLMEModel:
    """A population model.

    Parameters
    ----------
    name : str
        A label, in messages and in the store's file names.
    params : tuple of str
        Individual parameter names.
    transforms : mapping
        Each parameter's transform: ``"log"`` for positive parameters, ``"logit"`` for
        fractions, ``"none"``; typical values are estimated on that scale and random
        effects added on it.
    random : tuple of str
        The parameters with a random effect (eta).
    predict : callable
        ``predict(params, data)``: predictions (N, R, K), one for each observation of
        ``data.dv`` (N, K), from a mapping of natural-scale parameter arrays (N, R) (R
        copies of each subject, for Jacobians) and the :class:`Observations`. A model of
        several outputs may instead return a mapping of output name to predictions
        (N, R, K) of that output at every observation time; each observation then takes
        the prediction of its own output (:attr:`Observations.output`). For ODE models
        see :func:`ode_predict`.
    error : tuple of str, or mapping
        The residual error terms estimated, a subset of ``("add", "prop")``: SD
        ``sqrt(add**2 + (prop * f)**2)`` for a prediction ``f``. For several observed
        quantities fitted together, a mapping of output name to its terms, e.g.
        ``{"conc": ("prop",), "pd": ("add",)}``: observations tagged ``k`` in
        :attr:`Observations.output` are the ``k``-th output of this mapping (in its
        order) and have its error model.
    covariates : mapping
        For each parameter, covariate columns (already centred and scaled, e.g.
        ``log(WT/70)``) whose coefficients are estimated, added on the parameter's
        transformed scale (``log p = theta + sum(beta * covariate) + eta``).
    units : mapping
        Unit of each parameter, for tables.
    effects : sequence of CovariateEffect
        Covariate effects in the forms practice uses (power on a reference value,
        linear centred, categorical), each multiplying the typical value.

    Examples
    --------
    >>> model = NLMEModel(
    ...     "decay", ("C0", "k"), {"C0": "log", "k": "log"}, ("k",),
    ...     lambda p, d: p["C0"][..., None] * np.exp(-p["k"][..., None] * d.times_h[:, None]),
    ...     effects=[CovariateEffect("k", "WT", "power", reference=70.0)])
    >>> model.coefficient_names, model.outputs
    (('k~WT',), ())
    >>> two = NLMEModel("two", ("a",), {"a": "log"}, (), lambda p, d: p,
    ...                 error={"conc": ("prop",), "pd": ("add",)})
    >>> two.outputs, two.error_terms
    (('conc', 'pd'), (('conc', 'prop'), ('pd', 'add')))
    """

    name: str
    params: tuple[str, ...]
    transforms: Mapping[str, str]
    random: tuple[str, ...]
    predict: Callable[[Mapping[str, np.ndarray], object], np.ndarray]
    error: tuple[str, ...] = ("prop",)
    covariates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    effects: Sequence[CovariateEffect] = ()

    def __post_init__(self) -> None:
        for p in self.params:
            if self.transforms.get(p) not in TRANSFORMS:
                raise ValueError(f"parameter {p!r} needs a transform in {TRANSFORMS}")
        unknown = (set(self.random) | set(self.covariates)) - set(self.params)
        if unknown:
            raise ValueError(f"random effects or covariates on unknown parameters {unknown}")
        if isinstance(self.error, Mapping):
            self._check_outputs()
        elif not self.error or set(self.error) - {"add", "prop"}:
            raise ValueError(
                f"error must be a non-empty subset of ('add', 'prop'), got {self.error}"
            )
        self._check_effects()

    def _check_outputs(self) -> None:
        """``error`` given per output: each a non-empty subset of ('add', 'prop'), kept
        as a dict of tuples; else a ``ValueError`` naming the output."""
        if not self.error:
            raise ValueError("error given per output needs at least one output")
        terms = {}
        for output, given in self.error.items():
            value = (given,) if isinstance(given, str) else tuple(given)
            if not isinstance(output, str) or not output:
                raise ValueError(f"output names must be non-empty strings, got {output!r}")
            if not value or set(value) - {"add", "prop"} or len(set(value)) < len(value):
                raise ValueError(
                    f"the error of output {output!r} must be a non-empty subset of "
                    f"('add', 'prop'), got {given!r}"
                )
            terms[output] = value
        object.__setattr__(self, "error", terms)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the observed quantities when :attr:`error` is given per output,
        else ``()`` (one output)."""
        return tuple(self.error) if isinstance(self.error, Mapping) else ()

    @property
    def error_terms(self) -> tuple[tuple[str | None, str], ...]:
        """The estimated residual error terms in their order in the packed vector:
        ``(output, term)`` pairs, output None for a model of one output."""
        if isinstance(self.error, Mapping):
            return tuple((o, t) for o, terms in self.error.items() for t in terms)
        return tuple((None, t) for t in self.error)

    def _check_effects(self) -> None:
        """``effects`` as a tuple of :class:`CovariateEffect` on known parameters of a
        log or no transform, each named once; else a ``ValueError`` naming it."""
        effects = tuple(self.effects)
        object.__setattr__(self, "effects", effects)
        seen = set(self.beta_names)
        for effect in effects:
            if not isinstance(effect, CovariateEffect):
                raise ValueError(f"effects must be CovariateEffect objects, got {effect!r}")
            if effect.param not in self.params:
                raise ValueError(
                    f"covariate effect {effect.name!r} on unknown parameter {effect.param!r}; "
                    f"the model's parameters are {self.params}"
                )
            if self.transforms[effect.param] == "logit":
                raise ValueError(
                    f"covariate effect {effect.name!r}: {effect.param!r} is logit-transformed "
                    "(a fraction, which a factor could push past 1); give the covariate on "
                    "its logit scale in `covariates` instead"
                )
            if effect.name in seen:
                raise ValueError(f"covariate effect {effect.name!r} is given twice")
            seen.add(effect.name)

    @property
    def beta_names(self) -> tuple[str, ...]:
        """The coefficients of :attr:`covariates`, ``"param~covariate"``."""
        return tuple(f"{p}~{c}" for p in self.params for c in self.covariates.get(p, ()))

    @property
    def coefficient_names(self) -> tuple[str, ...]:
        """Every covariate coefficient: those of :attr:`covariates`, then of
        :attr:`effects`."""
        return (*self.beta_names, *(e.name for e in self.effects))


@dataclass(frozen=True)
class Observations:
    """Observations of N subjects, and whatever else the model's ``predict`` reads.

    A ``dv`` that is all NaN is a design: the times to predict or simulate, nothing to
    estimate from.

    Parameters
    ----------
    ids : array_like
        The subjects' identifiers, (N,); stored as a numpy array (an array is kept as
        given, anything else converted).
    times_h : array_like
        Observation times (h), (N, K), finite (pad with any time); stored as a numpy
        array (an array as given, anything else converted to floats).
    dv : array_like
        The observations (N, K), in the DV's unit; NaN where a subject has fewer than K.
        Never infinite. Stored like ``times_h``.
    covariates : mapping of str to array_like
        Covariates by name, each (N,) finite numbers.
    extra : mapping
        Anything else the model's ``predict`` reads (doses, individual PK parameters).
    output : array_like of int, optional
        Which observed quantity each observation is, (N, K) integers (0, 1, ...: the
        outputs of a model whose ``error`` is given per output, in that order), for
        several quantities fitted together (e.g. from
        ``nonmem.observations(table, dv_cmt=(2, 6))``); None: one quantity.

    Raises
    ------
    ValueError
        ``times_h`` and ``dv`` not both (N, K); ``times_h`` not finite; ``dv`` infinite;
        some subjects with observations and some without; ``output`` not (N, K) or not
        whole numbers >= 0 where ``dv`` is observed; a covariate not (N,) or not finite
        (naming the subject).

    Examples
    --------
    Two subjects, a concentration (output 0) and a response (output 1) each:

    >>> obs = Observations(np.array([1, 2]), np.array([[1.0, 1.0], [2.0, 2.0]]),
    ...                    np.array([[3.1, 88.0], [2.2, 95.0]]), output=np.array([[0, 1], [0, 1]]))
    >>> obs.n_subjects, obs.n_observations
    (2, 4)

    Lists become arrays:

    >>> Observations([1], [[1.0]], [[2.0]]).dv
    array([[2.]])
    """

    ids: np.ndarray
    times_h: np.ndarray
    dv: np.ndarray
    covariates: Mapping[str, np.ndarray] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)
    output: np.ndarray | None = None

    def __post_init__(self) -> None:
        # lists become arrays (ids as given, times and dv as floats); arrays stay as given
        for name, dtype in (("ids", None), ("times_h", float), ("dv", float)):
            if not isinstance(getattr(self, name), np.ndarray):
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype))
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
        if self.output is not None:
            tags = np.asarray(self.output)
            if tags.shape != y.shape:
                raise ValueError(f"output must be (N, K) like dv {y.shape}, got {tags.shape}")
            observed = tags[~np.isnan(y)].astype(float)
            if not (np.isfinite(observed).all() and np.all(observed == np.round(observed))):
                raise ValueError("output must hold whole numbers 0, 1, ... where dv is observed")
            if observed.size and observed.min() < 0:
                raise ValueError("output must hold whole numbers 0, 1, ... where dv is observed")
        for name, v in self.covariates.items():
            v = np.asarray(v, float)
            if v.shape != (t.shape[0],):
                raise ValueError(f"covariate {name!r} must be {t.shape[0]} finite numbers")
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:
                more = f" and {bad.size - 1} more subject(s)" if bad.size > 1 else ""
                raise ValueError(
                    f"covariate {name!r} is {v[bad[0]]} (must be finite) for subject "
                    f"{np.asarray(self.ids)[bad[0]]} (row {bad[0]}){more}"
                )

    @property
    def n_subjects(self) -> int:
        return self.dv.shape[0]

    @property
    def n_observations(self) -> int:
        return int((~np.isnan(self.dv)).sum())

    def require_observations(self) -> None:
        """A ``ValueError`` unless there is something to estimate from.

        Raises
        ------
        ValueError
            No subject has an observation (``dv`` all NaN: a design).
        """
        if self.n_observations == 0:
            raise ValueError("every subject needs at least one observation to estimate from")


def _check_transform(transform) -> None:
    """A ``ValueError`` naming ``transform`` unless it is one of :data:`TRANSFORMS`."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


def to_natural(transform: str, x):
    """A parameter on its natural scale from its transformed value.

    Parameters
    ----------
    transform : str
        ``"log"``, ``"logit"`` or ``"none"`` (:data:`TRANSFORMS`).
    x : array_like
        The value on the transformed scale.

    Returns
    -------
    numpy.ndarray or float
        ``exp(x)``, ``expit(x)`` or ``x`` (as a float array), the shape of ``x``.

    Raises
    ------
    ValueError
        If ``transform`` is not one of :data:`TRANSFORMS`.

    Examples
    --------
    >>> float(to_natural("logit", 0.0))
    0.5
    >>> to_natural("logiz", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: transform must be one of ('log', 'logit', 'none'), got 'logiz'
    """
    _check_transform(transform)
    if transform == "none":
        return np.asarray(x, float)
    return np.exp(x) if transform == "log" else expit(x)


def to_transformed(transform: str, value):
    """A parameter's transformed value (log or logit) from its natural scale.

    Parameters
    ----------
    transform : str
        ``"log"``, ``"logit"`` or ``"none"`` (:data:`TRANSFORMS`).
    value : array_like
        The value on the natural scale: > 0 for ``"log"``, in (0, 1) for ``"logit"``.

    Returns
    -------
    numpy.ndarray
        ``log(value)``, ``logit(value)`` or ``value``, the shape of ``value``.

    Raises
    ------
    ValueError
        If ``transform`` is not one of :data:`TRANSFORMS`, or a value is out of the
        transform's range.
    """
    _check_transform(transform)
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


def grid_positions(times_h, step_h: float, what: str = "sampling times") -> np.ndarray:
    """Each time's position on a grid of ``step_h`` from 0 h (for :func:`values_at`).

    Parameters
    ----------
    times_h : array_like
        Times (h), any shape, each a multiple of ``step_h``.
    step_h : float
        The grid's step (h).
    what : str
        What the times are, for the error message.

    Returns
    -------
    numpy.ndarray
        The positions (ints), the shape of ``times_h``.

    Raises
    ------
    ValueError
        A time that is not a multiple of ``step_h``.

    Examples
    --------
    >>> grid_positions([0.0, 1.5, 24.0], 0.5).tolist()
    [0, 3, 48]
    """
    t = np.asarray(times_h, float)
    index = np.rint(t / step_h).astype(int)
    if not np.allclose(index * step_h, t):
        raise ValueError(f"{what} must be multiples of {step_h} h")
    return index


def values_at(grid, index) -> np.ndarray:
    """Gather predictions at the observed times from values on a time grid. For models
    integrated on a grid (turnover PD).

    Parameters
    ----------
    grid : array_like
        Values on the grid per subject and replicate, (N, R, G).
    index : array_like of int
        Each observation's grid position, (N, K).

    Returns
    -------
    numpy.ndarray
        The values at the observations, (N, R, K).
    """
    grid = np.asarray(grid)
    index = np.asarray(index)
    wide = np.broadcast_to(index[:, None, :], (*grid.shape[:2], index.shape[1]))
    return np.take_along_axis(grid, wide, axis=-1)


def ode_predict(
    rhs: Callable,
    initial: Callable | Sequence[float],
    dose_state: int = 0,
    output: int | Callable = 0,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    method: str = "LSODA",
    max_rhs_calls: int = 20_000,
) -> Callable:
    """A ``predict`` function for :class:`NLMEModel` from a system of ODEs (nonlinear
    ones too): write only the right-hand side.

    Each call integrates every subject, and each of the R copies of its parameters that
    FOCE-I asks for, as one vectorised system with
    :func:`pkpd_lib.pmx.model.integrate_with_doses`, on the union of the observation times,
    with each subject's own bolus doses, and returns the predictions at each subject's
    own (irregular) times.

    Parameters
    ----------
    rhs : callable
        ``rhs(t, y, p)``: the derivatives (per hour) of the states ``y`` (S, M), M the
        subject copies integrated together, at time ``t`` (h), with the parameters
        ``p`` (a mapping of natural-scale arrays (M,)); returns an (S, M) array or a
        sequence of S arrays (M,).
    initial : callable or sequence of float
        The states at 0 h before any dose: ``initial(p)`` returning S arrays (M,) or
        numbers (e.g. a baseline ``[0.0, 0.0, p["R0"]]``), or S numbers.
    dose_state : int
        The state each dose is added to (the amount, in the unit of
        ``extra["doses"]["amounts_mg"]``, mg from :func:`pkpd_lib.pmx.nonmem.observations`;
        the doses' CMT is not read: every dose goes here).
    output : int or callable
        What is observed: the state of that index, or ``output(y, p)`` computing the
        predictions (M, T) from the states ``y`` (S, M, T) and the parameters ``p``
        (arrays (M, 1), to broadcast against the times), e.g.
        ``lambda y, p: y[1] / p["V"]`` for a concentration; for a model of several
        outputs a mapping of output name to such predictions.
    rtol, atol : float
        The integrator's tolerances (``atol`` in the states' unit). All copies share
        the integrator's steps, so the FOCE-I Jacobians (predictions 1e-5 apart in eta)
        are consistent; the OFV carries noise of the order of ``rtol`` between calls:
        keep it at 1e-8 or tighter.
    method : str
        scipy's ``solve_ivp`` method: ``"LSODA"`` (default) switches to an implicit
        method where a copy is stiff, as trial points of the search often are;
        ``"DOP853"`` (explicit) can be faster for a model that never is.
    max_rhs_calls : int
        Calls of ``rhs`` one integration may take (plus 50 per state value with
        LSODA, whose Jacobians cost a call per value) before it counts as failed;
        about 1000 are usual.

    Returns
    -------
    callable
        ``predict(params, data)``: predictions (N, R, K) at ``data.times_h`` (N, K), h
        (or a mapping of them by output), for parameter arrays (N, R). ``data`` must
        carry each subject's doses in ``extra["doses"]`` as
        :func:`pkpd_lib.pmx.nonmem.observations` gives them (``times_h`` and
        ``amounts_mg`` (N, D), ``count`` (N,)); a subject without doses starts from
        ``initial`` alone. The predictions of a copy whose derivatives or states turn
        NaN or infinite are NaN (the estimator treats them as failed), the others are
        unaffected; where the whole system fails to integrate, halves of the copies
        are integrated alone to find those that fail. A sample at a dose time is taken
        before that dose (a trough).

        Each call costs about one integration whatever the number of copies: a few
        milliseconds for a small model, and FOCE-I makes thousands of calls (a fit of
        18 subjects with Michaelis-Menten elimination takes under a minute, one of 24
        with oral absorption and two states several minutes). FOCE-I limits each step
        of the search for a subject's modes of such a model to :data:`ETA_STEP_LIMIT`
        SDs of eta (far trial points cost integrations, often stiff ones).

    Examples
    --------
    Michaelis-Menten elimination after one bolus of 100 mg into a 10 L volume:

    >>> predict = ode_predict(
    ...     lambda t, y, p: [-p["Vmax"] * (y[0] / p["V"]) / (p["Km"] + y[0] / p["V"])],
    ...     [0.0], output=lambda y, p: y[0] / p["V"])
    >>> doses = {"times_h": [[0.0]], "amounts_mg": [[100.0]], "count": [1]}
    >>> data = Observations([1], [[1.0, 4.0, 12.0]], [[np.nan] * 3], extra={"doses": doses})
    >>> p = {"V": np.array([[10.0]]), "Vmax": np.array([[5.0]]), "Km": np.array([[2.0]])}
    >>> predict(p, data).round(3)
    array([[[9.585, 8.359, 5.278]]])
    """
    if isinstance(output, int | np.integer):
        state = int(output)

        def observe(y, p):
            return y[state]

    else:
        observe = output
    cache: dict[str, object] = {}
    settings = {
        "dose_state": dose_state,
        "rtol": rtol,
        "atol": atol,
        "method": method,
        "max_rhs_calls": max_rhs_calls,
    }

    def predict(params, data):
        first = np.asarray(next(iter(params.values())))
        n, r = first.shape
        m = n * r
        flat = {
            k: np.broadcast_to(np.asarray(v, float), (n, r)).reshape(m) for k, v in params.items()
        }
        times = np.unique(np.asarray(data.times_h, float))
        regimens = _ode_regimens(data, float(times[-1]), cache)
        per_copy = [regimen for regimen in regimens for _ in range(r)]
        y0 = _ode_initial(initial, flat, m)
        frozen = ~np.isfinite(y0).all(axis=0)
        y0[:, frozen] = 0.0
        states = np.zeros((y0.shape[0], m, times.size))
        solver = _OdeCopies(rhs, flat, y0, per_copy, times, frozen, states, settings)
        solver.run(np.arange(m))
        index = np.searchsorted(times, data.times_h)
        values = observe(states, {k: v[:, None] for k, v in flat.items()})

        def at_times(v):
            v = np.array(np.broadcast_to(v, (m, times.size)), float)
            v[frozen] = np.nan
            return values_at(v.reshape(n, r, times.size), index)

        if isinstance(values, Mapping):
            return {k: at_times(v) for k, v in values.items()}
        return at_times(values)

    # FOCE-I limits each step of a subject's random effects to 2 SDs of eta for this
    # predict: a wild trial point (a mode search's first steps) costs an integration
    predict.eta_step_limit = ETA_STEP_LIMIT  # type: ignore[attr-defined]
    predict.fit_key = repr(  # type: ignore[attr-defined]
        (
            _code_key(rhs),
            _code_key(initial),
            _code_key(output),
            dose_state,
            rtol,
            atol,
            method,
            max_rhs_calls,
            ETA_STEP_LIMIT,
        )
    )
    return predict


class _TooMuchWork(Exception):
    """An :func:`ode_predict` call needed more right-hand-side calls than it allows."""


class _OdeCopies:
    """The integration of :func:`ode_predict`'s M copies into ``states`` (S, M, T).

    All copies are integrated as one system. A copy whose derivatives turn NaN or inf is
    frozen (its derivatives set to 0, ``frozen`` set, its predictions NaN) so the others
    go on. Where the whole system fails (a state overflows more than twice, the work
    limit, the integrator gives up: a stiff or wild trial copy), the copies are split in
    halves, each integrated alone, down to the copy that fails, within a budget of
    integrations; only the copies that fail, or that the budget leaves, are frozen."""

    def __init__(self, rhs, params, y0, regimens, times, frozen, states, settings):
        self.rhs, self.params, self.y0 = rhs, params, y0
        self.regimens, self.times = regimens, times
        self.frozen, self.states, self.settings = frozen, states, settings
        self.budget = 8 + 4 * int(np.log2(max(y0.shape[1], 1)) + 1)

    def run(self, group: np.ndarray) -> None:
        """Integrate the copies ``group`` (indices) into :attr:`states`."""
        self.budget -= 1
        s = self.settings
        local = self.frozen[group].copy()
        params = {k: v[group] for k, v in self.params.items()}
        shape = (self.y0.shape[0], group.size)
        limit = s["max_rhs_calls"] + (50 * local.size * shape[0] if s["method"] == "LSODA" else 0)
        calls = [0]

        def flat_rhs(t, y):
            calls[0] += 1
            if calls[0] > limit:
                raise _TooMuchWork
            dy = np.asarray(self.rhs(t, y.reshape(shape), params), float).reshape(shape)
            if not np.isfinite(dy).all():
                local[~np.isfinite(dy).all(axis=0)] = True
            if local.any():
                dy = np.where(local, 0.0, dy)
            return dy.ravel()

        for _ in range(3):  # states that overflow despite finite derivatives: freeze them
            calls[0] = 0
            try:
                out = integrate_with_doses(
                    flat_rhs,
                    self.y0[:, group],
                    [self.regimens[i] for i in group],
                    self.times,
                    s["dose_state"],
                    rtol=s["rtol"],
                    atol=s["atol"],
                    method=s["method"],
                )
            except NonFiniteStateError as error:
                local[error.patients] = True
                continue
            except (IntegrationLimitError, _TooMuchWork):
                break
            except RuntimeError as error:
                if not str(error).startswith("ODE integration failed"):
                    raise
                break
            self.states[:, group] = out
            self.frozen[group] |= local
            return
        if group.size == 1 or self.budget <= 0:
            self.frozen[group] = True
            return
        half = group.size // 2
        self.run(group[:half])
        self.run(group[half:])


def _ode_initial(initial, params: Mapping[str, np.ndarray], m: int) -> np.ndarray:
    """The initial states (S, M) of :func:`ode_predict` for M copies."""
    values = initial(params) if callable(initial) else initial
    return np.array([np.broadcast_to(np.asarray(v, float), (m,)) for v in values], float)


def _ode_regimens(data: Observations, last_h: float, cache: dict) -> list[Regimen]:
    """Each subject's doses (``data.extra["doses"]``) as a :class:`Regimen`, kept in
    ``cache`` for the same doses; a subject without doses gets a dose at ``last_h``, the
    last time integrated, which comes after every sample (a sample at a dose time is
    taken before it)."""
    doses = data.extra.get("doses") if isinstance(data.extra, Mapping) else None
    if not isinstance(doses, Mapping):
        raise ValueError(
            "an ODE model needs each subject's doses in data.extra['doses'] (times_h, "
            "amounts_mg, count), as nonmem.observations gives them"
        )
    if cache.get("doses") is doses and cache.get("last_h") == last_h:
        return cache["regimens"]  # type: ignore[return-value]
    n = np.shape(data.dv)[0]
    times = np.asarray(doses["times_h"], float).reshape(n, -1)
    amounts = np.asarray(doses["amounts_mg"], float).reshape(n, -1)
    count = np.asarray(doses.get("count", (amounts > 0).sum(axis=1)), int)
    regimens = [
        Regimen(times[i, : count[i]], amounts[i, : count[i]])
        if count[i]
        else Regimen([last_h], [1.0], name="no dose")
        for i in range(n)
    ]
    cache.update(doses=doses, last_h=last_h, regimens=regimens)
    return regimens


def _code_key(thing) -> object:
    """What identifies a function in a store key: its bytecode, names and simple
    constants (nested functions' too) and the simple values it closes over; anything
    else by its ``repr``."""
    code = getattr(thing, "__code__", None)
    if code is None:
        return repr(thing)
    simple = (int, float, str, tuple, type(None))

    def parts(c):
        nested = [parts(k) for k in c.co_consts if hasattr(k, "co_code")]
        consts = [repr(k) for k in c.co_consts if isinstance(k, simple)]
        return (c.co_code.hex(), c.co_names, tuple(consts), tuple(nested))

    closure = [
        repr(cell.cell_contents)
        for cell in getattr(thing, "__closure__", None) or ()
        if isinstance(cell.cell_contents, simple)
    ]
    return (parts(code), tuple(closure))


def _solve(matrices, vectors) -> np.ndarray:
    """``matrices^-1 vectors`` for each subject: (N, q, q) and (N, q) to (N, q). A
    singular system (a trial point whose values overflowed) gives NaN for that subject,
    whose step is then rejected, instead of stopping the whole fit."""
    try:
        return np.linalg.solve(matrices, vectors[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        out = np.full(vectors.shape, np.nan)
        for i, (a, b) in enumerate(zip(matrices, vectors, strict=True)):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[i] = np.linalg.solve(a, b)
        return out


def _check_covariates(model: NLMEModel, data: Observations) -> None:
    """A ``ValueError`` naming each covariate the model uses and the data lack, and a
    covariate of a power effect that is not > 0 (naming the subject)."""
    missing = {c: p for p, cs in model.covariates.items() for c in cs if c not in data.covariates}
    for effect in model.effects:
        if effect.covariate not in data.covariates:
            missing.setdefault(effect.covariate, effect.param)
    if missing:
        uses = ", ".join(f"{c!r} (on {p})" for c, p in missing.items())
        raise ValueError(
            f"model {model.name!r} uses covariate(s) {uses} that the data lack; the data "
            f"have {sorted(data.covariates)}"
        )
    for effect in model.effects:
        values = np.asarray(data.covariates[effect.covariate], float)
        bad = np.flatnonzero(values <= 0)
        if effect.form == "power" and bad.size:
            raise ValueError(
                f"covariate effect {effect.name!r} is a power of {effect.covariate}, which "
                f"must be > 0: it is {values[bad[0]]:g} for subject {data.ids[bad[0]]} "
                f"(row {bad[0]})" + (f" and {bad.size - 1} more" if bad.size > 1 else "")
            )


def _coefficient(name: str, value, what: str) -> float:
    """A covariate coefficient's value as a float, or a ``ValueError`` naming it (and
    ``what`` the value is) unless it is one finite number."""
    value = np.asarray(value, float)
    if value.shape != () or not np.isfinite(value):
        raise ValueError(f"the {what} of {name!r} must be one finite number, got {value}")
    return float(value)


def _transformed(model: NLMEModel, name: str, value, what: str) -> float:
    """The transformed value of parameter ``name``, or a ``ValueError`` naming it (and
    ``what`` the value is: a starting or a fixed value) if it is not finite or out of
    its transform's range."""
    value = np.asarray(value, float)
    if value.shape != () or not np.isfinite(value):
        raise ValueError(f"the {what} of {name!r} must be one finite number, got {value}")
    try:
        return float(to_transformed(model.transforms[name], value))
    except ValueError as error:
        raise ValueError(f"the {what} of {name!r}: {error}") from None


class _Problem:
    """The packed outer vector of a model and data, and the FOCE-I objective."""

    def __init__(self, model: NLMEModel, data: Observations, fixed: Mapping[str, float]):
        self.model, self.data = model, data
        coefficients = model.coefficient_names
        unknown = set(fixed) - set(model.params) - set(coefficients)
        if unknown:
            raise ValueError(
                f"cannot fix unknown parameter(s) {sorted(unknown)}; the model's parameters "
                f"are {model.params} and covariate coefficients {coefficients}"
            )
        _check_covariates(model, data)
        self.fixed = {
            k: _transformed(model, k, v, "fixed value")
            for k, v in fixed.items()
            if k in model.params
        }
        self.fixed_coefficients = {
            k: _coefficient(k, v, "fixed value") for k, v in fixed.items() if k in coefficients
        }
        self.fixed_natural = dict(fixed)
        self.free = [p for p in model.params if p not in fixed]
        self.p, self.q = len(self.free), len(model.random)
        # the estimated covariate coefficients (all of them unless some are fixed)
        self.betas = tuple(c for c in coefficients if c not in fixed)
        self.effects_on: dict[str, list[tuple[int, CovariateEffect]]] = {}
        for j, effect in enumerate(model.effects):
            self.effects_on.setdefault(effect.param, []).append((len(model.beta_names) + j, effect))
        self.n_err = len(model.error_terms)
        self.size = self.p + len(self.betas) + self.q + self.n_err
        self.y = np.asarray(data.dv, float)
        self.mask = ~np.isnan(self.y)
        self.out_index = _output_index(model, data, self.mask)
        self.y0 = np.where(self.mask, self.y, 0.0)
        self.eta = np.zeros((data.n_subjects, self.q))
        self.rand_index = [model.params.index(r) for r in model.random]
        #: which subjects' predictions failed at the modes of the last mode search
        self.failed = np.zeros(data.n_subjects, bool)
        #: OFV evaluations (:meth:`ofv`): all, and those that rested on the stand-in
        #: for failed predictions or were not finite
        self.trials = dict.fromkeys(("all", "failed predictions", "not finite"), 0)

    def names(self) -> list[str]:
        return [
            *(f"theta_{p}" for p in self.free),
            *(f"beta_{b}" for b in self.betas),
            *(f"omega_{r}" for r in self.model.random),
            *(f"sigma_{e}" if o is None else f"sigma_{o}_{e}" for o, e in self.model.error_terms),
        ]

    def unpack(self, x):
        x = np.asarray(x, float)
        p, nb, q = self.p, len(self.betas), self.q
        free = dict(zip(self.free, x[:p], strict=True))
        theta = np.array([free.get(name, self.fixed.get(name)) for name in self.model.params])
        beta = x[p : p + nb]
        if self.fixed_coefficients:
            estimated = dict(zip(self.betas, beta, strict=True))
            beta = np.array(
                [
                    estimated.get(name, self.fixed_coefficients.get(name))
                    for name in self.model.coefficient_names
                ]
            )
        omega = np.exp(x[p + nb : p + nb + q])
        if self.model.outputs:
            sigma = self.sigma_per_observation(np.exp(x[p + nb + q :]))
        else:
            sigma = dict(zip(self.model.error, np.exp(x[p + nb + q :]), strict=True))
        return theta, beta, omega, sigma

    def sigma_per_observation(self, values) -> dict[str, np.ndarray]:
        """The error terms of a model of several outputs from their ``values`` (in the
        order of :attr:`NLMEModel.error_terms`): each term's SD at each observation
        (N, K), 0 where its output lacks the term."""
        outputs = self.model.outputs
        by_term: dict[str, np.ndarray] = {}
        for (output, term), value in zip(self.model.error_terms, values, strict=True):
            by_term.setdefault(term, np.zeros(len(outputs)))[outputs.index(output)] = value
        return {term: v[self.out_index] for term, v in by_term.items()}

    def individual(self, theta, beta, eta):
        """Natural-scale parameters (N, R) for random effects ``eta`` (N, R, q)."""
        m, out, k = self.model, {}, 0
        for i, name in enumerate(m.params):
            value = np.full(eta.shape[:2], theta[i])
            for c in m.covariates.get(name, ()):
                value = value + beta[k] * np.asarray(self.data.covariates[c], float)[:, None]
                k += 1
            factor = self.effect_factor(name, beta)
            if factor is not None and m.transforms[name] == "none":
                value = value * factor
            if name in m.random:
                value = value + eta[:, :, m.random.index(name)]
            out[name] = to_natural(m.transforms[name], value)
            if factor is not None and m.transforms[name] == "log":
                out[name] = out[name] * factor
        return out

    def effect_factor(self, name: str, beta) -> np.ndarray | None:
        """The product (N, 1) of the :class:`CovariateEffect` factors on parameter
        ``name`` with coefficients ``beta``, or None where it has none."""
        factor = None
        for j, effect in self.effects_on.get(name, ()):
            values = np.asarray(self.data.covariates[effect.covariate], float)[:, None]
            f = effect.factor(beta[j], values)
            factor = f if factor is None else factor * f
        return factor

    def raw_predict(self, theta, beta, eta) -> np.ndarray:
        """The model's predictions (N, R, K) as it returns them, NaN and inf included."""
        # trial values far out (a line search's) may overflow
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            f = self.model.predict(self.individual(theta, beta, eta), self.data)
            if isinstance(f, Mapping):
                return self.select_outputs(f)
            return np.asarray(f, float)

    def select_outputs(self, f: Mapping) -> np.ndarray:
        """Each observation's prediction (N, R, K) from the predictions of each output
        ``f`` (a mapping of output name to (N, R, K))."""
        outputs = self.model.outputs
        if not outputs:
            raise ValueError(
                f"model {self.model.name!r} predicts a mapping of outputs {sorted(f)} but "
                "has one error model: give its error per output"
            )
        lacking = [o for o in outputs if o not in f]
        if lacking:
            raise ValueError(
                f"model {self.model.name!r}'s predict lacks output(s) {lacking}; it returned "
                f"{sorted(f)}"
            )
        arrays = [np.asarray(f[o], float) for o in outputs]
        out = np.array(np.broadcast_to(arrays[0], np.broadcast_shapes(*(a.shape for a in arrays))))
        for k in range(1, len(outputs)):
            where = (self.out_index == k)[:, None, :]
            out = np.where(where, arrays[k], out)
        return out

    def predict(self, theta, beta, eta):
        """Predictions (N, R, K) with NaN and inf replaced by :data:`FAILED_PREDICTION`
        (for the prediction and simulation functions; the objective notes which subjects
        failed: see :meth:`_linearised` and :meth:`failed_subjects`)."""
        f = self.raw_predict(theta, beta, eta)
        return np.where(np.isfinite(f), f, FAILED_PREDICTION)

    def sd(self, f, sigma):
        add, prop = sigma.get("add", 0.0), sigma.get("prop", 0.0)
        if np.ndim(f) == 3:  # per-observation terms (N, K) against predictions (N, R, K)
            add = add[:, None] if np.ndim(add) == 2 else add
            prop = prop[:, None] if np.ndim(prop) == 2 else prop
        var = add**2 + (prop * f) ** 2
        return np.sqrt(np.maximum(var, 1e-12))

    def subject_terms(self, f, sigma, eta, omega):
        """sum_j (log(2 pi sd**2) + r**2) + eta' Omega^-1 eta for each subject: (N, R)."""
        sd = self.sd(f, sigma)
        r = (self.y0[:, None, :] - f) / sd
        terms = np.where(self.mask[:, None, :], np.log(2 * np.pi * sd**2) + r**2, 0.0)
        return terms.sum(axis=-1) + ((eta / omega) ** 2).sum(axis=-1)

    def _linearised(self, theta, beta, eta, omega, sigma, h: float = 1e-5):
        """Objective terms, Hessian and gradient (of half the objective) at ``eta`` (N, q),
        and which subjects failed: a prediction of one of their observations at ``eta``
        or its finite-difference neighbours is NaN or infinite. The terms of a failed
        subject are computed with :data:`FAILED_PREDICTION` in place of those
        predictions, a stand-in that only guides the search (see
        :meth:`conditional_modes`).

        The gradient includes the residual SD's dependence on the prediction (the
        interaction); the Hessian is the expected (Fisher) information
        ``J' diag(1/sd**2 + 2 (sd'/sd)**2) J + Omega^-1``."""
        steps = np.vstack([np.zeros(self.q), h * np.eye(self.q)])  # (q + 1, q)
        raw = self.raw_predict(theta, beta, eta[:, None, :] + steps[None])
        failed = (~np.isfinite(raw) & self.mask[:, None, :]).any(axis=(1, 2))
        f_all = np.where(np.isfinite(raw), raw, FAILED_PREDICTION)
        f = f_all[:, 0]
        jac = (f_all[:, 1:] - f[:, None]) / h  # (N, q, K)
        g = self.subject_terms(f_all[:, :1], sigma, eta[:, None], omega)[:, 0]
        sd = self.sd(f, sigma)
        sd_slope = sigma.get("prop", 0.0) ** 2 * f / sd  # d sd / d f (per observation)
        r = (self.y0 - f) / sd
        d_half = np.where(self.mask, sd_slope / sd - r * (1.0 + r * sd_slope) / sd, 0.0)
        info = np.where(self.mask, 1.0 / sd**2 + 2.0 * (sd_slope / sd) ** 2, 0.0)
        hess = (jac * info[:, None, :]) @ jac.transpose(0, 2, 1) + np.diag(1.0 / omega**2)[None]
        grad = (jac @ d_half[:, :, None])[:, :, 0] + eta / omega**2
        return g, hess, grad, failed

    def conditional_modes(
        self, x, eta_start, max_iter: int = 100, tol: float = 1e-8, step_limit=None
    ):
        """Each subject's mode of the random effects (Levenberg-Marquardt, all subjects
        at once), its objective terms and Gauss-Newton Hessian; which subjects' predictions
        failed at their modes is left in :attr:`failed` (N,).

        A trial point with failed predictions (NaN or inf) is compared by its terms with
        :data:`FAILED_PREDICTION` in their place, not rejected: a stand-in that lets the
        search pass through such points, as correct models need (chapter 16's PK: far
        line-search points overflow ka and V, and the stand-in carries subjects out of a
        flip-flop mode into the better one; with such points given an infinite objective
        instead, that fit's three starts stopped 210 to 2900 OFV points above its
        optimum, not converged). The outer search counts the points where it was used
        (:meth:`ofv`); at the estimate, failed predictions are an error (see
        :func:`fit_foce`). ``step_limit`` (SDs of eta) limits each step, as models whose
        trial points are costly do by default."""
        theta, beta, omega, sigma = self.unpack(x)
        n, q = self.data.n_subjects, self.q
        eta = np.array(eta_start, float)
        lam = np.full(n, 1e-3)
        active = np.ones(n, bool)
        g, hess, grad, failed = self._linearised(theta, beta, eta, omega, sigma)
        # models whose trial points are costly (ODE) limit each step, in SDs of eta
        limit = step_limit or getattr(self.model.predict, "eta_step_limit", None)
        for _ in range(max_iter):
            diag = np.diagonal(hess, axis1=1, axis2=2)
            damped = hess + lam[:, None, None] * np.eye(q)[None] * diag[:, :, None]
            step = -_solve(damped, grad)
            step[~active] = 0.0
            if limit is not None:
                ratio = np.abs(step / omega).max(axis=1, initial=0.0)
                step = step * (limit / np.maximum(ratio, limit))[:, None]
            trial = eta + step
            g_trial, h_trial, grad_trial, failed_trial = self._linearised(
                theta, beta, trial, omega, sigma
            )
            better = active & (g_trial <= g)
            eta = np.where(better[:, None], trial, eta)
            failed = np.where(better, failed_trial, failed)
            g = np.where(better, g_trial, g)
            hess = np.where(better[:, None, None], h_trial, hess)
            grad = np.where(better[:, None], grad_trial, grad)
            lam = np.where(better, np.maximum(lam / 10, 1e-12), lam * 10)
            converged = (better & (np.abs(step).max(axis=1) < tol)) | (lam > 1e10)
            active &= ~converged
            if not active.any():
                break
        self.failed = failed
        return eta, g, hess, omega

    def failed_subjects(self, x) -> np.ndarray:
        """Which subjects (N,) have a failed prediction (NaN or inf) of an observation at
        their modes ``self.eta`` (or the modes' finite-difference neighbours) at ``x``."""
        theta, beta, omega, sigma = self.unpack(x)
        return self._linearised(theta, beta, self.eta, omega, sigma)[3]

    def ofv(self, x, eta_start=None) -> float:
        """The OFV at the packed vector ``x``; :data:`NOT_FINITE_OFV` (a step BFGS
        rejects) where it is not finite. Each call whose subjects' modes have failed
        predictions (its OFV rests on the stand-in :data:`FAILED_PREDICTION`) is counted
        in ``trials["failed predictions"]``, each not finite in
        ``trials["not finite"]`` (and only there), out of ``trials["all"]``."""
        start = self.eta if eta_start is None else eta_start
        eta, g, hess, omega = self.conditional_modes(x, start)
        _, logdet_h = np.linalg.slogdet(hess)
        value = float(np.sum(g + 2 * np.log(omega).sum() + logdet_h))
        self.trials["all"] += 1
        if not np.isfinite(value):  # counted once, as not finite, whatever its predictions
            self.trials["not finite"] += 1
            return NOT_FINITE_OFV
        if self.failed.any():
            self.trials["failed predictions"] += 1
        return value


@dataclass(frozen=True)
class CovarianceStep:
    """NONMEM's covariance step: the R and S matrices at the estimate, the covariance
    matrix of the estimates computed from them, and whether that worked.

    All matrices are on the estimation scale (log typical values and SDs, logit
    fractions, covariate coefficients as they are), in the order of ``names``, and in
    OFV units (-2 log-likelihood), as NONMEM defines them.

    Attributes
    ----------
    names : tuple of str
        The estimated parameters, in order (as :attr:`NLMEFit.estimates`).
    kind : str
        ``"sandwich"`` or ``"r"`` (:data:`COVARIANCE_KINDS`).
    r_matrix : numpy.ndarray
        R, the Hessian of the OFV (central differences, step 0.01), (n, n).
    s_matrix : numpy.ndarray
        S, the sum over subjects of the outer products of the gradients of each subject's
        contribution to the OFV (its cross-product gradient), (n, n).
    covariance : numpy.ndarray
        For ``kind`` ``"sandwich"`` ``R^-1 S R^-1`` (NONMEM's default), for ``"r"``
        ``2 R^-1`` (``MATRIX=R``: the factor 2 because R is the Hessian of -2
        log-likelihood, twice the observed information). NaN where it could not be
        computed, and in the rows and columns of ``excluded``.
    status : str
        ``"ok"``; ``"R matrix singular"`` or ``"R matrix indefinite"`` (not positive
        definite: a saddle point or a flat direction, the estimate is not a well-defined
        minimum; see :data:`SINGULAR_TOLERANCE`); ``"S matrix singular"`` (for the sandwich
        only: fewer informative subjects than parameters, or a parameter no subject's data
        depend on); ``"failed"`` (a matrix not finite). Only ``"ok"`` gives standard
        errors; nothing is inverted past a failed check (no pseudo-inverse). (A fit with
        ``standard_errors=False`` has no covariance step: :attr:`NLMEFit.covariance_step`
        is None.)
    message : str
        Says which parameters are involved.
    excluded : tuple of str
        Parameters at a bound of their scale (:attr:`NLMEFit.at_bound`), whose curvature
        there is noise; they are left out, as if fixed at their estimate, and their SE is
        NaN.
    eigenvalues : numpy.ndarray
        The eigenvalues of the correlation matrix of the estimates, ascending, as NONMEM
        prints them with ``PRINT=E`` (empty unless ``"ok"``).
    condition_number : float
        The ratio of the largest to the smallest of ``eigenvalues``; above about 1000 the
        estimates are strongly correlated (the model is close to over-parameterised). NaN
        unless ``"ok"``.
    """

    names: tuple[str, ...]
    kind: str
    r_matrix: np.ndarray
    s_matrix: np.ndarray
    covariance: np.ndarray
    status: str
    message: str = ""
    excluded: tuple[str, ...] = ()
    eigenvalues: np.ndarray = field(default_factory=lambda: np.array([]))
    condition_number: float = np.nan

    @property
    def ok(self) -> bool:
        """Whether the covariance matrix was computed."""
        return self.status == "ok"

    @property
    def se(self) -> np.ndarray:
        """Standard errors on the estimation scale (NaN where not computed)."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.covariance))

    def correlation(self) -> pd.DataFrame:
        """The correlation matrix of the estimates, labelled by parameter.

        Returns
        -------
        pandas.DataFrame
            (n, n), indexed and labelled by ``names``; NaN where the covariance is.
        """
        se = self.se
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = self.covariance / np.outer(se, se)
        return pd.DataFrame(corr, index=list(self.names), columns=list(self.names))


def covariance_step(
    r_matrix, s_matrix, names: Sequence[str], kind: str = "sandwich", exclude=()
) -> CovarianceStep:
    """The covariance matrix of the estimates from NONMEM's R and S matrices, checked.

    Parameters
    ----------
    r_matrix, s_matrix : array_like
        R (Hessian of the OFV) and S (sum of the outer products of the subjects' OFV
        gradients), (n, n), on the estimation scale, OFV units.
    names : sequence of str
        The n parameters, in order.
    kind : str
        ``"sandwich"`` (``R^-1 S R^-1``, default) or ``"r"`` (``2 R^-1``).
    exclude : sequence of str
        Parameters to leave out (at a bound), as if fixed.

    Returns
    -------
    CovarianceStep
        With ``status`` ``"ok"`` only where R (and for the sandwich S) is positive
        definite; else the covariance is NaN and the status and message say why.

    Examples
    --------
    Where the model is right, S is about twice R (both in OFV units: R is twice the
    information, S four times the scores' cross-product, whose expectation is the
    information), and the sandwich is ``2 R^-1``:

    >>> r = np.array([[200.0, 20.0], [20.0, 50.0]])
    >>> by_r = covariance_step(r, 2 * r, ["a", "b"], kind="r")
    >>> sandwich = covariance_step(r, 2 * r, ["a", "b"])
    >>> by_r.status, by_r.se.round(4).tolist(), sandwich.se.round(4).tolist()
    ('ok', [0.1021, 0.2041], [0.1021, 0.2041])
    >>> round(by_r.condition_number, 3)  # correlation -0.2: eigenvalues 0.8 and 1.2
    1.5

    An R whose second parameter changes nothing, and one at a saddle point:

    >>> covariance_step(np.diag([200.0, 0.0]), r, ["a", "b"]).status
    'R matrix singular'
    >>> covariance_step(np.array([[1.0, 2.0], [2.0, 1.0]]), r, ["a", "b"]).message
    'R matrix indefinite: the OFV curves down along a direction of a, b (smallest \
eigenvalue of its correlation form -1): not a minimum; no standard errors'
    """
    if kind not in COVARIANCE_KINDS:
        raise ValueError(f"covariance must be one of {COVARIANCE_KINDS}, got {kind!r}")
    names = tuple(names)
    n = len(names)
    r = np.asarray(r_matrix, float).reshape(n, n)
    s = np.asarray(s_matrix, float).reshape(n, n)
    excluded = tuple(name for name in names if name in set(exclude))
    keep = np.array([name not in excluded for name in names], bool)
    kept = [name for name in names if name not in excluded]
    r_k = ((r + r.T) / 2)[np.ix_(keep, keep)]
    s_k = ((s + s.T) / 2)[np.ix_(keep, keep)]
    covariance = np.full((n, n), np.nan)
    if not keep.any():
        status, message = "failed", "every parameter is at a bound: nothing to compute"
    elif not (np.isfinite(r_k).all() and (kind == "r" or np.isfinite(s_k).all())):
        status, message = (
            "failed",
            (
                "the R or S matrix is not finite (an OFV that is not finite, or predictions that "
                "fail, at the covariance step's points): no standard errors"
            ),
        )
    else:
        status, message = _definiteness(r_k, kept, "R")
        if status == "ok" and kind == "sandwich":
            status, message = _definiteness(s_k, kept, "S")
    eigenvalues, condition = np.array([]), np.nan
    if status == "ok":
        r_inv = np.linalg.inv(r_k)
        cov_k = 2.0 * r_inv if kind == "r" else r_inv @ s_k @ r_inv
        cov_k = (cov_k + cov_k.T) / 2
        sd = np.sqrt(np.diag(cov_k))
        eigenvalues = np.linalg.eigvalsh(cov_k / np.outer(sd, sd))
        condition = float(eigenvalues[-1] / eigenvalues[0])
        covariance[np.ix_(keep, keep)] = cov_k
        formula = "R^-1 S R^-1" if kind == "sandwich" else "2 R^-1"
        message = f"{formula}, condition number {condition:.3g}"
    if excluded:
        message += (
            f"; {', '.join(excluded)} at a bound, left out (as if fixed at the estimate; SE NaN)"
        )
    return CovarianceStep(
        names, kind, r, s, covariance, status, message, excluded, eigenvalues, condition
    )


def _definiteness(matrix: np.ndarray, names: Sequence[str], label: str) -> tuple[str, str]:
    """``("ok", "")`` for a positive definite ``matrix`` (R or S, its ``label``), else the
    status ``"<label> matrix singular"`` or ``"... indefinite"`` and a message naming the
    parameters of its flattest direction (by its correlation form's eigenvalues)."""
    diagonal = np.diag(matrix)
    flat = [n for n, d in zip(names, diagonal, strict=True) if not d > 0]
    if flat:
        kind = "indefinite" if (diagonal < 0).any() else "singular"
        curve = "down" if kind == "indefinite" else "not at all"
        return (
            f"{label} matrix {kind}",
            f"{label} matrix {kind}: the OFV curves {curve} along {', '.join(flat)}"
            + ("" if label == "R" else " (no subject's data depend on it)")
            + "; no standard errors",
        )
    scale = np.sqrt(diagonal)
    values, vectors = np.linalg.eigh(matrix / np.outer(scale, scale))
    smallest = float(values[0])
    if smallest >= SINGULAR_TOLERANCE:
        return "ok", ""
    weights = np.abs(vectors[:, 0])
    involved = ", ".join(name for name, w in zip(names, weights, strict=True) if w > 0.3)
    if label == "R" and smallest < -SINGULAR_TOLERANCE:
        return (
            "R matrix indefinite",
            f"R matrix indefinite: the OFV curves down along a direction of {involved} "
            f"(smallest eigenvalue of its correlation form {smallest:.3g}): not a minimum;"
            " no standard errors",
        )
    return (
        f"{label} matrix singular",
        f"{label} matrix singular: {involved} are not separately determined (smallest "
        f"eigenvalue of its correlation form {smallest:.3g}); no standard errors",
    )


@dataclass
class NLMEFit:
    """The result of :func:`fit_foce`.

    Attributes
    ----------
    model : NLMEModel
        The model fitted.
    ofv : float
        The OFV at the estimate: -2 log-likelihood (Laplace approximation), including
        ``n_observations * log(2 pi)``.
    x : numpy.ndarray
        The estimate, packed on the estimation scale (the order of ``estimates``).
    estimates : pandas.DataFrame
        A table of every estimated quantity (fixed effects as typical values on their
        natural scale, covariate effects, omega as SDs of eta, residual error), with
        standard errors on the estimation scale and the relative standard error (%), from
        the covariance matrix of :attr:`covariance_step`; :meth:`table` is the table to
        report.
    etas : numpy.ndarray
        Each subject's conditional mode, (N, q).
    individual : dict of str to numpy.ndarray
        Each subject's parameters (N,) on the natural scale.
    n_iterations : int
        BFGS iterations, all runs together.
    seconds : float
        The wall time of the estimation (as stored, for a loaded fit).
    converged : bool
        The largest component of the OFV's gradient at the estimate (``gradient``) was
        below :data:`CONVERGED_GRADIENT`.
    fixed : dict of str to float
        The parameters (natural scale) and coefficients held fixed.
    convergence : str
        Why the estimation stopped, in words: "gradient below tolerance", "stalled: ...",
        "iteration limit ..."; it names the parameters at a bound, and says how many trial
        points had failed predictions when there were any.
    ofv_nonmem : float
        The OFV without ``n_observations * log(2 pi)``, comparable with NONMEM's objective
        function value.
    covariance_step : CovarianceStep or None
        The covariance step (:class:`CovarianceStep`: R and S matrices, status, condition
        number), None where standard errors were not requested.
    at_bound : tuple of str
        The parameters at a bound of their scale (a fraction within 1e-3 of 0 or 1,
        :data:`LOGIT_BOUND`; an omega below :data:`OMEGA_BOUND`), where a small gradient
        says nothing about the data determining them: a fit with any is not plainly
        converged.
    gradient : float
        The largest component of the OFV's gradient at the estimate (OFV units per unit of
        the estimation scale).
    failed_trials : int or None
        How many trial points of the search (OFV evaluations of BFGS, before the standard
        errors) had failed predictions (NaN or inf) for a subject, whose OFV then rested on
        the stand-in :data:`FAILED_PREDICTION`, or an OFV that was not finite (rejected);
        0 for a search that met none, None for a fit stored before the count was.
    """

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
    convergence: str = ""
    ofv_nonmem: float = np.nan
    covariance_step: CovarianceStep | None = None
    at_bound: tuple[str, ...] = ()
    gradient: float = np.nan
    failed_trials: int | None = None

    def typical(self, name: str) -> float:
        """A typical value or covariate coefficient of the fit, estimated or fixed.

        Parameters
        ----------
        name : str
            A parameter, or a covariate coefficient ``"param~covariate"`` (e.g. the
            exponent of a power effect).

        Returns
        -------
        float
            The typical value on the natural scale (the parameter's unit), or the
            coefficient's value.

        Raises
        ------
        KeyError
            A name the model lacks.

        Examples
        --------
        See :func:`fit_foce`; with a covariate effect:

        >>> rng = np.random.default_rng(1)
        >>> wt = rng.uniform(50, 100, 30)
        >>> t = np.tile([1.0, 2, 4, 8], (30, 1))
        >>> k = 0.2 * (wt[:, None] / 70) ** 0.75 * np.exp(0.1 * rng.normal(size=(30, 1)))
        >>> y = 10 * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
        >>> data = Observations(np.arange(30), t, y, {"WT": wt})
        >>> model = NLMEModel("decay", ("C0", "k"), {"C0": "log", "k": "log"}, ("k",),
        ...                   lambda p, d: p["C0"][..., None]
        ...                   * np.exp(-p["k"][..., None] * d.times_h[:, None]),
        ...                   effects=[CovariateEffect("k", "WT", "power", reference=70.0)])
        >>> fit = fit_foce(model, data, {"C0": 5.0, "k": 0.5}, sigma={"prop": 0.05},
        ...                fixed={"k~WT": 0.75}, standard_errors=False)
        >>> round(fit.typical("k"), 2), fit.typical("k~WT")
        (0.2, 0.75)
        """
        if name in self.fixed:
            return self.fixed[name]
        if name in self.model.coefficient_names:
            return float(self.estimates.loc[f"beta_{name}", "estimate"])
        return float(self.estimates.loc[f"theta_{name}", "estimate"])

    def variances(self) -> pd.DataFrame:
        """The between-subject and residual variances, as NONMEM reports them (the diagonals
        of ``$OMEGA`` and ``$SIGMA``).

        Returns
        -------
        pandas.DataFrame
            One row for each omega and sigma, with its ``SD`` (as in :attr:`estimates`), its
            ``variance`` (omega**2 in the squared unit of eta, sigma**2 in the DV's squared
            unit for ``add``, dimensionless for ``prop``) and the variance's standard error by
            the delta method, ``SE (variance)`` = ``2 variance SE(log SD)``.
        """
        rows = [n for n in self.estimates.index if n.startswith(("omega_", "sigma_"))]
        table = self.estimates.loc[rows]
        sd = table["estimate"]
        variance = sd**2
        return pd.DataFrame(
            {
                "SD": sd,
                "variance": variance,
                "SE (variance)": 2.0 * variance * table["SE (estimation scale)"],
            }
        )

    def covariance_as(self, kind: str) -> CovarianceStep:
        """The covariance step as ``kind`` from the fit's own R and S matrices, without
        refitting.

        Parameters
        ----------
        kind : str
            ``"sandwich"`` (``R^-1 S R^-1``) or ``"r"`` (``2 R^-1``); :data:`COVARIANCE_KINDS`.

        Returns
        -------
        CovarianceStep
            With the fit's parameters at a bound excluded, as in the fit's own.

        Raises
        ------
        ValueError
            A fit made with ``standard_errors=False``, or an unknown ``kind``.
        """
        step = self.covariance_step
        if step is None:
            raise ValueError("no covariance step: the fit was made with standard_errors=False")
        return covariance_step(step.r_matrix, step.s_matrix, step.names, kind, step.excluded)

    def table(
        self, variances: bool = False, level: float = 0.95, covariance: str | None = None
    ) -> pd.DataFrame:
        """The estimates as a pharmacometrician reports them: for each parameter its
        estimate, standard error, relative standard error, confidence interval and, for
        the random effects, their shrinkage.

        Parameters
        ----------
        variances : bool
            Report omega and sigma as variances (NONMEM's ``$OMEGA`` and ``$SIGMA``)
            instead of SDs (this package's scale).
        level : float
            The confidence level of the intervals (default 0.95).
        covariance : str, optional
            ``"sandwich"`` or ``"r"`` (:data:`COVARIANCE_KINDS`): the standard errors
            from that covariance matrix (the same R and S, no refit); default the
            fit's own (:attr:`covariance_step`).

        Returns
        -------
        pandas.DataFrame
            One row per parameter, indexed as :attr:`estimates` (fixed parameters
            too, marked ``fixed``), with columns ``scale`` (what the estimate is:
            typical value, covariate coefficient, SD or variance), ``unit``,
            ``estimate`` (natural scale), ``SE`` (natural scale, by the delta method from
            the SE on the estimation scale), ``RSE %`` (``100 SE / |estimate|``: for a
            log-transformed parameter its SE on the log scale; for a variance twice the
            RSE of its SD), the confidence interval (``CI low``, ``CI high``: computed
            on the estimation scale and transformed back, so it is asymmetric and
            stays in range), ``shrinkage %`` (of each eta, SD-based as NONMEM's
            ETASHRINKSD: ``100 (1 - SD(modes) / omega)``, the SD over the subjects'
            conditional modes) and ``note`` (``fixed``, ``at a bound``). SE, RSE and
            CI are NaN where the covariance step failed (:attr:`covariance_step`) or
            was not requested, and for a parameter at a bound.

        Notes
        -----
        Comparing with NONMEM: NONMEM's OFV leaves out ``n_observations * log(2 pi)``
        (compare :attr:`ofv_nonmem`), and its ``$OMEGA`` and ``$SIGMA`` are variances
        (``variances=True``), with standard errors of the variances; its default
        covariance matrix is the sandwich ``R^-1 S R^-1`` (``$COVARIANCE``), ``"r"``
        its ``MATRIX=R``. NONMEM estimates a THETA on the scale it is coded on: where
        it is coded as ``TVCL = THETA(1)`` its SE is this table's natural-scale ``SE``
        (delta method), but its confidence interval is symmetric.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> t = np.tile([0.5, 1, 2, 4, 8, 12.0], (30, 1))
        >>> k = 0.2 * np.exp(0.3 * rng.normal(size=(30, 1)))
        >>> y = 10 * np.exp(-k * t) * (1 + 0.05 * rng.normal(size=t.shape))
        >>> decay = NLMEModel("decay", ("C0", "k"), {"C0": "log", "k": "log"}, ("k",),
        ...                   lambda p, d: p["C0"][..., None] * np.exp(-p["k"][..., None]
        ...                                                            * d.times_h[:, None]),
        ...                   units={"C0": "mg/L", "k": "1/h"})
        >>> fit = fit_foce(decay, Observations(np.arange(30), t, y), {"C0": 5.0, "k": 0.5})
        >>> table = fit.table(variances=True)
        >>> table.columns.tolist()
        ['scale', 'unit', 'estimate', 'SE', 'RSE %', '95% CI low', '95% CI high', \
'shrinkage %', 'note']
        >>> sd, var = fit.table().loc["omega_k"], table.loc["omega_k"]
        >>> var["scale"], round(float(var["estimate"]), 6), round(float(sd["estimate"]) ** 2, 6)
        ('variance (omega^2)', 0.057999, 0.057999)
        >>> float(round(var["RSE %"] / sd["RSE %"], 6))  # a variance's RSE is twice its SD's
        2.0
        >>> [float(round(var[c], 3)) for c in ("95% CI low", "95% CI high", "shrinkage %")]
        [0.033, 0.1, -1.377]
        """
        step = self.covariance_step
        if covariance is not None:
            step = self.covariance_as(covariance)
        names = list(self.estimates.index)
        se_all = step.se if step is not None else np.full(len(names), np.nan)
        z = float(stats.norm.ppf(0.5 + level / 2))
        rows = {}
        for name, value, se in zip(names, self.x, se_all, strict=True):
            rows[name] = self._table_row(name, float(value), float(se), z, variances)
        for name, value in self.fixed.items():
            label = f"beta_{name}" if name in self.model.coefficient_names else f"theta_{name}"
            transform = self.model.transforms.get(name, "none")
            estimate = float(to_transformed(transform, value))
            row = self._table_row(label, estimate, np.nan, z, variances)
            rows[label] = {**row, "note": "fixed"}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "parameter"
        pct = f"{100 * level:g}%"
        return table.rename(columns={"CI low": f"{pct} CI low", "CI high": f"{pct} CI high"})

    def _table_row(self, name: str, x: float, se: float, z: float, variances: bool) -> dict:
        """One row of :meth:`table`: ``x`` and ``se`` on the estimation scale."""
        kind, _, what = name.partition("_")
        shrinkage = np.nan
        if kind == "theta":
            transform = self.model.transforms[what]
            scale, unit = "typical value", self.model.units.get(what, "")
        elif kind == "beta":
            transform, scale, unit = "none", "covariate coefficient", "-"
        else:
            transform = "log"
            term = what.rpartition("_")[2] if kind == "sigma" else ""
            unit = "-" if kind == "omega" or term == "prop" else "DV unit"
            scale = "SD of eta" if kind == "omega" else "residual SD"
            if kind == "omega":
                j = self.model.random.index(what)
                modes_sd = np.std(self.etas[:, j], ddof=1) if len(self.etas) > 1 else np.nan
                shrinkage = 100.0 * (1.0 - modes_sd / np.exp(x))
            if variances:  # the variance's log is twice the SD's
                x, se = 2.0 * x, 2.0 * se
                scale = "variance (omega^2)" if kind == "omega" else "variance (sigma^2)"
                unit = unit if unit == "-" else "DV unit^2"
        estimate = float(to_natural(transform, x))
        if transform == "log":
            se_natural = estimate * se
        elif transform == "logit":
            se_natural = estimate * (1.0 - estimate) * se
        else:
            se_natural = se
        low, high = (float(to_natural(transform, x + sign * z * se)) for sign in (-1, 1))
        at_bound = name in self.at_bound
        if at_bound:
            se_natural = low = high = np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            rse = 100.0 * se_natural / abs(estimate)
        return {
            "scale": scale,
            "unit": unit,
            "estimate": estimate,
            "SE": se_natural,
            "RSE %": rse,
            "CI low": low,
            "CI high": high,
            "shrinkage %": shrinkage,
            "note": "at a bound" if at_bound else "",
        }


def _r_and_s(subject_ofv, x, step: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """NONMEM's R and S matrices by central differences: R the Hessian of the OFV (the
    sum of ``subject_ofv(x)``, each subject's contribution, (N,)), S the sum over
    subjects of the outer products of their contributions' gradients. The step (1% on
    the log scale) is wide on purpose: the OFV carries noise of about 1e-3 from its
    inner optimisations, which a step of 1e-3 would turn into curvature errors of the
    order of the curvature itself. The gradients come from the evaluations R's diagonal
    needs, so S costs nothing more."""
    x = np.asarray(x, float)
    n = x.size
    e = np.eye(n) * step
    f0 = np.asarray(subject_ofv(x), float)
    plus = np.array([subject_ofv(x + e[i]) for i in range(n)], float).reshape(n, -1)
    minus = np.array([subject_ofv(x - e[i]) for i in range(n)], float).reshape(n, -1)
    total = f0.sum()
    h = np.zeros((n, n))
    for i in range(n):
        h[i, i] = (plus[i].sum() - 2 * total + minus[i].sum()) / step**2
        for j in range(i):
            v = (
                np.sum(subject_ofv(x + e[i] + e[j]))
                - np.sum(subject_ofv(x + e[i] - e[j]))
                - np.sum(subject_ofv(x - e[i] + e[j]))
                + np.sum(subject_ofv(x - e[i] - e[j]))
            ) / (4 * step**2)
            h[i, j] = h[j, i] = v
    gradients = (plus - minus).T / (2 * step)  # (N, n)
    return h, gradients.T @ gradients


def _gradient(fun, x, step=GRADIENT_STEP) -> np.ndarray:
    """The gradient of a scalar function from central differences of ``step`` (a number,
    or one per component) and ``step / 2``, extrapolated (Richardson: error of order
    ``step**4``; see :data:`GRADIENT_STEP`)."""
    x = np.asarray(x, float)

    def central(h):
        h = np.broadcast_to(np.asarray(h, float), x.shape)
        e = np.diag(h)
        return np.array([(fun(x + e[i]) - fun(x - e[i])) / (2 * h[i]) for i in range(x.size)])

    return (4 * central(np.asarray(step) / 2) - central(step)) / 3


def _gradient_steps(problem: _Problem, x) -> np.ndarray:
    """The steps of :func:`_gradient` at ``x``, one per component: :data:`GRADIENT_STEP`
    on the estimation scale, and for a covariate coefficient that step divided by how
    much the coefficient moves its parameter's log across subjects (the root mean square
    of d log p / d beta, e.g. a linear effect of age in years: about the SD of age), so
    each step moves individual parameters by about 1% (a step of 0.01 on the coefficient
    of age itself would move them by 10-20%, and the differences would measure the
    OFV's curvature, not its slope). The convergence gradient of such a coefficient is
    then expressed per unit of that scale (its gradient times ``step / GRADIENT_STEP``),
    so that :data:`CONVERGED_GRADIENT` weighs the OFV's noise alike in every component."""
    x = np.asarray(x, float)
    steps = np.full(x.size, GRADIENT_STEP)
    names = problem.names()
    eta = np.zeros((problem.data.n_subjects, 1, problem.q))
    for i, name in enumerate(names):
        if not name.startswith("beta_"):
            continue
        h = 1e-6
        logs = []
        for sign in (1.0, -1.0):
            z = x.copy()
            z[i] += sign * h
            theta, beta, _, _ = problem.unpack(z)
            with np.errstate(all="ignore"):
                p = problem.individual(theta, beta, eta)
            logs.append(np.stack([np.log(np.abs(v[:, 0])) for v in p.values()]))
        slope = (logs[0] - logs[1]) / (2 * h)
        rms = float(np.sqrt(np.nanmean(np.nansum(slope**2, axis=0))))
        if np.isfinite(rms) and rms > 1.0:
            steps[i] = GRADIENT_STEP / rms
    return steps


def _hessian(fun, x, step: float = 1e-2) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function (R of :func:`_r_and_s`)."""
    return _r_and_s(lambda z: np.atleast_1d(fun(z)), x, step)[0]


def _subject_ofv(problem: _Problem, x) -> np.ndarray:
    """Each subject's contribution (N,) to the OFV at ``x`` (they sum to
    :meth:`_Problem.ofv` where that is finite), its modes searched from
    ``problem.eta``; NaN where not finite or where its predictions failed (the covariance step
    then fails)."""
    _, g, hess, omega = problem.conditional_modes(x, problem.eta)
    _, logdet_h = np.linalg.slogdet(hess)
    terms = g + 2 * np.log(omega).sum() + logdet_h
    # a subject whose predictions failed on the way to its mode has an OFV resting on the
    # stand-in value, not on the model: NaN, so the covariance step fails and says so
    return np.where(np.isfinite(terms) & ~problem.failed, terms, np.nan)


def start_vector(
    model: NLMEModel,
    typical: Mapping[str, float],
    omega_sd: Mapping[str, float] | float = 0.5,
    sigma: Mapping[str, float] | None = None,
    fixed: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The packed starting point of a fit.

    Parameters
    ----------
    model : NLMEModel
        The model.
    typical : mapping
        Typical values on the natural scale (each parameter's unit) of every parameter
        not fixed; covariate coefficients start at the value given under their name
        (``"CL~WT"``), else 0 (no effect).
    omega_sd : float or mapping
        SDs of eta (transformed scale), one number for all or one for each random
        effect.
    sigma : mapping, optional
        Residual error SDs (``add`` in the DV's unit, ``prop`` a fraction), default
        0.1 each; for a model of several outputs a mapping of output name to such a
        mapping.
    fixed : mapping, optional
        Parameters and coefficients held fixed (left out of the vector).

    Returns
    -------
    numpy.ndarray
        Free typical values (transformed scale), free covariate coefficients, log
        omega, log sigma, in that order (:meth:`_Problem.names`).

    Raises
    ------
    ValueError
        Naming a typical value that is missing, not finite or out of its transform's
        range, a coefficient the model lacks or whose start is not finite, and an SD
        that is missing, not finite and > 0, or given for a random effect, error term
        or output the model lacks.

    Examples
    --------
    >>> model = NLMEModel("decay", ("C0", "k"), {"C0": "log", "k": "log"}, ("k",),
    ...                   lambda p, d: p["C0"], effects=[CovariateEffect("k", "WT", "power", 70.0)])
    >>> start_vector(model, {"C0": 10.0, "k": 0.2, "k~WT": 0.75}, omega_sd=0.3).round(3)
    array([ 2.303, -1.609,  0.75 , -1.204, -2.303])
    """
    fixed = fixed or {}
    free = [p for p in model.params if p not in fixed]
    missing = [p for p in free if p not in typical]
    if missing:
        raise ValueError(f"starting values missing for {missing}")
    theta = [_transformed(model, p, typical[p], "starting value") for p in free]
    unknown = [k for k in typical if "~" in k and k not in model.coefficient_names]
    if unknown:
        raise ValueError(
            f"starting values for unknown covariate coefficient(s) {unknown}; the model's "
            f"are {model.coefficient_names}"
        )
    coefficients = [
        _coefficient(c, typical.get(c, 0.0), "starting value")
        for c in model.coefficient_names
        if c not in fixed
    ]
    if not isinstance(omega_sd, Mapping):
        omega_sd = dict.fromkeys(model.random, omega_sd)
    if model.outputs:
        sigma_sds = _start_sigma_per_output(model, sigma)
    else:
        sigma = sigma or dict.fromkeys(model.error, 0.1)
        sigma_sds = _start_sds("sigma", sigma, model.error, "error terms")
    return np.array(
        [
            *theta,
            *coefficients,
            *np.log(_start_sds("omega_sd", omega_sd, model.random, "random effects")),
            *np.log(sigma_sds),
        ]
    )


def _start_sigma_per_output(model: NLMEModel, sigma) -> list[float]:
    """Starting SDs of the error terms of a model of several outputs (in the order of
    :attr:`NLMEModel.error_terms`) from ``sigma``, a mapping of output name to a mapping
    of term to SD (None: 0.1 each), or a ``ValueError`` naming what is missing,
    unknown or not a finite SD > 0."""
    outputs = model.outputs
    if sigma is None:
        sigma = {o: dict.fromkeys(model.error[o], 0.1) for o in outputs}
    missing = [o for o in outputs if o not in sigma]
    unknown = [o for o in sigma if o not in outputs]
    if missing or unknown or not all(isinstance(v, Mapping) for v in sigma.values()):
        raise ValueError(
            f"sigma must map each of the model's outputs {outputs} to the SDs of its error "
            f"terms (e.g. {{{outputs[0]!r}: {{'prop': 0.1}}}}): missing {missing}, "
            f"unknown {unknown}"
        )
    values = []
    for o in outputs:
        values += _start_sds(f"sigma[{o!r}]", sigma[o], model.error[o], f"error terms of {o!r}")
    return values


def _output_index(model: NLMEModel, data: Observations, mask) -> np.ndarray:
    """Each entry's output (N, K) int: the data's tag wherever it is a whole number >= 0,
    observed or not (a design of several outputs, all NaN, predicts each entry as its
    own output), else 0; a ``ValueError`` where a tag does not fit the model's outputs."""
    n_outputs = max(len(model.outputs), 1)
    if data.output is None:
        if n_outputs > 1:
            raise ValueError(
                f"model {model.name!r} fits {n_outputs} outputs {model.outputs}: the data "
                "need `output` (N, K), each observation's output 0, 1, ... in that order "
                "(nonmem.observations with dv_cmt=(...) or dvid=(...) gives it)"
            )
        return np.zeros(mask.shape, int)
    given = np.asarray(data.output, float)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(given) & (given >= 0) & (given == np.round(given))
    tags = np.where(valid, given, 0.0).astype(int)
    beyond = valid & (tags >= n_outputs)
    if beyond.any():
        what = f"{n_outputs} outputs {model.outputs}" if model.outputs else "one output"
        rows = np.flatnonzero(beyond.any(axis=1))
        raise ValueError(
            f"entries tagged output(s) {sorted(set(tags[beyond].tolist()))} but model "
            f"{model.name!r} has {what} (numbered from 0): subject(s) "
            f"{data.ids[rows[:5]].tolist()}{' ...' if rows.size > 5 else ''}"
        )
    return tags


def _start_sds(what: str, given: Mapping, names: Sequence[str], kind: str) -> list[float]:
    """Starting SDs for ``names`` from the mapping ``given`` (argument ``what``), or a
    ``ValueError`` naming a key that is missing or unknown, or a value that is not a
    finite number > 0."""
    missing = [n for n in names if n not in given]
    unknown = [k for k in given if k not in names]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if unknown:
            problems.append(f"unknown {unknown}")
        raise ValueError(
            f"{what} must give one SD for each of the model's {kind} {tuple(names)}: "
            + "; ".join(problems)
        )
    values = []
    for n in names:
        try:
            value = float(given[n])
        except (TypeError, ValueError):
            value = np.nan
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{what}[{n!r}] must be a finite SD > 0, got {given[n]!r}")
        values.append(value)
    return values


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
    covariance: str = "sandwich",
) -> NLMEFit:
    """Estimate ``model`` from ``data`` by FOCE-I.

    Parameters
    ----------
    model : NLMEModel
        The population model.
    data : Observations
        The observations (several outputs tagged by :attr:`Observations.output` where
        the model gives its error per output).
    typical : mapping
        Starting typical values on the natural scale (each parameter's unit), and
        optionally starting values of covariate coefficients by name (``"CL~WT"``,
        default 0); see :func:`start_vector`.
    omega_sd : float or mapping
        Starting SDs of the random effects (on the transformed scale), one for all or
        one each.
    sigma : mapping, optional
        Starting residual error SDs (``add`` in the DV's unit, ``prop`` a fraction),
        default 0.1 each; per output for a model of several outputs, e.g.
        ``{"conc": {"prop": 0.1}, "pd": {"add": 2.0}}``.
    standard_errors : bool
        Run the covariance step (:class:`CovarianceStep`): NONMEM's R matrix (the
        finite-difference Hessian of the OFV) and S matrix (the sum over subjects of
        the outer products of their OFV gradients), and from them the standard errors.
    max_iter : int
        BFGS iterations a run.
    fixed : mapping, optional
        Parameters (natural scale) or covariate coefficients held at a value instead of
        estimated.
    restarts : int
        BFGS runs that stall before the gradient test (their Hessian estimate gone
        stale) are restarted from where they ended, up to this many times.
    ofv_tol : float
        Stop when three BFGS iterations in a row lower the OFV by less than this in all
        (the estimates then move in digits no inference reads; NONMEM's default stops
        on significant digits of the estimates, to the same effect).
    cache_dir : str or pathlib.Path, optional
        A folder where the fit is stored under a key of the model, data, starting
        values and settings, and loaded from when asked again (``"default"``: the
        ``fits`` folder of :func:`pkpd_lib.files.default_cache_dir`; None: always
        estimate). A loaded fit is the stored one to the last bit, so everything
        computed from it reproduces exactly. With ``$PKPD_CACHE_MISS=error`` a fit
        missing from the default store raises :class:`~pkpd_lib.files.StoreMissError`.
        The key holds the model's name, structure and the bytecode of its ``predict``
        (not of the functions that calls, except those of an :func:`ode_predict`):
        after changing those, clear the store or bump :data:`FIT_FORMAT`. The store
        holds the R and S matrices, so either ``covariance`` comes from one stored fit.
    covariance : str
        The covariance matrix of the estimates (:data:`COVARIANCE_KINDS`): the
        sandwich ``"sandwich"``, ``R^-1 S R^-1`` (NONMEM's default), robust to a
        misspecified residual or random-effect distribution; or ``"r"``, ``2 R^-1``
        (NONMEM's ``MATRIX=R``), exact for a correct model. A singular or indefinite R
        (or, for the sandwich, a singular S) gives no standard errors (NaN), a status
        and an :class:`NLMEWarning`; parameters at a bound are left out of it.

    Returns
    -------
    NLMEFit
        The estimates with standard errors, the subjects' modes, the OFV, why the
        estimation stopped, the parameters at a bound and the covariance step;
        :meth:`NLMEFit.table` reports them.

    Raises
    ------
    ValueError
        Before estimating: starting values or SDs that are not finite or out of range
        (naming the parameter), covariates the data lack (naming them), a power
        effect's covariate not > 0, outputs of the data the model lacks, DV that are
        all 0, predictions at the starting values that are NaN or infinite for an
        observation (naming the subjects, observations and the parameters there); for
        observations with a proportional error term, DV all 0 or of the opposite sign
        of the predictions (negated DV); with a proportional error alone, predictions
        of exactly 0 (e.g. a pre-dose sample: leave it out). After estimating:
        predictions that are NaN or infinite at the estimate the search ended at, for a
        subject's mode (naming the subjects, observations and parameters there, and the
        estimate), or an OFV that is not finite there; nothing is stored then.

    Notes
    -----
    The outer gradient is by central differences. BFGS stops when the largest OFV
    gradient is below 0.1 per unit of the estimation scale, or on ``ofv_tol``; either
    way the fit counts as ``converged`` only if the largest component of the gradient at
    the estimate (central differences of step :data:`GRADIENT_STEP`, wider than BFGS's
    own, so that the OFV's noise does not decide) is below :data:`CONVERGED_GRADIENT`;
    :attr:`NLMEFit.convergence` says why it stopped. A parameter at a bound of its
    scale (a fraction going to 0 or 1, an omega to 0) is named in
    :attr:`NLMEFit.at_bound`, in ``convergence`` and in an :class:`NLMEWarning`: the
    data do not determine it, whatever the gradient.
    Observations whose residual SD is under :data:`SD_FLOOR` at the estimate (a DV in
    too large a unit) are named in an :class:`NLMEWarning`.

    One start can end in a local optimum (e.g. a flip-flop or fast-absorption solution
    of a PK model with few absorption samples): fit from several starts with
    :func:`fit_foce_starts`, which keeps the lowest OFV and says when they disagree.

    DV of 0 or of the opposite sign among others, with a proportional error alone
    (values below a limit of quantification coded 0?), give an :class:`NLMEWarning`.

    Failed predictions (NaN or inf) follow the module's rule: an error at the starting
    values and at the estimate; at the search's trial points in between, an OFV with
    :data:`FAILED_PREDICTION` in place of each failed prediction (a stand-in that lets
    the search pass through, as correct models need: see
    ``_Problem.conditional_modes``), and at trial points whose OFV is not finite,
    :data:`NOT_FINITE_OFV` (the line search backs off). Both are counted:
    :attr:`NLMEFit.failed_trials`, and :attr:`NLMEFit.convergence` says how many.

    Comparing the OFV with NONMEM's: :attr:`NLMEFit.ofv` is -2 log-likelihood (Laplace
    approximation) including ``n_observations * log(2 pi)``, which NONMEM's objective
    function value (OBJV, FOCE with INTERACTION) leaves out; compare NONMEM's OBJV with
    :attr:`NLMEFit.ofv_nonmem`, which is the OFV without it. Differences of OFVs
    between models of the same data (likelihood-ratio tests) are the same either way.
    ``omega`` and ``sigma`` here are SDs; :meth:`NLMEFit.variances` gives the variances
    NONMEM reports.

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
    >>> round(fit.typical("C0"), 1), round(fit.typical("k"), 2), fit.converged
    (10.0, 0.2, True)
    >>> round(fit.ofv - fit.ofv_nonmem, 1)  # 240 observations times log(2 pi)
    441.1
    """
    data.require_observations()
    fixed = dict(fixed or {})
    problem = _Problem(model, data, fixed)
    x0 = start_vector(model, typical, omega_sd, sigma, fixed)
    _check_start(problem, x0)
    if covariance not in COVARIANCE_KINDS:
        raise ValueError(f"covariance must be one of {COVARIANCE_KINDS}, got {covariance!r}")
    settings = (standard_errors, max_iter, restarts, ofv_tol)
    fit = _estimate_or_load(problem, x0, settings, cache_dir, covariance)
    _warn_at_bounds(problem, fit.x)
    _warn_covariance(fit)
    _warn_floored_sd(problem, fit)
    return fit


def _estimate_or_load(problem: _Problem, x0, settings, cache_dir, covariance) -> NLMEFit:
    """The fit from ``x0`` with ``settings`` (see :func:`fit_foce`), estimated, or
    loaded from and stored in ``cache_dir``; its standard errors from ``covariance``."""
    if cache_dir is None:
        return _finish(problem, _estimate(problem, x0, *settings), covariance)
    model, data = problem.model, problem.data
    key, signature = _fit_key(model, data, x0, problem.fixed_natural, settings)
    slug = "".join(c if c.isalnum() else "_" for c in model.name)[:40].strip("_")
    path, strict = locate_stored(cache_dir, f"{slug}_{key}", signature, subfolder="fits")
    folder = path.parent
    if path.is_file():
        stored = json.loads(path.read_text())
        if np.isfinite(float(stored["ofv"])):
            _refit_and_compare(problem, x0, settings, path, stored)
            return _load_fit(problem, stored, covariance)
        # stored as an invalid fit (failed predictions at its estimate) by a version that
        # kept those: estimated again (which raises the error that names them), or a miss
        if strict:
            raise StoreMissError(
                f"the FOCE-I fit of {model.name!r} (key {key}) in the store {folder} is an "
                "invalid fit (OFV not finite) and $PKPD_CACHE_MISS=error forbids estimating "
                "it again; re-execute the chapters (python3 tools/tasks.py execute)"
            )
    elif strict:
        raise StoreMissError(
            f"the FOCE-I fit of {model.name!r} (key {key}) is not in the store {folder} "
            "and $PKPD_CACHE_MISS=error forbids estimating it: its model, data, start "
            "or settings changed. Re-execute the chapters (python3 tools/tasks.py "
            "execute) to fit and store it."
        )
    result = _estimate(problem, x0, *settings)
    stored = {
        "x": result.x.tolist(),
        "ofv": result.ofv,
        "r_matrix": None if result.r is None else result.r.tolist(),
        "s_matrix": None if result.s is None else result.s.tolist(),
        "etas": problem.eta.tolist(),
        "n_iterations": result.iterations,
        "seconds": result.seconds,
        "converged": result.converged,
        "convergence": result.convergence,
        "gradient": result.gradient,
        "signature": signature,
        "failed_trials": result.failed_trials,
    }
    write_text_atomic(path, json.dumps(stored), overwrite=True)
    return _load_fit(problem, stored, covariance)


#: Largest difference of OFV between a stored fit and the same fit estimated again in
#: the retrain tier: the estimation stops when three iterations gain less than
#: ``ofv_tol`` (0.01) in all, so two runs can stop a few hundredths apart; 0.1 is 1/38
#: of the 3.84 a likelihood-ratio test at p = 0.05 reads.
RETRAIN_OFV_ATOL = 0.1


def _refit_and_compare(problem: _Problem, x0, settings, path: Path, stored: Mapping) -> None:
    """In a shard of the retrain tier (:func:`pkpd_lib.files.retrain_here`), estimate the
    stored fit ``path`` again from the same start, store it in the shard's folder and
    report its OFV and estimates against the stored ones: OFV within
    :data:`RETRAIN_OFV_ATOL`, each estimate (estimation scale) within
    :data:`~pkpd_lib.reproducibility.RETRAIN_RTOL` of ``max(1, |estimate|)``
    (:func:`_retrain_changes`). Where the estimates need not repeat, a fit that moved is
    judged by what its caller reads (the reason goes to the report): one start of
    :func:`fit_foce_starts`, by the fit the caller keeps (:func:`_start_covered_by`); a
    candidate of :func:`candidate_fits` that is usable in neither run, by the caller's
    decision, which repeats; one usable in both runs, by its OFV (within
    :data:`RETRAIN_OFV_ATOL`: the caller's decisions compare OFVs); a fit that converged
    in neither run (it stopped where its
    search stalled or lost precision, so where it stopped along directions the data do
    not determine is the search path's), by its OFV; a fit that converged in both runs
    to an equally good OFV, by the OFV change its curvature predicts
    (:func:`_ofv_change_by_curvature`); a fit that moved only along
    random-effect SDs the data do not determine, by its OFV with those random effects
    removed (:func:`_undetermined_sds`). What the estimation warns of goes
    to the report, not to the notebook, whose stored outputs come from the stored fit."""
    fresh_path = retrain_here(path)
    if fresh_path is None:
        return
    fresh_path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(fresh_path.with_suffix(".lock")):
        if fresh_path.is_file():
            return  # another notebook of this shard estimated it already
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _estimate(problem, x0, *settings)
        fresh_etas = problem.eta.copy()  # the refit's modes at its estimate
        write_text_atomic(
            fresh_path,
            json.dumps({"x": result.x.tolist(), "ofv": result.ofv, "seconds": result.seconds}),
            overwrite=True,
        )
    x_stored = np.asarray(stored["x"], float)
    moved = _retrain_changes(problem, x_stored, result.x)
    ofv_moved = abs(float(result.ofv) - float(stored["ofv"]))
    equally_good = ofv_moved <= RETRAIN_OFV_ATOL
    worst = int(np.argmax(moved))
    within = bool(moved[worst] <= RETRAIN_RTOL and equally_good)
    converged = [bool(stored.get("converged")), bool(result.converged)]
    usable = [
        converged[0] and not _at_bounds(problem, x_stored),
        converged[1] and not _at_bounds(problem, result.x),
    ]
    # judged by what the caller reads, where the estimates themselves need not repeat
    reason = {}
    if not within and _IN_STARTS.get():  # one start of several: the fit the caller keeps
        covered = _start_covered_by(problem, path, stored, result.x, result.ofv)
        reason = {"covered_by": covered} if covered else {}
    # a search's candidate left out both times: its OFV is still printed, in a table the
    # retrain tier compares within RETRAIN_RTOL
    ofv_printed = ofv_moved <= RETRAIN_RTOL * abs(float(stored["ofv"]))
    if not (within or reason) and _IN_CANDIDATES.get() and not any(usable) and ofv_printed:
        reason = {"judged_by": "not usable in either run: the caller's rules leave it out"}
    # a search's candidate usable in both runs at an equally good OFV: the search reads
    # its OFV (and usability), so its decisions and table repeat
    if not (within or reason) and _IN_CANDIDATES.get() and all(usable) and equally_good:
        reason = {
            "judged_by": "usable in both runs at an equally good OFV: the caller's decisions repeat"
        }
    # stopped short of an optimum in both runs: an equally good end point, its estimates
    # within what the retrain tier allows a printed fit table
    stalled = not any(converged) and equally_good
    if not (within or reason) and stalled and moved[worst] <= RETRAIN_FIT_TABLE_RTOL:
        reason = {"judged_by": "converged in neither run: an equally good end point (OFV)"}
    # converged both times to an equally good end point, and near it by the stored fit's
    # own curvature: moved along directions the data determine poorly
    if not (within or reason) and all(converged) and equally_good:
        predicted = _ofv_change_by_curvature(problem, stored, x_stored, result.x, moved)
        if predicted <= RETRAIN_OFV_ATOL:
            reason = {
                "judged_by": "converged in both runs, an equally good end point, and as "
                f"near by the stored fit's curvature: d'Rd/2 = {predicted:.3g} <= "
                f"{RETRAIN_OFV_ATOL:g}",
            }
    # moved along random-effect SDs the likelihood does not determine, and nothing else
    if not (within or reason):
        others = RETRAIN_RTOL if any(converged) else RETRAIN_FIT_TABLE_RTOL
        stored_etas = np.asarray(stored["etas"], float).reshape(problem.eta.shape)
        sds, removed = _undetermined_sds(
            problem,
            x_stored,
            float(stored["ofv"]),
            result.x,
            result.ofv,
            moved,
            others,
            etas=(stored_etas, fresh_etas),
        )
        if sds:
            reason = {
                "judged_by": "moved only along SDs the data do not determine: with them at "
                f"{OMEGA_BOUND:g}, neither OFV higher by more than {RETRAIN_OFV_ATOL:g}, "
                f"and the two {removed:+.4f} apart",
                "undetermined_sds": sds,
            }
    report_retrained(
        path,
        "fit",
        result.seconds,
        caught,
        statistic="largest change of an estimate / max(1, |estimate|); OFV change",
        difference=float(moved[worst]),
        tolerance=RETRAIN_RTOL,
        ofv_difference=ofv_moved,
        ofv_tolerance=RETRAIN_OFV_ATOL,
        within=within or bool(reason),
        converged=converged,
        **reason,
    )


def _ofv_change_by_curvature(problem: _Problem, stored: Mapping, stored_x, fresh_x, moved) -> float:
    """The OFV difference between the stored estimate ``stored_x`` (its record
    ``stored``) and the refit's ``fresh_x`` that the stored fit's curvature predicts,
    ``d' R d / 2`` (R, the Hessian of the OFV, from its covariance step; ``d`` the
    difference on the estimation scale), over the estimates not at a bound; inf where
    the stored fit has no R, where R is not positive definite there, or where an
    estimate at a bound moved beyond :data:`~pkpd_lib.reproducibility.RETRAIN_RTOL`
    (``moved`` from :func:`_retrain_changes`, which compares those on their natural
    scale).

    Two end points within :data:`RETRAIN_OFV_ATOL` of each other by this measure lie on
    one optimum: where the data determine estimates poorly (a flat direction, large
    standard errors) the estimation's stop rule (three iterations gaining < ``ofv_tol``)
    leaves them that free. Along one estimate, the others re-estimated, the OFV rises by
    ``(change / SE)^2`` (with the covariance ``2 R^-1``); with the others held, faster.
    Another optimum of equal OFV (a flip-flop solution, say) lies far away by the
    curvature at this one, and fails.

    Examples
    --------
    Two estimates with SE 1.0 each, correlated -0.997 (R's off-diagonal +199): moving
    both by 0.3 SE in the same direction goes across the ridge, in opposite directions
    along it.

    >>> from types import SimpleNamespace
    >>> p = SimpleNamespace(model=SimpleNamespace(transforms={"a": "log", "b": "log"}),
    ...                     names=lambda: ["theta_a", "theta_b"])
    >>> rec = {"r_matrix": [[200.0, 199.0], [199.0, 200.0]]}
    >>> moved = [0.3, 0.3]
    >>> round(_ofv_change_by_curvature(p, rec, [0.0, 0.0], [0.3, 0.3], moved), 2)
    35.91
    >>> round(_ofv_change_by_curvature(p, rec, [0.0, 0.0], [0.3, -0.3], moved), 2)
    0.09
    """
    if stored.get("r_matrix") is None:
        return float("inf")
    names = problem.names()
    bound = set(_at_bounds(problem, stored_x)) | set(_at_bounds(problem, fresh_x))
    keep = np.array([name not in bound for name in names], bool)
    if np.any(np.asarray(moved)[~keep] > RETRAIN_RTOL):
        return float("inf")
    r = np.asarray(stored["r_matrix"], float)
    if not covariance_step(r, r, names, "r", tuple(bound)).ok:
        return float("inf")
    d = (np.asarray(fresh_x, float) - np.asarray(stored_x, float))[keep]
    return float(d @ ((r + r.T) / 2)[np.ix_(keep, keep)] @ d / 2)


def _undetermined_sds(
    problem: _Problem,
    stored_x,
    stored_ofv: float,
    fresh_x,
    fresh_ofv: float,
    moved,
    others: float,
    etas=None,
) -> tuple[dict[str, list[float]], float]:
    """The random-effect SDs along which a fit estimated again (``fresh_x``,
    ``fresh_ofv``) moved from the stored one (``stored_x``, ``stored_ofv``; ``moved``
    from :func:`_retrain_changes`) where the data do not determine them, as ``{name:
    [stored SD, refit SD]}``, with the difference of the two estimates' OFVs once those
    SDs are set to :data:`OMEGA_BOUND`; ``({}, nan)`` if the refit moved otherwise.

    The SDs that moved beyond :data:`~pkpd_lib.reproducibility.RETRAIN_RTOL` on their
    log scale qualify when

    * every other estimate stayed within ``others``;
    * the two end points' OFVs lie within :data:`RETRAIN_OFV_ATOL` (the OFV flat along
      the SDs, e.g. one whose parameter sits at a bound); or, where one run stopped
      further on the way to 0, the SDs lie within ``others`` on their natural scale
      (``|change| / max(1, SD)``, as an SD at its bound is compared: near 0 the log
      scale magnifies what an SD means) and the OFVs within what a printed OFV may move
      (:data:`~pkpd_lib.reproducibility.RETRAIN_RTOL` of it);
    * with those SDs set to :data:`OMEGA_BOUND` (their random effects all but removed),
      neither estimate's OFV is higher than where its search ended by more than
      :data:`RETRAIN_OFV_ATOL` (the data prefer no such variability, or are indifferent
      to it), no prediction fails there, and the two OFVs differ by at most
      :data:`RETRAIN_OFV_ATOL`: the two runs stopped on the way to one fit.

    An SD heading to 0 stalls on the way (on its log scale the gradient fades as the SD
    does), and an SD whose parameter no longer changes a prediction (its typical value
    at a bound) wanders. An SD the data determine fails: removing its random effect
    costs OFV.

    ``etas``, the subjects' modes at the two end points (stored, refit), start the
    searches for the modes with the SDs removed (default 0): where a subject's
    posterior has more than one mode, the search keeps the one its start leads to.

    Examples
    --------
    An OFV that falls as the SD of ``a`` does (``x[1]``, its log), flat below 0.001:

    >>> from types import SimpleNamespace
    >>> ofv = lambda x, eta_start=None: 100.0 + 2e3 * max(np.exp(x[1]) - 1e-3, 0.0) ** 2
    >>> p = SimpleNamespace(names=lambda: ["theta_a", "omega_a"], ofv=ofv,
    ...                     eta=np.zeros((1, 1)), failed=np.zeros(1, bool))
    >>> stored, fresh = np.array([1.0, np.log(0.002)]), np.array([1.0, np.log(0.005)])
    >>> moved = _retrain_changes(SimpleNamespace(names=p.names,
    ...     model=SimpleNamespace(transforms={"a": "log"})), stored, fresh)
    >>> sds, apart = _undetermined_sds(p, stored, ofv(stored), fresh, ofv(fresh), moved, 0.05)
    >>> {k: np.round(v, 3).tolist() for k, v in sds.items()}, apart
    ({'omega_a': [0.002, 0.005]}, 0.0)
    """
    names = problem.names()
    sds = [i for i, n in enumerate(names) if n.startswith("omega_") and moved[i] > RETRAIN_RTOL]
    nothing = {}, float("nan")
    if not sds or any(moved[i] > others for i in range(len(names)) if i not in sds):
        return nothing
    sd_stored, sd_fresh = (
        np.exp(np.asarray(stored_x, float)[sds]),
        np.exp(np.asarray(fresh_x, float)[sds]),
    )
    gap = abs(fresh_ofv - stored_ofv)
    equally_good = gap <= RETRAIN_OFV_ATOL
    near_zero = bool(
        np.all(np.abs(sd_fresh - sd_stored) <= others * np.maximum(1.0, sd_stored))
        and gap <= RETRAIN_RTOL * abs(stored_ofv)
    )
    if not (equally_good or near_zero):
        return nothing
    removed = []
    starts = etas or (np.zeros_like(problem.eta),) * 2
    for x, ofv, start in zip((stored_x, fresh_x), (stored_ofv, fresh_ofv), starts, strict=True):
        x = np.array(x, float)
        x[sds] = np.log(OMEGA_BOUND)
        removed.append(problem.ofv(x, eta_start=start))
        if problem.failed.any() or not removed[-1] <= ofv + RETRAIN_OFV_ATOL:
            return nothing
    difference = removed[1] - removed[0]
    if not abs(difference) <= RETRAIN_OFV_ATOL:
        return nothing
    sd = {names[i]: [float(a), float(b)] for i, a, b in zip(sds, sd_stored, sd_fresh, strict=True)}
    return sd, float(difference)


#: Set while :func:`fit_foce_starts` fits its starts: the caller keeps only the lowest
#: OFV, so a start is judged in the retrain tier by that (:func:`_start_covered_by`).
_IN_STARTS: contextvars.ContextVar[bool] = contextvars.ContextVar("in_starts", default=False)
#: Set inside :func:`candidate_fits`: a fit that is usable in neither run is then judged
#: in the retrain tier by the caller's decision (and its printed OFV), not its estimates.
_IN_CANDIDATES: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "in_candidates", default=False
)


@contextlib.contextmanager
def candidate_fits() -> Iterator[None]:
    """Mark the fits made inside as candidates that the caller keeps only if they
    converged with no parameter at a bound (a model search's rule). In the retrain tier a
    candidate that is not usable in the store and not usable when estimated again has
    repeated what the caller decides from it, wherever its search stopped; a usable one
    is compared as any fit.

    Examples
    --------
    >>> with candidate_fits():
    ...     _IN_CANDIDATES.get()
    True
    >>> _IN_CANDIDATES.get()
    False
    """
    with _set(_IN_CANDIDATES):
        yield


@contextlib.contextmanager
def _set(flag: contextvars.ContextVar[bool]) -> Iterator[None]:
    """``flag`` set to True inside, reset to what it was after."""
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def _sibling_starts(path: Path, signature: Mapping) -> dict[Path, Mapping]:
    """The stored fits of the same model, settings and data as the stored fit ``path``
    (its ``signature``) that began from another start (their signatures differ in
    ``/x0`` only), with their records."""

    def data(sig: Mapping) -> dict:
        return {k: v for k, v in sig.items() if k != "/x0"}

    prefix = Path(path).stem.rsplit("_", 1)[0]
    siblings = {}
    for record in sorted(Path(path).parent.glob(f"{prefix}_*.json")):
        if record.resolve() == Path(path).resolve():
            continue
        stored = json.loads(record.read_text())
        if signatures_match(data(stored.get("signature", {})), data(signature)):
            siblings[record] = stored
    return siblings


def _start_covered_by(
    problem: _Problem, path: Path, stored: Mapping, fresh_x, fresh_ofv: float
) -> list[str]:
    """The other stored starts that leave the kept fit as it is although the start
    ``path`` (its record ``stored``) moved when estimated again (to ``fresh_x``,
    ``fresh_ofv``): their names (relative to the store), ``[]`` if none does (moved).

    Which start ends in which optimum can turn on a CPU's last bits, as an early-stopping
    epoch can, and :func:`fit_foce_starts` keeps the lowest OFV. The other starts that
    reach the lowest stored OFV of the starts (within :data:`RETRAIN_OFV_ATOL`) cover
    this one if it now ends clearly above that OFV (a worse optimum, not kept), or where
    a covering start's stored estimate lies (within
    :data:`~pkpd_lib.reproducibility.RETRAIN_RTOL`: the same fit). A start that ends
    below that OFV, or as low at another estimate, would change the kept fit. The
    covering starts' own shards show that they reproduce; ``tools/retrain_report.py
    --covers`` checks over all the shards that one did (two tied starts could otherwise
    vouch for each other). The starts are the stored fits of the same model, settings
    and data from other starting values (:func:`_sibling_starts`): in this book each such
    group is one call's starts."""
    siblings = _sibling_starts(path, stored["signature"])
    best = min([float(stored["ofv"]), *(float(s["ofv"]) for s in siblings.values())])
    if not np.isfinite(fresh_ofv) or fresh_ofv < best - RETRAIN_OFV_ATOL:
        return []
    ties = {p: s for p, s in siblings.items() if float(s["ofv"]) <= best + RETRAIN_OFV_ATOL}
    if fresh_ofv <= best + RETRAIN_OFV_ATOL:  # as low as the best: only at the same estimate
        ties = {
            p: s
            for p, s in ties.items()
            if _retrain_changes(problem, np.asarray(s["x"], float), fresh_x).max() <= RETRAIN_RTOL
        }
    return sorted(f"{p.parent.name}/{p.name}" for p in ties)


def _retrain_changes(problem: _Problem, before, after) -> np.ndarray:
    """How far each estimate moved between a stored fit (``before``, estimation scale)
    and the same fit estimated again (``after``): ``|after - before| / max(1,
    |before|)``. A parameter at a bound of its scale in either (:func:`_at_bounds`) is
    compared on its natural scale instead (a fraction; an SD): there the data do not
    bound it, so its estimation-scale value wanders along a flat objective (a logit of
    10.8 or 11.4 is a fraction of 1 - 2e-5 or 1 - 1e-5) while what it means stays put.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(transforms={"F": "logit", "CL": "log"})
    >>> p = SimpleNamespace(model=model, names=lambda: ["theta_F", "theta_CL"])
    >>> _retrain_changes(p, np.array([10.75, 1.0]), np.array([11.44, 1.001])).round(5)
    array([1.e-05, 1.e-03])
    """
    before, after = np.asarray(before, float), np.asarray(after, float)
    moved = np.abs(after - before) / np.maximum(1.0, np.abs(before))
    bounded = set(_at_bounds(problem, before)) | set(_at_bounds(problem, after))
    for i, name in enumerate(problem.names()):
        if name in bounded:
            natural = expit if name.startswith("theta_") else np.exp
            a, b = float(natural(before[i])), float(natural(after[i]))
            moved[i] = abs(b - a) / max(1.0, abs(a))
    return moved


class _Estimate(NamedTuple):
    """What :func:`_estimate` found (or the store holds): the estimate ``x``, its OFV,
    the R and S matrices (None: not computed), BFGS iterations, seconds, whether it
    converged, why it stopped and the largest gradient component."""

    x: np.ndarray
    ofv: float
    r: np.ndarray | None
    s: np.ndarray | None
    iterations: int
    seconds: float
    converged: bool
    convergence: str
    gradient: float = np.nan
    failed_trials: int | None = 0


def _estimate(problem: _Problem, x0, standard_errors, max_iter, restarts, ofv_tol) -> _Estimate:
    """Minimise the OFV from ``x0`` (see :func:`fit_foce`); the subjects' modes end in
    ``problem.eta``. A ``ValueError`` naming the subjects and their parameters where
    predictions fail (NaN or inf) at the estimate, or the OFV is not finite there."""
    t0 = time.perf_counter()
    problem.trials = dict.fromkeys(problem.trials, 0)

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
    scale = max(1.0, problem.data.n_observations / 10.0)

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
    trials = dict(problem.trials)  # the search's, before the standard errors' points
    problem.eta = problem.conditional_modes(x, problem.eta)[0]
    failed = problem.failed_subjects(x)
    if failed.any():
        _refuse_failed_estimate(problem, x, failed, iterations)
    ofv = problem.ofv(x)
    r = s = None
    if ofv == NOT_FINITE_OFV:
        raise ValueError(
            f"model {problem.model.name!r}: the OFV is not finite at the estimate after "
            f"{iterations} BFGS iterations (a singular or overflowing Hessian of the "
            f"random effects?), not a fit: {_estimate_text(problem, x)}"
        )
    if standard_errors:
        r, s = _r_and_s(lambda z: _subject_ofv(problem, z), x)
    steps = _gradient_steps(problem, x)
    # per unit of each step's scale (a covariate coefficient's gradient times its smaller
    # step): the OFV's noise then weighs the same in every component
    gradient = float(np.abs(_gradient(problem.ofv, x, steps) * steps / GRADIENT_STEP).max())
    converged = bool(gradient < CONVERGED_GRADIENT)
    reason = _stop_reason(result, gradient, stalled[0], ofv_tol, max_iter)
    n_failed = trials["failed predictions"] + trials["not finite"]
    if n_failed:
        reason += "; " + _trials_text(trials)
    seconds = time.perf_counter() - t0
    return _Estimate(x, ofv, r, s, iterations, seconds, converged, reason, gradient, n_failed)


def _trials_text(trials: Mapping[str, int]) -> str:
    """The trial points of a search that met failed predictions or a non-finite OFV
    (counts of :meth:`_Problem.ofv`), in words."""
    return (
        f"{trials['failed predictions']} of {trials['all']} trial points of the search had "
        "failed predictions (NaN or inf) for a subject (their OFV used the stand-in "
        f"{FAILED_PREDICTION:g} for each) and {trials['not finite']} a non-finite OFV "
        "(rejected)"
    )


def _estimate_text(problem: _Problem, x) -> str:
    """The estimate ``x`` in words, by the names of :meth:`_Problem.names`, each on its
    natural scale (:func:`_natural_values`)."""
    values = _natural_values(problem, x)
    return ", ".join(f"{n}={v:.4g}" for n, v in zip(problem.names(), values, strict=True))


def _natural_values(problem: _Problem, x) -> list[float]:
    """The packed vector ``x`` on the natural scale: typical values in their units,
    covariate coefficients as they are, omega and sigma as SDs."""
    natural = []
    for name, value in zip(problem.names(), x, strict=True):
        kind, _, what = name.partition("_")
        if kind == "theta":
            natural.append(float(to_natural(problem.model.transforms[what], value)))
        elif kind in ("omega", "sigma"):
            natural.append(float(np.exp(value)))
        else:
            natural.append(float(value))
    return natural


def _refuse_failed_estimate(problem: _Problem, x, failed, iterations: int) -> None:
    """The ``ValueError`` for predictions that fail (NaN or inf) at the estimate ``x`` for
    the subjects ``failed`` (N,) at their modes ``problem.eta``: naming the subjects,
    their observations and individual parameters, and the estimate."""
    theta, beta, _, _ = problem.unpack(x)
    eta = problem.eta[:, None]
    f = problem.raw_predict(theta, beta, eta)[:, 0]
    with np.errstate(over="ignore"):
        params = problem.individual(theta, beta, eta)
    flagged = problem.mask & ~np.isfinite(f)
    if flagged.any():
        where = _where(problem.data, flagged, params)
    else:  # only at the finite-difference neighbours of the modes
        ids = problem.data.ids[failed][:10].tolist()
        where = f"subject(s) {ids} (at the finite-difference neighbours of their modes)"
    raise ValueError(
        f"model {problem.model.name!r} predicts NaN or inf at the estimate the search "
        f"ended at after {iterations} BFGS iterations, for {int(failed.sum())} subject(s): "
        f"{where}. Not a fit (nothing is stored); the estimate was "
        f"{_estimate_text(problem, x)}. Check the model where it takes these values, "
        "bound the parameters it cannot take, or start elsewhere"
    )


def _stop_reason(result, gradient: float, stalled: bool, ofv_tol: float, max_iter: int) -> str:
    """Why the estimation stopped, in words, with the largest gradient component
    ``gradient`` (OFV units per unit of the estimation scale)."""
    g = f"max |g| = {gradient:.3g}"
    if stalled:
        return f"stalled: OFV changed < {ofv_tol:g} over 3 iterations with gradient {g}"
    if gradient < CONVERGED_GRADIENT:
        return f"gradient below tolerance ({g})"
    if result.status == 1:
        return f"iteration limit ({max_iter} BFGS iterations a run), {g}"
    return f"BFGS stopped: {result.message} ({g})"


def _check_start(problem: _Problem, x0) -> None:
    """Refuse (``ValueError``) or flag (:class:`NLMEWarning`) data and a model that a fit
    would otherwise run through silently; see :func:`fit_foce`."""
    model, data, mask = problem.model, problem.data, problem.mask
    if np.all(problem.y[mask] == 0):
        raise ValueError(
            f"every observation (DV) is 0: nothing to estimate {model.name!r} from "
            "(values below a limit of quantification coded 0? leave them out, NaN)"
        )
    theta, beta, _, _ = problem.unpack(x0)
    eta = np.zeros((data.n_subjects, 1, problem.q))
    f = problem.raw_predict(theta, beta, eta)[:, 0]
    with np.errstate(over="ignore"):
        params = problem.individual(theta, beta, eta)
    failed = mask & ~np.isfinite(f)
    if failed.any():
        raise ValueError(
            f"model {model.name!r} predicts NaN or inf at the starting values for "
            + _where(data, failed, params)
        )
    # which observations have a proportional error alone, and which one at all
    terms = [model.error[o] for o in model.outputs] or [model.error]
    only_prop = np.array([t == ("prop",) for t in terms])[problem.out_index]
    has_prop = np.array(["prop" in t for t in terms])[problem.out_index]
    zero = mask & only_prop & (f == 0)
    if zero.any():
        raise ValueError(
            f"model {model.name!r} predicts exactly 0 at the starting values, where a "
            "proportional error alone has SD 0, for "
            + _where(data, zero, params)
            + ": leave such samples out (NaN in dv, e.g. pre-dose) or add an additive error"
        )
    opposite = mask & has_prop & (np.sign(problem.y0) != np.sign(f))
    for k in range(len(terms)):
        of_output = mask & has_prop & (problem.out_index == k)
        if of_output.any() and opposite[of_output].all():
            which = f" (output {model.outputs[k]!r})" if model.outputs else ""
            raise ValueError(
                f"every observation{which} is 0 or has the opposite sign of the prediction "
                "at the starting values, which a proportional error cannot explain (DV "
                "negated?): " + _where(data, opposite & of_output, params)
            )
    opposite &= only_prop
    if opposite.any():
        warnings.warn(
            f"{opposite.sum()} observation(s) are 0 or have the opposite sign of the "
            "prediction, which a proportional error alone cannot explain (values below a "
            "limit of quantification coded 0? leave them out, NaN, or add an additive "
            "error): " + _where(data, opposite, params),
            NLMEWarning,
            stacklevel=3,
        )


def _where(data: Observations, flagged, params, shown: int = 3) -> str:
    """Subjects and observations (N, K) ``flagged``, in words: the first ``shown``
    subjects by id, with their observation indices, times, DV and parameters."""
    rows = np.flatnonzero(flagged.any(axis=1))
    parts = []
    for i in rows[:shown]:
        cols = np.flatnonzero(flagged[i])
        values = ", ".join(f"{k}={float(v[i, 0]):.4g}" for k, v in params.items())
        parts.append(
            f"subject {data.ids[i]} (row {i}) at observation(s) {cols[:5].tolist()} "
            f"(times {data.times_h[i, cols[:5]].tolist()} h, DV {data.dv[i, cols[:5]].tolist()};"
            f" parameters {values})"
        )
    more = f" and {rows.size - shown} more subject(s)" if rows.size > shown else ""
    return "; ".join(parts) + more


@dataclass
class MultiStartFit:
    """The fits of :func:`fit_foce_starts`.

    Attributes
    ----------
    fits : list of NLMEFit
        The fits, in the order of the starts.
    best : NLMEFit
        The fit with the lowest OFV.
    note : str
        Set when the starts disagree (they ended more than the tolerance ``agree_ofv``
        apart in OFV, or one did not converge) or ended with a parameter at a bound, else ``""``.
    """

    fits: list[NLMEFit]
    best: NLMEFit
    note: str

    def table(self) -> pd.DataFrame:
        """The starts' estimates side by side, with their OFV.

        Returns
        -------
        pandas.DataFrame
            As :func:`compare_estimates` of :attr:`fits`.
        """
        return compare_estimates(self.fits)


def fit_foce_starts(
    model: NLMEModel,
    data: Observations,
    starts: Sequence[Mapping[str, float]],
    agree_ofv: float = 3.84,
    **kwargs,
) -> MultiStartFit:
    """Fit ``model`` from each of several ``starts`` and keep the fit with the lowest OFV:
    one start can end in a local optimum.

    Parameters
    ----------
    model : NLMEModel
        The population model.
    data : Observations
        The observations.
    starts : sequence of mapping
        Starting typical values (natural scale), one mapping per start; see
        :func:`fit_foce`'s ``typical``.
    agree_ofv : float
        Starts that end more than this many OFV points above the best are named in the
        note (default 3.84, the chi-square 5% point of one degree of freedom: a worse OFV
        than that is a clearly worse optimum).
    **kwargs
        The other arguments of :func:`fit_foce`, e.g. ``omega_sd``, ``sigma``,
        ``cache_dir``.

    Returns
    -------
    MultiStartFit
        Every fit, the best, and a ``note`` that says which starts ended more than
        ``agree_ofv`` above the best, which did not converge, which converged with a
        parameter at a bound, and what the starts not kept warned (the first warning of
        each). Only the kept fit's warnings are raised: which start ends where can
        depend on a CPU's last bits, and the kept fit is the one reported.

    Raises
    ------
    ValueError
        No start; or a start that :func:`fit_foce` refuses (e.g. predictions that fail at
        the estimate it ends at), naming the start: a failure is never left out of the
        comparison.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> t = np.tile([0.5, 1, 2, 4, 8, 12.0], (20, 1))
    >>> y = 10 * np.exp(-0.2 * np.exp(0.3 * rng.normal(size=(20, 1))) * t)
    >>> decay = NLMEModel("decay", ("C0", "k"), {"C0": "log", "k": "log"}, ("k",),
    ...                   lambda p, d: p["C0"][..., None] * np.exp(-p["k"][..., None]
    ...                                                            * d.times_h[:, None]))
    >>> data = Observations(np.arange(20), t, y * (1 + 0.05 * rng.normal(size=t.shape)))
    >>> starts = [{"C0": 5.0, "k": 0.5}, {"C0": 20.0, "k": 0.1}]
    >>> result = fit_foce_starts(decay, data, starts, standard_errors=False)
    >>> len(result.fits), result.note, round(result.best.typical("k"), 1)
    (2, '', 0.2)
    """
    if not starts:
        raise ValueError("give at least one start")
    fits, caught = [], []
    with _set(_IN_STARTS):
        for i, start in enumerate(starts):
            with warnings.catch_warnings(record=True) as raised:
                warnings.simplefilter("always")
                try:
                    fits.append(fit_foce(model, data, start, **kwargs))
                except ValueError as error:  # e.g. predictions that fail at its estimate
                    raise ValueError(f"start {i} {dict(start)}: {error}") from error
            caught.append(raised)
    ofv = np.array([fit.ofv for fit in fits])
    best = int(np.argmin(ofv))
    for w in caught[best]:  # the kept fit's warnings are raised as they were
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes = []
    worse = [i for i in range(len(fits)) if ofv[i] - ofv[best] > agree_ofv]
    if worse:
        above = ", ".join(f"start {i} by {ofv[i] - ofv[best]:.1f}" for i in worse)
        notes.append(
            f"the starts disagree: OFV above the best (start {best}, OFV {ofv[best]:.2f}): "
            f"{above}; those ended in a worse local optimum or stopped early"
        )
    failed = [i for i, fit in enumerate(fits) if not fit.converged]
    if failed:
        notes.append(
            "not converged: "
            + ", ".join(f"start {i} ({fits[i].convergence or 'stored'})" for i in failed)
        )
    bounded = [i for i, fit in enumerate(fits) if fit.at_bound and fit.converged]
    if bounded:
        notes.append(
            "at a bound: "
            + ", ".join(f"start {i} ({', '.join(fits[i].at_bound)})" for i in bounded)
        )
    others = [i for i, raised in enumerate(caught) if raised and i != best]
    if others:
        notes.append(
            "warnings of starts not kept: "
            + "; ".join(f"start {i}: {str(caught[i][0].message)[:120]}" for i in others)
        )
    return MultiStartFit(fits, fits[best], "; ".join(notes))


#: Bumped when the estimator or the stored form of a fit changes, so that fits stored
#: earlier are not reused. 3: the R and S matrices, the stop reason and the gradient
#: are stored (2 stored standard errors from R alone).
FIT_FORMAT = 3


def _fit_key(model: NLMEModel, data: Observations, x0, fixed, settings) -> tuple[str, dict]:
    """The store key of a fit (model structure, its predict function's bytecode, the
    estimator settings, the data's names and shapes) and the signature of its numbers
    (data, starting vector, fixed values; :func:`pkpd_lib.files.data_signature`), which
    a stored fit must match within :data:`~pkpd_lib.files.SIGNATURE_RTOL`."""
    code = getattr(model.predict, "__code__", None)
    closure = [
        repr(c.cell_contents)
        for c in getattr(model.predict, "__closure__", None) or ()
        if isinstance(c.cell_contents, int | float | str | tuple)
    ]
    structure = {
        "params": model.params,
        "transforms": dict(model.transforms),
        "random": model.random,
        "error": model.error,
        "covariates": {k: tuple(v) for k, v in model.covariates.items()},
        "predict": (code.co_code.hex(), repr(code.co_names)) if code else repr(model.predict),
        "closure": closure,
        "settings": repr(settings),
    }
    # features a model may not use enter the key only where used, so that the keys of
    # models without them stay those of the fits already stored
    parts = getattr(model.predict, "fit_key", None)  # e.g. an ode_predict's functions
    if parts is not None:
        structure["predict_parts"] = parts
    if model.effects:
        structure["effects"] = [
            (e.param, e.covariate, e.form, e.reference, e.level) for e in model.effects
        ]
    numbers = {
        "ids": data.ids,
        "times_h": data.times_h,
        "dv": data.dv,
        "covariates": dict(data.covariates),
        "extra": dict(data.extra),
        "x0": x0,
        "fixed": {k: float(v) for k, v in fixed.items()},
    }
    if data.output is not None:
        numbers["output"] = np.asarray(data.output, float)
    signature = data_signature(numbers)
    text = f"format={FIT_FORMAT};{model.name};{structure};{signature_structure(signature)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16], signature


def _load_fit(problem: _Problem, stored: Mapping, covariance: str = "sandwich") -> NLMEFit:
    """The fit from its ``stored`` form, its standard errors from ``covariance``."""
    problem.eta = np.asarray(stored["etas"], float).reshape(problem.data.n_subjects, problem.q)

    def matrix(key):
        value = stored.get(key)
        return None if value is None else np.asarray(value, float)

    estimate = _Estimate(
        np.asarray(stored["x"], float),
        float(stored["ofv"]),
        matrix("r_matrix"),
        matrix("s_matrix"),
        int(stored["n_iterations"]),
        float(stored["seconds"]),
        bool(stored["converged"]),
        str(stored["convergence"]),
        float(stored["gradient"]),
        stored.get("failed_trials"),
    )
    return _finish(problem, estimate, covariance)


def _finish(problem: _Problem, estimate: _Estimate, covariance: str = "sandwich") -> NLMEFit:
    """The fit's tables at ``estimate.x``, with the subjects' modes in ``problem.eta``
    and the covariance step of kind ``covariance`` from the estimate's R and S."""
    model, fixed = problem.model, problem.fixed_natural
    names = problem.names()
    x = np.asarray(estimate.x, float)
    bounds = _at_bounds(problem, x)
    step = None
    if estimate.r is not None:
        step = covariance_step(estimate.r, estimate.s, names, covariance, tuple(bounds))
    se = step.se if step is not None else np.full(x.size, np.nan)
    natural = _natural_values(problem, x)
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
    convergence = estimate.convergence
    if bounds:
        convergence += f"; at a bound: {', '.join(bounds)} (not determined by the data)"
    return NLMEFit(
        model,
        estimate.ofv,
        x,
        estimates,
        problem.eta.copy(),
        individual,
        estimate.iterations,
        estimate.seconds,
        estimate.converged,
        fixed,
        convergence,
        float(estimate.ofv - problem.data.n_observations * np.log(2 * np.pi)),
        step,
        tuple(bounds),
        estimate.gradient,
        estimate.failed_trials,
    )


def _at_bounds(problem: _Problem, x) -> dict[str, str]:
    """The parameters at a bound of their scale, each with a sentence on it: a
    logit-scale typical value beyond :data:`LOGIT_BOUND`, an omega below
    :data:`OMEGA_BOUND`."""
    found = {}
    for name, value in zip(problem.names(), x, strict=True):
        kind, _, what = name.partition("_")
        if kind == "theta" and problem.model.transforms[what] == "logit":
            if abs(value) > LOGIT_BOUND:
                fraction = float(expit(value))
                shown = f"{fraction:.6g}"
                if float(shown) in (0.0, 1.0):  # too close to show: the distance
                    shown = f"1 - {float(expit(-value)):.2g}" if value > 0 else f"{fraction:.2g}"
                found[name] = (
                    f"{name} is at or near a bound: {what} = {shown} (logit "
                    f"{value:.3g}, beyond +-{LOGIT_BOUND:g}); the data do not bound it, a "
                    "small gradient there does not make the fit converged, and it is left "
                    "out of the covariance step (SE NaN): fix it or simplify the model"
                )
        elif kind == "omega" and value < np.log(OMEGA_BOUND):
            found[name] = (
                f"{name} is at its lower bound: SD {float(np.exp(value)):.3g} < {OMEGA_BOUND:g}"
                f"; the data show no variability of {what} between subjects: remove its "
                "random effect"
            )
    return found


def _warn_at_bounds(problem: _Problem, x) -> None:
    """An :class:`NLMEWarning` for each parameter at a bound of its scale
    (:func:`_at_bounds`)."""
    for message in _at_bounds(problem, x).values():
        warnings.warn(message, NLMEWarning, stacklevel=3)


def _warn_covariance(fit: NLMEFit) -> None:
    """An :class:`NLMEWarning` where the fit's covariance step failed."""
    step = fit.covariance_step
    if step is not None and not step.ok and np.isfinite(fit.ofv):
        warnings.warn(
            f"{fit.model.name!r}: covariance step ({step.kind}): {step.message}",
            NLMEWarning,
            stacklevel=3,
        )


def _warn_floored_sd(problem: _Problem, fit: NLMEFit) -> None:
    """An :class:`NLMEWarning` naming the observations whose residual SD at the
    estimate (at the subjects' modes) is under :data:`SD_FLOOR`."""
    if not np.isfinite(fit.ofv):
        return
    theta, beta, _, sigma = problem.unpack(fit.x)
    eta = fit.etas[:, None]
    f = problem.predict(theta, beta, eta)[:, 0]
    variance = sigma.get("add", 0.0) ** 2 + (sigma.get("prop", 0.0) * f) ** 2
    floored = problem.mask & (variance < SD_FLOOR**2)
    if floored.any():
        with np.errstate(over="ignore"):
            params = problem.individual(theta, beta, eta)
        warnings.warn(
            f"{fit.model.name!r}: {floored.sum()} observation(s) have a residual SD under "
            f"{SD_FLOOR:g} (the DV's unit) at the estimate, the smallest the objective "
            "allows: they are weighted as if their SD were that, and the search for their "
            "subjects' modes is inexact (a fit that stalls); express the DV in a smaller "
            "unit (ug/L instead of mg/L): " + _where(problem.data, floored, params),
            NLMEWarning,
            stacklevel=3,
        )


def _is_log(model: NLMEModel, name: str) -> bool:
    kind, _, what = name.partition("_")
    return kind == "theta" and model.transforms[what] == "log"


def objective_function(fit: NLMEFit, data: Observations, x=None) -> float:
    """The OFV (-2 log-likelihood by FOCE-I, as :attr:`NLMEFit.ofv`) of ``fit``'s model
    on ``data`` at the packed vector ``x``, each subject's conditional mode searched
    from eta = 0: the OFV at a point the fit did not reach (a reparameterised estimate,
    a profile), by the fit's own approximation.

    Parameters
    ----------
    fit : NLMEFit
        The fit whose model (and fixed values) to use.
    data : Observations
        The observations (usually the fit's).
    x : array_like, optional
        A packed vector in the order of ``fit.estimates`` (estimation scale); default
        the fit's estimate.

    Returns
    -------
    float
        The OFV.

    Raises
    ------
    ValueError
        If ``x`` has another length than the fit's estimate, or the OFV is not finite
        there (its predictions fail).
    """
    x = np.asarray(fit.x if x is None else x, float)
    if x.shape != np.shape(fit.x):
        raise ValueError(f"x must have the fit's {np.size(fit.x)} values, got shape {x.shape}")
    problem = _Problem(fit.model, data, fit.fixed)
    value = problem.ofv(x)
    if value == NOT_FINITE_OFV or problem.failed.any():
        raise ValueError(f"the OFV of {fit.model.name!r} is not finite at this x")
    return value


def population_predictions(fit: NLMEFit, data: Observations) -> np.ndarray:
    """Predictions (N, K) of the typical subject (all eta = 0) with each subject's
    covariates (PRED).

    Parameters
    ----------
    fit : NLMEFit
        The fitted model.
    data : Observations
        The subjects and times to predict (any subjects with the model's covariates;
        ``dv`` may be all NaN).

    Returns
    -------
    numpy.ndarray
        PRED at ``data.times_h``, (N, K), in the DV's unit.

    Raises
    ------
    ValueError
        Naming subjects and parameters where a prediction is NaN or infinite; or data
        :func:`fit_foce` would refuse (e.g. a covariate the model uses and the data lack).
    """
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, _, _ = problem.unpack(fit.x)
    eta = np.zeros((data.n_subjects, 1, problem.q))
    return _finite_predictions(problem, theta, beta, eta, "population predictions")


def individual_predictions(fit: NLMEFit, data: Observations, etas=None) -> np.ndarray:
    """Predictions (N, K) with each subject's conditional modes (IPRED).

    Parameters
    ----------
    fit : NLMEFit
        The fitted model.
    data : Observations
        The subjects and times to predict.
    etas : array_like, optional
        The subjects' random effects (N, q), e.g. from :func:`conditional_modes`; default
        the fit's own modes :attr:`NLMEFit.etas` (then ``data`` must be the fit's subjects,
        in its order).

    Returns
    -------
    numpy.ndarray
        IPRED at ``data.times_h``, (N, K), in the DV's unit.

    Raises
    ------
    ValueError
        Naming subjects and parameters where a prediction is NaN or infinite.
    """
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, _, _ = problem.unpack(fit.x)
    etas = fit.etas if etas is None else np.asarray(etas, float)
    return _finite_predictions(problem, theta, beta, etas[:, None], "individual predictions")


def _finite_predictions(problem: _Problem, theta, beta, eta, what: str) -> np.ndarray:
    """The model's predictions (N, K) for one set of random effects ``eta`` (N, 1, q); a
    ``ValueError`` naming the subjects, times and parameters where any is NaN or
    infinite (never a stand-in value)."""
    f = problem.raw_predict(theta, beta, eta)[:, 0]
    bad = ~np.isfinite(f)
    if bad.any():
        with np.errstate(all="ignore"):
            params = problem.individual(theta, beta, eta)
        rows = np.flatnonzero(bad.any(axis=1))[:5]
        where = "; ".join(
            f"subject {np.asarray(problem.data.ids)[i].item()!r} at "
            f"{np.asarray(problem.data.times_h)[i][bad[i]][:3].tolist()} h ("
            + ", ".join(f"{k}={float(v[i, 0]):.4g}" for k, v in params.items())
            + ")"
            for i in rows
        )
        raise ValueError(
            f"model {problem.model.name!r}: {what} are NaN or infinite for "
            f"{int(bad.any(axis=1).sum())} subject(s): {where}"
        )
    return f


def conditional_modes(fit: NLMEFit, data: Observations) -> np.ndarray:
    """Each subject's mode of the random effects (N, q) given its data and the fitted
    population model (empirical Bayes / MAP estimates), for subjects the fit has not
    seen: e.g. a new patient's few samples.

    Parameters
    ----------
    fit : NLMEFit
        The fitted model (its estimates held fixed).
    data : Observations
        The subjects' observations (at least one).

    Returns
    -------
    numpy.ndarray
        The modes (N, q), in the order of :attr:`NLMEModel.random`, on the transformed
        scale of each parameter.

    Raises
    ------
    ValueError
        No observation, or naming the subjects whose predictions fail (NaN or inf) on the
        way to their modes, after a second search from 0 in steps of at most
        :data:`RETRY_STEP_LIMIT` SDs for them.
    """
    data.require_observations()
    problem = _Problem(fit.model, data, fit.fixed)
    eta = np.zeros((data.n_subjects, problem.q))
    modes = problem.conditional_modes(fit.x, eta)[0]
    if problem.failed.any():
        # a subject far from the typical one (e.g. troughs far above a proportional-error
        # model's near-zero prediction) can send full Gauss-Newton steps out to where its
        # predictions overflow: search again from 0 in steps of at most
        # RETRY_STEP_LIMIT SDs; the other subjects keep their modes
        failed = problem.failed.copy()
        retried = problem.conditional_modes(fit.x, eta, step_limit=RETRY_STEP_LIMIT)[0]
        modes[failed] = retried[failed]
        problem.failed = failed & problem.failed
    if problem.failed.any():
        ids = np.asarray(data.ids)[problem.failed][:10].tolist()
        raise ValueError(
            f"model {fit.model.name!r}: predictions fail (NaN or inf) at or near the modes of "
            f"{int(problem.failed.sum())} subject(s) {ids}: their modes would rest on a "
            "stand-in value, not on the model. Check the model where these subjects take it"
        )
    return modes


def individual_parameters(fit: NLMEFit, data: Observations, etas) -> dict[str, np.ndarray]:
    """Natural-scale parameters (N,) of the subjects of ``data`` (their covariates) with
    random effects ``etas`` (N, q), e.g. from :func:`conditional_modes`.

    Parameters
    ----------
    fit : NLMEFit
        The fitted model.
    data : Observations
        The subjects (their covariates are read).
    etas : array_like
        Their random effects (N, q), in the order of :attr:`NLMEModel.random`.

    Returns
    -------
    dict of str to numpy.ndarray
        Each parameter of the model, (N,), on its natural scale (its unit).
    """
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, _, _ = problem.unpack(fit.x)
    eta = np.asarray(etas, float)[:, None]
    return {k: v[:, 0] for k, v in problem.individual(theta, beta, eta).items()}


def simulate_population(
    fit: NLMEFit, data: Observations, n_replicates: int, seed: int = 0
) -> np.ndarray:
    """Observations simulated from the fitted model (new etas and residual errors) for
    the subjects of ``data``: (n_replicates, N, K). For visual predictive checks. Where
    the model's prediction fails (NaN or inf) for a simulated subject, the simulated
    values there are NaN, with an :class:`NLMEWarning` saying for how many subjects.

    Parameters
    ----------
    fit : NLMEFit
        The fitted model.
    data : Observations
        The subjects (covariates, times, ``extra``) to simulate.
    n_replicates : int
        The number of simulated data sets.
    seed : int
        Seed of the random generator (default 0).

    Returns
    -------
    numpy.ndarray
        Simulated observations (n_replicates, N, K), in the DV's unit, at every time of
        ``data.times_h`` (padding included).
    """
    problem = _Problem(fit.model, data, fit.fixed)
    theta, beta, omega, sigma = problem.unpack(fit.x)
    rng = np.random.default_rng(seed)
    eta = rng.normal(size=(data.n_subjects, n_replicates, problem.q)) * omega
    f = problem.raw_predict(theta, beta, eta)
    failed = ~np.isfinite(f)
    if failed.any():
        warnings.warn(
            f"model {fit.model.name!r}: {int(failed.any(axis=2).sum())} of "
            f"{failed.shape[0] * failed.shape[1]} simulated subjects have NaN or infinite "
            "predictions; their simulated values there are NaN (a VPC refuses them)",
            NLMEWarning,
            stacklevel=2,
        )
    with np.errstate(invalid="ignore", over="ignore"):
        sim = f + problem.sd(f, sigma) * rng.normal(size=f.shape)
    sim = np.where(failed, np.nan, sim)
    return np.moveaxis(sim, 1, 0)


def compare_estimates(fits: Sequence[NLMEFit]) -> pd.DataFrame:
    """Estimates of several fits side by side, with their OFV (e.g. from different
    starting points).

    Parameters
    ----------
    fits : sequence of NLMEFit
        The fits (their estimates aligned by name; NaN where a fit lacks one).

    Returns
    -------
    pandas.DataFrame
        One column per fit (0, 1, ...), one row per estimate (natural scale) and a last
        row ``OFV``.
    """
    table = pd.concat({i: f.estimates["estimate"] for i, f in enumerate(fits)}, axis=1)
    table.loc["OFV"] = [f.ofv for f in fits]
    return table
