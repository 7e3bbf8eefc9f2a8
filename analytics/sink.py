"""The ClickHouse sink: every topic into ``raw_events`` and its typed table, in batches,
offsets after the insert.

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

Each event is also decoded into the typed table of its record type
(:mod:`prefloop.analytics.tables`: ``interactions``, ``feedback``, ``scores``, ...),
which the metrics and the verdict query. Those tables feed materialized views, which
count what is inserted, so there a re-delivered record must not land twice: the sink
skips a record at or below the highest offset its table already holds for that
partition (read back from the table when the sink starts). A record that does not
decode lands in ``raw_events`` only; the stream worker's dead letters say why.

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
from prefloop.analytics.tables import TABLES, TableLayout, Watermarks, load_layouts
from prefloop.settings import Settings
from prefloop_sdk import DecodeError, bundled_catalog, codec

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
_UNFIT = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)
_RECORD_OF = {table: record_type for record_type, table in TABLES.items()}
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
        self.typed_rows = 0
        self.undecodable = 0  # no typed table for it: not decodable, or on another topic
        self.unfit = 0  # decoded, but a value out of its column's range

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
        layouts = load_layouts(client)
        watermarks = Watermarks(client, layouts)
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
                        writer = _BatchWriter(client, batch, layouts, watermarks, self)
                        insert = inserter.submit(self._insert, writer, stop)
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

    def _insert(self, writer: _BatchWriter, stop: threading.Event) -> bool:
        backoff = 0.5
        while not stop.is_set():
            try:
                writer.write()
            except Exception as exc:  # the store or the server is away: keep the batch
                log.warning("sink: insert of %d rows failed (%s); retrying", writer.size, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self.rows_inserted += writer.size
            self.batches += 1
            return True
        return False


class _BatchWriter:
    """One batch into ``raw_events`` and the typed tables; ``write`` may be retried.

    ``raw_events`` collapses a repeated insert itself; the typed tables are written
    past their watermark only, which advances after each insert, so a retry after a
    partial failure writes only what is missing.
    """

    def __init__(
        self,
        client: Client,
        batch: Sequence[Message],
        layouts: dict[str, TableLayout],
        watermarks: Watermarks,
        sink: ClickHouseSink,
    ) -> None:
        self.client = client
        self.batch = batch
        self.layouts = layouts
        self.watermarks = watermarks
        self.sink = sink
        self.size = len(batch)
        self._raw_done = False
        self._typed: dict[str, tuple[list[dict[str, Any]], list[tuple[int, int]]]] | None = None

    def write(self) -> None:
        if not self._raw_done:
            self.client.insert_arrow(TABLE, rows_table(self.batch))
            self._raw_done = True
        if self._typed is None:
            self._typed = self._decode()
        for table, (records, sources) in self._typed.items():
            fresh = [i for i, (p, o) in enumerate(sources) if self.watermarks.is_new(table, p, o)]
            if not fresh:
                continue
            rows = self._rows(table, [records[i] for i in fresh], [sources[i] for i in fresh])
            if rows.num_rows:
                self.client.insert_arrow(table, rows)
            self.watermarks.advance(table, (sources[i] for i in fresh))
            self.sink.typed_rows += rows.num_rows

    def _rows(
        self, table: str, records: list[dict[str, Any]], sources: list[tuple[int, int]]
    ) -> pa.Table:
        """The typed rows of ``records``; a record its table cannot hold (a value out of
        its column's range: a negative count into UInt32, say) is left out, logged and
        counted: it stays in ``raw_events``, and the sink goes on."""
        layout = self.layouts[table]
        try:
            return layout.rows(records, sources)
        except _UNFIT:
            pass
        fitting = []
        for record, source in zip(records, sources, strict=True):
            try:
                fitting.append(layout.rows([record], [source]))
            except _UNFIT as exc:
                self.sink.unfit += 1
                log.warning(
                    "sink: %s partition %d offset %d does not fit table %s (%s): kept in "
                    "raw_events only",
                    self.sink.settings.topics.for_record(_RECORD_OF[table]),
                    *source,
                    table,
                    exc,
                )
        return pa.concat_tables(fitting) if fitting else layout.rows([], [])

    def _decode(self) -> dict[str, tuple[list[dict[str, Any]], list[tuple[int, int]]]]:
        topics = self.sink.settings.topics
        typed: dict[str, tuple[list[dict[str, Any]], list[tuple[int, int]]]] = {}
        for message in self.batch:
            try:
                record_type, record = codec.decode(message.value() or b"")
            except DecodeError:
                self.sink.undecodable += 1
                continue
            kind = str(record_type)
            table = TABLES.get(kind)
            if table is None or topics.for_record(kind) != message.topic():
                self.sink.undecodable += 1  # a record on a topic not its own: raw only
                continue
            records, sources = typed.setdefault(table, ([], []))
            records.append(record)
            sources.append((int(message.partition() or 0), int(message.offset() or 0)))
        return typed


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (str(message.topic()), int(message.partition() or 0))
        last[key] = max(last.get(key, -1), int(message.offset() or 0))
    return [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
