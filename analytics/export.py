"""Export the interactions of a time range as JSON Lines, for the offline sampler.

``export_interactions`` writes one line per interaction whose ``ts`` lies in
``[start, end)``, ordered by ``ts`` (then ``interaction_id``), in exactly the format
``prefloop sample --input`` reads (:mod:`prefloop.streams.offline`): the fields of
an Interaction (interaction/v1) as the event carried them, plus ``implicit_score``,
``rating`` and ``reported`` from the latest revision of the response's score::

    {"interaction_id": "i-1", "response_id": "r-1", "regenerates": null,
     "conversation_id": "c-1", "turn": 0, "ts": 1767225600000, "user_id": "u-1",
     "session_id": "s-1", "experiment_id": null, "arm": null, "model_version": "v1",
     "messages": [{"role": "user", "content": "..."}], "response": "...",
     "latency_ms": 120, "prompt_tokens": 12, "completion_tokens": 40,
     "uncertainty": null, "metadata": {}, "implicit_score": 4.0, "rating": null,
     "reported": false}

What the typed tables store differently is turned back: '' (an Avro null string)
becomes null for ``regenerates``, ``experiment_id`` and ``arm``; ``messages``
(JSON text) becomes a list again; ``ts`` becomes int milliseconds. An unscored
interaction has ``implicit_score`` and ``rating`` null and ``reported`` false.

Each interaction appears once: the table may hold a client's duplicate until a merge
collapses it, so rows are read with FINAL and ``LIMIT 1 BY interaction_id`` (a
duplicate carries the same ``ts``, so it falls in the same page). Users recorded in
``forgotten_users`` (``prefloop forget``) are left out; the others are exported as
they are (ids are pseudonymous already).

The rows are streamed a page at a time (keyset paging on ``ts, interaction_id``), so
neither this process nor the store holds the whole range, and written to a temporary
file beside ``out_path`` that is renamed at the end: a failed export leaves no
partial file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from prefloop.analytics.exceptions import ExportError, TimeRangeError
from prefloop.errors import ClickHouseError, first_line

__all__ = [
    "ExportError",
    "ExportReport",
    "TimeRangeError",
    "export_interactions",
    "parse_time",
    "parse_time_range",
]

PAGE_ROWS = 5000
_TIME_FORMS = "give YYYY-MM-DD or an ISO 8601 time"

# One page of interactions after the cursor (ts, interaction_id), each once, with the
# latest revision of its score. Every value is a bound parameter but the page size,
# an int this module chooses.
_PAGE_SQL = """
WITH page AS (
    SELECT interaction_id, response_id, regenerates, conversation_id, turn,
           toUnixTimestamp64Milli(ts) AS ts_ms, user_id, session_id,
           toString(experiment_id) AS experiment, toString(arm) AS arm_name,
           toString(model_version) AS model, messages, response, latency_ms,
           prompt_tokens, completion_tokens, uncertainty, metadata
    FROM interactions FINAL
    WHERE ts >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')
      AND (ts > fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')
           OR (ts = fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')
               AND interaction_id > {after_id:String}))
      AND user_id NOT IN (SELECT user_id FROM forgotten_users)
    ORDER BY ts, interaction_id, _inserted_at DESC
    LIMIT 1 BY interaction_id
    LIMIT %(page_rows)d
)
SELECT page.*, latest.scored AS scored, latest.implicit_score AS implicit_score,
       latest.rating AS rating, latest.signals_reported AS reported
FROM page
LEFT JOIN (
    SELECT response_id, toUInt8(1) AS scored, implicit_score, rating, signals_reported
    FROM scores
    WHERE response_id IN (SELECT response_id FROM page)
    ORDER BY response_id, revision DESC, _inserted_at DESC
    LIMIT 1 BY response_id
) AS latest ON latest.response_id = page.response_id
ORDER BY ts_ms, interaction_id
"""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_interactions` wrote."""

    rows: int
    scored: int
    out: Path
    start: datetime
    end: datetime


TimeLike = datetime | date | str


