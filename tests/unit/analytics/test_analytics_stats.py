"""A/B statistics from sufficient statistics, checked against scipy, formulas and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats import (
    JointMoments,
    Moments,
    Proportion,
    always_valid_p,
    cuped,
    guardrail_one_sided,
    holm,
    msprt,
    msprt_from_estimate,
    ratio_delta,
    ratio_lift,
    relative_lift,
    sample_size,
    sample_size_proportion,
    srm_check,
    two_proportion_z,
    welch_t,
)

RTOL = 1e-9


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def binomial_bounds(trials: int, rate: float) -> tuple[float, float]:
    """The range a seeded simulation's hit rate stays in, with 99.9% probability."""
    low, high = sps.binom.interval(0.999, trials, rate)
    return low / trials, high / trials


def clustered_users(
    gen: np.random.Generator, experiments: int, users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Regenerates (x) and interactions (y) per user, shape (experiments, 2 arms, users).

    Each user has their own regenerate propensity (Beta(0.5, 4.5): mean 0.1, strongly
    heterogeneous) and 1 + Poisson(9) interactions; both arms get the same distribution.
    """
    shape = (experiments, 2, users)
    interactions = 1 + gen.poisson(9, size=shape)
    regenerates = gen.binomial(interactions, gen.beta(0.5, 4.5, size=shape))
    return regenerates.astype(float), interactions.astype(float)


def joint(x: np.ndarray, y: np.ndarray) -> JointMoments:
    """What the SQL aggregation of one arm returns, from per-unit arrays."""
    return JointMoments(
        len(x),
        float(x.sum()),
        float(y.sum()),
        float((x * x).sum()),
        float((y * y).sum()),
        float((x * y).sum()),
    )


def moments(values: np.ndarray) -> Moments:
    return Moments(len(values), float(values.sum()), float((values * values).sum()))


# -- inputs -----------------------------------------------------------------------------


def test_moments_of_raw_values_give_numpy_mean_and_sample_variance():
    values = rng(1).normal(10.0, 3.0, size=501)
    m = Moments.of(values)
    assert m.n == 501
    assert m.mean == pytest.approx(values.mean(), rel=1e-12)
    assert m.variance == pytest.approx(values.var(ddof=1), rel=1e-9)


def test_joint_moments_give_numpy_variances_and_covariance():
    gen = rng(2)
    x = gen.normal(size=300)
    y = 2 * x + gen.normal(size=300)
    m = JointMoments.of(x, y)
    cov = np.cov(x, y, ddof=1)
    assert (m.x.variance, m.y.variance, m.cov_xy) == pytest.approx(
        (cov[0, 0], cov[1, 1], cov[0, 1])
    )
    assert (m.x.mean, m.y.mean) == pytest.approx((x.mean(), y.mean()))


def test_a_proportion_as_moments_is_the_zero_one_metric():
    assert Proportion(3, 10).moments() == Moments.of([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Moments(-1, 0.0, 0.0), r"n=-1 is negative"),
        (lambda: Moments(2.5, 1.0, 1.0), r"n=2\.5 is not a count"),
        (lambda: Moments(3, math.nan, 1.0), r"total is nan: give a finite number"),
        (lambda: Moments(3, 1.0, math.inf), r"total_sq is inf"),
        (lambda: Moments(0, 1.0, 1.0), r"n=0 but the sums are not 0"),
        (lambda: Moments(2, 4.0, 1.0), r"cannot come from the same 2 values"),
        (lambda: Proportion(-1, 5), r"successes=-1 is negative"),
        (lambda: Proportion(6, 5), r"successes=6 exceeds n=5"),
        (lambda: JointMoments(3, 1.0, math.nan, 1.0, 1.0, 1.0), r"sum_y is nan"),
        (lambda: JointMoments(2, 0.0, 4.0, 0.0, 1.0, 0.0), r"sum of squares of y"),
    ],
)
def test_invalid_sufficient_statistics_are_refused_with_the_reason(build, message):
    with pytest.raises(StatsError, match=message):
        build()


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda: Moments(0, 0.0, 0.0).mean, r"the data is empty \(n=0\)"),
        (lambda: Moments(1, 2.0, 4.0).variance, r"n=1: a variance needs at least 2"),
        (lambda: Proportion(0, 0).rate, r"the data is empty"),
        (lambda: JointMoments.of([1.0], [2.0]).cov_xy, r"n=1: a variance needs at least 2"),
    ],
)
def test_a_mean_or_variance_without_enough_observations_is_refused(read, message):
    with pytest.raises(StatsError, match=message):
        read()


def test_a_stats_error_is_a_value_error():
    with pytest.raises(ValueError):
        Moments(-1, 0.0, 0.0)


# -- Welch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_a", "n_b", "sd_a", "sd_b", "shift", "level"),
    [
        (50, 50, 1.0, 1.0, 0.3, 0.95),
        (40, 400, 1.0, 4.0, -0.5, 0.95),
        (7, 3, 2.0, 0.5, 1.0, 0.9),
        (1000, 800, 30.0, 25.0, 2.0, 0.99),
    ],
)
def test_welch_t_matches_scipy_ttest_ind_with_unequal_variances(n_a, n_b, sd_a, sd_b, shift, level):
    gen = rng(n_a * 7 + n_b)
    a = gen.normal(5.0, sd_a, size=n_a)
    b = gen.normal(5.0 + shift, sd_b, size=n_b)
    result = welch_t(Moments.of(a), Moments.of(b), level=level)
    expected = sps.ttest_ind(b, a, equal_var=False)
    ci = expected.confidence_interval(level)
    assert result.statistic == pytest.approx(expected.statistic, rel=RTOL)
    assert result.p_value == pytest.approx(expected.pvalue, rel=RTOL)
    assert result.df == pytest.approx(expected.df, rel=RTOL)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=RTOL)
    assert result.estimate == pytest.approx(b.mean() - a.mean(), rel=RTOL)
    assert (result.n_a, result.n_b, result.level, result.name) == (n_a, n_b, level, "welch_t")


def test_welch_t_with_one_constant_arm_is_the_one_sample_t_test_of_the_other():
    a, b = np.array([2.0, 2.0, 2.0]), np.array([1.0, 3.0, 4.0, 6.0])
    result = welch_t(Moments.of(a), Moments.of(b))
    t = (b.mean() - 2.0) / math.sqrt(b.var(ddof=1) / 4)
    assert (result.statistic, result.df) == pytest.approx((t, 3.0), rel=RTOL)
    assert result.p_value == pytest.approx(sps.ttest_1samp(b, 2.0).pvalue, rel=RTOL)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (Moments.of([1, 1, 1]), Moments.of([2, 2]), r"both arms have zero variance.*undefined"),
        (Moments.of([1, 2, 3]), Moments.of([5]), r"arm B has n=1: a variance needs at least 2"),
        (Moments(0, 0.0, 0.0), Moments.of([1, 2]), r"arm A is empty \(n=0\)"),
    ],
)
def test_welch_t_explains_when_it_is_undefined(a, b, message):
    with pytest.raises(StatsError, match=message):
        welch_t(a, b)


def test_a_level_outside_zero_one_is_refused():
    with pytest.raises(StatsError, match=r"level=95\.0 is not valid"):
        welch_t(Moments.of([1, 2, 3]), Moments.of([1, 2, 4]), level=95)


# -- two proportions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Proportion(120, 1000), Proportion(150, 1000)),
        (Proportion(30, 250), Proportion(41, 900)),
        (Proportion(999, 1000), Proportion(990, 1000)),
        (Proportion(0, 40), Proportion(5, 60)),
    ],
)
def test_two_proportion_z_is_the_2x2_chi_square_without_correction(a, b):
    result = two_proportion_z(a, b)
    table = [[a.successes, a.n - a.successes], [b.successes, b.n - b.successes]]
    chi = sps.chi2_contingency(table, correction=False)
    assert result.statistic**2 == pytest.approx(chi.statistic, rel=RTOL)
    assert result.p_value == pytest.approx(chi.pvalue, rel=1e-8)


def test_two_proportion_z_uses_the_pooled_rate_for_the_test_and_unpooled_for_the_interval():
    result = two_proportion_z(Proportion(120, 1000), Proportion(150, 1200), level=0.9)
    pa, pb, pooled = 0.12, 0.125, 270 / 2200
    z = (pb - pa) / math.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 1200))
    se = math.sqrt(pa * (1 - pa) / 1000 + pb * (1 - pb) / 1200)
    assert result.statistic == pytest.approx(z, rel=RTOL)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=RTOL)
    assert result.se == pytest.approx(se, rel=RTOL)
    assert result.ci_high - result.estimate == pytest.approx(1.6448536269514722 * se, rel=RTOL)
    assert result.df == math.inf


def test_two_proportion_z_explains_when_every_outcome_is_the_same():
    with pytest.raises(StatsError, match=r"every outcome in both arms is 0"):
        two_proportion_z(Proportion(0, 10), Proportion(0, 20))
    with pytest.raises(StatsError, match=r"arm B is empty"):
        two_proportion_z(Proportion(1, 10), Proportion(0, 0))


# -- ratio metrics ----------------------------------------------------------------------


def test_ratio_delta_matches_a_direct_numpy_delta_method():
    x, y = clustered_users(rng(3), 1, 500)
    arms = []
    for arm in (0, 1):
        xs, ys = x[0, arm], y[0, arm]
        n, mx, my = len(xs), xs.mean(), ys.mean()
        cov = np.cov(xs, ys, ddof=1)
        var = (cov[0, 0] / my**2 - 2 * mx * cov[0, 1] / my**3 + mx**2 * cov[1, 1] / my**4) / n
        arms.append((xs.sum() / ys.sum(), var))
    (ratio_a, var_a), (ratio_b, var_b) = arms
    result = ratio_delta(joint(x[0, 0], y[0, 0]), joint(x[0, 1], y[0, 1]))
    z = (ratio_b - ratio_a) / math.sqrt(var_a + var_b)
    assert result.estimate == pytest.approx(ratio_b - ratio_a, rel=RTOL)
    assert result.se == pytest.approx(math.sqrt(var_a + var_b), rel=1e-8)
    assert result.statistic == pytest.approx(z, rel=1e-8)
    assert result.p_value == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-8)
    assert (result.n_a, result.n_b) == (500, 500)


def test_ratio_delta_keeps_the_false_positive_rate_where_a_per_interaction_test_inflates_it():
    experiments = 400
    x, y = clustered_users(rng(4), experiments, 200)
    clustered, naive = [], []
    for e in range(experiments):
        a, b = joint(x[e, 0], y[e, 0]), joint(x[e, 1], y[e, 1])
        clustered.append(ratio_delta(a, b).p_value)
        per_interaction = [Proportion(int(m.sum_x), int(m.sum_y)) for m in (a, b)]
        naive.append(two_proportion_z(*per_interaction).p_value)
    low, high = binomial_bounds(experiments, 0.05)
    assert low <= np.mean(np.array(clustered) < 0.05) <= high
    assert sps.kstest(clustered, "uniform").pvalue > 0.001
    assert np.mean(np.array(naive) < 0.05) > high


def test_ratio_delta_explains_a_zero_denominator():
    with pytest.raises(StatsError, match=r"arm A has sum of denominators 0"):
        ratio_delta(JointMoments.of([0, 0], [0, 0]), JointMoments.of([1, 2], [3, 4]))


# -- relative lift ----------------------------------------------------------------------


def test_relative_lift_uses_the_delta_method_variance_of_the_ratio_of_means():
    gen = rng(5)
    a, b = gen.normal(10.0, 2.0, size=400), gen.normal(10.5, 3.0, size=300)
    result = relative_lift(Moments.of(a), Moments.of(b), level=0.9)
    ma, mb = a.mean(), b.mean()
    ratio_var = (mb / ma) ** 2 * (b.var(ddof=1) / (300 * mb**2) + a.var(ddof=1) / (400 * ma**2))
    margin = sps.norm.ppf(0.95) * math.sqrt(ratio_var)
    assert result.estimate == pytest.approx(mb / ma - 1, rel=RTOL)
    assert result.se == pytest.approx(math.sqrt(ratio_var), rel=1e-8)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (mb / ma - 1 - margin, mb / ma - 1 + margin), rel=1e-8
    )


def test_ratio_lift_is_the_lift_of_the_clustered_ratios_with_their_delta_variances():
    x, y = clustered_users(rng(13), 1, 500)
    a, b = joint(x[0, 0], y[0, 0]), joint(x[0, 1], y[0, 1])
    difference = ratio_delta(a, b)
    ratio_a = x[0, 0].sum() / y[0, 0].sum()
    ratio_b = x[0, 1].sum() / y[0, 1].sum()
    var_a = ratio_delta(a, a).se ** 2 / 2  # both arms the same: twice one arm's variance
    var_b = ratio_delta(b, b).se ** 2 / 2
    result = ratio_lift(a, b)
    assert result.estimate == pytest.approx(ratio_b / ratio_a - 1, rel=RTOL)
    expected_var = var_b / ratio_a**2 + ratio_b**2 * var_a / ratio_a**4
    assert result.se == pytest.approx(math.sqrt(expected_var), rel=1e-8)
    assert difference.estimate == pytest.approx(ratio_b - ratio_a, rel=RTOL)


def test_relative_lift_intervals_cover_the_true_lift_at_their_level():
    gen = rng(6)
    experiments = 400
    a = gen.exponential(2.0, size=(experiments, 500))
    b = gen.exponential(2.2, size=(experiments, 500))
    intervals = [relative_lift(moments(a[e]), moments(b[e])) for e in range(experiments)]
    covered = [r.ci_low <= 0.1 <= r.ci_high for r in intervals]
    low, high = binomial_bounds(experiments, 0.95)
    assert low <= np.mean(covered) <= high


def test_relative_lift_explains_a_zero_control_mean():
    with pytest.raises(StatsError, match=r"arm A's estimate is 0: a relative lift is undefined"):
        relative_lift(Moments.of([-1, 1]), Moments.of([1, 2]))


# -- guardrails -------------------------------------------------------------------------


@pytest.mark.parametrize(("higher_is_worse", "alternative"), [(True, "greater"), (False, "less")])
def test_guardrail_is_the_one_sided_welch_test_that_the_candidate_is_worse(
    higher_is_worse, alternative
):
    gen = rng(7)
    a, b = gen.normal(100.0, 20.0, size=300), gen.normal(103.0, 25.0, size=250)
    result = guardrail_one_sided(Moments.of(a), Moments.of(b), higher_is_worse=higher_is_worse)
    expected = sps.ttest_ind(b, a, equal_var=False, alternative=alternative)
    ci = expected.confidence_interval(0.95)
    assert result.p_value == pytest.approx(expected.pvalue, rel=RTOL)
    assert result.statistic == pytest.approx(expected.statistic, rel=RTOL)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=RTOL)


def test_guardrail_on_a_rate_flags_a_higher_report_rate_only_when_higher_is_worse():
    control, candidate = Proportion(20, 2000).moments(), Proportion(45, 2000).moments()
    assert guardrail_one_sided(control, candidate).p_value < 0.01
    assert guardrail_one_sided(control, candidate, higher_is_worse=False).p_value > 0.99
    zeros_ones = [np.repeat([1.0, 0.0], [s, 2000 - s]) for s in (20, 45)]
    expected = sps.ttest_ind(zeros_ones[1], zeros_ones[0], equal_var=False, alternative="greater")
    assert guardrail_one_sided(control, candidate).p_value == pytest.approx(
        expected.pvalue, rel=RTOL
    )


# -- CUPED ------------------------------------------------------------------------------


def cuped_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_a, y_a, x_b, y_b): a pre-period metric x and the experiment's y, correlated."""
    gen = rng(seed)
    x_a, x_b = gen.gamma(2.0, 3.0, size=600), gen.gamma(2.0, 3.0, size=500)
    y_a = 1.0 + 0.8 * x_a + gen.normal(0.0, 2.0, size=600)
    y_b = 1.5 + 0.8 * x_b + gen.normal(0.0, 2.0, size=500)
    return x_a, y_a, x_b, y_b


def test_cuped_matches_scipy_on_the_adjusted_per_unit_values():
    x_a, y_a, x_b, y_b = cuped_data(8)
    x, y = np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])
    theta = np.cov(x, y, ddof=1)[0, 1] / x.var(ddof=1)
    adjusted_a = y_a - theta * (x_a - x.mean())
    adjusted_b = y_b - theta * (x_b - x.mean())
    result = cuped(JointMoments.of(x_a, y_a), JointMoments.of(x_b, y_b))
    test = welch_t(result.a, result.b)
    expected = sps.ttest_ind(adjusted_b, adjusted_a, equal_var=False)
    assert result.theta == pytest.approx(theta, rel=1e-9)
    assert test.statistic == pytest.approx(expected.statistic, rel=1e-6)
    assert test.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    assert test.estimate == pytest.approx(adjusted_b.mean() - adjusted_a.mean(), rel=1e-6)


