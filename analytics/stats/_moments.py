"""The inputs: the sufficient statistics one SQL aggregation per arm returns."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._validation import _count, _enough, _finite, _sum_sq_dev

__all__ = ["JointMoments", "Moments", "Proportion"]


@dataclass(frozen=True)
class Moments:
    """A numeric metric in one arm: ``count()``, ``sum(v)`` and ``sum(v * v)`` over its units."""

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        _count("n", self.n)
        _finite("total", self.total)
        _finite("total_sq", self.total_sq)
        if self.n == 0 and (self.total != 0 or self.total_sq != 0):
            raise StatsError("n=0 but the sums are not 0: an empty arm has total=0, total_sq=0")
        if self.n > 0:
            _sum_sq_dev(self.n, self.total, self.total_sq, "the values")

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        """The moments of raw values (for tests and tools; production reads them from SQL)."""
        numbers = [float(v) for v in values]
        return cls(len(numbers), math.fsum(numbers), math.fsum(v * v for v in numbers))

    @property
    def mean(self) -> float:
        _enough(self.n, None, 1)
        return self.total / self.n

    @property
    def variance(self) -> float:
        """The sample variance (ddof=1)."""
        _enough(self.n, None)
        return _sum_sq_dev(self.n, self.total, self.total_sq, "the values") / (self.n - 1)


@dataclass(frozen=True)
class Proportion:
    """A 0/1 outcome in one arm: ``countIf(outcome)`` successes out of ``count()`` units."""

    successes: int
    n: int

    def __post_init__(self) -> None:
        _count("successes", self.successes)
        _count("n", self.n)
        if self.successes > self.n:
            raise StatsError(
                f"successes={self.successes} exceeds n={self.n}: count each unit at most once"
            )

    @property
    def rate(self) -> float:
        _enough(self.n, None, 1)
        return self.successes / self.n

    def moments(self) -> Moments:
        """The same data as a numeric 0/1 metric (for ``welch_t``, ``guardrail_one_sided``)."""
        return Moments(self.n, float(self.successes), float(self.successes))


@dataclass(frozen=True)
class JointMoments:
    """Two metrics x and y on the same units in one arm: n, Σx, Σy, Σx², Σy², Σxy.

    For ``ratio_delta`` x is the numerator and y the denominator per user (regenerates
    and interactions); for ``cuped`` y is the metric and x its pre-period covariate.
    """

    n: int
    sum_x: float
    sum_y: float
    sum_x2: float
    sum_y2: float
    sum_xy: float

    def __post_init__(self) -> None:
        _count("n", self.n)
        sums = (self.sum_x, self.sum_y, self.sum_x2, self.sum_y2, self.sum_xy)
        for name, value in zip(("sum_x", "sum_y", "sum_x2", "sum_y2", "sum_xy"), sums, strict=True):
            _finite(name, value)
        if self.n == 0 and any(sums):
            raise StatsError("n=0 but the sums are not 0: an empty arm has every sum 0")
        if self.n > 0:
            _sum_sq_dev(self.n, self.sum_x, self.sum_x2, "x")
            _sum_sq_dev(self.n, self.sum_y, self.sum_y2, "y")

    @classmethod
    def of(cls, xs: Iterable[float], ys: Iterable[float]) -> JointMoments:
        """The joint moments of paired raw values (for tests and tools)."""
        pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        return cls(
            len(pairs),
            math.fsum(x for x, _ in pairs),
            math.fsum(y for _, y in pairs),
            math.fsum(x * x for x, _ in pairs),
            math.fsum(y * y for _, y in pairs),
            math.fsum(x * y for x, y in pairs),
        )

    def __add__(self, other: JointMoments) -> JointMoments:
        """The moments of both sets of units together."""
        return JointMoments(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_y + other.sum_y,
            self.sum_x2 + other.sum_x2,
            self.sum_y2 + other.sum_y2,
            self.sum_xy + other.sum_xy,
        )

    @property
    def x(self) -> Moments:
        """The moments of x alone."""
        return Moments(self.n, self.sum_x, self.sum_x2)

    @property
    def y(self) -> Moments:
        """The moments of y alone."""
        return Moments(self.n, self.sum_y, self.sum_y2)

    @property
    def cov_xy(self) -> float:
        """The sample covariance (ddof=1)."""
        _enough(self.n, None)
        return (self.sum_xy - self.sum_x * self.sum_y / self.n) / (self.n - 1)
