"""The population-model search's rules (protocol version 2), on fits whose numbers the
test sets, and the search loop with FOCE-I replaced by such fits."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pkpd_lib.pmx import nlme, population
from pkpd_lib.pmx import popmodels as pm
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.study import search


def fake(ofv, n=10, converged=True, at_bound=(), etas=None, model=None, shrink=10.0):
    """A fit with the numbers the rules read; ``shrink``: every random effect's shrinkage
    (%)."""
    table = pd.DataFrame({"shrinkage %": shrink}, index=[f"omega_{p}" for p in "ABCDEFG"])
    if model is not None:
        table = pd.DataFrame({"shrinkage %": shrink}, index=[f"omega_{p}" for p in model.random])
    names = [*table.index, "sigma_prop"]
    return SimpleNamespace(
        ofv=ofv,
        x=np.zeros(n),
        converged=converged,
        at_bound=at_bound,
        convergence="gradient below tolerance" if converged else "stalled",
        etas=etas,
        model=model,
        table=lambda: table,
        covariance_step=None,
        typical=lambda name: 1.0,
        estimates=pd.DataFrame({"estimate": 0.3}, index=names),
    )


def test_structure_is_the_lowest_aic_of_the_usable_fits():
    fits = {
        "a": fake(100.0, n=10),  # AIC 120
        "b": fake(99.0, n=11),  # AIC 121: a lower OFV does not pay for its parameter
        "c": fake(50.0, converged=False),  # not converged: not a candidate
        "d": fake(60.0, at_bound=("theta_Emax",)),  # at a bound: not plainly converged
    }
    assert search.pick_structure(fits) == "a"
    with pytest.raises(ValueError, match="no structure's fit converged"):
        search.pick_structure({"c": fits["c"], "d": fits["d"]})


def test_forward_and_backward_thresholds_are_the_protocols():
    assert search.ADD_OFV == pytest.approx(3.841, abs=1e-3)
    assert search.DROP_OFV == pytest.approx(6.635, abs=1e-3)
    # forward: the largest drop, only if it exceeds 3.84
    assert search.best_addition(100.0, {"x": fake(97.0), "y": fake(95.0)}) == "y"
    assert search.best_addition(100.0, {"x": fake(96.5)}) is None
    assert search.best_addition(100.0, {"x": fake(90.0, converged=False)}) is None
    # the best addition is refused (e.g. its shrinkage): the search stops there, it does
    # not fall back on the next best
    shrunk = {"x": fake(90.0), "y": fake(95.0)}
    assert search.best_addition(100.0, shrunk, accept=lambda k, f: k != "x") is None
    assert search.best_addition(100.0, shrunk, accept=lambda k, f: k != "y") == "x"
    # backward: the smallest rise, only if it is below 6.63
    assert search.best_removal(100.0, {"x": fake(108.0), "y": fake(105.0)}) == "y"
    assert search.best_removal(100.0, {"x": fake(107.0)}) is None


def test_screen_finds_the_covariate_the_etas_carry():
    rng = np.random.default_rng(0)
    lwt = rng.normal(0, 0.2, 200)
    etas = np.column_stack([rng.normal(size=200), 2.0 * lwt + 0.1 * rng.normal(size=200)])
    fit = fake(0.0, etas=etas, model=SimpleNamespace(random=("R0", "EC50")))
    cov = {"lwt": lwt, "lage": rng.normal(size=200), "sex": rng.integers(0, 2, 200)}
    table = search.screen(fit, cov)
    assert (table.iloc[0]["parameter"], table.iloc[0]["covariate"]) == ("EC50", "lwt")
    assert table.iloc[0]["passes"] and table["passes"].sum() <= 2


@pytest.fixture
def small_data():
    pop = population.sample_population(30, seed=11)
    times = np.arange(0.0, 169.0, 24.0)
    data = pm.pd_data(reg.qd(), times, pop.params.as_dict(), pop.covariates)
    # a biomarker that rises: the model's own typical prediction plus noise
    fit_like = {k: np.full((30, 1), v) for k, v in pm.PD_START.items()}
    y = pm.pd_model(3).predict(fit_like, data)[:, 0]
    y = y * (1 + 0.05 * np.random.default_rng(1).normal(size=y.shape))
    return pm.pd_observations(y, times, data.extra["conc_mid"], pop.covariates), pop


def test_the_search_loop_applies_each_step_in_order(monkeypatch, small_data):
    """FOCE-I replaced by fits whose OFV the test writes. Step 1 keeps inhibited loss
    without transit steps: a higher OFV than stimulated production with 3 steps, but one
    parameter fewer, so the lower AIC. Step 2: a random effect on Emax lowers the OFV
    most but shrinks 60%, so none is added (the next best is not tried). Step 3 tries
    exactly the screened relations; EC50~sex survives the backward step, R0~lwt not."""
    data, pop = small_data
    rng = np.random.default_rng(2)
    sex = data.covariates["sex"]

    def ofv_of(model):
        name = model.name
        base = 1100.0
        if name.startswith("stimulated production, 3 transit"):
            base = 1000.0  # AIC 1000 + 2 x 10
        if name.startswith("inhibited loss, 0 transit"):
            base = 1001.5  # AIC 1001.5 + 2 x 9: lower
        base -= 25.0 if "Emax" in model.random else 0.0  # the best, but shrunk
        base -= 4.0 if "gam" in model.random else 0.0  # enough, but not the best
        covariates = dict(model.covariates)
        base -= 30.0 if "sex" in covariates.get("EC50", ()) else 0.0
        base -= 5.0 if "lwt" in covariates.get("R0", ()) else 0.0  # kept forward, not backward
        return base

    marked = []  # each fit made as a candidate (the retrain tier judges them so)

    def fake_fit(model, data, start, standard_errors=False, cache_dir=None, **kw):
        marked.append(nlme._IN_CANDIDATES.get())
        q = len(model.random)
        etas = rng.normal(size=(data.n_subjects, q))
        if "EC50" in model.random and "sex" not in dict(model.covariates).get("EC50", ()):
            etas[:, model.random.index("EC50")] += 1.5 * sex
        if "R0" in model.random and "lwt" not in dict(model.covariates).get("R0", ()):
            etas[:, model.random.index("R0")] += 3.0 * data.covariates["lwt"]
        n = len(model.params) + q + len(model.coefficient_names) + 1
        shrink = 60.0 if "Emax" in model.random else 10.0
        return fake(ofv_of(model), n=n, etas=etas, model=model, shrink=shrink)

    monkeypatch.setattr(nlme, "fit_foce", fake_fit)
    messages = []
    result = search.run(data, pm.PD_START, progress=messages.append)
    assert (result.final.mechanism, result.final.n_transit) == ("inhibited loss", 0)
    assert result.final.random == pm.BASE_RANDOM
    assert result.final.covariates == (("EC50", "sex"),)
    # every candidate marked, the final fit (the search's result) not
    assert all(marked[:-1]) and not marked[-1] and not nlme._IN_CANDIDATES.get()
    table = result.table
    assert table["step"].unique().tolist() == [
        "1 structure",
        "2 random effects",
        "3 covariates, forward",
        "3 covariates, backward",
        "final (covariance step)",
    ]
    assert (table["step"] == "1 structure").sum() == 12
    assert (table["step"] == "2 random effects").sum() == 2  # Emax and gam; no MTT
    refused = table[table["model"].str.contains("kout, Emax;")]
    assert refused["shrinkage %"].str.endswith("Emax 60").all()  # why it was refused
    screened = result.screen[result.screen["passes"]]
    first_round = table[table["step"] == "3 covariates, forward"].head(len(screened))
    tried = {m.rsplit("covariates ", 1)[1] for m in first_round["model"]}
    assert tried == {
        f"{p}~{c}" for p, c in zip(screened["parameter"], screened["covariate"], strict=True)
    }
    assert len(messages) == len(table) + 1  # and the direction check
    assert (result.direction > 0).all()


def test_the_search_refuses_a_biomarker_that_falls(small_data):
    data, pop = small_data
    falling = nlme.Observations(
        data.ids, data.times_h, 200.0 - data.dv, data.covariates, data.extra
    )
    with pytest.raises(NotImplementedError, match="types I and IV"):
        search.run(falling, pm.PD_START)


def test_the_search_refuses_a_biomarker_that_falls_at_one_time(small_data):
    data, pop = small_data
    dv = data.dv.copy()
    dv[:, 3] = dv[:, 0] - 5.0  # below baseline at one sampling time only
    dipped = nlme.Observations(data.ids, data.times_h, dv, data.covariates, data.extra)
    assert (search.rises(dipped) > 0).sum() == search.rises(dipped).size - 1
    with pytest.raises(NotImplementedError, match="types I and IV"):
        search.run(dipped, pm.PD_START)
