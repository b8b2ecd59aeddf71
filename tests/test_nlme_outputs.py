"""Several observed quantities fitted together, each with its own residual error model
(observations tagged by output), and the NONMEM reader's tags from CMT or DVID."""

import io

import numpy as np
import pytest
from nlme_models import decay_data, decay_model

from pkpd_lib.pmx import nlme, nonmem
from pkpd_lib.pmx import warfarin as w


def test_one_output_given_per_output_is_the_fit_of_one_error_model():
    data = decay_data()
    start = {"C0": 5.0, "k": 0.5}
    old = nlme.fit_foce(decay_model(), data, start)
    tagged = decay_data(output=np.zeros((20, 6), int))
    for model, observed in (
        (decay_model(error={"conc": ("prop",)}), tagged),
        (decay_model(), tagged),
    ):
        new = nlme.fit_foce(model, observed, start)
        np.testing.assert_array_equal(new.x, old.x)
        np.testing.assert_array_equal(new.etas, old.etas)
        assert new.ofv == old.ofv
        np.testing.assert_array_equal(
            new.estimates["SE (estimation scale)"], old.estimates["SE (estimation scale)"]
        )
    assert new.estimates.index[-1] == "sigma_prop"
    per_output = nlme.fit_foce(
        decay_model(error={"conc": ("prop",)}), data, start, standard_errors=False
    )
    assert per_output.estimates.index[-1] == "sigma_conc_prop"


# --- a joint PK/PD data set -------------------------------------------------------------

PK_TIMES = [0.5, 1, 2, 4, 8, 12, 24.0]
PD_TIMES = [1, 4, 8, 12, 24, 36.0]
TRUTH = {"ka": 1.0, "CL": 5.0, "V": 50.0, "E0": 100.0, "IC50": 1.0}
OMEGA = {"CL": 0.3, "V": 0.2, "E0": 0.1, "IC50": 0.3}
SIGMA = {"conc": {"prop": 0.1}, "pd": {"add": 2.0}}


def _conc(p, t, dose=100.0):
    """One compartment, first-order absorption, one dose at 0 h (mg/L)."""
    ka, k, v = p["ka"], p["CL"] / p["V"], p["V"]
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def _joint_predict(p, d):
    """Concentration (mg/L) and an inhibited response E0 (1 - C / (IC50 + C)) at every
    observation time: the estimator takes each observation's own output."""
    q = {k: v[..., None] for k, v in p.items()}
    c = _conc(q, d.times_h[:, None, :])
    return {"conc": c, "pd": q["E0"] * (1 - c / (q["IC50"] + c))}


JOINT = nlme.NLMEModel(
    "joint PK and PD",
    tuple(TRUTH),
    dict.fromkeys(TRUTH, "log"),
    tuple(OMEGA),
    _joint_predict,
    error={"conc": ("prop",), "pd": ("add",)},
)


def _joint_data(n=60, seed=1):
    rng = np.random.default_rng(seed)
    p = {k: np.full(n, v) for k, v in TRUTH.items()}
    for k, sd in OMEGA.items():
        p[k] = p[k] * np.exp(sd * rng.normal(size=n))
    t = np.tile(PK_TIMES + PD_TIMES, (n, 1))
    output = np.tile([0] * len(PK_TIMES) + [1] * len(PD_TIMES), (n, 1))
    c = _conc({k: v[:, None] for k, v in p.items()}, t)
    e = p["E0"][:, None] * (1 - c / (p["IC50"][:, None] + c))
    y = np.where(
        output == 0,
        c * (1 + SIGMA["conc"]["prop"] * rng.normal(size=t.shape)),
        e + SIGMA["pd"]["add"] * rng.normal(size=t.shape),
    )
    return nlme.Observations(np.arange(n), t, y, output=output)


