"""The protocol's sets, scenarios and scoring function (pkpd_lib.study.protocol).

No test here reads the locked set's truths: only its IDs and seeds."""

import numpy as np
import pytest

from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.sampling import named_seed
from pkpd_lib.study import datasets, metrics, protocol, realistic


def test_locked_set_has_the_seeds_the_protocol_page_fixed():
    locked = protocol.TEST_SETS[protocol.LOCKED]
    assert (locked.population_seed, locked.qd_seed) == (883692799, 1756336419)
    assert (locked.size, locked.first_id) == (200, 50001)
    assert locked.observation_seed("BID from 48 h") == named_seed(
        "locked-2026-12/observations/BID from 48 h"
    )
    dev = protocol.TEST_SETS["development"]
    assert (dev.population_seed, dev.qd_seed, dev.first_id) == (404, 1404, 40001)


@pytest.mark.slow
def test_no_two_sets_share_a_patient():
    ids = {}
    for r in (0, 1, 2):
        train, val = protocol.training_sets(r)
        ids[f"train-r{r}"], ids[f"val-r{r}"] = set(train.population.ids), set(val.population.ids)
    for name, tset in protocol.TEST_SETS.items():
        ids[name] = set(range(tset.first_id, tset.first_id + tset.size))
    ids["calibration"] = set(
        range(realistic.CALIBRATION_FIRST_ID, realistic.CALIBRATION_FIRST_ID + 200)
    )
    names = sorted(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], f"{a} and {b} share patients"
    # replicates draw other patients, not the same ones renumbered
    t0, t1 = protocol.training_sets(0)[0], protocol.training_sets(1)[0]
    assert not np.allclose(t0.population.params.CL, t1.population.params.CL)


def test_replicate_zero_is_the_books_training_data():
    train, val = protocol.training_sets(0, realistic.PD_VARIABILITY)
    book = datasets.study_datasets("dense", extra_eta_sd=realistic.PD_VARIABILITY)
    np.testing.assert_array_equal(train.pd_obs, book["train"].pd_obs)
    np.testing.assert_array_equal(val.conc_obs, book["val"].conc_obs)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_a_replicate_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="replicate must be a whole number"):
        protocol.training_sets(bad)


def test_ensemble_seeds_do_not_overlap_between_replicates():
    assert list(protocol.ensemble_seeds(0)) == [0, 1, 2, 3, 4]
    assert list(protocol.ensemble_seeds(2)) == [10, 11, 12, 13, 14]


def test_node_reads_the_early_pd_inputs_when_the_setting_has_them():
    early = protocol.SETTINGS["realistic + early PD"]
    assert protocol.node_config(early).static_features[-4:] == early.config.static_features[-4:]
    assert protocol.node_config(protocol.SETTINGS["realistic"]).kind == "node"


def test_scenarios_share_the_qd_truth_and_score_after_the_switch():
    dev = protocol.TEST_SETS["development"]
    regimens = {"QD": reg.qd(), "BID": reg.bid()}
    s0 = protocol.scenario_case(dev, realistic.ORACLE, "S0", regimens)
    s48 = protocol.scenario_case(dev, realistic.ORACLE, "S48", regimens)
    np.testing.assert_array_equal(s0.truth["QD"], s48.truth["QD"])
    # before the switch the BID patient took QD: the same truth up to 48 h
    before = ~s48.window
    np.testing.assert_array_equal(s48.truth["BID"][:, before], s0.truth["QD"][:, before])
    assert not np.array_equal(s48.truth["BID"][:, ~before], s0.truth["QD"][:, ~before])
    assert s0.window.all() and s48.qd.times_h[s48.window][0] == 48.0
    # the denominator is each patient's true R0, not the baseline input the network reads
    np.testing.assert_allclose(s0.true_r0, s0.qd.population.params.R0)
    assert s48.schedules["BID"].name == "BID from 48 h"


def test_bad_scenario_and_missing_pk_fit_are_named():
    dev = protocol.TEST_SETS["development"]
    regimens = {"QD": reg.qd()}
    with pytest.raises(ValueError, match="unknown scenario 'S24'"):
        protocol.scenario_case(dev, realistic.ORACLE, "S24", regimens)
    with pytest.raises(ValueError, match="needs the replicate's population PK fit"):
        protocol.scenario_case(dev, realistic.REALISTIC, "S0", regimens)
    with pytest.raises(ValueError, match="must include 'QD'"):
        protocol.scenario_case(dev, realistic.ORACLE, "S0", {"BID": reg.bid()})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_set": "locked"}, "unknown test set 'locked'"),
        ({"replicates": ()}, "at least one"),
        ({"replicates": (0, 0)}, "distinct"),
        ({"replicates": (0, -1)}, "replicate must be a whole number"),
    ],
)
def test_score_refuses_what_the_protocol_does_not_define(kwargs, message):
    with pytest.raises(ValueError, match=message):
        protocol.score(**kwargs)


