"""The metrics of an experiment per arm, as sufficient statistics computed in SQL.

Raw rows never come into Python: each query aggregates per user (the unit of the
experiment) in ClickHouse and then over users per arm, returning counts, sums, sums
of squares and cross-products, which :mod:`prefloop.analytics.stats` turns into
tests. The event tables are read with FINAL, so a score counts at its latest
revision and a client's duplicate once; everything from a window's start on is read
from the per-user rollups instead (:mod:`prefloop.analytics.rollup`), which hold the
same per-user sums. Every value a caller gives reaches SQL as a bound parameter.

Per arm:

- ratio metrics per response, clustered by user (numerator, denominator per user):
  mean implicit score, mean rating (over rated responses), continue, copy,
  regenerate and report rates, from ``scores``;
- the share of requests slower than a latency threshold (arm A's p99, fixed at the
  experiment's first recorded look), clustered by user, from ``interactions`` (a test
  of the p99 that needs no raw rows);
- session duration (span from a session's first to its last response), a ratio of
  seconds to sessions per user, clustered by user like the others;
- descriptive: users, responses, latency p50/p95/p99, daily active users, tokens
  per second, the model version (of the arm's latest interaction);
- the per-user mean of the implicit score, for Mann–Whitney U (ClickHouse's
  ``mannWhitneyUTest``) and, with its pre-period covariate, CUPED.

A user with data in both arms (a change of split moved them from one arm to the
other) is left out of every metric and counted in ``ExperimentData.moved_users``:
their responses are neither a clean A nor a clean B. Each query groups by user alone
and keeps the users whose rows all carry one arm, so leaving them out costs no join.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from prefloop.analytics.rollup import SCORE_SUMS, refresh
from prefloop.analytics.stats import JointMoments, Moments
from prefloop.errors import first_line

__all__ = [
    "FAR_FUTURE",
    "RATIO_METRICS",
    "ArmSummary",
    "ExperimentData",
    "experiment_data",
    "known_experiments",
]

_log = logging.getLogger(__name__)
# the end of a window that has none
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)

# metric -> (numerator, denominator) columns of the per-user query
RATIO_METRICS = {
    "implicit_score": ("score_sum", "responses"),
    "rating": ("rating_sum", "rated"),
    "continue_rate": ("n_continued", "responses"),
    "copy_rate": ("n_copied", "responses"),
    "regenerate_rate": ("n_regenerated", "responses"),
    "report_rate": ("n_reported", "responses"),
}

_WINDOW = "ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}"
_IN_EXPERIMENT = f"experiment_id = {{experiment:String}} AND arm IN ('A', 'B') AND {_WINDOW}"
# the sums of each user's mean score and its square (Moments of the per-user means)
_MEAN_SCORE_SUMS = [
    ("score_sum / responses", "mean_score"),
    ("pow(score_sum / responses, 2)", "mean_score2"),
]
_PER_USER_SCORES = f"""
SELECT any(arm) AS user_arm, {SCORE_SUMS}
FROM scores FINAL WHERE {_IN_EXPERIMENT}
GROUP BY user_id HAVING min(arm) = max(arm)
"""
# daily active users: distinct (user, day) per arm over its days, counted by a 64-bit hash
# of the pair (as uniqExact hashes strings), cheaper than arrays of days per user
_SUMMARY = f"""
SELECT arm, argMax(toString(model_version), ts) AS model_version,
       quantilesExactInclusive(0.5, 0.95, 0.99)(latency_ms) AS latency,
       sum(completion_tokens) / greatest(sum(latency_ms), 1) * 1000 AS tokens_per_second,
       uniqExact(toDate(ts)) AS active_days,
       uniqExact(cityHash64(user_id, toDate(ts))) AS user_days
FROM interactions FINAL WHERE {_IN_EXPERIMENT} GROUP BY arm ORDER BY arm
"""
# per session, then per user ('' for a user with rows in both arms)
_PER_USER_REQUESTS = f"""
SELECT if(min(arm_low) = max(arm_high), any(arm_low), '') AS user_arm,
       sum(s_requests) AS requests, sum(s_slow) AS slow,
       countIf(session_id != '') AS sessions,
       sumIf(s_span, session_id != '') AS span
FROM (SELECT user_id, session_id, min(arm) AS arm_low, max(arm) AS arm_high,
             count() AS s_requests,
             countIf(latency_ms > {{threshold:Float64}}) AS s_slow,
             dateDiff('millisecond', min(ts), max(ts)) / 1000 AS s_span
      FROM interactions FINAL WHERE {_IN_EXPERIMENT}
      GROUP BY user_id, session_id)
