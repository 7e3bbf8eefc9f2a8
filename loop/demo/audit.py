"""The loop's ledger: every event of a run counted on Kafka and in ClickHouse.

Per stream (interactions, feedback, scores, preference pairs): the records on the
topic since the run started and how many distinct ids they hold (a record the
producer or a replaying agent wrote twice shares its id), against the rows
ClickHouse holds for the same span as analysts read them (``FINAL``) and their
distinct ids. Nothing lost: ClickHouse has every id the topic has. Nothing counted
twice: one row per id. The users' own count of answers and signals stands beside
them, from the client side of the router and the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefloop.clickhouse.client import connect
from prefloop.kafka import TopicReader
from prefloop.settings import Settings

__all__ = ["Ledger", "audit"]

SLACK_MS = 60_000  # a row's ts may be its event's, a little before the run's first record
STREAMS = (  # (what, topic attribute, table, id column)
    ("interactions", "interactions", "interactions", "interaction_id"),
    ("feedback", "feedback", "feedback", "event_id"),
    ("scores", "scores", "scores", "response_id"),
    ("preference pairs", "preferences", "preferences", "pair_id"),
)


@dataclass(frozen=True)
class Ledger:
    """One stream of a run, counted on both sides."""

    what: str
    records: int  # on the topic
    ids: int  # distinct ids on the topic
    rows: int  # in ClickHouse, FINAL
    row_ids: int  # distinct ids in ClickHouse
    missing: int  # ids on the topic that ClickHouse lacks
    sent: int | None = None  # what the users received or sent, client side

    @property
    def lost(self) -> bool:
        return self.missing > 0

    @property
    def twice(self) -> bool:
        return self.rows > self.row_ids

    @property
    def ok(self) -> bool:
        return not (self.lost or self.twice)


def audit(settings: Settings, since_ms: int, sent: dict[str, int] | None = None) -> list[Ledger]:
    """The ledger of every stream since ``since_ms``; ``sent`` the users' own counts."""
    client = connect(settings)
    ledgers = []
    for what, attribute, table, column in STREAMS:
        reader = TopicReader(settings, getattr(settings.topics, attribute))
        try:
            records = [
                r for _, r, _, _ in reader.settle(2.0)
                if isinstance(r, dict) and _ms(r.get("ts")) >= since_ms
            ]  # fmt: skip
        finally:
            reader.close()
        ids = {str(r[column]) for r in records}
        counts = {
            str(value): int(n)
            for value, n in client.query(
                f"SELECT {column}, count() FROM {table} FINAL "
                "WHERE ts >= fromUnixTimestamp64Milli({since:Int64}) GROUP BY 1",
                parameters={"since": since_ms - SLACK_MS},
            ).result_rows
        }
        present = ids & counts.keys()
        rows = sum(counts[i] for i in present)
        ledgers.append(Ledger(what, len(records), len(ids), rows, len(present),
                              len(ids - present), (sent or {}).get(what)))  # fmt: skip
    return ledgers


def _ms(value: Any) -> int:
    """A decoded ``ts``: epoch milliseconds, or a datetime."""
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    return int(value or 0)