def test_effect_difference_is_the_difference_of_the_two_errors():
    rng = np.random.default_rng(3)
    truth_qd, truth_new = rng.normal(size=(2, 1, 40, 6))
    first = (truth_new + rng.normal(0, 0.3, truth_new.shape), truth_qd)
    second = (truth_new + rng.normal(0, 0.6, truth_new.shape), truth_qd)
    boot = metrics.NestedBootstrap(1, 40, n_boot=300, seed=0)
    diff = protocol._effect_difference(boot, first, second, truth_new, truth_qd)
    expected = metrics.regimen_effect_error(
        first[0][0], first[1][0], truth_new[0], truth_qd[0]
    ) - metrics.regimen_effect_error(second[0][0], second[1][0], truth_new[0], truth_qd[0])
    assert diff.estimate == pytest.approx(expected)
    assert diff.high < 0  # the first predicts the effect with half the noise


def test_summary_puts_each_regimens_interval_beside_its_estimate():
    import pandas as pd

    index = pd.MultiIndex.from_tuples(
        [
            ("S48", "realistic", m, g)
            for m in ("LSTM, ensemble of 5", "population model")
            for g in ("QD", "BID", "TID")
        ],
        names=["scenario", "setting", "method", "regimen"],
    )
    rows = []
    for m in (0.9, 0.5):
        rows.append({"error %": 25.04})
        for g in (1.0, 2.0):
            rows.append(
                {
                    "error %": 30.0 + g,
                    "ratio": m,
                    "ratio 95% low": m - 0.05,
                    "ratio 95% high": m + 0.05,
                    "extrapolates?": "does not",
                    "regimen-effect error": m / g,
                    "regimen-effect error 95% low": m / g - 0.1,
                    "regimen-effect error 95% high": m / g + 0.1,
                    "QD floor": 0.6,
                }
            )
    table = pd.DataFrame(rows, index=index)
    scores = protocol.Scores("development", table, None, None, {}, {})
    out = protocol.summary(scores, "S48")
    assert list(out.index) == [
        ("realistic", "LSTM, ensemble of 5"),
        ("realistic", "population model"),
    ]
    assert out.loc[("realistic", "population model"), ("BID", "ratio (95%)")] == "0.50 (0.45-0.55)"
    assert out.loc[("realistic", "population model"), ("TID", "regimen-effect error (95%)")] == (
        "0.25 (0.15-0.35)"
    )
    assert out.loc[("realistic", "LSTM, ensemble of 5"), ("QD", "error %")] == 25.0
    assert [c for c, _ in out.columns][:2] == ["QD", "BID"]


def test_in_s48_a_day_4_deviation_stays_on_day_4():
    """BID and TID start at the switch; a deviation of QD keeps its day, so its S48
    truth is its S0 truth (QD before 48 h either way)."""
    dev = protocol.TEST_SETS["development"]
    regimens = {k: protocol.scored_regimens()[k] for k in ("QD", "BID", "missed dose")}
    s0 = protocol.scenario_case(dev, realistic.ORACLE, "S0", regimens)
    s48 = protocol.scenario_case(dev, realistic.ORACLE, "S48", regimens)
    np.testing.assert_array_equal(s48.truth["missed dose"], s0.truth["missed dose"])
    missed = [t for t, _ in s48.schedules["missed dose"].doses()]
    assert 72.0 not in missed and 96.0 in missed
    bid = [t for t, _ in s48.schedules["BID"].doses()]
    assert bid[:4] == [0.0, 24.0, 48.0, 60.0]
    # starting BID at 48 h is the same as keeping BID's own doses from 48 h
    same = reg.switched(reg.qd(), reg.bid(), 48.0, shift=False)
    assert same.doses() == s48.schedules["BID"].doses()


def test_a_regimen_filed_under_another_name_is_refused():
    dev = protocol.TEST_SETS["development"]
    with pytest.raises(ValueError, match="key must be its name"):
        protocol.scenario_case(dev, realistic.ORACLE, "S0", {"QD": reg.qd(), "TID": reg.bid()})
    with pytest.raises(ValueError, match="must be QD"):
        protocol.scenario_case(dev, realistic.ORACLE, "S0", {"QD": reg.qd(50.0)})


def test_learning_curve_subsets_keep_the_validation_patients():
    x = {"conc": np.arange(40.0).reshape(10, 4), "BASE_PD": np.arange(10.0)}
    data = protocol.TrainingData(x, np.ones((10, 4)), {"conc": np.zeros((3, 4))}, None, None)
    first = protocol.first_patients(data, 4)
    np.testing.assert_array_equal(first.train_x["conc"], x["conc"][:4])
    assert first.train_y.shape == (4, 4) and first.val_x is data.val_x
    whole = protocol.first_patients(data, 10)
    np.testing.assert_array_equal(whole.train_x["BASE_PD"], x["BASE_PD"])
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="whole number from 1 to 10"):
            protocol.first_patients(data, bad)
    assert protocol.LEARNING_CURVE_SIZES[-1] == 1000  # the bench's networks
    assert protocol.LEARNING_CURVE_SETTING in protocol.SETTINGS


