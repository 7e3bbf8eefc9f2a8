"""A/B significance statistics computed from sufficient statistics.

Every function here reads only what one SQL aggregation per arm returns: a count,
sums and sums of squares (and the cross-product for two-variable metrics), never
the raw rows. ClickHouse computes ``count()``, ``sum(v)``, ``sum(v * v)`` ...;
this module turns them into tests with scipy's distributions.

The family, arm A the control and arm B the candidate, every difference B − A:

=========================  ==============================================================
``welch_t``                difference of means, unequal variances: numeric metrics
``two_proportion_z``       difference of rates, one independent 0/1 outcome per unit
``ratio_delta``            difference of ratios Σx / Σy with the user as the unit
                           (e.g. regenerates per interaction): delta method
``relative_lift``          mean_B / mean_A − 1 with a delta-method interval
``ratio_lift``             the same for a ratio metric clustered by user
``guardrail_one_sided``    one-sided Welch test that the candidate is worse
``cuped``                  variance reduction with a pre-period covariate, for welch_t
``msprt``                  always-valid mixture SPRT: may be looked at after every batch
``srm_check``              sample ratio mismatch of the exposure counts
``holm``                   Holm–Bonferroni over several metrics
``sample_size``            units needed for a difference of means (and of proportions)
=========================  ==============================================================

Intervals are two-sided at ``level`` unless a docstring says otherwise. Invalid
inputs and undefined statistics raise :class:`StatsError` (a ``ValueError``) whose
message says what was wrong and how to fix it.

Variances come from sums as (Σv² − (Σv)²/n) / (n − 1). In float64 this loses
digits when the mean is large compared with the spread (|mean| / sd beyond about
1e4): aggregate a centred metric (v − a rough mean) in SQL in that case.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy.stats import chi2, norm
from scipy.stats import t as student_t

from prefloop.errors import PrefloopError

__all__ = [
    "CupedResult",
    "HolmDecision",
    "JointMoments",
    "Moments",
    "Proportion",
    "SampleSize",
    "SequentialResult",
    "SrmResult",
    "StatsError",
    "TestResult",
    "always_valid_p",
    "cuped",
    "guardrail_one_sided",
    "holm",
    "msprt",
    "msprt_from_estimate",
    "ratio_delta",
    "ratio_estimate",
    "ratio_lift",
    "relative_lift",
    "sample_size",
    "sample_size_proportion",
    "srm_check",
    "two_proportion_z",
    "welch_t",
]

# a sum of squares may undershoot (Σv)²/n by rounding, never by more than this share
_ROUNDING = 1e-9


class StatsError(PrefloopError, ValueError):
    """The inputs of a statistic are invalid, or the statistic is undefined for them."""


# -- validation -------------------------------------------------------------------------


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


# -- inputs -----------------------------------------------------------------------------


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


# -- two-sample tests -------------------------------------------------------------------


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


# -- CUPED ------------------------------------------------------------------------------


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


# -- sequential testing -----------------------------------------------------------------


@dataclass(frozen=True)
class SequentialResult:
    """One look of the mixture SPRT: the estimate, its variance and the always-valid p.

    ``ci_low``/``ci_high`` bound the always-valid confidence sequence at ``level``.
    """

    estimate: float
    variance: float
    tau2: float
    log_likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float
    level: float


def msprt_from_estimate(
    estimate: float, variance: float, tau2: float, level: float = 0.95
) -> SequentialResult:
    """The normal-mixture SPRT of H0: effect = 0 for an asymptotically normal estimate.

    With θ̂ the estimate and V its variance, the mixture likelihood ratio is
    Λ = sqrt(V/(V+τ²)) · exp(τ² θ̂² / (2 V (V+τ²))) and the always-valid p-value is
    min(1, 1/Λ). The interval is the confidence sequence {θ: Λ(θ̂ − θ) < 1/α},
    α = 1 − level, which excludes 0 exactly when p < α. Works for any estimate
    (e.g. ``two_proportion_z(...).estimate`` with ``se**2``, or ``ratio_delta``).
    """
    estimate = _finite("estimate", estimate)
    variance = _finite("variance", variance)
    tau2 = _finite("tau2", tau2)
    level = _probability("level", level)
    if variance <= 0:
        raise StatsError(f"variance={variance} is not valid: the estimate's variance must be > 0")
    if tau2 <= 0:
        raise StatsError(
            f"tau2={tau2} is not valid: give the mixture variance > 0, e.g. the squared "
            "effect size you expect"
        )
    spread = variance + tau2
    log_lr = 0.5 * math.log(variance / spread) + tau2 * estimate**2 / (2 * variance * spread)
    half = math.sqrt(
        variance * spread / tau2 * (math.log(spread / variance) - 2 * math.log(1 - level))
    )
    return SequentialResult(
        estimate=estimate,
        variance=variance,
        tau2=tau2,
        log_likelihood_ratio=log_lr,
        p_value=math.exp(min(0.0, -log_lr)),
        ci_low=estimate - half,
        ci_high=estimate + half,
        level=level,
    )


def msprt(a: Moments, b: Moments, tau2: float, level: float = 0.95) -> SequentialResult:
    """The always-valid mixture SPRT of mean_B − mean_A (Johari et al., Optimizely's engine).

    Unlike ``welch_t`` it may be recomputed after every batch and stopped as soon as
    p < α without inflating false positives, provided the caller keeps the running
    minimum of the p-values over the looks (``always_valid_p``).

    ``tau2`` is the variance of the normal prior over the true difference that the
    likelihood ratio averages over. Fix it before the experiment, never from its data:
    the usual choice is the square of the effect size you expect or care about
    (``tau2 = mde**2``). A smaller τ² detects small effects sooner and large ones
    later; a larger τ² the reverse.
    """
    mean_a, var_a = _mean_var(a, "A")
    mean_b, var_b = _mean_var(b, "B")
    variance = var_a / a.n + var_b / b.n
    if variance == 0:
        raise StatsError(
            "both arms have zero variance (every value equal within each arm): "
            "the likelihood ratio is undefined; compare the two means directly"
        )
    return msprt_from_estimate(mean_b - mean_a, variance, tau2, level)


def always_valid_p(previous_p: float | None, new: SequentialResult) -> float:
    """The always-valid p-value after a new look: the minimum over all looks so far.

    ``previous_p`` is what this function returned at the previous look (None at the
    first). Keep the returned value; stop when it falls below α.
    """
    if previous_p is None:
        return new.p_value
    previous = _finite("previous_p", previous_p)
    if not 0.0 <= previous <= 1.0:
        raise StatsError(f"previous_p={previous} is not a p-value: give a number in [0, 1]")
    return min(previous, new.p_value)


# -- sample ratio mismatch --------------------------------------------------------------


@dataclass(frozen=True)
class SrmResult:
    """A sample ratio mismatch check of exposure counts against the configured shares."""

    statistic: float
    df: int
    p_value: float
    threshold: float
    flagged: bool
    observed: dict[str, int]
    expected: dict[str, float]
    reason: str


def _shares(counts: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, float]:
    if set(counts) != set(shares):
        raise StatsError(
            f"the arms of counts {sorted(counts)} and of expected_shares {sorted(shares)} "
            "differ: give a share for every arm that has a count, and no other"
        )
    if len(counts) < 2:
        raise StatsError(f"{len(counts)} arm(s) given: a ratio mismatch needs at least 2 arms")
    checked = {arm: _finite(f"the share of arm {arm!r}", share) for arm, share in shares.items()}
    for arm, share in checked.items():
        if not 0.0 <= share <= 1.0:
            raise StatsError(f"the share of arm {arm!r} is {share}: give a share in [0, 1]")
    total = math.fsum(checked.values())
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise StatsError(f"the expected shares sum to {total:g}: give shares that sum to 1")
    return checked


def srm_check(
    counts: Mapping[str, int], expected_shares: Mapping[str, float], threshold: float = 0.001
) -> SrmResult:
    """Chi-square goodness of fit of the exposure counts per arm to the configured shares.

    A mismatch (flagged when p < threshold; 0.001 by convention, since the check runs
    on every experiment) means the assignment or the logging is broken and no other
    result of the experiment can be trusted. An arm with share 0 that received
    exposures is flagged at once (p = 0). Equals ``scipy.stats.chisquare``.
    """
    threshold = _probability("threshold", threshold)
    shares = _shares(counts, expected_shares)
    observed = {arm: _count(f"the count of arm {arm!r}", count) for arm, count in counts.items()}
    total = sum(observed.values())
    if total == 0:
        raise StatsError("no exposures: every arm has count 0, so there is nothing to check yet")
    expected = {arm: shares[arm] * total for arm in observed}
    live = [arm for arm in observed if shares[arm] > 0]
    df = max(len(live) - 1, 0)
    stray = {arm: count for arm, count in observed.items() if shares[arm] == 0 and count > 0}
    if stray:
        arm, count = next(iter(stray.items()))
        reason = (
            f"arm {arm!r} has share 0 but {count} exposures: traffic reaches an arm "
            "configured to get none (check the router's assignment)"
        )
        return SrmResult(math.inf, df, 0.0, threshold, True, observed, expected, reason)
    if df == 0:
        reason = f"all traffic is expected in arm {live[0]!r} and all of it is there"
        return SrmResult(0.0, 0, 1.0, threshold, False, observed, expected, reason)
    statistic = math.fsum((observed[arm] - expected[arm]) ** 2 / expected[arm] for arm in live)
    p_value = float(chi2.sf(statistic, df))
    flagged = p_value < threshold
    verdict = "sample ratio mismatch" if flagged else "the counts match the shares"
    reason = f"{verdict}: chi-square {statistic:.4g} on {df} df, p={p_value:.3g}"
    return SrmResult(statistic, df, p_value, threshold, flagged, observed, expected, reason)


# -- multiple comparisons ---------------------------------------------------------------


@dataclass(frozen=True)
class HolmDecision:
    """One hypothesis under Holm–Bonferroni: its p-value, adjusted p-value and decision."""

    p_value: float
    adjusted_p: float
    reject: bool


def holm(pvalues: Mapping[str, float], alpha: float = 0.05) -> dict[str, HolmDecision]:
    """Holm–Bonferroni step-down over several hypotheses (e.g. the metrics of a verdict).

    Controls the family-wise error rate at ``alpha`` under any dependence and is
    uniformly more powerful than Bonferroni. With the m p-values sorted ascending, the
    i-th (from 0) adjusted p-value is max over j <= i of min(1, (m − j) p_(j)), so the
    adjusted p-values are monotone in the raw ones; a hypothesis is rejected when its
    adjusted p-value is <= alpha. Returns the decisions in the input's order.
    """
    alpha = _probability("alpha", alpha)
    for name, p in pvalues.items():
        if not 0.0 <= _finite(f"the p-value of {name!r}", p) <= 1.0:
            raise StatsError(f"the p-value of {name!r} is {p}: give a number in [0, 1]")
    ranked = sorted(pvalues, key=lambda name: pvalues[name])
    decisions: dict[str, HolmDecision] = {}
    adjusted = 0.0
    for rank, name in enumerate(ranked):
        adjusted = max(adjusted, min(1.0, (len(ranked) - rank) * pvalues[name]))
        decisions[name] = HolmDecision(pvalues[name], adjusted, adjusted <= alpha)
    return {name: decisions[name] for name in pvalues}


# -- planning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSize:
    """The units needed in each arm."""

    n_a: int
    n_b: int

    @property
    def total(self) -> int:
        return self.n_a + self.n_b


def _effect(baseline: float, mde: float, relative: bool) -> float:
    """The difference to detect, signed: mde, or mde × baseline when relative."""
    effect = _finite("mde", mde) * (baseline if relative else 1.0)
    if effect == 0:
        raise StatsError(
            "the minimum detectable effect is 0: give an mde != 0 (and a baseline != 0)"
        )
    return effect


def _quantiles(alpha: float, power: float, split: float) -> tuple[float, float]:
    """(z_{1−α/2}, z_power), the planning parameters checked."""
    alpha = _probability("alpha", alpha)
    power = _probability("power", power)
    _probability("split", split)
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


def _per_arm(total: float, split: float) -> SampleSize:
    return SampleSize(n_a=math.ceil((1 - split) * total), n_b=math.ceil(split * total))


def sample_size(
    baseline_mean: float,
    sd: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    split: float = 0.5,
    *,
    relative: bool = False,
) -> SampleSize:
    """Units per arm for a two-sided two-sample test of means (normal approximation).

    ``mde`` is the smallest difference to detect, absolute, or relative to
    ``baseline_mean`` with ``relative=True`` (0.02 = a 2% lift; ``baseline_mean`` is
    only used then). ``sd`` is the per-unit standard deviation, assumed equal in both
    arms; ``split`` is the share of units in arm B. The total N solves
    (z_{1−α/2} + z_power)² sd² (1/split + 1/(1−split)) = N mde², i.e.
    2 (z_{1−α/2} + z_power)² sd² / mde² per arm at an even split.
    """
    baseline_mean = _finite("baseline_mean", baseline_mean)
    sd = _finite("sd", sd)
    if sd <= 0:
        raise StatsError(f"sd={sd} is not valid: give the per-unit standard deviation > 0")
    effect = _effect(baseline_mean, mde, relative)
    z_alpha, z_power = _quantiles(alpha, power, split)
    allocation = 1 / split + 1 / (1 - split)
    return _per_arm((z_alpha + z_power) ** 2 * sd**2 * allocation / effect**2, split)


def sample_size_proportion(
    p: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    split: float = 0.5,
    *,
    relative: bool = False,
) -> SampleSize:
    """Units per arm for ``two_proportion_z`` to detect a rate p + mde against a rate p.

    ``mde`` is absolute (0.01 = one percentage point) or relative to ``p`` with
    ``relative=True``. Uses the pooled variance under H0 and the unpooled one under
    H1, as the test does: N = (z_{1−α/2} sqrt(p̄(1−p̄) k) + z_power
    sqrt(p(1−p)/(1−s) + p₂(1−p₂)/s))² / mde², with k = 1/s + 1/(1−s), s = split and
    p̄ = (1−s) p + s p₂.
    """
    p = _probability("p", p)
    effect = _effect(p, mde, relative)
    p_b = p + effect
    if not 0.0 < p_b < 1.0:
        raise StatsError(f"p + mde = {p_b:g} is not a rate: give an mde that keeps it in (0, 1)")
    z_alpha, z_power = _quantiles(alpha, power, split)
    pooled = (1 - split) * p + split * p_b
    null_sd = math.sqrt(pooled * (1 - pooled) * (1 / split + 1 / (1 - split)))
    alt_sd = math.sqrt(p * (1 - p) / (1 - split) + p_b * (1 - p_b) / split)
    return _per_arm((z_alpha * null_sd + z_power * alt_sd) ** 2 / effect**2, split)