def test_cuped_lowers_the_variance_when_the_covariate_correlates():
    x_a, y_a, x_b, y_b = cuped_data(9)
    a, b = JointMoments.of(x_a, y_a), JointMoments.of(x_b, y_b)
    result = cuped(a, b)
    assert result.a.variance < 0.3 * a.y.variance
    assert result.a.variance == pytest.approx(
        a.y.variance - 2 * result.theta * a.cov_xy + result.theta**2 * a.x.variance, rel=1e-9
    )
    assert welch_t(result.a, result.b).se < 0.6 * welch_t(Moments.of(y_a), Moments.of(y_b)).se


def test_cuped_explains_a_constant_covariate():
    with pytest.raises(StatsError, match=r"covariate x has zero variance over both arms"):
        cuped(JointMoments.of([1, 1], [2, 3]), JointMoments.of([1, 1], [4, 5]))


# -- SRM --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "shares"),
    [
        ({"a": 5000, "b": 5100}, {"a": 0.5, "b": 0.5}),
        ({"a": 5000, "b": 5400}, {"a": 0.5, "b": 0.5}),
        ({"control": 900, "x": 52, "y": 48}, {"control": 0.9, "x": 0.05, "y": 0.05}),
    ],
)
def test_srm_check_matches_scipy_chisquare(counts, shares):
    result = srm_check(counts, shares)
    total = sum(counts.values())
    expected = sps.chisquare(list(counts.values()), [shares[k] * total for k in counts])
    assert result.statistic == pytest.approx(expected.statistic, rel=RTOL)
    assert result.p_value == pytest.approx(expected.pvalue, rel=RTOL)
    assert result.flagged == (expected.pvalue < 0.001)
    assert result.df == len(counts) - 1


