import numpy as np
import pytest

from pkpd_lib.study import metrics


def test_rmse_and_relative_rmse():
    truth = np.array([[100.0, 110.0, 130.0]])
    pred = truth + np.array([[0.0, 3.0, -4.0]])
    assert metrics.rmse(pred, truth) == pytest.approx(np.sqrt(25 / 3))
    # effect size: mean |truth - 100| = 40/3
    assert metrics.relative_rmse(pred, truth, [100.0]) == pytest.approx(np.sqrt(25 / 3) / (40 / 3))


def test_score_table_reference_is_own_qd_curve():
    t = np.linspace(0, 1, 5)
    truths = {"QD": 100 + 10 * t[None], "BID": 100 + 20 * t[None]}
    preds = {"QD": truths["QD"], "BID": truths["QD"]}  # a regimen-blind "model"
    table = metrics.score_table(preds, truths, np.array([100.0]))
    assert table.loc["QD", "rel_RMSE_%"] == 0
    assert table.loc["BID", "ratio"] == pytest.approx(1.0)
    assert table.loc["BID", "RMSE"] == pytest.approx(table.loc["BID", "ref_RMSE"])


def test_shape_mismatch_and_nan_raise():
    with pytest.raises(ValueError, match="shape"):
        metrics.rmse(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="finite"):
        metrics.rmse(np.array([np.nan]), np.array([1.0]))


def test_conformal_interval_reaches_its_level_on_new_patients():
    """Calibrated on some patients, the interval covers about `level` of new ones,
    while the raw ensemble range of five members covers far less."""
    import numpy as np

    from pkpd_lib.study import metrics

    rng = np.random.default_rng(3)

    def draw(n):
        truth = rng.normal(size=(n, 20))
        shared = rng.normal(scale=2.0, size=(n, 20))  # error the members share
        return truth, truth + shared + rng.normal(scale=0.5, size=(5, n, 20))

    cal_truth, cal_members = draw(300)
    new_truth, new_members = draw(300)
    k = metrics.conformal_multiplier(cal_members, cal_truth, level=0.9)
    lo, hi = metrics.conformal_interval(new_members, k)
    cov, low, high = metrics.bootstrap_coverage(lo, hi, new_truth)
    assert abs(cov - 0.9) < 0.03 and low < cov < high
    raw_lo, raw_hi = metrics.ensemble_interval(new_members, 0.9)
    assert metrics.coverage(raw_lo, raw_hi, new_truth) < 0.5


def test_relative_rmse_refuses_a_truth_without_a_drug_effect():
    flat = np.full((2, 3), 100.0)
    with pytest.raises(ValueError, match="never leaves the baseline"):
        metrics.relative_rmse(flat + 1.0, flat, [100.0, 100.0])


def test_regimen_effect_error_scores_the_switch_not_the_patient():
    rng = np.random.default_rng(0)
    qd = 100 + 30 * rng.random((20, 50))
    bid = qd + 10 * np.sin(np.linspace(0, 6, 50))
    # a patient-level offset shared by both regimens cancels; relative RMSE sees it
    offset = 5 * rng.normal(size=(20, 1))
    assert metrics.regimen_effect_error(bid + offset, qd + offset, bid, qd) < 1e-12
    assert metrics.relative_rmse(bid + offset, bid, np.full(20, 100.0)) > 0.1
    # "no change" scores 1, the effect overstated by 30% scores 0.3
    assert metrics.regimen_effect_error(qd, qd, bid, qd) == pytest.approx(1.0)
    assert metrics.regimen_effect_error(qd + 1.3 * (bid - qd), qd, bid, qd) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="true regimen effect is 0"):
        metrics.regimen_effect_error(bid, qd, qd, qd)
    with pytest.raises(ValueError, match="differs from truth shape"):
        metrics.regimen_effect_error(bid, qd[:5], bid, qd)


def test_verdict_has_a_band_the_spread_cannot_flip():
    verdict = metrics.verdict
    assert verdict(4.0, 5.0) == "met"
    assert verdict(6.0, 5.0) == "missed"
    assert verdict(4.9, 5.0) == verdict(5.1, 5.0) == "too close to call"
    assert verdict(9.0, 10.0, below="holds", above="breaks", margin=0.05) == "holds"
