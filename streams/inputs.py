"""Kafka messages into records, or into dead letters that say why not.

Every agent reads raw bytes and decodes them here. Garbage bytes, an unknown writer
fingerprint, a body that does not match its schema, or a record of a type the topic
does not carry become a DeadLetter record (schema dead_letter/v1) naming the reason,
the source topic, partition and offset, with the original key and value unchanged;
the agent publishes it to ``<prefix>.dlq`` and goes on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from prefloop.streams.records import Record, Rejected, SourceOffset, dead_letter, source_offset
from prefloop_sdk import Codec
from prefloop_sdk.errors import DecodeError
from prefloop_sdk.events import key_of

__all__ = ["Decoded", "Inbox"]

_SINGLE_OBJECT_MAGIC = b"\xc3\x01"


@dataclass(frozen=True)
class Decoded:
    """One input event: its type, the record, and where it lies in Kafka."""

    record_type: str
    record: Record
    source: SourceOffset


class Inbox:
    """Decodes one agent's input; ``consumer`` names the agent in its dead letters."""

    def __init__(self, codec: Codec, consumer: str) -> None:
        self.codec, self.consumer = codec, consumer

    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        expected: Collection[str],
        now: int,
    ) -> tuple[Decoded | None, Record | None]:
        """``(decoded, None)`` for a good event, ``(None, dead letter)`` otherwise."""
        source = source_offset(topic, partition, offset)
        data = value or b""
        try:
            record_type, record = self.codec.decode(data)
        except DecodeError as exc:
            return None, self._letter(source, key, data, str(exc), type(exc).__name__, now)
        if record_type not in expected:
            reason = (
                f"a {record_type} record on {topic}, which carries {', '.join(sorted(expected))}; "
                "publish it to its own topic"
            )
            return None, self._letter(source, key, data, reason, "UnexpectedRecordType", now)
        return Decoded(record_type, record, source), None

    def rejected(self, rejected: Rejected, now: int) -> Record:
        """The dead letter of an event the logic gave up on (re-encoded as it arrived)."""
        value = self.codec.encode(rejected.record_type, rejected.record)
        return dead_letter(
            rejected,
            consumer=self.consumer,
            now=now,
            value=value,
            key=key_of(rejected.record_type, rejected.record),
            writer_fingerprint=_fingerprint(value),
        )

    def _letter(
        self,
        source: SourceOffset,
        key: bytes | None,
        value: bytes,
        reason: str,
        error_type: str,
        now: int,
    ) -> Record:
        rejected = Rejected("unknown", {}, reason, source, error_type)
        return dead_letter(
            rejected,
            consumer=self.consumer,
            now=now,
            value=value,
            key=key,
            writer_fingerprint=_fingerprint(value),
        )


def _fingerprint(value: bytes) -> str | None:
    """The writer fingerprint in a single-object header, when there is one."""
    if len(value) >= 10 and value[:2] == _SINGLE_OBJECT_MAGIC:
        return value[2:10].hex()
    return None
