"""Shapes shared by the agents' logic: records, source offsets, rejected events, dead letters.

Records are plain dicts in the shape of the Avro schemas under ``schemas/`` (enum
symbols as strings, timestamps as int milliseconds): what ``prefloop_sdk.decode``
returns and ``prefloop_sdk.encode`` takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prefloop.streams.ids import derived_id

__all__ = [
    "Record",
    "Rejected",
    "SourceOffset",
    "bounded_add",
    "bounded_extend",
    "dead_letter",
    "source_offset",
]

Record = dict[str, Any]
"""A record in the shape of its Avro schema."""

SourceOffset = dict[str, Any]
"""Where an input event lies in Kafka: ``{"topic": str, "partition": int, "offset": int}``."""


def source_offset(topic: str, partition: int, offset: int) -> SourceOffset:
    """A ``SourceOffset`` (the PreferencePair.source_offsets item shape)."""
    return {"topic": topic, "partition": int(partition), "offset": int(offset)}


@dataclass(frozen=True)
class Rejected:
    """An input event the logic could not use; it belongs on the dead-letter topic.

    ``record_type`` is the input's schema folder (``feedback``), ``record`` the event
    as given, ``reason`` a sentence for a person, ``source`` its offset when the
    caller passed one.
    """

    record_type: str
    record: Record
    reason: str
    source: SourceOffset | None = None
    error_type: str = "UnknownInteraction"


def dead_letter(
    rejected: Rejected,
    *,
    consumer: str,
    now: int,
    value: bytes,
    key: bytes | None = None,
    writer_fingerprint: str | None = None,
) -> Record:
    """A ``DeadLetter`` record (schema dead_letter/v1) for a rejected event.

    ``value`` is the original record's bytes (an agent holding only the decoded
    record may re-encode it with the codec). The event id is derived from the
    consumer and the source position (or the record's event id), so a replay
    produces the same dead letter.
    """
    src = rejected.source or {}
    where = (
        f"{src.get('topic')}:{src.get('partition')}:{src.get('offset')}"
        if src
        else str(rejected.record.get("event_id", ""))
    )
    return {
        "event_id": derived_id("dead-letter", consumer, where, rejected.reason),
        "ts": int(now),
        "reason": rejected.reason,
        "error_type": rejected.error_type,
        "source_topic": str(src.get("topic", "")),
        "source_partition": int(src.get("partition", -1)),
        "source_offset": int(src.get("offset", -1)),
        "key": key,
        "value": value,
        "writer_fingerprint": writer_fingerprint,
        "consumer": consumer,
    }


def bounded_add(seen: Mapping[str, Any], key: str, capacity: int) -> dict[str, Any]:
    """A copy of the ordered set ``seen`` (a dict, JSON-friendly) with ``key`` added last.

    The oldest keys go once there are more than ``capacity``: a dict keeps insertion
    order, also through a JSON round trip.
    """
    return bounded_extend(seen, (key,), capacity)


def bounded_extend(seen: Mapping[str, Any], keys: Iterable[str], capacity: int) -> dict[str, Any]:
    """A copy of the ordered set ``seen`` with ``keys`` added last, the oldest dropped."""
    out = dict(seen)
    for key in keys:
        out.pop(key, None)
        out[key] = True
    excess = len(out) - capacity
    if excess > 0:
        for old in list(out)[:excess]:
            del out[old]
    return out
