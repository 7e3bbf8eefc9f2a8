"""Sample ratio mismatch: the exposure counts per arm against the configured shares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy.stats import chi2

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._validation import _count, _finite, _probability

__all__ = ["SrmResult", "srm_check"]


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
