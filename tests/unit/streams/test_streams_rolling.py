"""Rolling metrics: one-minute buckets per model version and arm, window sums, summaries."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from streams_events import MINUTE, SECOND, T0

from prefloop.streams.rolling import (
    BUCKET_S,
    add,
    bucket_start,
    metric_key,
    summary,
    window_sum,
)
from prefloop_sdk import decode, encode

HOUR = 60 * MINUTE

ZERO = {
    "responses": 0,
    "rated": 0,
    "thumbed": 0,
    "regenerated": 0,
    "copied": 0,
    "continued": 0,
    "reported": 0,
    "implicit_sum": 0,
    "rating_sum": 0,
    "thumbs_sum": 0,
}


def settled(
    rid: str,
    *,
    score: float = 0.0,
    rating: float | None = None,
    thumbs: int | None = None,
    model: str = "v1",
    arm: str | None = "control",
    ts: int = T0,
    **signals: bool,
) -> dict[str, Any]:
    """A ScoredInteraction (schema scored_interaction/v1), revision 0, checked to encode."""
    record = {
        "interaction_id": f"i-{rid}",
        "response_id": rid,
        "conversation_id": "c1",
        "user_id": "u1",
        "model_version": model,
        "experiment_id": "exp-1" if arm is not None else None,
        "arm": arm,
        "revision": 0,
        "implicit_score": score,
        "signals": {
            "continued": False,
            "copied": False,
            "regenerated": False,
            "edited": False,
            "reported": False,
            "session_seconds": None,
            **signals,
        },
        "rating": rating,
        "thumbs": thumbs,
        "settled_reason": "TIMEOUT",
        "ts": ts,
    }
    kind, decoded = decode(encode("scored_interaction", record))
    assert kind == "scored_interaction" and decoded == record
    return record


# -- keys and buckets -------------------------------------------------------------------


def test_metric_key_is_version_and_arm():
    assert metric_key(settled("r1", model="v7", arm="treatment")) == "v7|treatment"
    assert metric_key(settled("r1", model="v7", arm=None)) == "v7|-"
    assert metric_key({"model_version": "v7"}) == "v7|-"  # an older record without an arm


def test_bucket_start_aligns_to_the_minute():
    assert BUCKET_S == 60
    start = T0 - T0 % MINUTE
    assert bucket_start(start) == start
    assert bucket_start(start + 1) == start
    assert bucket_start(start + MINUTE - 1) == start
    assert bucket_start(start + MINUTE) == start + MINUTE
    assert bucket_start(0) == 0 and bucket_start(59_999) == 0 and bucket_start(60_000) == 60_000


# -- adding responses -------------------------------------------------------------------


def test_add_to_an_empty_bucket():
    bucket = add(None, settled("r1", score=2.0, copied=True, continued=True))
    assert bucket == {
        **ZERO,
        "responses": 1,
        "implicit_sum": 2.0,
        "copied": 1,
        "continued": 1,
    }
    assert add({}, settled("r1", score=2.0, copied=True, continued=True)) == bucket


def test_add_counts_every_signal_rating_and_thumb():
    records = [
        settled("r1", score=-7.0, rating=1.0, thumbs=-1, regenerated=True, reported=True),
        settled("r2", score=4.0, rating=5.0, copied=True, continued=True, edited=True),
        settled("r3", score=1.0, thumbs=1),
    ]
    bucket = None
    for record in records:
        bucket = add(bucket, record)
    assert bucket == {
        "responses": 3,
        "rated": 2,
        "thumbed": 2,
        "regenerated": 1,
        "copied": 1,
        "continued": 1,
        "reported": 1,
        "implicit_sum": -2.0,
        "rating_sum": 6.0,
        "thumbs_sum": 0.0,
    }


def test_add_returns_a_copy_and_leaves_the_bucket_alone():
    first = add(None, settled("r1", score=1.0))
    before = copy.deepcopy(first)
    second = add(first, settled("r2", score=3.0, rating=4.0))
    assert first == before and second is not first
    assert (second["responses"], second["implicit_sum"], second["rated"]) == (2, 4.0, 1)


# -- windows -----------------------------------------------------------------------------


def _buckets() -> list[tuple[int, dict[str, Any]]]:
    base = bucket_start(T0)
    out = []
    for n, score in enumerate([1.0, 2.0, 4.0, 8.0]):
        bucket = add(None, settled(f"r{n}", score=score, ts=base + n * MINUTE))
        out.append((base + n * MINUTE, bucket))
    return out


def test_window_sum_covers_buckets_starting_in_start_to_end():
    base = bucket_start(T0)
    buckets = _buckets()
    total = window_sum(buckets, base + MINUTE, base + 3 * MINUTE)
    assert total == {**ZERO, "responses": 2, "implicit_sum": 6.0}  # minutes 1 and 2
    everything = window_sum(buckets, base, base + 4 * MINUTE)
    assert (everything["responses"], everything["implicit_sum"]) == (4, 15.0)
    # the end is exclusive, the start inclusive
    assert window_sum(buckets, base + 3 * MINUTE, base + 3 * MINUTE) == ZERO
    one = window_sum(buckets, base + 3 * MINUTE, base + 3 * MINUTE + 1)
    assert one["implicit_sum"] == 8.0
    # a bucket starting one ms before the window is out even though it overlaps it
    assert window_sum(buckets, base + MINUTE + 1, base + 2 * MINUTE)["responses"] == 0
    assert window_sum([], base, base + MINUTE) == ZERO


def test_window_sum_reads_missing_counts_as_zero():
    partial = {"responses": 2, "implicit_sum": 3.0}  # an older bucket, fewer fields
    total = window_sum([(0, partial), (MINUTE, add(None, settled("r1", rating=5.0)))], 0, HOUR)
    assert total == {**ZERO, "responses": 3, "implicit_sum": 3.0, "rated": 1, "rating_sum": 5.0}


def test_hourly_window_over_one_minute_buckets():
    base = bucket_start(T0)
    buckets: dict[int, dict[str, Any]] = {}
    for n in range(90):  # one response a minute for 90 minutes, a copy every third
        ts = base + n * MINUTE + 30 * SECOND
        start = bucket_start(ts)
        buckets[start] = add(buckets.get(start), settled(f"r{n}", ts=ts, copied=n % 3 == 0))
    end = base + 90 * MINUTE
    total = window_sum(buckets.items(), end - HOUR, end)
    assert total["responses"] == 60 and total["copied"] == 20


# -- summaries ------------------------------------------------------------------------------


def test_summary_means_and_rates():
    bucket = None
    for record in [
        settled("r1", score=-7.0, rating=1.0, thumbs=-1, regenerated=True, reported=True),
        settled("r2", score=4.0, rating=4.0, copied=True, continued=True),
        settled("r3", score=1.0, thumbs=1, continued=True),
        settled("r4", score=2.0, thumbs=1),
    ]:
        bucket = add(bucket, record)
    assert bucket is not None
    assert summary(bucket) == {
        "responses": 4,
        "mean_implicit_score": 0.0,
        "mean_rating": 2.5,
        "mean_thumbs": pytest.approx(1 / 3),
        "regenerate_rate": 0.25,
        "copy_rate": 0.25,
        "continue_rate": 0.5,
        "report_rate": 0.25,
    }


def test_summary_is_none_where_nothing_was_measured():
    assert summary(dict(ZERO)) == {
        "responses": 0,
        "mean_implicit_score": None,
        "mean_rating": None,
        "mean_thumbs": None,
        "regenerate_rate": None,
        "copy_rate": None,
        "continue_rate": None,
        "report_rate": None,
    }
    unrated = summary(add(None, settled("r1", score=-1.0)))
    assert unrated["responses"] == 1 and unrated["mean_implicit_score"] == -1.0
    assert unrated["mean_rating"] is None and unrated["mean_thumbs"] is None
    assert unrated["copy_rate"] == 0.0  # measured: zero, not None


def test_summary_of_a_window_sum():
    buckets = _buckets()
    base = bucket_start(T0)
    result = summary(window_sum(buckets, base, base + 2 * MINUTE))
    assert result["responses"] == 2 and result["mean_implicit_score"] == 1.5
