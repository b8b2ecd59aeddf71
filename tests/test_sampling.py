import numpy as np
import pytest

from pkpd_lib.pmx import sampling as s


def test_designs():
    assert s.design_times("dense").tolist() == list(range(169))
    assert s.design_times("sparse").tolist() == [0, 2, 6, 24, 72, 120, 168]
    with pytest.raises(ValueError, match="unknown sampling design 'weekly'"):
        s.design_times("weekly")


def test_observations_are_reproducible_and_have_the_stated_error():
    truth_c = np.full((200, 500), 2.0)
    truth_pd = np.full((200, 500), 120.0)
    c1, p1 = s.observe(truth_c, truth_pd, seed=4)
    c2, p2 = s.observe(truth_c, truth_pd, seed=4)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(p1, p2)
    assert np.std(c1 / truth_c - 1) == pytest.approx(0.10, rel=0.02)
    assert np.std(p1 / truth_pd - 1) == pytest.approx(0.03, rel=0.02)
    assert abs(np.mean(p1 / truth_pd - 1)) < 0.001


def test_observations_never_negative_and_zero_stays_zero():
    rng = np.random.default_rng(0)
    obs = s.add_proportional_error(np.array([0.0, 1e-3, 5.0]), cv=2.0, rng=rng)
    assert np.all(obs >= 0)
    assert obs[0] == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        s.observe(np.ones((2, 3)), np.ones((2, 4)), seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        s.observe(np.array([np.nan]), np.array([1.0]), seed=0)
    with pytest.raises(ValueError, match="cv"):
        s.add_proportional_error(np.ones(2), -0.1, np.random.default_rng(0))


def test_named_seeds_are_fixed_by_name_not_position():
    from pkpd_lib.pmx.sampling import named_seed

    # the protocol page states these values before any code drew the set
    assert named_seed("locked-2026-12/population") == 883692799
    assert named_seed("locked-2026-12/observations/QD") == 1756336419
    names = [f"train-r{r}/population" for r in range(5)] + ["calibration/population"]
    seeds = [named_seed(n) for n in names]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**32 for s in seeds)
    assert [named_seed(n) for n in reversed(names)] == seeds[::-1]
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty string"):
            named_seed(bad)
