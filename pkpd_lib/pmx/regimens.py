"""Dosing regimens: schedules of oral bolus doses.

A regimen is an immutable list of ``(time_h, amount_mg)`` doses, sorted by time. Doses
are given into the depot (gut) compartment with bioavailability F = 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Number of doses per day for each named regimen.
DOSES_PER_DAY = {"QD": 1, "BID": 2, "TID": 3}


@dataclass(frozen=True)
class Regimen:
    """A dosing schedule of bolus doses.

    Attributes
    ----------
    times_h : numpy.ndarray
        Dose times in hours, non-decreasing, all >= 0.
    amounts_mg : numpy.ndarray
        Dose amounts in mg, all finite and > 0 (a zero dose is simply not a dose).
    name : str
        A label used in tables and plot legends.

    Raises
    ------
    ValueError
        No dose, times and amounts of different lengths, times that are not finite,
        negative or unsorted, or amounts that are not finite or not > 0.

    Examples
    --------
    >>> r = Regimen([0.0, 12.0], [50.0, 50.0], name="two doses")
    >>> len(r), r.total_mg
    (2, 100.0)
    """

    times_h: np.ndarray
    amounts_mg: np.ndarray
    name: str = "custom"

    def __post_init__(self) -> None:
        times = np.array(self.times_h, dtype=float, copy=True).reshape(-1)
        amounts = np.array(self.amounts_mg, dtype=float, copy=True).reshape(-1)
        _validate_schedule(times, amounts)
        times.setflags(write=False)
        amounts.setflags(write=False)
        object.__setattr__(self, "times_h", times)
        object.__setattr__(self, "amounts_mg", amounts)

    def __len__(self) -> int:
        return self.times_h.size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Regimen):
            return NotImplemented
        return (
            self.name == other.name
            and np.array_equal(self.times_h, other.times_h)
            and np.array_equal(self.amounts_mg, other.amounts_mg)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.times_h.tobytes(), self.amounts_mg.tobytes()))

    @property
    def total_mg(self) -> float:
        """Total amount given, in mg."""
        return float(self.amounts_mg.sum())

    def doses(self) -> list[tuple[float, float]]:
        """The schedule as a list of ``(time_h, amount_mg)`` tuples.

        Returns
        -------
        list of tuple of float
            One ``(time_h, amount_mg)`` pair per dose (h, mg), in time order.
        """
        return [(float(t), float(a)) for t, a in zip(self.times_h, self.amounts_mg, strict=True)]


def _positive_number(value, name: str, unit: str) -> float:
    """``value`` as a float if it is a real number > 0 (not a string, not a bool)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number in {unit}, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 {unit}, got {value!r}")
    return float(value)


