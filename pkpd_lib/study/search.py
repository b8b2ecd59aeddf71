"""The population-model search of the book's protocol, version 2 (``book/protocol_v2.md``).

A modeller with QD data does not know the structure, the covariate relations or where
the random effects belong. :func:`run` finds them by the protocol's stated rules, on
training data only, with FOCE-I fits of :func:`pkpd_lib.pmx.popmodels.search_model`:

1. **structure**: each mechanism of :data:`~pkpd_lib.pmx.popmodels.MECHANISMS`
   through 0-5 transit steps (:data:`STRUCTURES`); kept: the lowest AIC among fits that
   converged with no parameter at a bound (:func:`pick_structure`);
2. **random effects**: added one parameter at a time while the best addition lowers
   the OFV by more than :data:`ADD_OFV` with shrinkage below :data:`MAX_SHRINKAGE_PCT`
   (:func:`best_addition`);
3. **covariates**: candidates screened on the empirical Bayes estimates
   (:func:`screen`, Pearson p < :data:`SCREEN_P`), added forward at :data:`ADD_OFV`
   (p < 0.05), removed backward at :data:`DROP_OFV` (p < 0.01; :func:`best_removal`).

The rules are pure functions of the fits' numbers, tested on their own; :func:`run` is
the loop that fits the candidates (each from and to the store) and records every fit in
one table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from ..pmx import nlme
from ..pmx import popmodels as pm

#: The structures of step 1: (mechanism, transit steps).
STRUCTURES = tuple((m, n) for m in pm.MECHANISMS for n in range(6))
#: OFV drop for adding a random effect or a covariate relation: chi-squared, 1 degree of
#: freedom, p < 0.05.
ADD_OFV = float(stats.chi2.ppf(0.95, 1))
#: OFV rise below which a covariate relation is removed: p < 0.01.
DROP_OFV = float(stats.chi2.ppf(0.99, 1))
#: A random effect is kept only with a shrinkage (%) below this.
MAX_SHRINKAGE_PCT = 50.0
#: Parameters to which step 2 may add a random effect.
RANDOM_CANDIDATES = ("Emax", "gam", "MTT")
#: Covariate columns of step 3 (:func:`pkpd_lib.pmx.popmodels.covariate_columns`).
COVARIATES = ("lwt", "lage", "sex")
#: The screen's significance level (Pearson correlation of etas with a covariate).
SCREEN_P = 0.05


@dataclass(frozen=True)
class Candidate:
    """A model of the search: mechanism, transit steps, random effects, covariates
    (parameter -> covariate columns)."""

    mechanism: str
    n_transit: int
    random: tuple[str, ...] = pm.BASE_RANDOM
    covariates: tuple[tuple[str, str], ...] = ()

    def model(self) -> nlme.NLMEModel:
        """The candidate as :func:`pkpd_lib.pmx.popmodels.search_model`."""
        by_param: dict[str, tuple[str, ...]] = {}
        for param, column in self.covariates:
            by_param[param] = (*by_param.get(param, ()), column)
        return pm.search_model(self.n_transit, self.mechanism, self.random, by_param)

    def label(self) -> str:
        """The candidate in words, for the search's table."""
        relations = ", ".join(f"{p}~{c}" for p, c in self.covariates) or "none"
        return (
            f"{self.mechanism}, {self.n_transit} transit; eta on {', '.join(self.random)}; "
            f"covariates {relations}"
        )


def n_estimated(fit: nlme.NLMEFit) -> int:
    """The number of estimated quantities of a fit (thetas, coefficients, omegas,
    residual SDs): what AIC counts."""
    return int(np.asarray(fit.x).size)


def aic(fit: nlme.NLMEFit) -> float:
    """Akaike's criterion of a fit: OFV + 2 x :func:`n_estimated`."""
    return float(fit.ofv + 2 * n_estimated(fit))


def usable(fit: nlme.NLMEFit) -> bool:
    """A fit the rules may keep: converged (small gradient), a finite OFV and no
    parameter at a bound."""
    return bool(fit.converged and np.isfinite(fit.ofv) and not fit.at_bound)


def pick_structure(fits: Mapping[object, nlme.NLMEFit]) -> object:
    """Step 1's rule: the key of the lowest AIC among :func:`usable` fits.

    Raises
    ------
    ValueError
        If no fit is usable (naming why each failed).
    """
    kept = {k: aic(f) for k, f in fits.items() if usable(f)}
    if not kept:
        reasons = "; ".join(f"{k}: {f.convergence}" for k, f in fits.items())
        raise ValueError(f"no structure's fit converged without a bound: {reasons}")
    return min(kept, key=kept.get)