@pytest.fixture(scope="module")
def joint_fit():
    start = {"ka": 0.7, "CL": 8.0, "V": 30.0, "E0": 80.0, "IC50": 2.0}
    sigma = {"conc": {"prop": 0.2}, "pd": {"add": 5.0}}
    return nlme.fit_foce(JOINT, _joint_data(), start, omega_sd=0.3, sigma=sigma)


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_a_joint_pk_pd_fit_recovers_both_error_models(joint_fit):
    fit = joint_fit
    assert fit.converged, fit.convergence
    est = fit.estimates
    for name, truth in TRUTH.items():
        se = est.loc[f"theta_{name}", "SE (estimation scale)"]
        assert 0 < se < 0.15, name
        assert abs(np.log(fit.typical(name) / truth)) < max(3 * se, 0.05), name
    for name, truth in OMEGA.items():
        assert est.loc[f"omega_{name}", "estimate"] == pytest.approx(truth, rel=0.35), name
    assert est.loc["sigma_conc_prop", "estimate"] == pytest.approx(0.1, rel=0.15)
    assert est.loc["sigma_pd_add", "estimate"] == pytest.approx(2.0, rel=0.15)
    assert list(fit.variances().index)[-2:] == ["sigma_conc_prop", "sigma_pd_add"]
    assert np.isfinite(est["SE (estimation scale)"]).all()


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_predictions_and_simulations_take_each_observations_output(joint_fit):
    data = _joint_data()
    ipred = nlme.individual_predictions(joint_fit, data)
    conc = data.output == 0
    assert ipred[conc].max() < 5 and ipred[~conc].min() > 20  # mg/L, response units
    sims = nlme.simulate_population(joint_fit, data, 200, seed=1)
    spread = (sims - nlme.population_predictions(joint_fit, data)[None]).std(axis=0)
    # an additive SD of 2 on the response only; the concentrations' spread scales with them
    assert spread[~conc].min() > 2.0 and spread[conc].max() < 2.0


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_a_design_predicts_each_entry_as_its_own_output(joint_fit):
    """With nothing observed (a design: a new regimen to predict), each entry is still
    predicted as the output its tag names; it once fell back to output 0 everywhere."""
    data = _joint_data()

    def design(output):
        nothing = np.full(data.dv.shape, np.nan)
        return nlme.Observations(
            data.ids, data.times_h, nothing, data.covariates, data.extra, output=output
        )

    np.testing.assert_allclose(
        nlme.population_predictions(joint_fit, design(data.output)),
        nlme.population_predictions(joint_fit, data),
    )
    etas = nlme.conditional_modes(joint_fit, data)
    np.testing.assert_allclose(
        nlme.individual_predictions(joint_fit, design(data.output), etas),
        nlme.individual_predictions(joint_fit, data, etas),
    )
    beyond = design(data.output * 2)
    with pytest.raises(ValueError, match=r"output\(s\) \[2\] but model .* has 2 outputs"):
        nlme.population_predictions(joint_fit, beyond)


