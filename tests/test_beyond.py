"""Helpers of the beyond-the-study chapters: random schedules, uneven sampling,
per-patient samples, dose history, masked targets and loss, ensemble intervals."""

import numpy as np
import pytest

from pkpd_lib.nets import features
from pkpd_lib.nets import networks as nw
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx import sampling
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.study import datasets, metrics


def test_random_schedules_keep_the_average_daily_dose():
    for r in reg.random_schedules(50, seed=1, daily_dose_mg=100.0, gap_h=(6, 30)):
        gaps = np.diff(r.times_h)
        assert r.times_h[0] == 0 and r.times_h[-1] < 168
        assert np.all((gaps >= 6) & (gaps <= 30)) and np.all(r.times_h % 1 == 0)
        np.testing.assert_allclose(r.amounts_mg[:-1], 100.0 * gaps / 24)


def test_random_schedules_are_reproducible_and_reject_bad_gaps():
    a, b = reg.random_schedules(3, seed=4), reg.random_schedules(3, seed=4)
    assert a == b
    with pytest.raises(ValueError, match="gap_h"):
        reg.random_schedules(3, seed=4, gap_h=(0, 5))


def test_uneven_times_are_per_patient_sorted_whole_hours():
    t = sampling.uneven_times(40, seed=2, n_samples=7)
    assert t.shape == (40, 7) and np.all(t[:, 0] == 0)
    assert np.all(np.diff(t, axis=1) > 0) and np.all(t % 1 == 0) and t.max() <= 168
    assert len({tuple(row) for row in t}) > 35  # patients differ
    with pytest.raises(ValueError, match="n_samples"):
        sampling.uneven_times(4, seed=2, n_samples=1)


@pytest.fixture(scope="module")
def hourly():
    pop = sample_population(8, seed=3)
    return datasets.simulate_dataset(pop, reg.random_schedules(8, seed=5), obs_seed=1)


def test_sample_at_picks_each_patients_times(hourly):
    times = sampling.uneven_times(8, seed=1)
    s = datasets.sample_at(hourly, times)
    i, k = 3, 4
    j = int(times[i, k])
    assert s.conc_obs[i, k] == hourly.conc_obs[i, j] and s.pd_true[i, k] == hourly.truth.pd[i, j]
    with pytest.raises(ValueError, match="among"):
        datasets.sample_at(hourly, times + 0.5)
    with pytest.raises(ValueError, match="increasing"):
        datasets.sample_at(hourly, times[:, ::-1])


def test_dose_history_counts_from_the_last_dose_strictly_before():
    r = reg.from_doses([(0, 10), (12, 20)])
    since, amount = features.dose_history([r], np.array([[0.0, 5.0, 12.0, 13.0]]))
    np.testing.assert_array_equal(since[0], [0, 5, 12, 1])
    np.testing.assert_array_equal(amount[0], [0, 10, 10, 20])


def test_masked_targets_place_observations_on_the_grid(hourly):
    s = datasets.sample_at(hourly, sampling.SPARSE_TIMES_H)
    y = datasets.masked_targets(s)
    assert y.shape == (8, 169) and np.isnan(y).sum() == 8 * (169 - 7)
    np.testing.assert_array_equal(y[:, 24], s.pd_obs[:, 3])


def test_masked_mse_ignores_missing_targets():
    y_true = np.array([[1.0, np.nan, 3.0]], "float32")
    y_pred = np.array([[2.0, 100.0, 3.0]], "float32")
    assert float(nw.masked_mse(y_true, y_pred)[0]) == pytest.approx(0.5)


def test_training_rejects_a_patient_without_observations(hourly):
    x = datasets.network_inputs(hourly)
    y = np.full(hourly.pd_obs.shape, np.nan)
    config = nw.NetworkConfig(units=(2,), max_epochs=1)
    with pytest.raises(ValueError, match="at least one observation"):
        nw.train_network(config, x, y, x, y, report_every=None)


def test_dose_inputs_reach_the_network(hourly):
    s = datasets.sample_at(hourly, sampling.SPARSE_TIMES_H)
    x = datasets.sequence_inputs(s, dose_inputs=True)
    config = nw.NetworkConfig(units=(2,), block=1, time_input=True, dose_inputs=True, max_epochs=1)
    run = nw.train_network(config, x, s.pd_obs, x, s.pd_obs, report_every=None)
    assert set(nw.model_features(run.model)) >= set(nw.DOSE_INPUTS)
    with pytest.raises(ValueError, match="missing"):
        nw.predict_pd(run.model, datasets.sequence_inputs(s, dose_inputs=False))


def test_ensemble_interval_and_coverage():
    members = np.stack([np.full((2, 3), v) for v in (1.0, 2.0, 3.0, 4.0, 5.0)])
    lo, hi = metrics.ensemble_interval(members, level=0.5)
    np.testing.assert_allclose(lo, 2.0) and np.testing.assert_allclose(hi, 4.0)
    truth = np.array([[2.0, 3.0, 4.5], [1.0, 4.0, 3.0]])
    assert metrics.coverage(lo, hi, truth) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="2 members"):
        metrics.ensemble_interval(members[:1])
    with pytest.raises(ValueError, match="exceed"):
        metrics.coverage(hi, lo, truth)
