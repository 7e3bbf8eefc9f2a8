"""The ClickHouse sink: every topic into ``raw_events``, in batches, offsets after the insert.

One consumer group (``<prefix>-sink``) reads the public topics with read_committed
(so an aborted transaction of the stream worker never lands) and inserts a batch
when it holds ``sink_batch_rows`` rows or ``sink_batch_s`` seconds have passed, as
one Arrow insert, made in a thread while the next batch is read. Offsets are
committed only after the insert returned: a crash
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
from concurrent.futures import Future, ThreadPoolExecutor
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
_BULK_FETCH = {  # a sink reads in bulk: fewer, larger fetches than librdkafka's defaults
    "fetch.max.bytes": str(64 << 20),
    "max.partition.fetch.bytes": str(16 << 20),
    "queued.max.messages.kbytes": str(256 << 10),
}


def event_id_of(value: bytes) -> tuple[str, bytes]:
    """(record type, event id) of a single-object encoded event.

    ('', b'') when the header is not one of the catalog's; an id cut short reads as b''.

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
    values = [m.value() or b"" for m in messages]
    kinds, ids = zip(*map(event_id_of, values), strict=True) if values else ((), ())
    columns = {
        "topic": [m.topic() for m in messages],
        "partition": [m.partition() for m in messages],
        "offset": [m.offset() for m in messages],
        "key": [m.key() or b"" for m in messages],
        "value": values,
        "ts": [m.timestamp()[1] for m in messages],
        "record_type": list(kinds),
        "event_id": list(ids),
    }
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
        """Consume, insert and commit until ``stop`` is set; start over after an error
        (a lost group membership, a failed commit): what was not committed comes again."""
        while not stop.is_set():
            try:
                self._run(stop)
            except Exception:
                log.exception("sink: starting over after an error")
                stop.wait(1.0)

    def _run(self, stop: threading.Event) -> None:
        """One batch is inserted in a thread while the next one is read.

        Offsets are committed in order, each batch's after its own insert returned.
        """
        client = self.client_factory()
        consumer = kafka.consumer(self.settings, self.group_id, **_BULK_FETCH)
        consumer.subscribe(self.topics)
        pending: tuple[Future[bool], list[TopicPartition]] | None = None
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="sink-insert") as inserter:
                while not stop.is_set():
                    batch = self._collect(consumer, stop)
                    if pending is not None:
                        self._finish(consumer, *pending)
                        pending = None
                    if batch:
                        table = rows_table(batch)
                        insert = inserter.submit(self._insert, client, table, stop)
                        pending = (insert, _next_offsets(batch))
                if pending is not None:
                    self._finish(consumer, *pending)
        finally:
            consumer.close()

    @staticmethod
    def _finish(consumer: Any, insert: Future[bool], offsets: list[TopicPartition]) -> None:
        if insert.result():
            consumer.commit(offsets=offsets, asynchronous=False)

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

    def _insert(self, client: Client, table: pa.Table, stop: threading.Event) -> bool:
        backoff = 0.5
        while not stop.is_set():
            try:
                client.insert_arrow(TABLE, table)
            except Exception as exc:  # the store or the server is away: keep the batch
                log.warning("sink: insert of %d rows failed (%s); retrying", table.num_rows, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self.rows_inserted += table.num_rows
            self.batches += 1
            return True
        return False


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (str(message.topic()), int(message.partition() or 0))
        last[key] = max(last.get(key, -1), int(message.offset() or 0))
    return [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
