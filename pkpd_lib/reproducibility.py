"""What the book's regression check compares exactly, and what within a tolerance.

Simulation, data tables and anything else computed by numpy and scipy from fixed seeds
reproduce to the printed digits on any machine, and the tests compare them exactly. The
score of a trained network does not: TensorFlow's oneDNN kernels choose their code path
from the CPU's instruction set (AVX2, AVX-512, ...), the last bits of a few sums
differ, and training turns those bits into a network that is as different as one
trained from another seed. (Chapter 4 measures this; the book's appendix
"Reproducibility" explains it.) Such numbers are compared within :data:`SCORE_RTOL`.

This module imports neither TensorFlow nor the rest of the package, so the test
harness can read it cheaply.

Examples
--------
>>> numbers_match("BID 3.77%", "BID 4.10%")
True
>>> numbers_match("BID 3.77%", "BID 9.10%")
False
>>> numbers_match("washout: 23%", "low dose: 23%")
False
"""

from __future__ import annotations

import re

#: Relative tolerance for numbers computed from trained networks (scores, ratios,
#: coverages), as a fraction of the larger of the two values. Chapter 4 derives it from
#: the measured seed-to-seed spread and asserts that it covers that spread: a number
#: from another machine is a draw from the same seed distribution as the stored one.
SCORE_RTOL = 0.5

#: The cell tag that marks a cell whose printed numbers come from trained networks.
TRAINED_TAG = "trained-scores"

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")

#: What :func:`verdict` may answer in the book. A verdict is a function of a number that
#: is itself compared within the tolerance, so on another machine it may move to the
#: neighbouring answer (the claims it supports are asserted in the notebooks).
VERDICT_WORDS = (
    "NOT within the 2x goal",
    "within the 2x goal",
    "too close to call",
    "missed",
    "breaks",
    "holds",
    "met",
)
_VERDICT = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in VERDICT_WORDS) + r")\b")


def _split(text: str) -> tuple[list[str], list[str]]:
    """The text between numbers (whitespace runs collapsed, verdicts masked) and the
    numbers themselves."""
    numbers = _NUMBER.findall(text)
    skeleton = [" ".join(_VERDICT.sub("<verdict>", part).split()) for part in _NUMBER.split(text)]
    return skeleton, numbers


def _decimals(number: str) -> int:
    mantissa, _, exponent = number.lower().partition("e")
    places = len(mantissa.partition(".")[2])
    return places - int(exponent or 0)


def numbers_match(reference: str, fresh: str, rtol: float = SCORE_RTOL) -> bool:
    """True when ``fresh`` is ``reference`` with every number within tolerance.

    The words around the numbers must agree exactly (a reordered table or another
    label fails), except the answers of :func:`verdict`, which follow their numbers;
    whitespace may differ, since a table realigns when a number gains a digit. Two
    numbers agree when ``|a - b| <= rtol * max(|a|, |b|) + u``, where ``u`` is one unit
    in the last printed digit of the reference (rounding).
    """
    ref_skeleton, ref_numbers = _split(reference)
    new_skeleton, new_numbers = _split(fresh)
    if ref_skeleton != new_skeleton or len(ref_numbers) != len(new_numbers):
        return False
    for a_text, b_text in zip(ref_numbers, new_numbers, strict=True):
        a, b = float(a_text), float(b_text)
        unit = 10.0 ** -_decimals(a_text)
        if abs(a - b) > rtol * max(abs(a), abs(b)) + unit:
            return False
    return True


#: Default margin of :func:`verdict`: a value within 15% of its threshold is too close
#: to call, since the mean of a few seeds moves by about that much between machines.
VERDICT_MARGIN = 0.15


def verdict(
    value: float,
    threshold: float,
    below: str = "met",
    above: str = "missed",
    margin: float = VERDICT_MARGIN,
) -> str:
    """``below`` if ``value`` is clearly under ``threshold``, ``above`` if clearly over,
    else ``"too close to call"``: a verdict that the seed spread cannot flip.

    Clearly means by more than ``margin`` as a fraction of the threshold.

    Examples
    --------
    >>> verdict(3.8, 5.0), verdict(5.2, 5.0), verdict(6.5, 5.0)
    ('met', 'too close to call', 'missed')
    """
    if value <= threshold * (1 - margin):
        return below
    if value >= threshold * (1 + margin):
        return above
    return "too close to call"
