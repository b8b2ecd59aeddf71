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
        """The schedule as a list of ``(time_h, amount_mg)`` tuples."""
        return [(float(t), float(a)) for t, a in zip(self.times_h, self.amounts_mg, strict=True)]


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
    """
    pairs = list(doses)
    if any(len(p) != 2 for p in pairs):
        raise ValueError("each dose must be a (time_h, amount_mg) pair")
    times = [p[0] for p in pairs]
    amounts = [p[1] for p in pairs]
    return Regimen(np.asarray(times, dtype=float), np.asarray(amounts, dtype=float), name=name)


def repeated(
    daily_dose_mg: float, doses_per_day: int, days: int, name: str | None = None
) -> Regimen:
    """Equal doses at equal intervals: ``doses_per_day`` doses a day for ``days`` days.

    The daily dose is split evenly, so QD, BID and TID of the same ``daily_dose_mg`` give
    the same total exposure. The first dose is at 0 h.
    """
    if not (isinstance(doses_per_day, int | np.integer) and doses_per_day >= 1):
        raise ValueError(f"doses_per_day must be a whole number >= 1, got {doses_per_day!r}")
    if not (isinstance(days, int | np.integer) and days >= 1):
        raise ValueError(f"days must be a whole number >= 1, got {days!r}")
    if not np.isfinite(daily_dose_mg) or daily_dose_mg <= 0:
        raise ValueError(f"daily_dose_mg must be a finite number > 0, got {daily_dose_mg!r}")
    interval_h = 24.0 / doses_per_day
    n = doses_per_day * days
    times = np.arange(n) * interval_h
    amounts = np.full(n, daily_dose_mg / doses_per_day)
    return Regimen(times, amounts, name=name or f"{doses_per_day}x/day")


def named(regimen: str, daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """The study's regimens by name: ``"QD"``, ``"BID"`` or ``"TID"`` (case-insensitive)."""
    key = str(regimen).upper()
    if key not in DOSES_PER_DAY:
        raise ValueError(f"unknown regimen {regimen!r}; expected one of {sorted(DOSES_PER_DAY)}")
    return repeated(daily_dose_mg, DOSES_PER_DAY[key], days, name=key)


def qd(daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """Once daily: ``daily_dose_mg`` at 0, 24, 48, ... h."""
    return named("QD", daily_dose_mg, days)


def bid(daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """Twice daily: ``daily_dose_mg / 2`` every 12 h."""
    return named("BID", daily_dose_mg, days)


def tid(daily_dose_mg: float = 100.0, days: int = 7) -> Regimen:
    """Thrice daily: ``daily_dose_mg / 3`` every 8 h."""
    return named("TID", daily_dose_mg, days)


def per_patient(regimen: Regimen | Iterable[Regimen], n: int) -> list[Regimen]:
    """``regimen`` as a list of ``n`` regimens: one shared by all patients, or one each."""
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
    """
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    lo, hi = gap_h
    if not (1 <= lo <= hi):
        raise ValueError(
            f"gap_h must be (low, high) whole hours with 1 <= low <= high, got {gap_h}"
        )
    if not np.isfinite(daily_dose_mg) or daily_dose_mg <= 0:
        raise ValueError(f"daily_dose_mg must be a finite number > 0, got {daily_dose_mg!r}")
    rng = np.random.default_rng(seed)
    end = 24.0 * days
    out = []
    for _ in range(n):
        gaps = rng.integers(lo, hi + 1, size=int(end // lo) + 1).astype(float)
        times = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        keep = times < end
        out.append(Regimen(times[keep], daily_dose_mg * gaps[keep] / 24.0, name="random"))
    return out