def parse_time(value: TimeLike, name: str = "start") -> datetime:
    """``value`` as an aware UTC datetime: a datetime (naive means UTC), a date
    (midnight UTC) or an ISO 8601 string (``2026-01-31``, ``2026-01-31T12:00:00Z``,
    ``2026-01-31 12:00+02:00``).

    ``name`` is how the caller calls the value (``start``, ``--end``): the
    :class:`TimeRangeError` for a value of another form names it and the value.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(), tzinfo=UTC)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise TimeRangeError(f"{name} {value} is not a date: {_TIME_FORMS}") from None
    else:
        raise TimeRangeError(
            f"{name} {value!r} is a {type(value).__name__}, not a date: {_TIME_FORMS}"
        )
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_time_range(
    start: TimeLike, end: TimeLike, names: tuple[str, str] = ("start", "end")
) -> tuple[datetime, datetime]:
    """``(start, end)`` parsed by :func:`parse_time`; the end must be after the start."""
    first, last = parse_time(start, names[0]), parse_time(end, names[1])
    if last <= first:
        raise TimeRangeError(
            f"{names[1]} {end} is not after {names[0]} {start}: give an end later than the start"
        )
    return first, last


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded up: ts is in ms, so ``ts >= start`` and
    ``ts < end`` keep their meaning for a bound with microseconds."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return -(-micros // 1000)


def _null_if_empty(value: str) -> str | None:
    return value or None


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN, and the sampler takes none)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _line(row: Mapping[str, Any]) -> dict[str, Any]:
    """One exported line from one row of the page query."""
    try:
        messages = json.loads(row["messages"])
    except (TypeError, ValueError):
        messages = None
    if not isinstance(messages, list):
        raise ExportError(
            f"interaction {row['interaction_id']} has messages that are not a JSON list "
            f"({str(row['messages'])[:80]!r}): fix or delete that row in interactions"
        )
    scored = bool(row["scored"])
    return {
        "interaction_id": row["interaction_id"],
        "response_id": row["response_id"],
        "regenerates": _null_if_empty(row["regenerates"]),
        "conversation_id": row["conversation_id"],
        "turn": int(row["turn"]),
        "ts": int(row["ts_ms"]),
        "user_id": row["user_id"],
        "session_id": row["session_id"],
        "experiment_id": _null_if_empty(row["experiment"]),
        "arm": _null_if_empty(row["arm_name"]),
        "model_version": row["model"],
        "messages": messages,
        "response": row["response"],
        "latency_ms": int(row["latency_ms"]),
        "prompt_tokens": int(row["prompt_tokens"]),
        "completion_tokens": int(row["completion_tokens"]),
        "uncertainty": _number(row["uncertainty"]),
        "metadata": dict(row["metadata"] or {}),
        "implicit_score": _number(row["implicit_score"]) if scored else None,
        "rating": _number(row["rating"]) if scored else None,
        "reported": bool(row["reported"]) if scored else False,
    }


def export_interactions(
    client: Client,
    start: TimeLike,
    end: TimeLike,
    out_path: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
    *,
    page_rows: int = PAGE_ROWS,
) -> ExportReport:
    """Write the interactions with ``ts`` in ``[start, end)`` to ``out_path`` as JSON Lines.

    ``start`` and ``end`` are datetimes, dates or ISO 8601 strings (see
    :func:`parse_time`). ``progress``, when given, is called with the number of rows
    written so far after each page of ``page_rows``. Raises :class:`TimeRangeError`
    for a bad range, :class:`ExportError` when the output cannot be written and
    :class:`ClickHouseError` when a query fails.
    """
    first, last = parse_time_range(start, end)
    if page_rows < 1:
        raise ExportError(f"page_rows={page_rows} is not valid: give a positive number of rows")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise ExportError(
            f"cannot write {out}: folder {out.parent} does not exist: create it or write elsewhere"
        )
    sql = _PAGE_SQL % {"page_rows": int(page_rows)}
    start_ms, end_ms = _ms(first), _ms(last)
    cursor: tuple[int, str] = (start_ms - 1, "")
    rows = scored = 0
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            while True:
                parameters = {
                    "start_ms": start_ms,
                    "end_ms": end_ms,
                    "after_ms": cursor[0],
                    "after_id": cursor[1],
                }
                try:
                    page = list(client.query(sql, parameters=parameters).named_results())
                except Exception as exc:
                    raise ClickHouseError(
                        f"reading interactions from ClickHouse failed ({first_line(exc)}): "
                        "check that the store is up and migrated (`prefloop migrate`)"
                    ) from exc
                for row in page:
                    line = _line(row)
                    handle.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
                    scored += line["implicit_score"] is not None
                rows += len(page)
                if progress is not None:
                    progress(rows)
                if len(page) < page_rows:
                    break
                cursor = (int(page[-1]["ts_ms"]), str(page[-1]["interaction_id"]))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(rows, scored, out, first, last)