def test_srm_check_flags_a_mismatch_and_says_so():
    result = srm_check({"a": 5000, "b": 5400}, {"a": 0.5, "b": 0.5})
    assert result.flagged
    assert result.reason.startswith("sample ratio mismatch: chi-square 15.38 on 1 df")
    assert not srm_check({"a": 5000, "b": 5100}, {"a": 0.5, "b": 0.5}).flagged


def test_srm_check_flags_at_once_exposures_in_an_arm_with_share_zero():
    result = srm_check({"a": 100, "b": 100, "off": 1}, {"a": 0.5, "b": 0.5, "off": 0.0})
    assert (result.flagged, result.p_value, result.statistic) == (True, 0.0, math.inf)
    assert "arm 'off' has share 0 but 1 exposures" in result.reason


def test_srm_check_ignores_a_share_zero_arm_without_exposures():
    result = srm_check({"a": 100, "b": 110, "off": 0}, {"a": 0.5, "b": 0.5, "off": 0.0})
    assert result.p_value == pytest.approx(sps.chisquare([100, 110]).pvalue, rel=RTOL)
    assert result.df == 1


def test_srm_check_passes_when_all_traffic_is_expected_in_one_arm_and_is_there():
    result = srm_check({"a": 0, "b": 300}, {"a": 0.0, "b": 1.0})
    assert (result.flagged, result.p_value, result.df) == (False, 1.0, 0)