def test_outputs_that_do_not_fit_the_model_are_refused_by_name():
    data = _joint_data(n=5)
    untagged = nlme.Observations(data.ids, data.times_h, data.dv)
    start = dict(TRUTH)
    with pytest.raises(ValueError, match=r"fits 2 outputs \('conc', 'pd'\): the data need"):
        nlme.fit_foce(JOINT, untagged, start)
    with pytest.raises(ValueError, match=r"output\(s\) \[1\] but model 'decay' has one output"):
        nlme.fit_foce(decay_model(), data, {"C0": 1.0, "k": 0.1})
    three = nlme.Observations(data.ids, data.times_h, data.dv, output=data.output * 2)
    with pytest.raises(ValueError, match=r"output\(s\) \[2\] but model .* has 2 outputs"):
        nlme.fit_foce(JOINT, three, start)
    with pytest.raises(ValueError, match=r"sigma must map each of the model's outputs"):
        nlme.fit_foce(JOINT, data, start, sigma={"conc": {"prop": 0.1}})
    with pytest.raises(ValueError, match=r"sigma\['pd'\] must give one SD .* missing \['add'\]"):
        nlme.fit_foce(JOINT, data, start, sigma={"conc": {"prop": 0.1}, "pd": {"prop": 0.1}})
    with pytest.raises(ValueError, match=r"the error of output 'pd' must be"):
        decay_model(error={"conc": ("prop",), "pd": ("exp",)})
    with pytest.raises(ValueError, match=r"output must be \(N, K\)"):
        nlme.Observations(data.ids, data.times_h, data.dv, output=data.output[:, :3])
    with pytest.raises(ValueError, match=r"output must hold whole numbers"):
        nlme.Observations(data.ids, data.times_h, data.dv, output=data.output - 1)
    lacking = nlme.NLMEModel(
        "lacking",
        ("a",),
        {"a": "log"},
        (),
        lambda p, d: {"conc": np.ones((*p["a"].shape, d.dv.shape[1]))},
        error={"conc": ("prop",), "pd": ("add",)},
    )
    with pytest.raises(ValueError, match=r"predict lacks output\(s\) \['pd'\]"):
        nlme.fit_foce(lacking, data, {"a": 1.0})


def test_a_proportional_error_of_one_output_is_checked_on_that_output():
    """A response that starts at 0 is fine under its additive error; a negated
    concentration is refused as the concentrations' (before: one error model)."""
    data = _joint_data(n=5)
    dv = np.where(data.output == 0, -data.dv, data.dv)
    negated = nlme.Observations(data.ids, data.times_h, dv, output=data.output)
    with pytest.raises(ValueError, match=r"every observation \(output 'conc'\) is 0 or has the"):
        nlme.fit_foce(JOINT, negated, dict(TRUTH))


def test_the_store_keys_data_tagged_by_output():
    data = decay_data()
    tagged = decay_data(output=np.zeros((20, 6), int))
    x0 = nlme.start_vector(decay_model(), {"C0": 5.0, "k": 0.5})
    keys = {nlme._fit_key(decay_model(), d, x0, {}, ())[0] for d in (data, tagged)}
    keys.add(nlme._fit_key(decay_model(error={"conc": ("prop",)}), data, x0, {}, ())[0])
    assert len(keys) == 3


# --- NONMEM tables ---------------------------------------------------------------------

TWO_OUTPUTS = """ID,TIME,AMT,EVID,MDV,CMT,DV,DVID
1,0,100,1,1,1,.,0
1,1,0,0,0,2,3.1,1
1,1,0,0,0,3,88,2
1,4,0,0,0,2,2.2,1
2,0,50,1,1,1,.,0
2,6,0,0,0,3,95,2
"""


def test_nonmem_outputs_by_cmt_or_by_dvid():
    table = nonmem.read_nonmem_csv(io.StringIO(TWO_OUTPUTS))
    by_cmt = nonmem.observations(table, dv_cmt=(2, 3))
    by_dvid = nonmem.observations(table, dvid=(1, 2))
    for obs in (by_cmt, by_dvid):
        np.testing.assert_array_equal(obs.dv, [[3.1, 88.0, 2.2], [95.0, np.nan, np.nan]])
        np.testing.assert_array_equal(obs.output, [[0, 1, 0], [1, 0, 0]])
        assert obs.extra["doses"]["count"].tolist() == [1, 1]
    reversed_order = nonmem.observations(table, dv_cmt=(3, 2))
    np.testing.assert_array_equal(reversed_order.output, [[1, 0, 1], [0, 0, 0]])
    assert nonmem.observations(table, dv_cmt=3).output is None
    assert nonmem.observations(table, dv_cmt=3, dvid=(2,)).dv.tolist() == [[88.0], [95.0]]
    with pytest.raises(ValueError, match=r"IDs \[2\] have no observation with CMT in \[2\]"):
        nonmem.observations(table, dv_cmt=(2,))
    with pytest.raises(ValueError, match=r"no observations with DVID 5"):
        nonmem.observations(table, dvid=(1, 2, 5))
    with pytest.raises(ValueError, match="not both"):
        nonmem.observations(table, dv_cmt=(2, 3), dvid=(1, 2))
    with pytest.raises(ValueError, match="no DVID column"):
        nonmem.observations(table.drop(columns="DVID"), dvid=(1, 2))
    with pytest.raises(ValueError, match="once"):
        nonmem.observations(table, dv_cmt=(2, 2))


