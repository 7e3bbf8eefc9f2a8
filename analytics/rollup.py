"""Per-user rollups of an experiment, brought up to date at each look.

A look at a live experiment reads all of its data, and the loop looks every minute:
grouping ten million events by user each time is most of a verdict's cost. So the
per-user sums the metrics need are kept in ``interactions_by_user`` and
``scores_by_user`` (migration 0007), one row per user and arm, and a look first
brings them up to date: it recomputes, from the event tables read with ``FINAL``,
only the users with a row inserted since the previous build (less ``MARGIN``, for
inserts that were still in flight then). A revised score or a client's duplicate
is a new row, so its user is recomputed whole: the rollup stays exactly what the
event tables say, with nothing summed twice.

A rollup belongs to a window start (``since``: the run's start), since every row of
it counts only the events from then on. Rows deleted from the event tables leave a
stale rollup: ``prefloop forget`` deletes the user's rollup rows too, and the verdict
reads the event tables directly once the retention may have dropped rows of the
window (see :func:`prefloop.analytics.verdict.analyze`). The rollups' own rows age
out with the retention, counted from ``computed_at``: one the verdict still reads
was computed after its window began, within the retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from prefloop.analytics.export import parse_time
from prefloop.clickhouse.migrations import ttl_days

__all__ = ["MARGIN", "SCORE_SUMS", "Build", "last_build", "refresh"]

# how long an insert may take from its ``_inserted_at`` until its rows are visible
MARGIN = timedelta(minutes=5)

_IN_WINDOW = (
    "experiment_id = {experiment:String} AND arm IN ('A', 'B') "
    "AND ts >= {since:DateTime64(3, 'UTC')}"
)
# the rows of an event table inserted since the previous build (less the margin)
_NEW_ROWS = (
    "FROM {source} WHERE experiment_id = {{experiment:String}} "
    "AND _inserted_at >= {{changed_since:DateTime64(6, 'UTC')}}"
)
_CHANGED = f"AND user_id IN (SELECT user_id {_NEW_ROWS})"
# the user's rows per arm; ``moved``: the user has rows in both arms
_KEYS = (
    "{experiment:String} AS experiment_id, {since:DateTime64(3, 'UTC')} AS since, user_id, arm, "
    "count() OVER (PARTITION BY user_id) > 1 AS moved, "
    "{snapshot:DateTime64(6, 'UTC')} AS computed_at"
)

# per session, then per user and arm: what the summary and the session and latency
# metrics need (every latency, to count the requests over a threshold set later)
_INTERACTIONS = f"""
INSERT INTO interactions_by_user
    (experiment_id, since, user_id, arm, moved, computed_at, model_version, last_ts,
     requests, sessions, span, latencies, completion_tokens, latency_sum, days)
SELECT {_KEYS}, model_version, last_ts, requests, sessions, span, latencies,
       completion_tokens, latency_sum, days
FROM (SELECT user_id, arm, argMax(s_version, s_last) AS model_version,
             max(s_last) AS last_ts, sum(s_requests) AS requests,
             countIf(session_id != '') AS sessions, sumIf(s_span, session_id != '') AS span,
             arrayFlatten(groupArray(s_latencies)) AS latencies,
             sum(s_tokens) AS completion_tokens, sum(s_latency) AS latency_sum,
             arrayDistinct(arrayFlatten(groupArray(s_days))) AS days
      FROM (SELECT user_id, arm, session_id, argMax(model_version, ts) AS s_version,
                   max(ts) AS s_last, count() AS s_requests,
                   dateDiff('millisecond', min(ts), max(ts)) / 1000 AS s_span,
                   groupArray(latency_ms) AS s_latencies,
                   sum(completion_tokens) AS s_tokens, sum(latency_ms) AS s_latency,
                   groupUniqArray(toDate(ts)) AS s_days
            FROM interactions FINAL WHERE {_IN_WINDOW} {{changed}}
            GROUP BY user_id, arm, session_id)
      GROUP BY user_id, arm)