@pytest.mark.parametrize(
    ("counts", "shares", "message"),
    [
        ({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5}, r"no exposures"),
        ({"a": 10, "b": 10}, {"a": 0.5, "b": 0.4}, r"shares sum to 0\.9: give shares that sum"),
        ({"a": -1, "b": 10}, {"a": 0.5, "b": 0.5}, r"count of arm 'a'=-1 is negative"),
        ({"a": 10, "b": 10}, {"a": 0.5, "c": 0.5}, r"arms of counts \['a', 'b'\].*differ"),
        ({"a": 10, "b": 10}, {"a": math.nan, "b": 0.5}, r"share of arm 'a' is nan"),
        ({"a": 10}, {"a": 1.0}, r"needs at least 2 arms"),
    ],
)
def test_srm_check_refuses_unusable_inputs(counts, shares, message):
    with pytest.raises(StatsError, match=message):
        srm_check(counts, shares)


# -- sequential testing -----------------------------------------------------------------


def test_msprt_is_the_normal_mixture_likelihood_ratio():
    gen = rng(10)
    a, b = gen.normal(0.0, 1.0, size=300), gen.normal(0.2, 1.0, size=300)
    result = msprt(Moments.of(a), Moments.of(b), tau2=0.04)
    diff = b.mean() - a.mean()
    v = a.var(ddof=1) / 300 + b.var(ddof=1) / 300
    lr = math.sqrt(v / (v + 0.04)) * math.exp(0.04 * diff**2 / (2 * v * (v + 0.04)))
    assert result.estimate == pytest.approx(diff, rel=RTOL)
    assert result.variance == pytest.approx(v, rel=1e-9)
    assert math.exp(result.log_likelihood_ratio) == pytest.approx(lr, rel=1e-9)
    assert result.p_value == pytest.approx(min(1.0, 1 / lr), rel=1e-9)