def test_warfarin_concentrations_and_pca_as_two_outputs():
    table = w.load()
    both = nonmem.observations(
        table, dv_cmt=(nonmem.CMT_CENTRAL, nonmem.CMT_RESPONSE), replicates=True
    )
    observed = ~np.isnan(both.dv)
    assert (observed & (both.output == 0)).sum() == 251
    assert (observed & (both.output == 1)).sum() == 232


# --- warfarin's joint model (nlmixr2's pk.turnover.emax3) ------------------------------


def test_warfarin_joint_data_tag_each_endpoint():
    table = w.load()
    joint = w.joint_observations(table)
    conc = w.observations(table, nonmem.CMT_CENTRAL)
    pca = w.observations(table, nonmem.CMT_RESPONSE)
    assert joint.n_observations == conc.n_observations + pca.n_observations
    observed = ~np.isnan(joint.dv)
    assert (joint.output[observed] == 0).sum() == conc.n_observations
    np.testing.assert_array_equal(joint.dv[:, conc.dv.shape[1] :], pca.dv)
    # PCA values sit on the half-hour grid
    k = conc.dv.shape[1]
    index = joint.extra["grid_index"][:, k:]
    np.testing.assert_array_equal(index * w.PD_STEP_H, pca.times_h)


def test_warfarin_joint_model_with_one_rate_predicts_the_sequential_models():
    """With ktr == ka the joint model's concentrations are PK_MODEL's and its PCA is
    PD_MODEL's driven by the same concentrations: one model, not two that drift."""
    table = w.load()
    joint = w.joint_observations(table)
    n = joint.n_subjects
    rng = np.random.default_rng(3)
    p = {
        "ka": 0.8 * np.exp(0.3 * rng.normal(size=(n, 2))),
        "CL": 0.13 * np.exp(0.2 * rng.normal(size=(n, 2))),
        "V": np.full((n, 2), 8.0),
        "E0": np.full((n, 2), 96.0),
        "Emax": np.full((n, 2), 0.95),
        "EC50": np.full((n, 2), 1.0),
        "kout": np.full((n, 2), 0.055),
    }
    out = w.JOINT_MODEL.predict({**p, "ktr": p["ka"]}, joint)
    conc = w.observations(table, nonmem.CMT_CENTRAL)
    k = conc.dv.shape[1]
    np.testing.assert_allclose(out["conc"][..., :k], w.PK_MODEL.predict(p, conc), rtol=1e-10)
    # PD_MODEL reads one PK per subject: take the first copy's
    first = {name: v[:, 0] for name, v in p.items() if name in ("ka", "CL", "V")}
    pca = w.pd_observations(table, first)
    pd_pred = w.PD_MODEL.predict({name: v[:, :1] for name, v in p.items()}, pca)
    np.testing.assert_allclose(out["pca"][:, :1, k:], pd_pred, rtol=1e-10)


def test_warfarin_joint_data_refuse_off_grid_pca_times():
    table = w.load()
    pca_row = table.index[(table["CMT"] == nonmem.CMT_RESPONSE) & (table["EVID"] == 0)][0]
    table.loc[pca_row, "TIME"] = table.loc[pca_row, "TIME"] + 0.2
    with pytest.raises(ValueError, match="multiples of 0.5 h"):
        w.joint_observations(table)
