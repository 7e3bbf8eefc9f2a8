"""Rolling metrics per model version and arm, for the live monitor.

Settled responses (revision 0 of their ScoredInteraction, one per response) are
folded into one-minute buckets per ``(model_version, arm)``: counts and sums from
which means and rates follow. A hopping window (default 1 h long, 1 min hop) is the
sum of the buckets it covers, computed when read: the same numbers as a hopping
windowed table, with one table write per response instead of one per window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prefloop.streams.records import Record

__all__ = ["BUCKET_S", "add", "bucket_start", "metric_key", "summary", "window_sum"]

BUCKET_S = 60
_COUNTS = ("responses", "rated", "thumbed", "regenerated", "copied", "continued", "reported")
_SUMS = ("implicit_sum", "rating_sum", "thumbs_sum")


def metric_key(record: Record) -> str:
    """The rolling key of a ScoredInteraction: ``model_version|arm`` (arm '-' when none)."""
    return f"{record['model_version']}|{record.get('arm') or '-'}"


def bucket_start(ts_ms: int) -> int:
    return ts_ms - ts_ms % (BUCKET_S * 1000)


def add(bucket: Mapping[str, Any] | None, record: Record) -> dict[str, Any]:
    """A copy of ``bucket`` with one settled response added."""
    out: dict[str, Any] = {name: 0 for name in (*_COUNTS, *_SUMS)}
    if bucket:
        out.update(bucket)
    signals = record["signals"]
    out["responses"] += 1
    out["implicit_sum"] += float(record["implicit_score"])
    if record.get("rating") is not None:
        out["rated"] += 1
        out["rating_sum"] += float(record["rating"])
    if record.get("thumbs") is not None:
        out["thumbed"] += 1
        out["thumbs_sum"] += float(record["thumbs"])
    for flag in ("regenerated", "copied", "continued", "reported"):
        if signals.get(flag):
            out[flag] += 1
    return out


def window_sum(buckets: Iterable[tuple[int, Mapping[str, Any]]], start: int, end: int) -> dict:
    """The sum of the buckets starting in ``[start, end)`` (ms)."""
    total: dict[str, Any] = {name: 0 for name in (*_COUNTS, *_SUMS)}
    for begin, bucket in buckets:
        if start <= begin < end:
            for name in total:
                total[name] += bucket.get(name, 0)
    return total


def summary(total: Mapping[str, Any]) -> dict[str, Any]:
    """Means and rates of a window sum (None where nothing was measured)."""
    n = total["responses"]

    def ratio(num: float, den: float) -> float | None:
        return num / den if den else None

    return {
        "responses": n,
        "mean_implicit_score": ratio(total["implicit_sum"], n),
        "mean_rating": ratio(total["rating_sum"], total["rated"]),
        "mean_thumbs": ratio(total["thumbs_sum"], total["thumbed"]),
        "regenerate_rate": ratio(total["regenerated"], n),
        "copy_rate": ratio(total["copied"], n),
        "continue_rate": ratio(total["continued"], n),
        "report_rate": ratio(total["reported"], n),
    }
