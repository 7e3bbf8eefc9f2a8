"""CUPED: variance reduction of a metric with a pre-period covariate of the same units."""

from __future__ import annotations

from dataclasses import dataclass

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._moments import JointMoments, Moments
from prefloop.analytics.stats._validation import _enough

__all__ = ["CupedResult", "cuped"]


@dataclass(frozen=True)
class CupedResult:
    """The CUPED-adjusted metric of each arm, as Moments for ``welch_t``, and θ."""

    a: Moments
    b: Moments
    theta: float


def _adjusted(m: JointMoments, theta: float, x_bar: float) -> Moments:
    """The moments of y − θ (x − x̄) over the arm's units, from its joint moments."""
    dev_x = m.sum_x - m.n * x_bar  # Σ(x − x̄)
    dev_x2 = m.sum_x2 - 2 * x_bar * m.sum_x + m.n * x_bar**2  # Σ(x − x̄)²
    dev_xy = m.sum_xy - x_bar * m.sum_y  # Σ y (x − x̄)
    total = m.sum_y - theta * dev_x
    total_sq = m.sum_y2 - 2 * theta * dev_xy + theta**2 * dev_x2
    # a sum of squares is at least (sum)²/n: keep rounding from breaking that
    return Moments(m.n, total, max(total_sq, total * total / m.n))


def cuped(a: JointMoments, b: JointMoments) -> CupedResult:
    """CUPED: the metric y adjusted by a pre-experiment covariate x of the same units.

    θ = cov(x, y) / var(x) over both arms together, and each unit's y becomes
    y − θ (x − x̄) with x̄ the mean over both arms: the mean keeps its expectation and
    the variance within an arm becomes var_y − 2θ cov_xy + θ² var_x, lower by the share
    of y that x explains. Run ``welch_t(result.a, result.b)`` on the result. x must be
    measured before exposure (e.g. the same metric in the previous weeks), else the
    adjustment can remove the effect itself.
    """
    _enough(a.n, "A")
    _enough(b.n, "B")
    both = a + b
    if both.x.variance == 0:
        raise StatsError(
            "the covariate x has zero variance over both arms: CUPED cannot use it; "
            "run welch_t on y alone"
        )
    theta = both.cov_xy / both.x.variance
    return CupedResult(_adjusted(a, theta, both.x.mean), _adjusted(b, theta, both.x.mean), theta)
