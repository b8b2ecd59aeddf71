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


# --- the protocol's statistics -----------------------------------------------------------


def _replicated(seed=0, r=3, n=40, t=6, offsets=(0.0, 0.0, 0.0)):
    rng = np.random.default_rng(seed)
    truth = 100 + 20 * rng.random((n, t))
    pred = truth + rng.normal(0, 1, (r, n, t)) + np.asarray(offsets)[:, None, None]
    ref = truth + rng.normal(0, 4, (r, n, t))
    return truth, pred, ref


def test_nested_bootstrap_estimates_are_the_replicates_mean_of_the_plain_metrics():
    truth, pred, ref = _replicated()
    qd = truth - 5.0
    boot = metrics.NestedBootstrap(3, 40, n_boot=300, seed=3)
    ratio = boot.ratio(pred, ref, truth)
    plain = [
        metrics.rmse(p, truth) / metrics.rmse(q, truth) for p, q in zip(pred, ref, strict=True)
    ]
    assert ratio.estimate == pytest.approx(np.mean(plain))
    assert ratio.replicate_sd == pytest.approx(np.std(plain, ddof=1))
    assert ratio.low <= ratio.estimate <= ratio.high
    rel = boot.relative_rmse(pred, truth, baseline=np.full(40, 100.0))
    plain = [100 * metrics.relative_rmse(p, truth, np.full(40, 100.0)) for p in pred]
    assert rel.estimate == pytest.approx(np.mean(plain))
    effect = boot.regimen_effect(pred, pred - 4.0, truth, qd)
    plain = [metrics.regimen_effect_error(p, p - 4.0, truth, qd) for p in pred]
    assert effect.estimate == pytest.approx(np.mean(plain))
    floor = boot.qd_floor(pred - 5.0, qd, truth)
    plain = [metrics.qd_floor(p - 5.0, qd, truth) for p in pred]
    assert floor.estimate == pytest.approx(np.mean(plain))


def test_nested_bootstrap_holds_replicate_variance_and_pairs_differences():
    truth, pred, ref = _replicated()
    boot = metrics.NestedBootstrap(3, 40, n_boot=500, seed=3)
    same = boot.ratio(pred, ref, truth)
    # one replicate's pipeline much worse: the between-replicate spread widens the interval
    _, spread, _ = _replicated(offsets=(0.0, 0.0, 3.0))
    wide = boot.ratio(spread, ref, truth)
    assert wide.high - wide.low > 2 * (same.high - same.low)
    assert wide.replicate_sd > 5 * same.replicate_sd
    # a method against itself: the paired difference is exactly 0 in every draw
    zero = boot.ratio_difference((pred, ref), (pred, ref), truth)
    assert zero.estimate == zero.low == zero.high == 0.0
    # a method slightly better everywhere: the paired interval excludes 0 although the
    # two methods' own intervals overlap
    better = boot.ratio_difference((pred - 0.1 * (pred - truth), ref), (pred, ref), truth)
    alone = boot.ratio(pred - 0.1 * (pred - truth), ref, truth)
    assert metrics.difference_verdict(better.low, better.high) == "lower"
    assert alone.high > same.low  # the unpaired intervals overlap


def test_nested_bootstrap_draws_depend_on_the_seed_only():
    truth, pred, ref = _replicated()
    a = metrics.NestedBootstrap(3, 40, n_boot=200, seed=5).ratio(pred, ref, truth)
    b = metrics.NestedBootstrap(3, 40, n_boot=200, seed=5).ratio(pred, ref, truth)
    c = metrics.NestedBootstrap(3, 40, n_boot=200, seed=6).ratio(pred, ref, truth)
    assert a == b and (a.low, a.high) != (c.low, c.high)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b, t, p, r: b.ratio(p[:2], r[:2], t), "replicates, patients, times"),
        (lambda b, t, p, r: b.ratio(p[:, :10], r[:, :10], t[:10]), "replicates, patients"),
        (lambda b, t, p, r: b.interval({"x": np.ones((3, 5))}, lambda s: s["x"]), "part 'x'"),
        (lambda b, t, p, r: b.interval({"x": np.full((3, 40), np.nan)}, lambda s: s["x"]), "NaN"),
        (lambda b, t, p, r: metrics.NestedBootstrap(0, 40), "n_replicates"),
        (lambda b, t, p, r: metrics.NestedBootstrap(3, 1), "n_patients"),
    ],
)
def test_nested_bootstrap_names_bad_input(call, message):
    truth, pred, ref = _replicated()
    with pytest.raises(ValueError, match=message):
        call(metrics.NestedBootstrap(3, 40, n_boot=10), truth, pred, ref)


def test_the_one_rule_for_extrapolates_and_for_differences():
    assert metrics.extrapolation_verdict(0.30, 0.49) == "extrapolates"
    assert metrics.extrapolation_verdict(0.45, 0.55) == "too close to call"
    assert metrics.extrapolation_verdict(0.51, 0.90) == "does not"
    assert metrics.difference_verdict(0.01, 0.2) == "higher"
    with pytest.raises(ValueError, match="low <= high"):
        metrics.extrapolation_verdict(0.6, 0.4)


def test_qd_floor_is_the_ratio_of_a_method_exact_on_the_regimen_effect():
    rng = np.random.default_rng(1)
    truth_qd = 100 + 20 * rng.random((30, 8))
    truth_new = truth_qd + 5 * rng.random((30, 8))
    pred_qd = truth_qd + rng.normal(0, 2, (30, 8))
    exact_effect = pred_qd + (truth_new - truth_qd)
    ratio = metrics.rmse(exact_effect, truth_new) / metrics.rmse(pred_qd, truth_new)
    assert metrics.qd_floor(pred_qd, truth_qd, truth_new) == pytest.approx(ratio)
    with pytest.raises(ValueError, match="no floor"):
        metrics.qd_floor(truth_new, truth_qd, truth_new)


def test_per_patient_conformal_interval_covers_whole_curves_at_the_level():
    # exchangeable patients whose errors are correlated over time: per-patient scores
    # calibrate whole-curve coverage (finite-sample guarantee: at least the level)
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(40):
        truth = 100 + rng.random((400, 12))
        shared = rng.normal(0, 1, (400, 1))  # a patient-level error, the same at all times
        members = truth + shared + rng.normal(0, 0.5, (5, 400, 12))
        scores = metrics.patient_scores(members, truth, sd_floor=0.05)
        k = metrics.conformal_quantile(scores[:200], level=0.9)
        covered.append(np.mean(scores[200:] <= k))
    assert 0.87 < np.mean(covered) < 0.95
    assert metrics.conformal_quantile(np.ones(5), level=0.9) == np.inf
    with pytest.raises(ValueError, match="sd_floor"):
        metrics.patient_scores(members, truth, sd_floor=0.0)
    with pytest.raises(ValueError, match="M >= 2"):
        metrics.patient_scores(members[:1], truth, sd_floor=1.0)


def test_coverage_verdict_reads_the_interval_against_the_level():
    assert metrics.coverage_verdict(0.84, 0.93) == "covers as asked"
    assert metrics.coverage_verdict(0.70, 0.89) == "under-covers"
    assert metrics.coverage_verdict(0.91, 0.99) == "over-covers"
    assert metrics.coverage_verdict(0.5, 0.7, level=0.6) == "covers as asked"
    with pytest.raises(ValueError, match="low <= high"):
        metrics.coverage_verdict(0.9, 0.8)
