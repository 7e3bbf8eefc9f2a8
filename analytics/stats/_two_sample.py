"""Two-sample tests of B − A: Welch's t, the two-proportion z, ratio metrics by the
delta method, relative lifts and the one-sided guardrail test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm
from scipy.stats import t as student_t

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._moments import JointMoments, Moments, Proportion
from prefloop.analytics.stats._validation import _enough, _probability

__all__ = [
    "TestResult",
    "guardrail_one_sided",
    "ratio_delta",
    "ratio_estimate",
    "ratio_lift",
    "relative_lift",
    "two_proportion_z",
    "welch_t",
]


@dataclass(frozen=True)
class TestResult:
    """A two-sample comparison: the estimate of B − A (or of the lift), its interval and test.

    ``df`` is the t distribution's degrees of freedom, ``math.inf`` for a z test.
    """

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    statistic: float
    df: float
    p_value: float
    n_a: int
    n_b: int


def _mean_var(m: Moments, arm: str) -> tuple[float, float]:
    _enough(m.n, arm)
    return m.mean, m.variance


def _welch_parts(a: Moments, b: Moments) -> tuple[float, float, float]:
    """(mean_B − mean_A, its standard error, Welch–Satterthwaite degrees of freedom)."""
    mean_a, var_a = _mean_var(a, "A")
    mean_b, var_b = _mean_var(b, "B")
    share_a, share_b = var_a / a.n, var_b / b.n
    if share_a + share_b == 0:
        raise StatsError(
            "both arms have zero variance (every value equal within each arm): "
            "the t statistic is undefined; compare the two means directly"
        )
    df = (share_a + share_b) ** 2 / (share_a**2 / (a.n - 1) + share_b**2 / (b.n - 1))
    return mean_b - mean_a, math.sqrt(share_a + share_b), df


def welch_t(a: Moments, b: Moments, level: float = 0.95) -> TestResult:
    """Welch's unequal-variance t test of mean_B − mean_A, two-sided.

    The default test for a numeric per-unit metric (session length, rating, tokens);
    it does not assume equal variances or equal arm sizes. Equals
    ``scipy.stats.ttest_ind(b_values, a_values, equal_var=False)``.
    """
    level = _probability("level", level)
    estimate, se, df = _welch_parts(a, b)
    statistic = estimate / se
    margin = float(student_t.ppf((1 + level) / 2, df)) * se
    return TestResult(
        name="welch_t",
        estimate=estimate,
        se=se,
        ci_low=estimate - margin,
        ci_high=estimate + margin,
        level=level,
        statistic=statistic,
        df=df,
        p_value=2 * float(student_t.sf(abs(statistic), df)),
        n_a=a.n,
        n_b=b.n,
    )


def _z_result(
    name: str, estimate: float, se: float, statistic: float, level: float, n_a: int, n_b: int
) -> TestResult:
    margin = float(norm.ppf((1 + level) / 2)) * se
    return TestResult(
        name=name,
        estimate=estimate,
        se=se,
        ci_low=estimate - margin,
        ci_high=estimate + margin,
        level=level,
        statistic=statistic,
        df=math.inf,
        p_value=2 * float(norm.sf(abs(statistic))),
        n_a=n_a,
        n_b=n_b,
    )


def _nonzero_se(se: float) -> float:
    if se == 0:
        raise StatsError(
            "both arms have zero variance: the z statistic is undefined; "
            "compare the two estimates directly"
        )
    return se


def two_proportion_z(a: Proportion, b: Proportion, level: float = 0.95) -> TestResult:
    """The two-proportion z test of rate_B − rate_A, two-sided.

    For a 0/1 outcome with one independent observation per unit (did the user come
    back, did the user report anything). The statistic uses the pooled rate (the
    variance under H0: equal rates), the same as a 2x2 chi-square test without
    continuity correction; ``se`` and the interval use the unpooled variance. When
    a user contributes several outcomes, use ``ratio_delta`` instead.
    """
    level = _probability("level", level)
    _enough(a.n, "A", 1)
    _enough(b.n, "B", 1)
    rate_a, rate_b = a.rate, b.rate
    pooled = (a.successes + b.successes) / (a.n + b.n)
    if pooled in (0.0, 1.0):
        raise StatsError(
            f"every outcome in both arms is {int(pooled)}: the z statistic is undefined "
            "when the rates cannot differ; wait for more data"
        )
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
    se = math.sqrt(rate_a * (1 - rate_a) / a.n + rate_b * (1 - rate_b) / b.n)
    estimate = rate_b - rate_a
    return _z_result("two_proportion_z", estimate, se, estimate / pooled_se, level, a.n, b.n)


def ratio_estimate(m: JointMoments, arm: str = "") -> tuple[float, float]:
    """(Σx / Σy, its delta-method variance) for one arm of users (see ``ratio_delta``)."""
    return _ratio_var(m, arm or None)


def _ratio_var(m: JointMoments, arm: str | None) -> tuple[float, float]:
    """(Σx / Σy, its delta-method variance) for one arm of users."""
    _enough(m.n, arm)
    if m.sum_y == 0:
        raise StatsError(
            f"{'arm ' + arm if arm else 'the arm'} has sum of denominators 0: the ratio "
            "sum_x / sum_y is undefined"
        )
    ratio = m.sum_x / m.sum_y
    # var_x/μy² − 2 μx cov/μy³ + μx² var_y/μy⁴, with μx/μy = ratio, over n users
    spread = m.x.variance - 2 * ratio * m.cov_xy + ratio**2 * m.y.variance
    return ratio, max(spread, 0.0) / (m.n * m.y.mean**2)


def ratio_delta(a: JointMoments, b: JointMoments, level: float = 0.95) -> TestResult:
    """The z test of ratio_B − ratio_A for ratio metrics clustered by user (delta method).

    Per arm, user i has a numerator x_i (regenerates) and a denominator y_i
    (interactions); the metric is Σx / Σy. Interactions of one user are correlated, so
    the user is the independent unit: the ratio's variance is, by the delta method,
    (var_x/μy² − 2 μx cov_xy/μy³ + μx² var_y/μy⁴) / n_users with sample (co)variances
    over users. Treating every interaction as independent (``two_proportion_z`` on
    Σx of Σy) understates the variance and inflates false positives.
    """
    level = _probability("level", level)
    ratio_a, var_a = _ratio_var(a, "A")
    ratio_b, var_b = _ratio_var(b, "B")
    se = _nonzero_se(math.sqrt(var_a + var_b))
    estimate = ratio_b - ratio_a
    return _z_result("ratio_delta", estimate, se, estimate / se, level, a.n, b.n)


def relative_lift(a: Moments, b: Moments, level: float = 0.95) -> TestResult:
    """The relative lift mean_B / mean_A − 1, with a delta-method z interval and test.

    Var(mean_B / mean_A) ≈ (mean_B/mean_A)² (var_B/(n_B mean_B²) + var_A/(n_A mean_A²)),
    the arms being independent. For reporting "+3.2% [+1.0%, +5.4%]"; the decision on
    a difference of means is ``welch_t``'s, whose p-value differs slightly.
    """
    mean_a, var_a = _mean_var(a, "A")
    mean_b, var_b = _mean_var(b, "B")
    return _lift(mean_a, var_a / a.n, mean_b, var_b / b.n, level, a.n, b.n)


def ratio_lift(a: JointMoments, b: JointMoments, level: float = 0.95) -> TestResult:
    """The relative lift ratio_B / ratio_A − 1 of a ratio metric clustered by user.

    The same delta method as ``relative_lift``, with each arm's ratio and its
    delta-method variance (``ratio_delta``) in place of the mean and var/n.
    """
    ratio_a, var_a = _ratio_var(a, "A")
    ratio_b, var_b = _ratio_var(b, "B")
    return _lift(ratio_a, var_a, ratio_b, var_b, level, a.n, b.n)


def _lift(
    est_a: float, var_a: float, est_b: float, var_b: float, level: float, n_a: int, n_b: int
) -> TestResult:
    """est_B / est_A − 1 from two independent estimates and their variances."""
    level = _probability("level", level)
    if est_a == 0:
        raise StatsError(
            "arm A's estimate is 0: a relative lift is undefined; report the absolute "
            "difference instead"
        )
    # the formula above with est_B² cancelled, so that est_B = 0 is allowed
    variance = var_b / est_a**2 + est_b**2 * var_a / est_a**4
    se = _nonzero_se(math.sqrt(variance))
    lift = est_b / est_a - 1
    return _z_result("relative_lift", lift, se, lift / se, level, n_a, n_b)


def guardrail_one_sided(
    a: Moments, b: Moments, *, higher_is_worse: bool = True, level: float = 0.95
) -> TestResult:
    """One-sided Welch test of H1: the candidate B is worse than the control A.

    For guardrails (regenerate rate, report rate, latency): a small p-value means B
    is significantly worse. ``higher_is_worse=True`` tests mean_B > mean_A, ``False``
    tests mean_B < mean_A. The interval is the one-sided bound matching the test:
    [estimate − margin, inf) when higher is worse, (−inf, estimate + margin] otherwise.
    A rate per unit is ``Proportion(...).moments()``. Equals ``scipy.stats.ttest_ind(
    b_values, a_values, equal_var=False, alternative="greater" (or "less"))``.
    """
    level = _probability("level", level)
    estimate, se, df = _welch_parts(a, b)
    statistic = estimate / se
    margin = float(student_t.ppf(level, df)) * se
    worse = statistic if higher_is_worse else -statistic
    low, high = (estimate - margin, math.inf) if higher_is_worse else (-math.inf, estimate + margin)
    return TestResult(
        name="guardrail_one_sided",
        estimate=estimate,
        se=se,
        ci_low=low,
        ci_high=high,
        level=level,
        statistic=statistic,
        df=df,
        p_value=float(student_t.sf(worse, df)),
        n_a=a.n,
        n_b=b.n,
    )