def best_addition(
    base_ofv: float,
    trials: Mapping[object, nlme.NLMEFit],
    threshold: float = ADD_OFV,
    accept: Callable[[object, nlme.NLMEFit], bool] | None = None,
) -> object | None:
    """The forward rule: the :func:`usable` trial of lowest OFV, kept if it lies more
    than ``threshold`` below ``base_ofv`` and ``accept`` (if given) allows it; else
    None (the next best is not tried: the search stops)."""
    ok = {k: f.ofv for k, f in trials.items() if usable(f)}
    if not ok:
        return None
    best = min(ok, key=ok.get)
    if base_ofv - ok[best] <= threshold:
        return None
    return best if accept is None or accept(best, trials[best]) else None


def best_removal(
    full_ofv: float, trials: Mapping[object, nlme.NLMEFit], threshold: float = DROP_OFV
) -> object | None:
    """The backward rule: the trial (a relation removed) whose OFV rises least above
    ``full_ofv``, if the rise is below ``threshold``; else None. A trial that failed
    to converge is not a removal the data allow."""
    ok = {k: f.ofv - full_ofv for k, f in trials.items() if usable(f)}
    if not ok:
        return None
    best = min(ok, key=ok.get)
    return best if ok[best] < threshold else None


def shrinkage_pct(fit: nlme.NLMEFit, param: str) -> float:
    """The eta shrinkage (%, SD-based as NONMEM's) of ``param`` in ``fit``."""
    return float(fit.table().loc[f"omega_{param}", "shrinkage %"])


def screen(
    fit: nlme.NLMEFit,
    covariates: Mapping[str, np.ndarray],
    columns: Sequence[str] = COVARIATES,
    level: float = SCREEN_P,
) -> pd.DataFrame:
    """Step 3's screen: the Pearson correlation of each random effect's empirical Bayes
    estimates with each covariate column.

    Returns
    -------
    pandas.DataFrame
        One row per (parameter, covariate), with ``r``, ``p`` and ``passes`` (p <
        ``level``), sorted by p.
    """
    rows = []
    for k, param in enumerate(fit.model.random):
        eta = np.asarray(fit.etas)[:, k]
        for column in columns:
            x = np.asarray(covariates[column], float)
            if np.ptp(x) == 0.0:
                continue
            r, p = stats.pearsonr(eta, x)
            rows.append({"parameter": param, "covariate": column, "r": r, "p": p})
    table = pd.DataFrame(rows).sort_values("p", kind="stable").reset_index(drop=True)
    table["passes"] = table["p"] < level
    return table


@dataclass
class Search:
    """What :func:`run` did: every fit in ``table`` (step, candidate, OFV, AIC,
    parameters, convergence, kept), the screen of step 3, the final candidate and its
    fit (with standard errors)."""

    table: pd.DataFrame
    screen: pd.DataFrame
    final: Candidate
    fit: nlme.NLMEFit
    direction: pd.Series = field(default_factory=pd.Series)


def start_values(kept, model: nlme.NLMEModel, start: Mapping[str, float]):
    """Starting values of a fit: ``start`` (the default SDs) for a new candidate, or the
    estimates of ``kept``, a fit of the same model (the final fit, which then only adds
    the covariance step)."""
    if kept is None:
        return {k: v for k, v in start.items() if k in model.params}, 0.5, None
    typical = {k: kept.typical(k) for k in (*model.params, *model.coefficient_names)}
    est = kept.estimates["estimate"]
    omega = {p: float(est[f"omega_{p}"]) for p in model.random}
    sigma = {t: float(est[f"sigma_{t}"]) for t in model.error}
    return typical, omega, sigma


def fit_candidate(
    candidate: Candidate,
    data: nlme.Observations,
    start: Mapping[str, float],
    *,
    kept: nlme.NLMEFit | None = None,
    standard_errors: bool = False,
    cache_dir="default",
) -> nlme.NLMEFit:
    """A candidate's FOCE-I fit to ``data`` from ``start`` (or from ``kept``, a fit of the
    same model: :func:`start_values`), from and to ``cache_dir``: how the search fits
    every candidate, and how its final model is refitted to other data."""
    model = candidate.model()
    typical, omega, sigma = start_values(kept, model, start)
    return nlme.fit_foce(
        model,
        data,
        typical,
        omega_sd=omega,
        sigma=sigma,
        standard_errors=standard_errors,
        cache_dir=cache_dir,
    )


def rises(data: nlme.Observations) -> pd.Series:
    """The training patients' median change from baseline (first sample) at every later
    sampling time: the protocol keeps to mechanisms that raise the biomarker (types II
    and III) when it is positive at every time."""
    dv = np.asarray(data.dv, float)
    times = np.asarray(data.times_h, float)[0]
    change = np.nanmedian(dv[:, 1:] - dv[:, :1], axis=0)
    return pd.Series(change, index=pd.Index(times[1:], name="time (h)"), name="median change")


