"""The metrics of an experiment per arm, as sufficient statistics computed in SQL.

Raw rows never come into Python: each query aggregates per user (the unit of the
experiment) in ClickHouse and then over users per arm, returning counts, sums, sums
of squares and cross-products, which :mod:`prefloop.analytics.stats` turns into
tests. The event tables are read with FINAL, so a score counts at its latest
revision and a client's duplicate once. Every value a caller gives reaches SQL as a
bound parameter.

Per arm:

- ratio metrics per response, clustered by user (numerator, denominator per user):
  mean implicit score, mean rating (over rated responses), continue, copy,
  regenerate and report rates, from ``scores``;
- the share of requests slower than arm A's p99 latency, clustered by user, from
  ``interactions`` (a test of the p99 that needs no raw rows);
- session duration (span from a session's first to its last response), one value
  per session, for Welch's t;
- descriptive: users, responses, latency p50/p95/p99, daily active users, tokens
  per second, the model version;
- the per-user mean of the implicit score, for Mann–Whitney U (ClickHouse's
  ``mannWhitneyUTest``) and, with its pre-period covariate, CUPED.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from prefloop.analytics.stats import JointMoments, Moments

__all__ = [
    "RATIO_METRICS",
    "ArmSummary",
    "ExperimentData",
    "experiment_data",
    "known_experiments",
]

# metric -> (numerator, denominator) columns of the per-user query
RATIO_METRICS = {
    "implicit_score": ("score_sum", "responses"),
    "rating": ("rating_sum", "rated"),
    "continue_rate": ("n_continued", "responses"),
    "copy_rate": ("n_copied", "responses"),
    "regenerate_rate": ("n_regenerated", "responses"),
    "report_rate": ("n_reported", "responses"),
}

_WINDOW = "ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}"
_IN_EXPERIMENT = f"experiment_id = {{experiment:String}} AND arm IN ('A', 'B') AND {_WINDOW}"
_PER_USER_SCORES = f"""
SELECT arm, user_id,
       count() AS responses,
       sum(implicit_score) AS score_sum,
       count(rating) AS rated,
       sum(ifNull(rating, 0)) AS rating_sum,
       countIf(signals_continued) AS n_continued,
       countIf(signals_copied) AS n_copied,
       countIf(signals_regenerated) AS n_regenerated,
       countIf(signals_reported) AS n_reported
