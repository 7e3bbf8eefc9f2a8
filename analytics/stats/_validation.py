"""Checks of the statistics' inputs, shared by every test: each raises a
:class:`StatsError` that names the value and the fix.
"""

from __future__ import annotations

import math
import operator

from prefloop.analytics.exceptions import StatsError

# a sum of squares may undershoot (Σv)²/n by rounding, never by more than this share
_ROUNDING = 1e-9


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise StatsError(f"{name} is {number}: give a finite number (check the SQL for NaN)")
    return number


def _count(name: str, value: int) -> int:
    try:
        count = operator.index(value)
    except TypeError:
        raise StatsError(f"{name}={value!r} is not a count: give a whole number >= 0") from None
    if count < 0:
        raise StatsError(f"{name}={count} is negative: a count is >= 0")
    return count


def _probability(name: str, value: float) -> float:
    number = _finite(name, value)
    if not 0.0 < number < 1.0:
        raise StatsError(f"{name}={number} is not valid: give a number strictly between 0 and 1")
    return number


def _enough(n: int, arm: str | None, needed: int = 2) -> None:
    """Raise unless there are ``needed`` observations: 1 for a mean, 2 for a variance."""
    who = f"arm {arm}" if arm else "the data"
    if n == 0:
        raise StatsError(f"{who} is empty (n=0): it has no observations")
    if n < needed:
        raise StatsError(f"{who} has n={n}: a variance needs at least 2 observations")


def _sum_sq_dev(n: int, total: float, total_sq: float, what: str) -> float:
    """Σ(v − mean)² from n, Σv and Σv², checking the three can belong together."""
    deviation = total_sq - total * total / n
    if deviation < -_ROUNDING * total_sq:
        raise StatsError(
            f"the sum of squares of {what} ({total_sq}) is below (sum)²/n "
            f"({total * total / n}): these cannot come from the same {n} values"
        )
    return max(deviation, 0.0)
