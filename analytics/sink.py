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
partition (:class:`~prefloop.analytics.tables.Watermarks`). Those offsets are read back
from the tables when the sink starts, for the partitions assigned to it at each
rebalance (another sink of the group may have written them meanwhile) and before a
typed insert that raised is retried (it may have landed). A sink whose partitions are
revoked first lets its insert in flight finish and commits it, and drops what it had
read of them for its next batch: their new owner reads that again. A record that does
not decode lands in ``raw_events`` only; the stream worker's dead letters say why.

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
from confluent_kafka import KafkaException, Message, TopicPartition

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


def sink_group(settings: Settings) -> str:
    """The sink's consumer group: ``<prefix>-sink``."""
    return f"{settings.topic_prefix}-sink"


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
        self.group_id = group_id or sink_group(settings)
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

        Offsets are committed in order, each batch's after its own insert returned; at
        a rebalance the consumer's callbacks (:class:`_Handover`) do it for the insert
        in flight.
        """
        client = self.client_factory()
        layouts = load_layouts(client)
        watermarks = Watermarks(client, layouts)
        consumer = kafka.consumer(self.settings, self.group_id, **_BULK_FETCH)
        handover = _Handover(self.settings, watermarks)
        consumer.subscribe(
            self.topics,
            on_assign=handover.on_assign,
            on_revoke=handover.on_revoke,
            on_lost=handover.on_lost,
        )
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="sink-insert") as inserter:
                while not stop.is_set():
                    batch = self._collect(consumer, stop, handover)
                    handover.finish(consumer)
                    if batch:
                        writer = _BatchWriter(client, batch, layouts, watermarks, self)
                        insert = inserter.submit(self._insert, writer, stop)
                        handover.pending = (insert, _next_offsets(batch))
                handover.finish(consumer)
        finally:
            consumer.close()

    def _collect(self, consumer: Any, stop: threading.Event, handover: _Handover) -> list[Message]:
        s = self.settings
        batch: list[Message] = []
        deadline = time.monotonic() + s.sink_batch_s
        while len(batch) < s.sink_batch_rows and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wanted = min(s.sink_batch_rows - len(batch), 10_000)
            messages = consumer.consume(wanted, timeout=min(left, 0.5))
            # a revoke served inside consume(): what was read of its partitions is not ours
            batch = handover.kept(batch)
            for message in messages:
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


class _Handover:
    """The consumer's rebalance callbacks for one run of the sink, and the insert in
    flight they wait for. They run in the consumer thread, inside ``consume``."""

    def __init__(self, settings: Settings, watermarks: Watermarks) -> None:
        self.watermarks = watermarks
        self.tables = {settings.topics.for_record(kind): table for kind, table in TABLES.items()}
        self.pending: tuple[Future[bool], list[TopicPartition]] | None = None
        self.revoked: set[tuple[str, int]] = set()  # since the last ``kept``

    def finish(self, consumer: Any, commit: bool = True) -> None:
        """Waits for the insert in flight, then commits its batch (unless it stopped)."""
        if self.pending is None:
            return
        insert, offsets = self.pending
        self.pending = None  # an insert that raised is not waited for twice
        if insert.result() and commit:
            consumer.commit(offsets=offsets, asynchronous=False)

    def kept(self, batch: list[Message]) -> list[Message]:
        """``batch`` less its messages of the partitions revoked since the last call.

        Their new owner reads them again from the committed offsets, and so does this
        sink when they come back to it (librdkafka drops by itself what the ``consume``
        that served the revoke had read of them before it).
        """
        if not self.revoked:
            return batch
        revoked, self.revoked = self.revoked, set()
        return [m for m in batch if (m.topic(), m.partition()) not in revoked]

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Re-reads the watermarks of the assigned partitions: another sink of the
        group may have written them since this one read its own. If the store does not
        answer, the error leaves ``consume`` and the sink starts over."""
        # an insert is in flight here only with the cooperative protocol; once it is
        # done, the client serves this thread alone
        self.finish(consumer)
        assigned: dict[str, set[int]] = {}
        for tp in partitions:
            if (table := self.tables.get(tp.topic)) is not None:
                assigned.setdefault(table, set()).add(tp.partition)
        for table, numbers in assigned.items():
            self.watermarks.refresh(table, numbers)

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Lets the insert in flight finish, so the new owner of the partitions finds
        its rows when it reads its watermarks, and commits it.

        Committing here is clean: with the eager protocol (librdkafka's default) this
        runs before the member rejoins, so its generation is current and it still owns
        the partitions; the new owner starts after the batch. Left to ``_run``, the
        commit would come after the rebalance, for partitions another sink may own by
        then. Should it fail all the same, it is logged, not raised (raising would
        restart the sink: one more rebalance): the rows are in, their new owner reads
        them again, its watermarks keep them out of the typed tables and
        ``raw_events`` collapses them.
        """
        self.revoked.update((tp.topic, tp.partition) for tp in partitions)
        try:
            self.finish(consumer)
        except KafkaException as exc:
            log.warning("sink: the commit on a revoke failed (%s); the rows are in", exc)

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """As :meth:`on_revoke`, without the commit: another member may own the
        partitions already (the session timed out), and the commit would fail."""
        self.revoked.update((tp.topic, tp.partition) for tp in partitions)
        self.finish(consumer, commit=False)


class _BatchWriter:
    """One batch into ``raw_events`` and the typed tables; ``write`` may be retried.

    ``raw_events`` collapses a repeated insert itself; the typed tables are written
    past their watermark only, which advances after each insert, so a retry after a
    partial failure writes only what is missing. An insert that raised may have
    landed all the same (a timeout, a connection dropped after the server committed):
    before its retry the table's watermarks for the batch's partitions are read again.
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
        self._unsure: set[str] = set()  # tables whose insert raised: landed or not

    def write(self) -> None:
        if not self._raw_done:
            self.client.insert_arrow(TABLE, rows_table(self.batch))
            self._raw_done = True
        if self._typed is None:
            self._typed = self._decode()
        for table, (records, sources) in self._typed.items():
            if table in self._unsure:
                self.watermarks.refresh(table, {partition for partition, _ in sources})
                self._unsure.discard(table)
            fresh = self.watermarks.fresh(table, sources)
            if not fresh:
                continue
            rows = self._rows(table, [records[i] for i in fresh], [sources[i] for i in fresh])
            if rows.num_rows:
                try:
                    self.client.insert_arrow(table, rows)
                except Exception:
                    self._unsure.add(table)
                    raise
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