FROM scores FINAL WHERE {_IN_EXPERIMENT}
GROUP BY arm, user_id
"""


def _joint_sql(x: str, y: str) -> str:
    """The six sums of JointMoments(x, y) over the users of an arm."""
    return (
        f"sum({x}) AS {x}_{y}_x, sum({y}) AS {x}_{y}_y, sum({x} * {x}) AS {x}_{y}_x2, "
        f"sum({y} * {y}) AS {x}_{y}_y2, sum({x} * {y}) AS {x}_{y}_xy"
    )


def _joint(row: dict[str, Any], users: int, x: str, y: str) -> JointMoments:
    p = f"{x}_{y}"
    return JointMoments(
        users,
        float(row[f"{p}_x"]),
        float(row[f"{p}_y"]),
        float(row[f"{p}_x2"]),
        float(row[f"{p}_y2"]),
        float(row[f"{p}_xy"]),
    )


@dataclass(frozen=True)
class ArmSummary:
    """What describes one arm without a test."""

    model_version: str
    users: int
    responses: int
    latency_ms: tuple[float, float, float]  # p50, p95, p99
    daily_active_users: float
    tokens_per_second: float


@dataclass
class ExperimentData:
    """Everything the verdict needs, per arm ('A', 'B'), as sufficient statistics."""

    experiment_id: str
    arms: dict[str, ArmSummary] = field(default_factory=dict)
    ratios: dict[str, dict[str, JointMoments]] = field(default_factory=dict)
    sessions: dict[str, Moments] = field(default_factory=dict)
    score_users: dict[str, Moments] = field(default_factory=dict)
    mann_whitney: tuple[float, float] | None = None  # U of arm A, two-sided p
    latency_threshold_ms: float | None = None


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def known_experiments(client: Client) -> list[str]:
    """Experiment ids with interactions or exposures, for the error of an unknown one."""
    result = client.query(
        "SELECT DISTINCT experiment_id FROM interactions WHERE experiment_id != '' "
        "UNION DISTINCT SELECT DISTINCT experiment_id FROM exposures WHERE experiment_id != ''"
    )
    return sorted(str(row[0]) for row in result.result_rows)


def experiment_data(
    client: Client, experiment_id: str, start: datetime, end: datetime
) -> ExperimentData:
    """The sufficient statistics of ``experiment_id`` over [start, end), per arm."""
    params: dict[str, Any] = {"experiment": experiment_id, "start": start, "end": end}
    data = ExperimentData(experiment_id)
    _interactions(client, params, data)
    _scores(client, params, data)
    _sessions(client, params, data)
    return data


def _interactions(client: Client, params: dict[str, Any], data: ExperimentData) -> None:
    arms = _rows(
        client,
        f"""
        SELECT arm, any(toString(model_version)) AS model_version, count() AS responses,
               quantilesTDigest(0.5, 0.95, 0.99)(latency_ms) AS latency,
               sum(completion_tokens) / greatest(sum(latency_ms), 1) * 1000 AS tokens_per_second
        FROM interactions FINAL WHERE {_IN_EXPERIMENT} GROUP BY arm ORDER BY arm
        """,
        params,
    )
    daily = {
        row["arm"]: float(row["dau"])
        for row in _rows(
            client,
            f"""
            SELECT arm, avg(users) AS dau FROM (
                SELECT arm, toDate(ts) AS day, uniqExact(user_id) AS users
                FROM interactions FINAL WHERE {_IN_EXPERIMENT} GROUP BY arm, day)
            GROUP BY arm
            """,
            params,
        )
    }
    for row in arms:
        p50, p95, p99 = (float(v) for v in row["latency"])
        data.arms[row["arm"]] = ArmSummary(
            model_version=row["model_version"],
            users=0,  # counted per user below, with the slow requests
            responses=int(row["responses"]),
            latency_ms=(p50, p95, p99),
            daily_active_users=daily.get(row["arm"], 0.0),
            tokens_per_second=float(row["tokens_per_second"]),
        )
    threshold = data.arms["A"].latency_ms[2] if "A" in data.arms else 0.0
    data.latency_threshold_ms = threshold if "A" in data.arms else None
    for row in _rows(
        client,
        f"""
        SELECT arm, count() AS users, {_joint_sql("slow", "requests")}
        FROM (SELECT arm, user_id, count() AS requests,
                     countIf(latency_ms > {{threshold:Float64}}) AS slow
              FROM interactions FINAL WHERE {_IN_EXPERIMENT} GROUP BY arm, user_id)
        GROUP BY arm
        """,
        {**params, "threshold": threshold},
    ):
        users = int(row["users"])
        data.arms[row["arm"]] = dataclasses.replace(data.arms[row["arm"]], users=users)
        if data.latency_threshold_ms is not None:
            data.ratios.setdefault("latency_p99", {})[row["arm"]] = _joint(
                row, users, "slow", "requests"
            )


def _scores(client: Client, params: dict[str, Any], data: ExperimentData) -> None:
    pairs = sorted(set(RATIO_METRICS.values()))
    sums = ", ".join(_joint_sql(x, y) for x, y in pairs)
    for row in _rows(
        client,
        f"""
        SELECT arm, count() AS users, {sums},
               sum(score_sum / responses) AS mean_score,
               sum(pow(score_sum / responses, 2)) AS mean_score2
        FROM ({_PER_USER_SCORES}) GROUP BY arm
        """,
        params,
    ):
        users = int(row["users"])
        for metric, (x, y) in RATIO_METRICS.items():
            data.ratios.setdefault(metric, {})[row["arm"]] = _joint(row, users, x, y)
        data.score_users[row["arm"]] = Moments(
            users, float(row["mean_score"]), float(row["mean_score2"])
        )
    if {"A", "B"} <= set(data.score_users) and all(m.n > 0 for m in data.score_users.values()):
        (result,) = client.query(
            f"""
            SELECT mannWhitneyUTest('two-sided')(score_sum / responses, toUInt8(arm = 'B'))
            FROM ({_PER_USER_SCORES})
            """,
            parameters=params,
        ).result_rows[0]
        u, p = (result["u_statistic"], result["p_value"]) if isinstance(result, dict) else result
        data.mann_whitney = (float(u), float(p))


def _sessions(client: Client, params: dict[str, Any], data: ExperimentData) -> None:
    for row in _rows(
        client,
        f"""
        SELECT arm, count() AS n, sum(seconds) AS total, sum(seconds * seconds) AS total_sq
        FROM (SELECT arm, user_id, session_id,
                     dateDiff('millisecond', min(ts), max(ts)) / 1000 AS seconds
              FROM interactions FINAL WHERE {_IN_EXPERIMENT} AND session_id != ''
              GROUP BY arm, user_id, session_id)
        GROUP BY arm
        """,
        params,
    ):
        data.sessions[row["arm"]] = Moments(
            int(row["n"]), float(row["total"]), float(row["total_sq"])
        )
