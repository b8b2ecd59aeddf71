"""Visual predictive checks: percentiles against their simulated intervals."""

import numpy as np
import pytest

from pkpd_lib.pmx import vpc


def test_a_model_that_generated_the_data_passes_and_a_wrong_one_fails():
    rng = np.random.default_rng(1)
    times = np.array([1.0, 2.0, 4.0])
    sims = rng.lognormal(1.0, 0.3, size=(300, 150, 3))
    observed = rng.lognormal(1.0, 0.3, size=(150, 3))
    assert vpc.vpc_table(observed, sims, times)["inside"].mean() >= 0.75
    too_wide = rng.lognormal(1.0, 0.6, size=(150, 3))
    table = vpc.vpc_table(too_wide, sims, times)
    assert not table.xs(10, level="percentile")["inside"].any()
    assert not table.xs(90, level="percentile")["inside"].any()


def test_missing_samples_are_left_out_of_observed_and_simulated():
    sims = np.ones((10, 4, 1)) * np.array([1.0, 2.0, 3.0, 100.0])[None, :, None]
    observed = np.array([[1.0], [2.0], [3.0], [np.nan]])
    row = vpc.vpc_table(observed, sims, [1.0]).loc[(1.0, 50)]
    assert row["observed"] == 2.0 and row["low"] == row["high"] == 2.0


def test_prediction_correction_removes_a_covariate_scale():
    pred = np.array([[1.0], [2.0], [4.0]])
    corrected = vpc.prediction_corrected(pred * 3.0, pred)
    np.testing.assert_allclose(corrected, 6.0)
    with pytest.raises(ValueError, match="positive"):
        vpc.prediction_corrected(pred, -pred)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="replicates, N, T"):
        vpc.vpc_table(np.ones((3, 2)), np.ones((5, 3, 3)), [1.0, 2.0])


def test_a_time_without_observations_is_named():
    observed = np.array([[1.0, np.nan], [2.0, np.nan]])
    with pytest.raises(ValueError, match=r"no observation at time\(s\) \[4.0\] h"):
        vpc.vpc_table(observed, np.ones((5, 2, 2)), [1.0, 4.0])


def test_non_finite_simulations_or_observations_are_refused():
    observed = np.array([[1.0, 2.0], [2.0, np.nan]])
    sims = np.ones((5, 2, 2))
    with pytest.raises(ValueError, match="observed must be finite.*patient 0 at time column 1"):
        vpc.vpc_table(np.where(observed == 2.0, np.inf, observed), sims, [1.0, 4.0])
    bad = sims.copy()
    bad[3, 0, 1] = np.nan
    with pytest.raises(ValueError, match="simulated must be finite.*replicate 3, patient 0"):
        vpc.vpc_table(observed, bad, [1.0, 4.0])
    bad = sims.copy()
    bad[:, 1, 1] = np.nan  # where nothing was observed: left out, as before
    table = vpc.vpc_table(observed, bad, [1.0, 4.0])
    assert np.isfinite(table[["low", "high"]].to_numpy()).all()


def test_vpc_verdict_follows_the_protocol_thresholds():
    from pkpd_lib.pmx.vpc import verdict

    assert [verdict(v) for v in (100.0, 80.0, 79.9, 50.0, 49.9, 0.0)] == [
        "passes",
        "passes",
        "marginal",
        "marginal",
        "fails",
        "fails",
    ]
    for bad in (-1.0, 101.0, float("nan")):
        with pytest.raises(ValueError, match="inside_pct"):
            verdict(bad)