GROUP BY user_id
"""

# the same three from the per-user rollups (prefloop.analytics.rollup): one row per user
# and arm already, so no grouping by user; a moved user counted once, on their A row
_ROLLUP = "experiment_id = {experiment:String} AND since = {start:DateTime64(3, 'UTC')}"
_ROLLUP_SUMMARY = f"""
SELECT arm, argMax(toString(model_version), last_ts) AS model_version,
       quantilesExactInclusiveArray(0.5, 0.95, 0.99)(latencies) AS latency,
       sum(completion_tokens) / greatest(sum(latency_sum), 1) * 1000 AS tokens_per_second,
       uniqExactArray(days) AS active_days,
       sum(length(days)) AS user_days
FROM interactions_by_user FINAL WHERE {_ROLLUP} GROUP BY arm ORDER BY arm
"""
_ROLLUP_REQUESTS = f"""
SELECT if(moved, '', arm) AS user_arm, requests,
       arrayCount(x -> x > {{threshold:Float64}}, latencies) AS slow, sessions, span
FROM interactions_by_user FINAL WHERE {_ROLLUP} AND (NOT moved OR arm = 'A')
"""
_ROLLUP_SCORES = f"""
SELECT arm AS user_arm, responses, score_sum, rated, rating_sum, n_continued, n_copied,
       n_regenerated, n_reported