"""

# a user's sums over their scores, for the ratio metrics (also read from the event
# tables directly: prefloop.analytics.metrics)
SCORE_SUMS = """count() AS responses,
       sum(implicit_score) AS score_sum,
       count(rating) AS rated,
       sum(ifNull(rating, 0)) AS rating_sum,
       countIf(signals_continued) AS n_continued,
       countIf(signals_copied) AS n_copied,
       countIf(signals_regenerated) AS n_regenerated,
       countIf(signals_reported) AS n_reported"""

_SCORES = f"""
INSERT INTO scores_by_user
    (experiment_id, since, user_id, arm, moved, computed_at, responses, score_sum, rated,
     rating_sum, n_continued, n_copied, n_regenerated, n_reported)
SELECT {_KEYS}, responses, score_sum, rated, rating_sum, n_continued, n_copied,
       n_regenerated, n_reported
FROM (SELECT user_id, arm, {SCORE_SUMS}
      FROM scores FINAL WHERE {_IN_WINDOW} {{changed}}
      GROUP BY user_id, arm)
"""

_ROLLUPS = {"interactions": _INTERACTIONS, "scores": _SCORES}


@dataclass(frozen=True)
class Build:
    """One bringing up to date: whole (the first for this window) or of the changed users."""

    built_to: datetime  # the server's clock when it began
    whole: bool


_LAST_BUILD = (
    "SELECT maxOrNull(built_to) FROM rollup_builds "
    "WHERE experiment_id = {experiment:String} AND since = {since:DateTime64(3, 'UTC')}"
)
# the server's clock (which stamps ``_inserted_at``), the last build, the store's TTL
_STATE = (
    f"SELECT now64(6, 'UTC'), ({_LAST_BUILD}), (SELECT any(engine_full) FROM system.tables "
    "WHERE database = currentDatabase() AND name = 'interactions')"
)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else parse_time(value, "a time from ClickHouse")


def last_build(client: Client, experiment_id: str, since: datetime) -> datetime | None:
    """Up to when the rollups of (experiment, since) were last brought, if ever."""
    params = {"experiment": experiment_id, "since": since}
    return _utc(client.query(_LAST_BUILD, parameters=params).result_rows[0][0])


def refresh(client: Client, experiment_id: str, since: datetime) -> Build | None:
    """Bring both rollups of ``experiment_id`` from ``since`` up to date.

    None, and nothing built, when the store's retention may have dropped rows since
    ``since`` (its TTL, less a day for clocks): the rollups would still count them,
    so the event tables are the ones to read.

    The first time, from every user's rows; then from the rows of the users with a
    row inserted since the previous build began (less :data:`MARGIN`), and not at
    all for a table that received none.

    Safe to run from several processes at once and to stop at any point: a user's
    rows are replaced whole by a newer computation, and the build is recorded last,
    so an interrupted one is done again from the previous build.
    """
    params: dict[str, Any] = {"experiment": experiment_id, "since": since}
    now, built, engine = client.query(_STATE, parameters=params).result_rows[0]
    snapshot, previous, days = _utc(now), _utc(built), ttl_days(str(engine or ""))
    assert snapshot is not None
    if days and since < snapshot - timedelta(days=days - 1):
        return None
    params["snapshot"] = snapshot
    changed = {source: "" for source in _ROLLUPS}  # everyone, the first time
    if previous is not None:
        params["changed_since"] = previous - MARGIN
        counts = ", ".join(f"(SELECT count() {_NEW_ROWS.format(source=s)})" for s in _ROLLUPS)
        new_rows = client.query(f"SELECT {counts}", parameters=params).result_rows[0]
        changed = {
            source: _CHANGED.format(source=source)
            for source, rows in zip(_ROLLUPS, new_rows, strict=True)
            if rows
        }
    for source, condition in changed.items():
        client.command(_ROLLUPS[source].replace("{changed}", condition), parameters=params)
    client.command(  # bound as the rollups' rows are, so that last_build finds it
        "INSERT INTO rollup_builds (experiment_id, since, built_to) SELECT "
        "{experiment:String}, {since:DateTime64(3, 'UTC')}, {snapshot:DateTime64(6, 'UTC')}",
        parameters=params,
    )
    return Build(snapshot, whole=previous is None)
