"""Predict functions from ODEs (nlme.ode_predict): every subject and copy integrated at
once with its own doses and times, inside FOCE-I."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from pkpd_lib.pmx import nlme


def _oral_rhs(t, y, p):
    """Depot and central amounts (mg), first-order absorption, linear elimination."""
    return [-p["ka"] * y[0], p["ka"] * y[0] - p["CL"] / p["V"] * y[1]]


def _conc(y, p):
    return y[1] / p["V"]


def _closed_form(p, dose_times, amounts, times):
    """Concentrations (mg/L) of the same model by superposition; p arrays broadcast."""
    ka, k, v = p["ka"], p["CL"] / p["V"], p["V"]
    total = 0.0
    for td, amount in zip(dose_times, amounts, strict=True):
        s = np.maximum(times - td, 0.0)
        total = total + amount * ka / (v * (ka - k)) * (np.exp(-k * s) - np.exp(-ka * s))
    return total


#: Four subjects: one dose, two doses, three doses of different amounts, none.
DOSES = {
    "times_h": np.array([[0.0, 0.0, 0.0], [0.0, 12.0, 12.0], [0.0, 8.0, 30.0], [0.0, 0.0, 0.0]]),
    "amounts_mg": np.array(
        [[100.0, 0.0, 0.0], [50.0, 50.0, 0.0], [80.0, 40.0, 20.0], [0.0, 0.0, 0.0]]
    ),
    "count": np.array([1, 2, 3, 0]),
}
#: Irregular times of each subject (padded with its last time); 12 h is a dose time of
#: subject 1 (its sample is taken before that dose).
TIMES = np.array(
    [
        [0.5, 2.0, 7.0, 30.0, 30.0],
        [1.0, 12.0, 13.5, 24.0, 48.0],
        [0.25, 8.0, 9.0, 31.0, 40.0],
        [3.0, 3.0, 3.0, 3.0, 3.0],
    ]
)


def _design(dv=None):
    dv = np.full(TIMES.shape, np.nan) if dv is None else dv
    return nlme.Observations(np.arange(4), TIMES, dv, extra={"doses": DOSES})


def _params(r=3, seed=0):
    rng = np.random.default_rng(seed)
    typical = {"ka": 1.2, "CL": 4.0, "V": 30.0}
    return {k: v * np.exp(0.3 * rng.normal(size=(4, r))) for k, v in typical.items()}


def test_ode_predictions_match_the_closed_form_with_each_subjects_doses_and_times():
    predict = nlme.ode_predict(_oral_rhs, [0.0, 0.0], dose_state=0, output=_conc)
    p = _params()
    out = predict(p, _design())
    assert out.shape == (4, 3, 5)
    for i in range(3):
        count = DOSES["count"][i]
        expected = _closed_form(
            {k: v[i][:, None] for k, v in p.items()},
            DOSES["times_h"][i, :count],
            DOSES["amounts_mg"][i, :count],
            TIMES[i][None],
        )
        np.testing.assert_allclose(out[i], expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(out[3], 0.0)  # no doses: the initial state
    # a sample at a dose time is the trough before it
    before = _closed_form({k: v[1] for k, v in p.items()}, [0.0], [50.0], 12.0)
    np.testing.assert_allclose(out[1, :, 1], before, rtol=1e-6)


def test_ode_outputs_a_mapping_of_quantities_and_a_state_index():
    both = nlme.ode_predict(
        _oral_rhs, [0.0, 0.0], output=lambda y, p: {"conc": y[1] / p["V"], "depot": y[0]}
    )
    depot = nlme.ode_predict(_oral_rhs, lambda p: [0.0, np.zeros_like(p["V"])], output=0)
    p = _params(r=1)
    out = both(p, _design())
    assert sorted(out) == ["conc", "depot"]
    np.testing.assert_allclose(out["depot"], depot(p, _design()), rtol=1e-6, atol=1e-9)
    expected = 100.0 * np.exp(-p["ka"][0, 0] * TIMES[0])
    np.testing.assert_allclose(out["depot"][0, 0], expected, rtol=1e-6, atol=1e-12)


def test_a_failing_copy_gives_nan_and_leaves_the_others():
    predict = nlme.ode_predict(_oral_rhs, [0.0, 0.0], output=_conc)
    p = _params()
    clean = predict(p, _design())
    p["CL"][2, 1] = np.nan
    p["ka"][0, 2] = np.inf
    out = predict(p, _design())
    assert np.isnan(out[2, 1]).all() and np.isnan(out[0, 2]).all()
    keep = ~np.isnan(out)
    assert keep.sum() == out.size - 10
    np.testing.assert_allclose(out[keep], clean[keep], rtol=1e-6, atol=1e-12)


def test_ode_models_need_doses_and_are_told_apart_in_the_store():
    predict = nlme.ode_predict(_oral_rhs, [0.0, 0.0], output=_conc)
    undosed = nlme.Observations(np.arange(4), TIMES, np.ones(TIMES.shape))
    with pytest.raises(ValueError, match=r"needs each subject's doses in data.extra\['doses'\]"):
        predict(_params(), undosed)

    def faster(t, y, p):
        return [-2 * p["ka"] * y[0], 2 * p["ka"] * y[0] - p["CL"] / p["V"] * y[1]]

    data = _design(np.ones(TIMES.shape))
    keys = set()
    for rhs, kwargs in ((_oral_rhs, {}), (faster, {}), (_oral_rhs, {"rtol": 1e-10})):
        model = _model(nlme.ode_predict(rhs, [0.0, 0.0], output=_conc, **kwargs))
        keys.add(nlme._fit_key(model, data, np.zeros(6), {}, ())[0])
    assert len(keys) == 3
    again = _model(nlme.ode_predict(_oral_rhs, [0.0, 0.0], output=_conc))
    assert nlme._fit_key(again, data, np.zeros(6), {}, ())[0] in keys


def _model(predict, name="oral"):
    return nlme.NLMEModel(
        name, ("ka", "CL", "V"), dict.fromkeys(("ka", "CL", "V"), "log"), ("CL", "V"), predict
    )


def _closed_form_predict(p, d):
    doses = d.extra["doses"]
    out = 0.0
    for j in range(doses["times_h"].shape[1]):
        amount = doses["amounts_mg"][:, j][:, None, None]
        s = np.maximum(d.times_h[:, None, :] - doses["times_h"][:, j][:, None, None], 0.0)
        s = np.where(d.times_h[:, None, :] > doses["times_h"][:, j][:, None, None], s, 0.0)
        q = {k: v[..., None] for k, v in p.items()}
        k = q["CL"] / q["V"]
        out = out + amount * q["ka"] / (q["V"] * (q["ka"] - k)) * (
            np.exp(-k * s) - np.exp(-q["ka"] * s)
        )
    return out


def test_the_foce_objective_of_an_ode_model_is_that_of_its_closed_form():
    rng = np.random.default_rng(3)
    p = _params(r=1, seed=3)
    truth = _closed_form_predict(p, _design())[:, 0]
    dv = truth[:3] * (1 + 0.1 * rng.normal(size=(3, 5)))
    data = nlme.Observations(
        np.arange(3),
        TIMES[:3],
        dv,
        extra={"doses": {k: v[:3] for k, v in DOSES.items()}},
    )
    ode = nlme._Problem(_model(nlme.ode_predict(_oral_rhs, [0.0, 0.0], output=_conc)), data, {})
    exact = nlme._Problem(_model(_closed_form_predict), data, {})
    x = nlme.start_vector(ode.model, {"ka": 1.0, "CL": 5.0, "V": 25.0}, omega_sd=0.3)
    assert ode.ofv(x) == pytest.approx(exact.ofv(x), abs=1e-4)
    np.testing.assert_allclose(ode.eta, exact.eta, atol=1e-6)


# --- a nonlinear model fitted by FOCE-I -------------------------------------------------

MM_TRUTH = {"V": 20.0, "Vmax": 10.0, "Km": 2.0}
MM_OMEGA = {"V": 0.2, "Vmax": 0.25}


def _mm_rhs(t, y, p):
    """Michaelis-Menten elimination (Vmax mg/h, Km mg/L) from one volume V (L)."""
    c = y[0] / p["V"]
    return [-p["Vmax"] * c / (p["Km"] + c)]


def _mm_data(n=18, seed=0, k=6):
    """Bolus doses of 50, 200 or 800 mg (linear to saturated elimination), ``k`` samples
    at random times within 24 h, 10% proportional error; solved by scipy per subject."""
    rng = np.random.default_rng(seed)
    amount = np.array([50.0, 200.0, 800.0])[np.arange(n) % 3]
    times = np.sort(rng.uniform(0.25, 24.0, (n, k)), axis=1)
    dv = np.empty((n, k))
    for i in range(n):
        p = {
            "V": MM_TRUTH["V"] * np.exp(MM_OMEGA["V"] * rng.normal()),
            "Vmax": MM_TRUTH["Vmax"] * np.exp(MM_OMEGA["Vmax"] * rng.normal()),
            "Km": MM_TRUTH["Km"],
        }
        sol = solve_ivp(
            lambda t, y, p=p: _mm_rhs(t, y, p),
            (0.0, 24.0),
            [amount[i]],
            t_eval=times[i],
            rtol=1e-11,
            atol=1e-11,
        )
        dv[i] = sol.y[0] / p["V"] * (1 + 0.1 * rng.normal(size=k))
    doses = {"times_h": np.zeros((n, 1)), "amounts_mg": amount[:, None], "count": np.ones(n, int)}
    return nlme.Observations(np.arange(n), times, dv, extra={"doses": doses})


@pytest.mark.slow
def test_foce_fits_michaelis_menten_elimination():
    model = nlme.NLMEModel(
        "Michaelis-Menten",
        tuple(MM_TRUTH),
        dict.fromkeys(MM_TRUTH, "log"),
        tuple(MM_OMEGA),
        nlme.ode_predict(_mm_rhs, [0.0], output=lambda y, p: y[0] / p["V"]),
    )
    fit = nlme.fit_foce(
        model, _mm_data(), {"V": 25.0, "Vmax": 7.0, "Km": 3.0}, standard_errors=False
    )
    assert fit.converged, fit.convergence
    for name, truth in MM_TRUTH.items():
        assert fit.typical(name) == pytest.approx(truth, rel=0.15), name
    assert fit.estimates.loc["sigma_prop", "estimate"] == pytest.approx(0.1, rel=0.2)


def test_a_copy_that_stops_the_integration_is_found_and_only_it_fails():
    """A stiff trial copy (absorption 1e5/h) makes the explicit integrator exceed its
    work limit; halves of the copies are integrated alone until that copy is found."""
    predict = nlme.ode_predict(
        _oral_rhs, [0.0, 0.0], output=_conc, method="DOP853", max_rhs_calls=5000
    )
    p = _params()
    clean = predict(p, _design())
    p["ka"][1, 2] = 1e5
    out = predict(p, _design())
    assert np.isnan(out[1, 2]).all()
    keep = ~np.isnan(out)
    assert keep.sum() == out.size - 5
    np.testing.assert_allclose(out[keep], clean[keep], rtol=1e-6, atol=1e-12)


def test_the_mode_search_of_an_ode_model_steps_at_most_two_sds_of_eta():
    """Each trial point of an ODE model's mode search lies within ETA_STEP_LIMIT SDs of
    a point evaluated before it (far trial points cost integrations); the modes are
    those of the closed form, whose search is not limited."""
    rng = np.random.default_rng(4)
    p = _params(r=1, seed=4)
    dv = _closed_form_predict(p, _design())[:3, 0] * (1 + 0.05 * rng.normal(size=(3, 5)))
    data = nlme.Observations(
        np.arange(3), TIMES[:3], dv, extra={"doses": {k: v[:3] for k, v in DOSES.items()}}
    )
    predict = nlme.ode_predict(_oral_rhs, [0.0, 0.0], output=_conc)
    assert predict.eta_step_limit == nlme.ETA_STEP_LIMIT == 2.0
    assert not hasattr(_closed_form_predict, "eta_step_limit")
    ode = nlme._Problem(_model(predict), data, {})
    seen = []
    linearised = ode._linearised

    def recording(theta, beta, eta, omega, sigma):
        seen.append(eta.copy())
        return linearised(theta, beta, eta, omega, sigma)

    ode._linearised = recording
    x = nlme.start_vector(ode.model, {"ka": 1.2, "CL": 4.0, "V": 30.0}, omega_sd=0.05)
    eta = ode.conditional_modes(x, np.zeros((3, 2)))[0]
    omega = np.exp(x[3:5])
    for k in range(1, len(seen)):
        distance = np.abs((seen[k][None] - np.array(seen[:k])) / omega).max(axis=2).min(axis=0)
        assert distance.max() <= nlme.ETA_STEP_LIMIT + 1e-9
    assert np.abs(eta / omega).max() > 2 * nlme.ETA_STEP_LIMIT  # the modes are far
    exact = nlme._Problem(_model(_closed_form_predict), data, {})
    np.testing.assert_allclose(eta, exact.conditional_modes(x, np.zeros((3, 2)))[0], atol=1e-5)