def test_population_model_in_the_oracle_setting_reads_true_pk_and_true_baseline():
    """Protocol version 2's full grid: with observed concentrations (no PK estimate) the
    population model is driven by the true PK, and with the true baseline its R0 is
    each patient's, the other random effects 0. Uses version 1's stored PD fit."""
    dev = protocol.TEST_SETS["development"]
    regimens = {"QD": reg.qd(), "BID": reg.bid()}
    case = protocol.scenario_case(dev, realistic.ORACLE, "S0", regimens)
    assert case.pk is None
    fit = protocol.population_pd_fits(0)[3]
    pred = protocol.population_model_predictions(fit, case, False, true_baseline=True)
    np.testing.assert_allclose(pred["QD"][:, 0], case.true_r0, rtol=1e-12)
    assert not np.allclose(pred["BID"], pred["QD"])
    # from the screening samples instead: R0 is estimated, not the truth
    screened = protocol.population_model_predictions(fit, case, False)
    assert not np.allclose(screened["QD"][:, 0], case.true_r0)


def _curve_scores(verdicts):
    """Scores holding only a learning curve whose LSTM verdicts are ``verdicts``:
    {n: (BID's, TID's)}."""
    import pandas as pd

    rows = {
        (protocol.LSTM, n, g): {"is": v}
        for n, pair in verdicts.items()
        for g, v in zip(("BID", "TID"), pair, strict=True)
    }
    table = pd.DataFrame(rows).T.rename_axis(["method", "patients", "regimen"])
    return protocol.Scores("x", None, None, None, {}, {}, 2, table)


def test_learning_curve_verdict_needs_bid_and_tid_and_takes_the_smallest_size():
    lower, tie = "lower", "no difference shown"
    wins = _curve_scores(
        {100: (tie, tie), 250: (lower, tie), 500: (lower, lower), 1000: (lower, lower)}
    )
    assert protocol.learning_curve_verdict(wins) == 500
    # not monotone: the smallest size that wins under both is the verdict
    early = _curve_scores({100: (lower, lower), 250: (tie, lower), 1000: (lower, lower)})
    assert protocol.learning_curve_verdict(early) == 100
    never = _curve_scores({100: ("higher", "higher"), 1000: (lower, "higher")})
    assert protocol.learning_curve_verdict(never) is None
    v1 = protocol.Scores("x", None, None, None, {}, {})
    with pytest.raises(ValueError, match="version 1: no learning curve"):
        protocol.learning_curve_verdict(v1)


def test_learning_curve_table_pairs_each_size_with_the_population_model():
    """Each row's difference is its regimen-effect error minus the population model's on
    the same patients and draws; a perfect method is lower, the model itself ties."""
    rng = np.random.default_rng(5)
    truth = {g: rng.normal(size=(30, 6)) + k for k, g in enumerate(("QD", "BID", "TID"))}
    key = ("S48", protocol.LEARNING_CURVE_SETTING)
    model = {g: [y + rng.normal(0, 0.5, y.shape)] for g, y in truth.items()}
    curve = {
        (protocol.LSTM, 100): {g: [y] for g, y in truth.items()},  # exact
        (protocol.LSTM, 1000): model,  # the model's own predictions
    }
    boot = metrics.NestedBootstrap(1, 30, n_boot=200, seed=0)
    table = protocol._learning_curve_table(
        boot, curve, {(*key, protocol.MODEL): model}, {key: truth}
    )
    exact = table.loc[(protocol.LSTM, 100)]
    assert (exact["regimen-effect error"] == 0).all() and (exact["is"] == "lower").all()
    same = table.loc[(protocol.LSTM, 1000)]
    assert (same["minus population model"] == 0).all()
    assert (same["is"] == "no difference shown").all()
    expected = metrics.regimen_effect_error(
        model["TID"][0], model["QD"][0], truth["TID"], truth["QD"]
    )
    assert same.loc["TID", "regimen-effect error"] == pytest.approx(expected)


def test_version_2_compares_the_true_structure_with_the_searched_model():
    assert protocol._compared_with(protocol.TRUE_STRUCTURE, 2) == (protocol.LSTM, protocol.MODEL)
    assert protocol._compared_with(protocol.MODEL, 2) == (protocol.LSTM, protocol.NODE)
    assert protocol._compared_with(protocol.COMPETITOR, 1) == (protocol.LSTM,)
    assert protocol._compared_with(protocol.LSTM, 2) == ()


def test_locked_v2_has_the_ids_and_seeds_protocol_version_2_fixed():
    locked = protocol.TEST_SETS[protocol.LOCKED_V2]
    assert (locked.name, locked.size, locked.first_id, locked.version) == (
        "locked-v2",
        200,
        70001,
        2,
    )
    assert locked.population_seed == named_seed("locked-v2/population")
    assert locked.qd_seed == named_seed("locked-v2/observations/QD")
    assert locked.observation_seed("TID from 48 h") == named_seed(
        "locked-v2/observations/TID from 48 h"
    )
    assert protocol.TEST_SETS[protocol.LOCKED].version == 1