@pytest.mark.parametrize("estimate", [0.0, 0.05, 0.1, 0.13, 0.2, -0.3])
def test_the_msprt_interval_excludes_zero_exactly_when_p_is_below_alpha(estimate):
    result = msprt_from_estimate(estimate, variance=0.002, tau2=0.01, level=0.95)
    assert (result.ci_low > 0 or result.ci_high < 0) == (result.p_value < 0.05)


def test_msprt_stays_valid_under_peeking_where_a_repeated_t_test_does_not():
    experiments, looks, batch = 200, 10, 100
    data = rng(11).normal(size=(experiments, 2, looks * batch))
    sequential_hits = peeking_hits = 0
    for e in range(experiments):
        running: float | None = None
        peeked = False
        for look in range(1, looks + 1):
            a, b = moments(data[e, 0, : look * batch]), moments(data[e, 1, : look * batch])
            running = always_valid_p(running, msprt(a, b, tau2=0.01))
            peeked = peeked or welch_t(a, b).p_value < 0.05
        sequential_hits += running < 0.05
        peeking_hits += peeked
    _, high = binomial_bounds(experiments, 0.05)
    assert sequential_hits / experiments <= high
    assert peeking_hits / experiments > high


def test_always_valid_p_is_the_running_minimum():
    results = [msprt_from_estimate(d, 0.01, 0.01) for d in (0.1, 0.3, 0.05)]
    p_values: list[float] = []
    running: float | None = None
    for result in results:
        running = always_valid_p(running, result)
        p_values.append(running)
    assert p_values == [results[0].p_value, results[1].p_value, results[1].p_value]
    with pytest.raises(StatsError, match=r"previous_p=1\.5 is not a p-value"):
        always_valid_p(1.5, results[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimate": 0.1, "variance": 0.0, "tau2": 0.01}, r"variance=0\.0 is not valid"),
        ({"estimate": 0.1, "variance": 0.01, "tau2": 0.0}, r"tau2=0\.0 is not valid"),
        ({"estimate": math.nan, "variance": 0.01, "tau2": 0.01}, r"estimate is nan"),
    ],
)
def test_msprt_refuses_a_degenerate_variance_or_mixture(kwargs, message):
    with pytest.raises(StatsError, match=message):
        msprt_from_estimate(**kwargs)