def run(
    data: nlme.Observations,
    start: Mapping[str, float],
    *,
    cache_dir="default",
    progress: Callable[[str], None] | None = None,
) -> Search:
    """The protocol's search on ``data`` (:func:`pkpd_lib.study.realistic.population_pd_data`),
    every candidate fitted by FOCE-I from ``start`` (from and to ``cache_dir``).

    Raises
    ------
    NotImplementedError
        If the biomarker does not rise at every sampling time (the protocol's types I and
        IV would then be candidates, which :mod:`pkpd_lib.pmx.popmodels` lacks).
    ValueError
        If no structure's fit is usable.
    """
    say = progress or (lambda message: None)
    direction = rises(data)
    say(
        "median change from baseline (biomarker units) at "
        + ", ".join(f"{t:g} h {v:+.1f}" for t, v in direction.items())
    )
    if not (direction > 0).all():
        raise NotImplementedError(
            "the median change from baseline is not positive at every time "
            f"({direction.round(2).to_dict()}): types I and IV would be candidates"
        )
    rows: list[dict] = []

    def fit(
        candidate: Candidate,
        step: str,
        standard_errors: bool = False,
        kept=None,
        candidate_fit: bool = True,
    ) -> nlme.NLMEFit:
        say(f"{step}: {candidate.label()}")
        # a candidate is kept only if usable (the retrain tier judges it so); the final
        # fit is the search's result, whatever it is
        marked = nlme.candidate_fits() if candidate_fit else contextlib.nullcontext()
        with marked:
            result = fit_candidate(
                candidate,
                data,
                start,
                kept=kept,
                standard_errors=standard_errors,
                cache_dir=cache_dir,
            )
        covariance = result.covariance_step
        rows.append(
            {
                "step": step,
                "mechanism": candidate.mechanism,
                "transit steps": candidate.n_transit,
                "model": candidate.label(),
                "parameters": n_estimated(result),
                "OFV": result.ofv,
                "AIC": aic(result),
                "converged": result.converged,
                "at bound": ", ".join(result.at_bound),
                "condition number": (np.nan if covariance is None else covariance.condition_number),
                "shrinkage %": ", ".join(
                    f"{p} {shrinkage_pct(result, p):.0f}" for p in result.model.random
                ),
                "kept": False,
            }
        )
        return result

    def mark_kept(label: str) -> None:
        for row in reversed(rows):
            if row["model"] == label:
                row["kept"] = True
                return

    # step 1: the structure
    structures = {(m, n): fit(Candidate(m, n), "1 structure") for m, n in STRUCTURES}
    mechanism, n_transit = pick_structure(structures)
    current = Candidate(mechanism, n_transit)
    current_fit = structures[(mechanism, n_transit)]
    mark_kept(current.label())

    # step 2: random effects, forward
    while True:
        options = [p for p in RANDOM_CANDIDATES if p in current.model().params]
        options = [p for p in options if p not in current.random]
        trials = {
            p: fit(replace(current, random=(*current.random, p)), "2 random effects")
            for p in options
        }
        added = best_addition(
            current_fit.ofv,
            trials,
            accept=lambda p, f: shrinkage_pct(f, p) < MAX_SHRINKAGE_PCT,
        )
        if added is None:
            break
        current = replace(current, random=(*current.random, added))
        current_fit = trials[added]
        mark_kept(current.label())

    # step 3: covariates, screened, forward then backward
    covariates = {c: np.asarray(data.covariates[c], float) for c in COVARIATES}
    screened = screen(current_fit, covariates)
    pending = [(r.parameter, r.covariate) for r in screened.itertuples() if r.passes]
    while pending:
        trials = {
            rel: fit(
                replace(current, covariates=(*current.covariates, rel)),
                "3 covariates, forward",
            )
            for rel in pending
        }
        added = best_addition(current_fit.ofv, trials)
        if added is None:
            break
        current = replace(current, covariates=(*current.covariates, added))
        current_fit = trials[added]
        mark_kept(current.label())
        pending.remove(added)
    while len(current.covariates) > 0:
        trials = {
            rel: fit(
                replace(current, covariates=tuple(r for r in current.covariates if r != rel)),
                "3 covariates, backward",
            )
            for rel in current.covariates
        }
        dropped = best_removal(current_fit.ofv, trials)
        if dropped is None:
            break
        current = replace(current, covariates=tuple(r for r in current.covariates if r != dropped))
        current_fit = trials[dropped]
        mark_kept(current.label())

    final_fit = fit(
        current,
        "final (covariance step)",
        standard_errors=True,
        kept=current_fit,
        candidate_fit=False,
    )
    return Search(pd.DataFrame(rows), screened, current, final_fit, direction)