def _whole_number(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _validate_schedule(times: np.ndarray, amounts: np.ndarray) -> None:
    if times.size == 0:
        raise ValueError("regimen has no doses: give at least one (time_h, amount_mg) pair")
    if times.shape != amounts.shape:
        raise ValueError(
            f"regimen has {times.size} dose times but {amounts.size} amounts; they must pair up"
        )
    if not np.all(np.isfinite(times)):
        raise ValueError("dose times must be finite numbers (found NaN or inf)")
    if np.any(times < 0):
        raise ValueError(f"dose times must be >= 0 h, got {times[times < 0].tolist()}")
    if np.any(np.diff(times) < 0):
        raise ValueError("dose times must be sorted in increasing order")
    if not np.all(np.isfinite(amounts)):
        raise ValueError("dose amounts must be finite numbers (found NaN or inf)")
    if np.any(amounts <= 0):
        raise ValueError(
            f"dose amounts must be > 0 mg, got {amounts[amounts <= 0].tolist()}; "
            "leave a missed dose out of the schedule instead of giving it 0 mg"
        )


def from_doses(doses: Iterable[tuple[float, float]], name: str = "custom") -> Regimen:
    """Build a regimen from explicit ``(time_h, amount_mg)`` pairs.

    Use it for missed doses, unequal intervals or dose changes. The pairs must already be
    sorted by time: an unsorted schedule is usually a data error, so it is rejected rather
    than silently reordered.

    Parameters
    ----------
    doses : iterable of (float, float)
        The ``(time_h, amount_mg)`` pairs: time (h, >= 0) and amount (mg, > 0).
    name : str
        The regimen's label (default ``"custom"``).

    Returns
    -------
    Regimen

    Raises
    ------
    ValueError
        An entry that is not a pair, or a schedule :class:`Regimen` refuses (none, unsorted,
        negative times, amounts not > 0).
    TypeError
        A time or amount given as a string, bytes or bool.

    Examples
    --------
    >>> missed = from_doses([(0.0, 100.0), (48.0, 100.0)], name="day 2 missed")
    >>> missed.doses(), missed.total_mg
    ([(0.0, 100.0), (48.0, 100.0)], 200.0)
    """
    pairs = list(doses)
    for p in pairs:
        if isinstance(p, str | bytes) or not hasattr(p, "__len__") or len(p) != 2:
            raise ValueError(f"each dose must be a (time_h, amount_mg) pair, got {p!r}")
        for value, what in zip(p, ("time_h", "amount_mg"), strict=True):
            if isinstance(value, str | bytes | bool | np.bool_):
                raise TypeError(f"dose {what} must be a number, got {value!r} in {p!r}")
    times = [p[0] for p in pairs]
    amounts = [p[1] for p in pairs]
    return Regimen(np.asarray(times, dtype=float), np.asarray(amounts, dtype=float), name=name)


def repeated(
    daily_dose_mg: float, doses_per_day: int, days: int, name: str | None = None
) -> Regimen:
    """Equal doses at equal intervals: ``doses_per_day`` doses a day for ``days`` days.

    The daily dose is split evenly, so QD, BID and TID of the same ``daily_dose_mg`` give
    the same total exposure. The first dose is at 0 h.

    Parameters
    ----------
    daily_dose_mg : float
        The amount per day (mg), > 0.
    doses_per_day : int
        Doses a day, a whole number >= 1; the interval is ``24 / doses_per_day`` h.
    days : int
        Days of dosing, a whole number >= 1.
    name : str, optional
        The label; default ``"<doses_per_day>x/day"``.

    Returns
    -------
    Regimen
        ``doses_per_day * days`` doses of ``daily_dose_mg / doses_per_day`` mg.

    Raises
    ------
    ValueError
        ``doses_per_day`` or ``days`` not a whole number >= 1 (a bool included), or
        ``daily_dose_mg`` not finite and > 0.
    TypeError
        ``daily_dose_mg`` not a number (a string, a bool).

    Examples
    --------
    >>> repeated(90.0, 3, days=1).doses()
    [(0.0, 30.0), (8.0, 30.0), (16.0, 30.0)]
    """
    doses_per_day = _whole_number(doses_per_day, "doses_per_day")
    days = _whole_number(days, "days")
    daily_dose_mg = _positive_number(daily_dose_mg, "daily_dose_mg", "mg")
    interval_h = 24.0 / doses_per_day
    n = doses_per_day * days
    times = np.arange(n) * interval_h
    amounts = np.full(n, daily_dose_mg / doses_per_day)
    return Regimen(times, amounts, name=name or f"{doses_per_day}x/day")


def named(regimen: str, daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """The study's regimens by name: ``"QD"``, ``"BID"`` or ``"TID"`` (case-insensitive).

    Parameters
    ----------
    regimen : str
        The name.
    daily_dose_mg : float
        The amount per day (mg), split evenly over the day's doses (default 100).
    days : int
        Days of dosing (default 7).

    Returns
    -------
    Regimen
        :func:`repeated` with the name's doses a day, named in upper case.

    Raises
    ------
    ValueError
        An unknown name, or arguments :func:`repeated` refuses.
    TypeError
        ``daily_dose_mg`` not a number.

    Examples
    --------
    >>> r = named("bid")
    >>> r.name, len(r), r.total_mg
    ('BID', 14, 700.0)
    """
    key = str(regimen).upper()
    if key not in DOSES_PER_DAY:
        raise ValueError(f"unknown regimen {regimen!r}; expected one of {sorted(DOSES_PER_DAY)}")
    return repeated(daily_dose_mg, DOSES_PER_DAY[key], days, name=key)


def qd(daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """Once daily: ``daily_dose_mg`` at 0, 24, 48, ... h.

    Parameters
    ----------
    daily_dose_mg : float
        The amount per day (mg, default 100).
    days : int
        Days of dosing (default 7).

    Returns
    -------
    Regimen
        Named ``"QD"``.

    Examples
    --------
    >>> qd(days=2).doses()
    [(0.0, 100.0), (24.0, 100.0)]
    """
    return named("QD", daily_dose_mg, days)


def bid(daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """Twice daily: ``daily_dose_mg / 2`` every 12 h.

    Parameters
    ----------
    daily_dose_mg : float
        The amount per day (mg, default 100).
    days : int
        Days of dosing (default 7).

    Returns
    -------
    Regimen
        Named ``"BID"``.

    Examples
    --------
    >>> bid(days=1).doses()
    [(0.0, 50.0), (12.0, 50.0)]
    """
    return named("BID", daily_dose_mg, days)


def tid(daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """Thrice daily: ``daily_dose_mg / 3`` every 8 h.

    Parameters
    ----------
    daily_dose_mg : float
        The amount per day (mg, default 100).
    days : int
        Days of dosing (default 7).

    Returns
    -------
    Regimen
        Named ``"TID"``.

    Examples
    --------
    >>> [t for t, _ in tid(days=1).doses()]
    [0.0, 8.0, 16.0]
    """
    return named("TID", daily_dose_mg, days)


def per_patient(regimen: Regimen | Iterable[Regimen], n: int) -> list[Regimen]:
    """``regimen`` as a list of ``n`` regimens: one shared by all patients, or one each.

    Parameters
    ----------
    regimen : Regimen or iterable of Regimen
        One regimen for every patient, or ``n`` of them.
    n : int
        The number of patients.

    Returns
    -------
    list of Regimen
        ``n`` regimens, in patient order.

    Raises
    ------
    ValueError
        An iterable of other than ``n`` regimens.
    TypeError
        An entry that is not a :class:`Regimen`.

    Examples
    --------
    >>> [r.name for r in per_patient(qd(), 2)]
    ['QD', 'QD']
    """
    regs = [regimen] * n if isinstance(regimen, Regimen) else list(regimen)
    if len(regs) != n:
        raise ValueError(f"got {len(regs)} regimens for {n} patients; give one or one each")
    for r in regs:
        if not isinstance(r, Regimen):
            raise TypeError(f"expected a Regimen, got {type(r).__name__}")
    return regs


def random_schedules(
    n: int,
    seed: int,
    daily_dose_mg: float = 100.0,
    days: int = 7,
    gap_h: tuple[int, int] = (6, 30),
) -> list[Regimen]:
    """``n`` randomised schedules, one per patient, for training on varied dosing.

    Each schedule starts at 0 h; the gaps between doses are whole hours drawn uniformly
    from ``gap_h`` (inclusive), and each dose is ``daily_dose_mg * gap / 24`` for the gap
    that follows it, so the average rate is ``daily_dose_mg`` a day. Doses stop before
    ``24 * days`` h. Whole-hour times keep the vectorised simulation fast.

    Parameters
    ----------
    n : int
        The number of schedules, a whole number >= 1.
    seed : int
        Seed of numpy's random generator.
    daily_dose_mg : float
        The average amount per day (mg, default 100).
    days : int
        Days of dosing (default 7).
    gap_h : tuple of (int, int)
        The smallest and largest gap (h), whole numbers with ``1 <= low <= high``
        (default (6, 30)).

    Returns
    -------
    list of Regimen
        ``n`` regimens named ``"random"``.

    Raises
    ------
    ValueError
        ``n`` or ``days`` not a whole number >= 1, ``daily_dose_mg`` not finite and > 0,
        or ``gap_h`` not two whole hours with ``1 <= low <= high``.
    TypeError
        ``daily_dose_mg`` not a number.

    Examples
    --------
    >>> schedules = random_schedules(2, seed=1, days=2)
    >>> [s.times_h[0] for s in schedules], all(s.times_h[-1] < 48 for s in schedules)
    ([np.float64(0.0), np.float64(0.0)], True)
    """
    n = _whole_number(n, "n")
    days = _whole_number(days, "days")
    daily_dose_mg = _positive_number(daily_dose_mg, "daily_dose_mg", "mg")
    lo, hi = gap_h
    if not all(isinstance(g, int | np.integer) and not isinstance(g, bool) for g in gap_h) or not (
        1 <= lo <= hi
    ):
        raise ValueError(
            f"gap_h must be (low, high) whole hours with 1 <= low <= high, got {gap_h}"
        )
    rng = np.random.default_rng(seed)
    end = 24.0 * days
    out = []
    for _ in range(n):
        gaps = rng.integers(lo, hi + 1, size=int(end // lo) + 1).astype(float)
        times = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        keep = times < end
        out.append(Regimen(times[keep], daily_dose_mg * gaps[keep] / 24.0, name="random"))
    return out


def every(interval_h: float, dose_mg: float, days: int = 7, name: str | None = None) -> Regimen:
    """``dose_mg`` every ``interval_h`` hours from 0 h until the end of day ``days``.

    The book's validation regimen is ``every(18.0, 75.0)``: 100 mg a day on average, but
    neither QD, BID nor TID, so choices made on it do not peek at the test regimens.

    Parameters
    ----------
    interval_h : float
        The dosing interval (h), > 0.
    dose_mg : float
        Each dose (mg), > 0.
    days : int
        Days of dosing (default 7): doses at times before ``24 * days`` h.
    name : str, optional
        The label; default ``"q<interval_h>h"``.

    Returns
    -------
    Regimen

    Raises
    ------
    ValueError
        ``interval_h`` or ``dose_mg`` not finite and > 0, or ``days`` not a whole number
        >= 1.
    TypeError
        ``interval_h`` or ``dose_mg`` not a number.

    Examples
    --------
    >>> every(18.0, 75.0, days=2).doses()
    [(0.0, 75.0), (18.0, 75.0), (36.0, 75.0)]
    """
    interval_h = _positive_number(interval_h, "interval_h", "h")
    dose_mg = _positive_number(dose_mg, "dose_mg", "mg")
    days = _whole_number(days, "days")
    times = np.arange(0.0, 24.0 * days, interval_h)
    return Regimen(times, np.full(times.size, dose_mg), name=name or f"q{interval_h:g}h")


def switched(
    before: Regimen,
    after: Regimen,
    at_h: float,
    until_h: float = 168.0,
    name: str | None = None,
    shift: bool = True,
) -> Regimen:
    """A switch of regimen: ``before``'s doses given before ``at_h``, then ``after``'s
    schedule started at ``at_h`` (its doses shifted by ``at_h``), up to ``until_h``; with
    ``shift=False``, ``after``'s doses at or after ``at_h`` at their own times (a
    deviation of QD on a given day of treatment stays on that day).

    The protocol's primary scenario (S48): every patient takes QD for two days and the
    regimen asked about starts at 48 h, so whatever is observed before 48 h is observed
    under QD, for the truth and the prediction alike.

    Parameters
    ----------
    before, after : Regimen
        The regimen given first, and the one switched to (its times counted from the
        switch).
    at_h : float
        The switch time (h), > 0: ``before``'s doses at times ``< at_h`` are kept.
    until_h : float
        The end of the schedule (h, default 168, seven days): doses at ``>= until_h``
        are left out.
    name : str, optional
        The label; default ``"<before> to <after> at <at_h> h"``.
    shift : bool
        Count ``after``'s times from the switch (default) or keep them (False).

    Returns
    -------
    Regimen

    Raises
    ------
    ValueError
        ``at_h`` or ``until_h`` not finite and > 0, ``until_h <= at_h``, or a regimen
        that is not a :class:`Regimen`.

    Examples
    --------
    >>> s = switched(qd(), bid(), at_h=48.0)
    >>> s.doses()[:4], len(s), s.total_mg
    ([(0.0, 100.0), (24.0, 100.0), (48.0, 50.0), (60.0, 50.0)], 12, 700.0)
    >>> s.name
    'QD to BID at 48 h'
    >>> missed = adherence_regimens()["missed dose"]  # no dose at 72 h
    >>> [t for t, _ in switched(qd(), missed, 48.0, shift=False).doses()]
    [0.0, 24.0, 48.0, 96.0, 120.0, 144.0]
    """
    for what, r in (("before", before), ("after", after)):
        if not isinstance(r, Regimen):
            raise ValueError(f"{what} must be a Regimen, got {type(r).__name__}")
    at_h = _positive_number(at_h, "at_h", "h")
    until_h = _positive_number(until_h, "until_h", "h")
    if until_h <= at_h:
        raise ValueError(f"until_h ({until_h:g} h) must be after the switch at_h ({at_h:g} h)")
    keep_before = before.times_h < at_h
    shifted = after.times_h + at_h if shift else after.times_h
    keep_after = (shifted < until_h) & (shifted >= at_h)
    return Regimen(
        np.concatenate([before.times_h[keep_before], shifted[keep_after]]),
        np.concatenate([before.amounts_mg[keep_before], after.amounts_mg[keep_after]]),
        name=name or f"{before.name} to {after.name} at {at_h:g} h",
    )


def adherence_regimens(daily_dose_mg: float = 100.0, day: int = 4) -> dict[str, Regimen]:
    """QD as patients take it: one missed dose, one late dose (8 h), a missed dose made
    up by a double dose the next day, and stopping after ``day - 1`` days. The
    deviation falls on day ``day`` (its dose at ``24 * (day - 1)`` h).

    Parameters
    ----------
    daily_dose_mg : float
        The QD dose (mg, default 100).
    day : int
        The day of the deviation, 2 to 6, so it is mid-week (default 4).

    Returns
    -------
    dict of str to Regimen
        ``"missed dose"``, ``"late dose"``, ``"doubled dose"`` and ``"stopped"``, each a
        deviation from QD over 7 days (doses at 0, 24, ..., 144 h), named by its key.

    Raises
    ------
    ValueError
        ``day`` not a whole number from 2 to 6, or ``daily_dose_mg`` not finite and > 0.
    TypeError
        ``daily_dose_mg`` not a number.

    Examples
    --------
    >>> {name: len(r) for name, r in adherence_regimens().items()}
    {'missed dose': 6, 'late dose': 7, 'doubled dose': 6, 'stopped': 3}
    """
    day = _whole_number(day, "day")
    if not 2 <= day <= 6:
        raise ValueError(f"day must be between 2 and 6 so the deviation is mid-week, got {day}")
    dose = _positive_number(daily_dose_mg, "daily_dose_mg", "mg")
    t_dev = 24.0 * (day - 1)
    qd_times = [24.0 * d for d in range(7)]
    missed = [(t, dose) for t in qd_times if t != t_dev]
    late = [(t + 8.0 if t == t_dev else t, dose) for t in qd_times]
    doubled = [(t, 2 * dose if t == t_dev + 24.0 else dose) for t in qd_times if t != t_dev]
    stopped = [(t, dose) for t in qd_times if t < t_dev]
    return {
        "missed dose": from_doses(missed, "missed dose"),
        "late dose": from_doses(late, "late dose"),
        "doubled dose": from_doses(doubled, "doubled dose"),
        "stopped": from_doses(stopped, "stopped"),
    }


def deviating_schedules(
    n: int,
    seed: int,
    daily_dose_mg: float = 100.0,
    days: int = 7,
    p_missed: float = 0.1,
    p_doubled: float = 0.05,
    p_stop: float = 0.2,
) -> list[Regimen]:
    """:func:`random_schedules` with the deviations of real use: each dose is missed with
    probability ``p_missed`` or doubled with ``p_doubled``, and with probability
    ``p_stop`` the patient stops at a random time after the first day. Never exactly
    QD, BID or TID, so test regimens stay unseen.

    The first dose is never missed (it may be doubled). The deviations are drawn from a
    second generator (seeded with ``[seed, 1]``), so the underlying schedules are those
    of :func:`random_schedules` with the same seed.

    Parameters
    ----------
    n : int
        The number of schedules, a whole number >= 1.
    seed : int
        Seed of the schedules and the deviations.
    daily_dose_mg : float
        The average amount per day (mg) before the deviations (default 100).
    days : int
        Days of dosing (default 7).
    p_missed, p_doubled, p_stop : float
        The probabilities, each in [0, 1]. A dose is missed or doubled, never both (one
        draw per dose), so ``p_missed + p_doubled`` must not exceed 1.

    Returns
    -------
    list of Regimen
        ``n`` regimens named ``"random with deviations"``.

    Raises
    ------
    ValueError
        Arguments :func:`random_schedules` refuses (``n``, ``days``, ``daily_dose_mg``);
        a probability not in [0, 1] (or NaN); or ``p_missed + p_doubled`` > 1.
    TypeError
        ``daily_dose_mg`` or a probability not a number.

    Examples
    --------
    >>> schedules = deviating_schedules(50, seed=1)
    >>> any(len(s) < 5 for s in schedules), all(s.times_h[0] == 0 for s in schedules)
    (True, True)
    >>> deviating_schedules(5, seed=1, p_missed=0.7, p_doubled=0.5)
    Traceback (most recent call last):
    ...
    ValueError: p_missed + p_doubled must be <= 1 (...), got 0.7 + 0.5
    """
    for name, p in (("p_missed", p_missed), ("p_doubled", p_doubled), ("p_stop", p_stop)):
        if isinstance(p, bool | np.bool_) or not isinstance(p, int | float | np.number):
            raise TypeError(f"{name} must be a probability (a number), got {p!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    if p_missed + p_doubled > 1.0 + 1e-12:  # not refused for a rounding error
        raise ValueError(
            "p_missed + p_doubled must be <= 1 (a dose is missed or doubled, never both), "
            f"got {p_missed!r} + {p_doubled!r}"
        )
    base = random_schedules(n, seed, daily_dose_mg, days)
    rng = np.random.default_rng([seed, 1])
    out = []
    for r in base:
        times, amounts = r.times_h.copy(), r.amounts_mg.copy()
        u = rng.random(times.size)
        amounts[(u >= p_missed) & (u < p_missed + p_doubled)] *= 2.0
        keep = u >= p_missed
        keep[0] = True  # everyone takes the first dose
        if rng.random() < p_stop:
            keep &= times < rng.uniform(24.0, 24.0 * days)
        out.append(Regimen(times[keep], amounts[keep], name="random with deviations"))
    return out