# -- Holm -------------------------------------------------------------------------------


def test_holm_on_the_textbook_example():
    # Wikipedia, Holm–Bonferroni method: four hypotheses at alpha = 0.05
    decisions = holm({"H1": 0.01, "H2": 0.04, "H3": 0.03, "H4": 0.005})
    assert {k: d.reject for k, d in decisions.items()} == {
        "H1": True,
        "H2": False,
        "H3": False,
        "H4": True,
    }
    adjusted = {k: d.adjusted_p for k, d in decisions.items()}
    assert adjusted == pytest.approx({"H1": 0.03, "H2": 0.06, "H3": 0.06, "H4": 0.02})
    assert list(decisions) == ["H1", "H2", "H3", "H4"]


def test_holm_adjusted_p_values_are_monotone_and_capped_at_one_by_hand():
    decisions = holm({"a": 0.2, "b": 0.001, "c": 0.019, "d": 0.015, "e": 0.9}, alpha=0.05)
    # sorted: b 0.001*5, d 0.015*4, c 0.019*3 -> max(0.057, 0.06), a 0.2*2, e 0.9*1 -> max
    expected = {"b": 0.005, "d": 0.06, "c": 0.06, "a": 0.4, "e": 0.9}
    assert {k: d.adjusted_p for k, d in decisions.items()} == pytest.approx(expected)
    assert [k for k, d in decisions.items() if d.reject] == ["b"]
    assert holm({"x": 0.6, "y": 0.7})["x"].adjusted_p == 1.0


