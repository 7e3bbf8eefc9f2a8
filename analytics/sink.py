"""The ClickHouse sink: every topic into ``raw_events``, in batches, offsets after the insert.

One consumer group (``<prefix>-sink``) reads the public topics with read_committed
(so an aborted transaction of the stream worker never lands) and inserts a batch
when it holds ``sink_batch_rows`` rows or ``sink_batch_s`` seconds have passed, as
one Arrow insert. Offsets are committed only after the insert returned: a crash
between the two re-inserts the batch, and those rows collapse with the first copy,
``raw_events`` being a ReplacingMergeTree on (topic, partition, offset). A failed
insert is retried with backoff and nothing is committed meanwhile.

Each row also carries its record type (from the writer fingerprint in the
single-object header) and event id (the first field of every schema, read from the
Avro body without decoding the rest).

In embedded mode the sink runs as a thread of the process that owns chDB; with a
ClickHouse server, ``prefloop sink`` runs it in its own process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client
from confluent_kafka import Message, TopicPartition

from prefloop import kafka
from prefloop.settings import Settings
from prefloop_sdk import bundled_catalog

__all__ = ["ClickHouseSink", "event_id_of", "rows_table"]

log = logging.getLogger("prefloop.sink")

TABLE = "raw_events"
COLUMNS = ("topic", "partition", "offset", "key", "value", "ts", "record_type", "event_id")
_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.uint32()),
        ("offset", pa.uint64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("record_type", pa.string()),
        ("event_id", pa.binary()),
    ]
)
_RECORD_TYPES = {sv.header: sv.record_type for sv in bundled_catalog()}
_MAX_BACKOFF_S = 30.0


def event_id_of(value: bytes) -> tuple[str, bytes]:
    """(record type, event id) of a single-object encoded event; ('', b'') when unreadable.

    The id is the first field of every schema, an Avro string: a zigzag varint length
    then the UTF-8 bytes.
    """
    record_type = _RECORD_TYPES.get(value[:10])
    if record_type is None:
        return "", b""
    pos, shift, raw = 10, 0, 0
    while pos < len(value):
        byte = value[pos]
        raw |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
    size = (raw >> 1) ^ -(raw & 1)
    if size < 0 or pos + size > len(value):
        return record_type, b""
    return record_type, value[pos : pos + size]


def rows_table(messages: Sequence[Message]) -> pa.Table:
    """The ``raw_events`` rows of ``messages`` as one Arrow table."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for message in messages:
        value = message.value() or b""
        record_type, event_id = event_id_of(value)
        columns["topic"].append(message.topic())
        columns["partition"].append(message.partition())
        columns["offset"].append(message.offset())
        columns["key"].append(message.key() or b"")
        columns["value"].append(value)
        columns["ts"].append(message.timestamp()[1])
        columns["record_type"].append(record_type)
        columns["event_id"].append(event_id)
    return pa.table(columns, schema=_SCHEMA)


class ClickHouseSink:
    """Consumes ``topics`` (default: every public topic) into ``raw_events``."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Client],
        topics: Sequence[str] | None = None,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.client_factory = client_factory
        self.topics = list(topics or settings.topics.all())
        self.group_id = group_id or f"{settings.topic_prefix}-sink"
        self.rows_inserted = 0
        self.batches = 0

    def run(self, stop: threading.Event) -> None:
        """Consume, insert and commit until ``stop`` is set."""
        client = self.client_factory()
        consumer = kafka.consumer(self.settings, self.group_id)
        consumer.subscribe(self.topics)
        try:
            while not stop.is_set():
                batch = self._collect(consumer, stop)
                if batch and self._insert(client, batch, stop):
                    consumer.commit(offsets=_next_offsets(batch), asynchronous=False)
        finally:
            consumer.close()

    def _collect(self, consumer: Any, stop: threading.Event) -> list[Message]:
        s = self.settings
        batch: list[Message] = []
        deadline = time.monotonic() + s.sink_batch_s
        while len(batch) < s.sink_batch_rows and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wanted = min(s.sink_batch_rows - len(batch), 10_000)
            for message in consumer.consume(wanted, timeout=min(left, 0.5)):
                if message.error() is None:
                    batch.append(message)
                else:
                    log.warning("sink: %s", message.error())
        return batch

    def _insert(self, client: Client, batch: list[Message], stop: threading.Event) -> bool:
        table = rows_table(batch)
        backoff = 0.5
        while not stop.is_set():
            try:
                client.insert_arrow(TABLE, table)
            except Exception as exc:  # the store or the server is away: keep the batch
                log.warning("sink: insert of %d rows failed (%s); retrying", len(batch), exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self.rows_inserted += len(batch)
            self.batches += 1
            return True
        return False


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic(), message.partition())
        last[key] = max(last.get(key, -1), message.offset())
    return [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
