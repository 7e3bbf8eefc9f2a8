"""The monitor's per-bucket intervals: the closed forms against scipy's own."""

from __future__ import annotations

import pytest
from scipy import stats

from prefloop.analytics.series import _mean, _rate


@pytest.mark.parametrize(
    "k,n", [(0, 1), (1, 1), (0, 50), (3, 50), (25, 50), (50, 50), (417, 10_000)]
)
def test_the_rate_interval_is_scipys_wilson_interval(k: int, n: int) -> None:
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    got = _rate(k, n)
    assert got.value == k / n
    assert got.low == pytest.approx(expected.low, abs=1e-12)
    assert got.high == pytest.approx(expected.high, abs=1e-12)


def test_the_mean_interval_is_the_t_interval() -> None:
    values = [0.5, 1.5, -0.25, 2.0, 0.75]
    expected = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    got = _mean(len(values), sum(values), sum(v * v for v in values))
    assert (got.low, got.high) == pytest.approx(expected, rel=1e-9)


def test_no_data_no_interval() -> None:
    assert _rate(0, 0).value is None and _mean(0, 0.0, 0.0).value is None
    assert _mean(1, 2.0, 4.0).low is None  # one value: a mean, no interval
