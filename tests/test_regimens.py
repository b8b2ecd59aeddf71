import numpy as np
import pytest

from pkpd_lib.pmx import regimens as reg


def test_named_regimens_split_the_daily_dose():
    for name, n_per_day in reg.DOSES_PER_DAY.items():
        r = reg.named(name, daily_dose_mg=100.0, days=7)
        assert len(r) == 7 * n_per_day
        assert r.total_mg == pytest.approx(700.0)
        np.testing.assert_allclose(np.diff(r.times_h), 24.0 / n_per_day)
        assert r.times_h[0] == 0.0
        assert r.name == name


def test_tid_amounts_and_times():
    r = reg.tid()
    np.testing.assert_allclose(r.amounts_mg, 100.0 / 3)
    np.testing.assert_allclose(r.times_h[:4], [0, 8, 16, 24])


def test_named_is_case_insensitive_and_rejects_unknown():
    assert reg.named("bid") == reg.bid()
    with pytest.raises(ValueError, match="unknown regimen 'QID'"):
        reg.named("QID")


def test_explicit_schedule_missed_dose_and_dose_change():
    r = reg.from_doses([(0, 100), (24, 100), (72, 150)], name="missed day 3")
    assert r.doses() == [(0.0, 100.0), (24.0, 100.0), (72.0, 150.0)]
    assert r.total_mg == 350.0


@pytest.mark.parametrize(
    "doses, message",
    [
        ([], "no doses"),
        ([(24, 100), (0, 100)], "sorted"),
        ([(-1, 100)], ">= 0 h"),
        ([(0, -5)], "> 0 mg"),
        ([(0, 0)], "> 0 mg"),
        ([(0, float("nan"))], "finite"),
        ([(float("inf"), 10)], "finite"),
        ([(0, 1, 2)], "pair"),
    ],
)
def test_bad_schedules_raise_clear_errors(doses, message):
    with pytest.raises(ValueError, match=message):
        reg.from_doses(doses)


def test_bad_repeated_arguments():
    with pytest.raises(ValueError, match="daily_dose_mg"):
        reg.repeated(-100, 1, 7)
    with pytest.raises(ValueError, match="doses_per_day"):
        reg.repeated(100, 0, 7)
    with pytest.raises(ValueError, match="days"):
        reg.repeated(100, 1, 2.5)


def test_regimen_arrays_are_read_only():
    r = reg.qd()
    with pytest.raises(ValueError):
        r.amounts_mg[0] = 1e6


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: reg.qd("100"), TypeError, "daily_dose_mg must be a number in mg, got '100'"),
        (lambda: reg.qd(True), TypeError, "daily_dose_mg must be a number in mg, got True"),
        (lambda: reg.random_schedules(3, seed=1, days=-3), ValueError, "days must be a whole"),
        (lambda: reg.random_schedules(3, seed=1, gap_h=(5.5, 6)), ValueError, "whole hours"),
        (lambda: reg.from_doses(["05"]), ValueError, "pair, got '05'"),
        (lambda: reg.from_doses([("0", 5)]), TypeError, "time_h must be a number"),
    ],
)
def test_obscure_inputs_get_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    ("probabilities", "error", "message"),
    [
        ({"p_missed": -0.1}, ValueError, r"p_missed must be a probability in \[0, 1\], got -0.1"),
        ({"p_doubled": 1.5}, ValueError, r"p_doubled must be a probability in \[0, 1\], got 1.5"),
        ({"p_stop": float("nan")}, ValueError, r"p_stop must be a probability in \[0, 1\]"),
        ({"p_stop": "0.2"}, TypeError, r"p_stop must be a probability \(a number\), got '0.2'"),
        (
            {"p_missed": 0.7, "p_doubled": 0.5},
            ValueError,
            r"p_missed \+ p_doubled must be <= 1 .*got 0.7 \+ 0.5",
        ),
    ],
)
def test_deviation_probabilities_are_checked(probabilities, error, message):
    """Before: unchecked; one draw per dose makes p_doubled silently 1 - p_missed when the
    two add up to more than 1."""
    with pytest.raises(error, match=message):
        reg.deviating_schedules(3, seed=1, **probabilities)
    edges = reg.deviating_schedules(3, seed=1, p_missed=0.0, p_doubled=1.0, p_stop=1.0)
    assert all(np.all(r.amounts_mg > 0) for r in edges)


def test_switched_keeps_the_first_regimen_before_the_switch_and_shifts_the_second():
    s = reg.switched(reg.qd(), reg.tid(), at_h=48.0)
    before = s.times_h < 48.0
    np.testing.assert_array_equal(s.times_h[before], [0.0, 24.0])
    np.testing.assert_allclose(s.times_h[~before], 48.0 + 8.0 * np.arange(15))
    np.testing.assert_allclose(s.amounts_mg, [100.0, 100.0] + [100.0 / 3] * 15)
    assert s.times_h.max() < 168.0 and s.name == "QD to TID at 48 h"
    # switching to the same regimen at a dose time changes nothing but the name
    same = reg.switched(reg.qd(), reg.qd(), at_h=48.0, name="QD")
    assert same == reg.qd()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"at_h": 0.0}, ValueError, "at_h"),
        ({"at_h": float("nan")}, ValueError, "at_h"),
        ({"at_h": 48.0, "until_h": 24.0}, ValueError, "until_h"),
        ({"at_h": "48"}, TypeError, "at_h"),
    ],
)
def test_switched_rejects_bad_times(kwargs, error, message):
    with pytest.raises(error, match=message):
        reg.switched(reg.qd(), reg.bid(), **kwargs)


def test_switched_rejects_what_is_not_a_regimen():
    with pytest.raises(ValueError, match="after must be a Regimen"):
        reg.switched(reg.qd(), "BID", at_h=48.0)
