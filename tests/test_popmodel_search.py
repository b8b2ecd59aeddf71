"""The population-model search's candidates (protocol version 2): the indirect-response
mechanisms through transit steps, with random effects and covariates placed by name."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from pkpd_lib.pmx import popmodels as pm
from pkpd_lib.pmx import population
from pkpd_lib.pmx import regimens as reg

P = {"R0": 80.0, "Emax": 0.6, "EC50": 1.5, "gam": 1.5, "MTT": 20.0, "kout": 0.06}


def _inhibited_loss_ode(p, regimen, n_transit, t_end):
    """Type II turnover through ``n_transit`` transit stages, by scipy, from the same
    closed-form concentration (one patient)."""
    pk = population.sample_population(1, seed=4).params.as_dict()

    def conc(t):
        return pm.individual_conc(pk, regimen, np.array([t]))[0, 0]

    def rhs(t, y):
        c = max(conc(t), 0.0)
        drive = p["Emax"] * c ** p["gam"] / (p["EC50"] ** p["gam"] + c ** p["gam"])
        ktr = n_transit / p["MTT"] if n_transit else 0.0
        stages = y[1:]
        d = [ktr * ((stages[k - 1] if k else drive) - stages[k]) for k in range(n_transit)]
        inhibition = stages[-1] if n_transit else drive
        return [p["kout"] * p["R0"] - p["kout"] * (1 - inhibition) * y[0], *d]

    t = np.arange(0.0, t_end + 1.0, 4.0)
    y0 = [p["R0"]] + [0.0] * n_transit
    sol = solve_ivp(rhs, (0, t_end), y0, t_eval=t, rtol=1e-8, atol=1e-8, max_step=0.25)
    return pk, t, sol.y[0]


@pytest.mark.parametrize("n_transit", [0, 2])
def test_inhibited_loss_grid_is_the_type_ii_turnover(n_transit):
    regimen = reg.bid()
    pk, t, ode = _inhibited_loss_ode(P, regimen, n_transit, 96.0)
    mid = pm.individual_conc(pk, regimen, pm.mid_grid(96.0))
    grid = pm.inhibited_loss_grid({k: np.array([[v]]) for k, v in P.items()}, mid, n_transit)
    on_samples = grid[0, 0, np.rint(t / pm.PD_STEP_H).astype(int)]
    np.testing.assert_allclose(on_samples, ode, rtol=2e-3)
    assert on_samples[1:].max() > P["R0"] * 1.05  # inhibiting the loss raises the biomarker


def test_the_search_family_holds_version_1s_model():
    """search_model(3, the base random effects, version 1's covariates) predicts what
    pd_model(3) predicts, and both mechanisms raise the biomarker under the drug."""
    pop = population.sample_population(5, seed=8)
    times = np.arange(0.0, 97.0, 4.0)
    data = pm.pd_data(reg.qd(), times, pop.params.as_dict(), pop.covariates)
    v1 = pm.pd_model(3)
    same = pm.search_model(3, covariates={"Emax": ("lage",), "EC50": ("sex",)})
    assert same.params == v1.params and same.random == v1.random
    fit_like = {k: np.full((5, 1), v) for k, v in pm.PD_START.items()}
    np.testing.assert_array_equal(v1.predict(fit_like, data), same.predict(fit_like, data))
    inhibits = pm.search_model(3, "inhibited loss")
    assert inhibits.transforms["Emax"] == "logit"
    rise = inhibits.predict(fit_like, data)[:, 0, -1] - pm.PD_START["R0"]
    assert (rise > 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_transit": 2, "mechanism": "inhibited production"}, "unknown mechanism"),
        ({"n_transit": -1}, "whole number >= 0"),
        ({"n_transit": 1.5}, "whole number >= 0"),
        ({"n_transit": 0, "random": ("R0", "MTT")}, r"random effects or covariates on \['MTT'\]"),
        ({"n_transit": 2, "covariates": {"CL": ("lwt",)}}, r"on \['CL'\]"),
    ],
)
def test_search_candidates_refuse_what_they_cannot_be(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pm.search_model(**kwargs)


def test_candidates_differ_in_the_store_key_by_mechanism_and_steps():
    """Two candidates of the same parameters must not share a stored fit."""
    a, b = pm.search_model(2), pm.search_model(2, "inhibited loss")
    c = pm.search_model(3)
    names = {m.name for m in (a, b, c)}
    assert len(names) == 3
    closures = {tuple(repr(x.cell_contents) for x in m.predict.__closure__) for m in (a, b, c)}
    assert len(closures) == 3


def test_inhibited_loss_with_no_loss_left_accumulates_instead_of_nan():
    """Imax at 1 and concentrations far above EC50 leave no loss: the biomarker grows by
    kout R0 per hour (production unopposed), finite, not NaN."""
    p = {**P, "Emax": 1.0, "EC50": 1e-9, "gam": 1.0}
    grid = pm.inhibited_loss_grid(
        {k: np.array([[v]]) for k, v in p.items()}, np.full((1, 8), 1e3), 0
    )
    expected = P["R0"] + P["kout"] * P["R0"] * pm.PD_STEP_H * np.arange(9)
    np.testing.assert_allclose(grid[0, 0], expected, rtol=1e-9)


def test_inhibited_loss_takes_a_transit_time_per_patient():
    """With a random effect on MTT each row has its own transit rate (the scan path):
    each row equals the same row computed alone (the filter path)."""
    rows = {**{k: np.full((1, 2), v) for k, v in P.items()}, "MTT": np.array([[10.0, 40.0]])}
    conc = np.abs(np.sin(np.arange(200) / 15.0))[None] * 4.0
    both = pm.inhibited_loss_grid(rows, conc, 2)
    for j in range(2):
        alone = pm.inhibited_loss_grid({k: v[:, j : j + 1] for k, v in rows.items()}, conc, 2)
        np.testing.assert_allclose(both[:, j], alone[:, 0], rtol=1e-12)
    assert not np.allclose(both[0, 0], both[0, 1])