FROM scores_by_user FINAL WHERE {_ROLLUP} AND NOT moved
"""


@dataclass(frozen=True)
class _Source:
    """Where the metrics are read: the summary per arm, the per-user requests and scores."""

    summary: str
    requests: str
    scores: str


_EVENT_TABLES = _Source(_SUMMARY, _PER_USER_REQUESTS, _PER_USER_SCORES)
_ROLLUPS = _Source(_ROLLUP_SUMMARY, _ROLLUP_REQUESTS, _ROLLUP_SCORES)


def _joint_sql(x: str, y: str) -> str:
    """The six sums of JointMoments(x, y) over the users of an arm."""
    return ", ".join(f"sum({expr}) AS {alias}" for expr, alias in _joint_terms(x, y))


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
    score_users: dict[str, Moments] = field(default_factory=dict)
    mann_whitney: tuple[float, float] | None = None  # U of arm A, two-sided p
    latency_threshold_ms: float | None = None
    moved_users: int = 0  # with data in both arms: left out


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
    client: Client,
    experiment_id: str,
    start: datetime,
    end: datetime | None,
    latency_threshold_ms: float | None = None,
) -> ExperimentData:
    """The sufficient statistics of ``experiment_id`` over [start, end), per arm.

    Three queries: the arms' summary, the per-user requests (slow ones, sessions) and
    the per-user scores (every ratio metric, and Mann–Whitney U on the per-user mean
    scores). ``end`` None reads everything from ``start`` on from the per-user
    rollups, brought up to date first (:mod:`prefloop.analytics.rollup`), unless the
    store's retention may have cut the window; a closed window reads the event
    tables. The latency guardrail counts requests slower than
    ``latency_threshold_ms`` (default: arm A's p99 in this data).
    """
    source = _EVENT_TABLES
    if end is None:
        try:
            if refresh(client, experiment_id, start) is not None:
                source = _ROLLUPS
        except DriverError as exc:  # e.g. a read-only ClickHouse user: the slower way
            _log.warning(
                "cannot bring the per-user rollups of %s up to date (%s): reading the event tables",
                experiment_id,
                first_line(exc),
            )
    params: dict[str, Any] = {"experiment": experiment_id, "start": start, "end": end or FAR_FUTURE}
    data = ExperimentData(experiment_id)
    _interactions(client, source, params, data, latency_threshold_ms)
    _scores(client, source, params, data)
    return data


def _interactions(
    client: Client,
    source: _Source,
    params: dict[str, Any],
    data: ExperimentData,
    latency_threshold_ms: float | None,
) -> None:
    arms = _rows(client, source.summary, params)
    for row in arms:
        p50, p95, p99 = (float(v) for v in row["latency"])
        data.arms[row["arm"]] = ArmSummary(
            model_version=row["model_version"],
            users=0,  # the users analysed and their responses: per user, below
            responses=0,
            latency_ms=(p50, p95, p99),
            daily_active_users=float(row["user_days"]) / max(float(row["active_days"]), 1.0),
            tokens_per_second=float(row["tokens_per_second"]),
        )
    if latency_threshold_ms is None and "A" in data.arms:
        latency_threshold_ms = data.arms["A"].latency_ms[2]
    data.latency_threshold_ms = latency_threshold_ms
    for row in _rows(
        client,
        f"""
        SELECT user_arm, count() AS users, sum(requests) AS responses,
               {_joint_sql("slow", "requests")},
               {_joint_sql("span", "sessions")}
        FROM ({source.requests})
        GROUP BY user_arm
        """,
        {**params, "threshold": latency_threshold_ms or 0.0},
    ):
        arm, users = row["user_arm"], int(row["users"])
        if arm not in data.arms:  # '': users with rows in both arms
            data.moved_users = users
            continue
        data.arms[arm] = dataclasses.replace(
            data.arms[arm], users=users, responses=int(row["responses"])
        )
        if latency_threshold_ms is not None:
            data.ratios.setdefault("latency_p99", {})[arm] = _joint(row, users, "slow", "requests")
        data.ratios.setdefault("session_seconds", {})[arm] = _joint(row, users, "span", "sessions")


def _scores(client: Client, source: _Source, params: dict[str, Any], data: ExperimentData) -> None:
    """Every ratio metric per arm and Mann–Whitney U in one pass over the per-user sums.

    ``mannWhitneyUTest`` refuses an empty sample: when an arm has no scored user yet,
    the pass runs again without it (and any other refusal is raised).
    """
    pairs = sorted(set(RATIO_METRICS.values()))
    per_arm = [
        f"{fn}If({expr}, user_arm = '{arm}') AS {arm}_{alias}"
        for arm in ("A", "B")
        for fn, expr, alias in [("count", "1", "users")]
        + [("sum", expr, alias) for expr, alias in _MEAN_SCORE_SUMS]
        + [("sum", e, a) for x, y in pairs for e, a in _joint_terms(x, y)]
    ]
    mann_whitney = (
        "mannWhitneyUTest('two-sided')(score_sum / responses, toUInt8(user_arm = 'B')) AS mwu"
    )
    try:
        (row,) = _rows(
            client,
            f"SELECT {', '.join(per_arm)}, {mann_whitney} FROM ({source.scores})",
            params,
        )
    except DriverError:
        (row,) = _rows(client, f"SELECT {', '.join(per_arm)} FROM ({source.scores})", params)
        if row["A_users"] and row["B_users"]:
            raise  # not the empty sample: a real failure
    for arm in ("A", "B"):
        users = int(row[f"{arm}_users"])
        if users == 0:
            continue
        mine = {k[2:]: v for k, v in row.items() if k.startswith(f"{arm}_")}
        for metric, (x, y) in RATIO_METRICS.items():
            data.ratios.setdefault(metric, {})[arm] = _joint(mine, users, x, y)
        data.score_users[arm] = Moments(
            users, float(mine["mean_score"]), float(mine["mean_score2"])
        )
    if "mwu" in row:
        result = row["mwu"]
        u, p = (result["u_statistic"], result["p_value"]) if isinstance(result, dict) else result
        data.mann_whitney = (float(u), float(p))


def _joint_terms(x: str, y: str) -> list[tuple[str, str]]:
    """The six sums of JointMoments(x, y): (expression, alias)."""
    p = f"{x}_{y}"
    return [
        (x, f"{p}_x"),
        (y, f"{p}_y"),
        (f"{x} * {x}", f"{p}_x2"),
        (f"{y} * {y}", f"{p}_y2"),
        (f"{x} * {y}", f"{p}_xy"),
    ]


def cuped_moments(
    client: Client, experiment_id: str, start: datetime, end: datetime
) -> dict[str, JointMoments]:
    """Per arm, each user's mean implicit score in the experiment (y) with its
    pre-period covariate (x): the user's mean score before the experiment's first
    interaction, outside it; users without one take the pre-period's overall mean.

    Empty when none of the experiment's users has a pre-period score.
    """
    params: dict[str, Any] = {"experiment": experiment_id, "start": start, "end": end}
    pre = f"""
        SELECT user_id, avg(implicit_score) AS pre_mean, count() AS pre_n
        FROM scores FINAL
        WHERE experiment_id != {{experiment:String}} AND ts < (
            SELECT min(ts) FROM interactions WHERE {_IN_EXPERIMENT})
        GROUP BY user_id
    """
    rows = _rows(
        client,
        f"""
        WITH (SELECT sum(pre_mean * pre_n) / sum(pre_n) FROM ({pre})) AS overall
        SELECT arm, count() AS users, {_joint_sql("x", "y")}, overall,
               countIf(known) AS with_history
        FROM (SELECT e.user_arm AS arm, e.user_mean AS y, p.pre_n > 0 AS known,
                     if(known, p.pre_mean, overall) AS x
              FROM (SELECT user_id, any(arm) AS user_arm, avg(implicit_score) AS user_mean
                    FROM scores FINAL WHERE {_IN_EXPERIMENT}
                    GROUP BY user_id HAVING min(arm) = max(arm)) AS e
              LEFT JOIN ({pre}) AS p ON e.user_id = p.user_id)
        GROUP BY arm
        """,
        params,
    )
    if not rows or not sum(int(row["with_history"]) for row in rows):
        return {}
    return {row["arm"]: _joint(row, int(row["users"]), "x", "y") for row in rows}
