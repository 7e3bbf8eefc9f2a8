"""An experiment's metrics over time, per arm and model version, for the live monitor.

Read from ``arm_minutely`` (migration 0008), the per-minute aggregates kept up to date
as rows arrive: one row per arm, version and minute whatever the experiment's size, so
a chart of a hundred thousand users costs what one of ten does. Buckets widen with
the experiment's age so that a chart holds at most :data:`MAX_POINTS` points each.

Each point carries its 95 % interval: a t interval for the means (implicit score and
rating, over the bucket's responses), a Wilson interval for the rates (regenerate,
report). These are per-bucket descriptions for the eye; the decision's own intervals,
clustered by user and always valid, are the verdict's
(:func:`prefloop.analytics.verdict.analyze`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from scipy import stats

__all__ = ["BUCKETS_MIN", "MAX_POINTS", "Point", "bucket_minutes", "experiment_series"]

MAX_POINTS = 120
BUCKETS_MIN = (1, 5, 15, 60, 240, 1440)
LEVEL = 0.95

_SPAN = """
SELECT min(minute), max(minute) FROM arm_minutely WHERE experiment_id = {experiment:String}
"""
_SERIES = """
SELECT arm, model_version,
       toStartOfInterval(minute, toIntervalMinute({bucket:UInt32})) AS at,
       sum(interactions) AS requests, uniqMerge(users) AS users,
       quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_quantiles) AS latency,
       sum(scored) AS scored, sum(implicit_score_sum) AS score_sum,
       sum(implicit_score_sum2) AS score_sum2, sum(rated) AS rated,
       sum(rating_sum) AS rating_sum, sum(rating_sum2) AS rating_sum2,
       sum(regenerated) AS regenerated, sum(reported) AS reported
FROM arm_minutely
WHERE experiment_id = {experiment:String} AND arm IN ('A', 'B')
GROUP BY arm, model_version, at
ORDER BY at, arm, model_version
"""


@dataclass(frozen=True)
class Estimate:
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Point:
    """One arm and version over one bucket."""

    at: datetime
    requests: int
    users: int  # distinct users active in the bucket
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    implicit_score: Estimate
    rating: Estimate
    regenerate_rate: Estimate
    report_rate: Estimate


def bucket_minutes(first: datetime, last: datetime) -> int:
    """The narrowest bucket that keeps the span within :data:`MAX_POINTS` points."""
    minutes = (last - first).total_seconds() / 60 + 1
    return next((b for b in BUCKETS_MIN if minutes / b <= MAX_POINTS), BUCKETS_MIN[-1])


@functools.lru_cache(maxsize=4096)
def _t_quantile(df: int) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


_Z = float(stats.norm.ppf(0.5 + LEVEL / 2))


def _mean(n: int, total: float, total2: float) -> Estimate:
    if n == 0:
        return Estimate(None, None, None)
    mean = total / n
    if n < 2:
        return Estimate(mean, None, None)
    variance = max(total2 / n - mean * mean, 0.0) * n / (n - 1)
    half = _t_quantile(n - 1) * math.sqrt(variance / n)
    return Estimate(mean, mean - half, mean + half)


def _rate(k: int, n: int) -> Estimate:
    """The rate with its Wilson score interval: ``scipy.stats.binomtest(k, n)``'s
    ``proportion_ci(method="wilson")`` in closed form (checked against it in the tests),
    since a binomtest per point also computes a p-value nobody reads here, a third of
    a refresh on a long experiment."""
    if n == 0:
        return Estimate(None, None, None)
    z2 = _Z * _Z
    center = (k + z2 / 2) / (n + z2)
    half = _Z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    return Estimate(k / n, max(0.0, center - half), min(1.0, center + half))


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def experiment_series(client: Client, experiment_id: str) -> dict[str, Any]:
    """``{"bucket_minutes": b, "arms": {"A": {"v1": [point, ...]}, "B": {...}}}``, JSON-ready."""
    params: dict[str, Any] = {"experiment": experiment_id}
    first, last = client.query(_SPAN, parameters=params).result_rows[0]
    arms: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if first is None or first.year < 1971:  # no rows: min() of nothing is the epoch
        return {"bucket_minutes": BUCKETS_MIN[0], "arms": arms}
    bucket = bucket_minutes(first, last)
    rows = client.query(_SERIES, parameters={**params, "bucket": bucket}).named_results()
    for row in rows:
        p50, p95, p99 = (_finite(q) for q in row["latency"]) if row["requests"] else (None,) * 3
        point = Point(
            at=row["at"],
            requests=int(row["requests"]),
            users=int(row["users"]),
            latency_p50=p50,
            latency_p95=p95,
            latency_p99=p99,
            implicit_score=_mean(int(row["scored"]), row["score_sum"], row["score_sum2"]),
            rating=_mean(int(row["rated"]), row["rating_sum"], row["rating_sum2"]),
            regenerate_rate=_rate(int(row["regenerated"]), int(row["scored"])),
            report_rate=_rate(int(row["reported"]), int(row["scored"])),
        )
        out = asdict(point)
        out["at"] = point.at.isoformat()
        arms.setdefault(row["arm"], {}).setdefault(row["model_version"], []).append(out)
    return {"bucket_minutes": bucket, "arms": arms}