def test_holm_refuses_a_p_value_outside_zero_one():
    with pytest.raises(StatsError, match=r"p-value of 'm' is 1\.2"):
        holm({"m": 1.2})


# -- planning ---------------------------------------------------------------------------


def test_sample_size_gives_the_textbook_393_per_arm_for_a_fifth_of_a_standard_deviation():
    size = sample_size(baseline_mean=10.0, sd=1.0, mde=0.2)
    assert (size.n_a, size.n_b, size.total) == (393, 393, 786)
    assert sample_size(baseline_mean=10.0, sd=1.0, mde=0.02, relative=True) == size


def test_sample_size_follows_the_closed_formula_for_an_uneven_split():
    size = sample_size(0.0, sd=3.0, mde=0.5, alpha=0.01, power=0.9, split=0.2)
    z = sps.norm.ppf(0.995) + sps.norm.ppf(0.9)
    total = z**2 * 9.0 * (1 / 0.2 + 1 / 0.8) / 0.25
    assert (size.n_a, size.n_b) == (math.ceil(0.8 * total), math.ceil(0.2 * total))


def test_sample_size_proportion_follows_the_closed_formula():
    size = sample_size_proportion(0.1, 0.03)
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    pooled = 0.115
    per_arm = (
        za * math.sqrt(2 * pooled * (1 - pooled)) + zb * math.sqrt(0.1 * 0.9 + 0.13 * 0.87)
    ) ** 2 / 0.03**2
    assert size.n_a == size.n_b == math.ceil(per_arm)
    assert sample_size_proportion(0.1, 0.3, relative=True) == size


def test_the_computed_sample_size_gives_the_planned_power_in_simulation():
    experiments = 400
    low, high = binomial_bounds(experiments, 0.8)
    n = sample_size(5.0, sd=2.0, mde=0.4).n_a
    data = rng(12).normal(5.0, 2.0, size=(experiments, 2, n)) + np.array([[0.0], [0.4]])
    means = np.mean([welch_t(moments(d[0]), moments(d[1])).p_value < 0.05 for d in data])
    assert low <= means <= high
    n = sample_size_proportion(0.1, 0.03).n_a
    successes = rng(13).binomial(n, [0.1, 0.13], size=(experiments, 2))
    rates = np.mean(
        [
            two_proportion_z(Proportion(sa, n), Proportion(sb, n)).p_value < 0.05
            for sa, sb in successes
        ]
    )
    assert low <= rates <= high


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_size(1.0, sd=0.0, mde=0.1), r"sd=0\.0 is not valid"),
        (lambda: sample_size(1.0, sd=1.0, mde=0.0), r"minimum detectable effect is 0"),
        (lambda: sample_size(1.0, sd=1.0, mde=0.1, power=1.0), r"power=1\.0 is not valid"),
        (lambda: sample_size_proportion(0.95, 0.1), r"p \+ mde = 1\.05 is not a rate"),
        (lambda: sample_size_proportion(0.5, 0.1, split=0.0), r"split=0\.0 is not valid"),
    ],
)
def test_sample_size_refuses_impossible_plans(call, message):
    with pytest.raises(StatsError, match=message):
        call()
