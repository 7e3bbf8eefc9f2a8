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
which the metrics and the verdict query. ClickHouse decodes them, not Python
(:mod:`prefloop.analytics.avro_rows`): the bodies of each writer schema, stripped of
their header, go to it as one Avro container, and a SELECT per table and writer
schema returns their typed rows as Arrow, inserted as before. A group ClickHouse
cannot decode (a record in it is corrupt) is decoded in Python, record by record.

Those tables feed materialized views, which count what is inserted, so there a
re-delivered record must not land twice: the sink skips a record at or below the
highest offset its table already holds for that partition
(:class:`~prefloop.analytics.tables.Watermarks`), from the records' Kafka positions
alone, before any is decoded. Those offsets are read back from the tables when the
sink starts, for the partitions assigned to it at each rebalance (another sink of the
group may have written them meanwhile) and before a typed insert that raised is
retried (it may have landed). A sink whose partitions are revoked first lets its
insert in flight finish and commits it, and drops what it had read of them for its
next batch: their new owner reads that again. A record that does not decode lands in
``raw_events`` only; the stream worker's dead letters say why.

In embedded mode the sink runs as a thread of the process that owns chDB; with a
ClickHouse server, ``prefloop sink`` runs it in its own process.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaException, Message, TopicPartition

from prefloop import kafka
from prefloop.analytics.avro_rows import RowPlans, select_rows
from prefloop.analytics.tables import TABLES, UNFIT, TableLayout, Watermarks, load_layouts
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
    if len(value) > 10 and value[10] < 0x80:  # a one-byte length: any id under 64 bytes
        size = (value[10] >> 1) ^ -(value[10] & 1)
        return record_type, value[11 : 11 + size] if 0 <= size <= len(value) - 11 else b""
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
    return _raw_rows(messages)[0]


def _raw_rows(messages: Sequence[Message]) -> tuple[pa.Table, list[bytes]]:
    """The ``raw_events`` rows of ``messages``, and their values."""
    values = [m.value() or b"" for m in messages]
    kinds, ids = zip(*map(event_id_of, values), strict=True) if values else ((), ())
    columns: dict[str, list[Any]] = {
        "topic": [m.topic() for m in messages],
        "partition": [m.partition() for m in messages],
        "offset": [m.offset() for m in messages],
        "key": [m.key() or b"" for m in messages],
        "value": values,
        "ts": [m.timestamp()[1] for m in messages],
        "record_type": list(kinds),
        "event_id": list(ids),
    }
    return pa.table(columns, schema=_SCHEMA), values


def sink_group(settings: Settings) -> str:
    """The sink's consumer group: ``<prefix>-sink``."""
    return f"{settings.topic_prefix}-sink"


class ClickHouseSink:
    """Consumes ``topics`` (default: every public topic) into ``raw_events`` and the
    typed tables. ``decode_in_clickhouse=False`` decodes every record in Python instead,
    as the sink did before ClickHouse decoded for it (the benchmark's reference)."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Client],
        topics: Sequence[str] | None = None,
        group_id: str | None = None,
        decode_in_clickhouse: bool = True,
    ) -> None:
        self.settings = settings
        self.client_factory = client_factory
        self.topics = list(topics or settings.topics.all())
        self.group_id = group_id or sink_group(settings)
        self.decode_in_clickhouse = decode_in_clickhouse  # else in Python, record by record
        self.rows_inserted = 0
        self.batches = 0
        self.typed_rows = 0
        self.undecodable = 0  # no typed table for it: not decodable, or on another topic
        self.unfit = 0  # decoded, but a value out of its column's range
        self.decoded_in_python = 0  # typed rows ClickHouse did not decode (see avro_rows)

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
        """One batch is inserted in a thread while the next one is read and its rows
        made (the Python share of the work: :class:`_BatchWriter`).

        Offsets are committed in order, each batch's after its own insert returned; at
        a rebalance the consumer's callbacks (:class:`_Handover`) do it for the insert
        in flight.
        """
        client = self.client_factory()
        layouts = load_layouts(client)
        watermarks = Watermarks(client, layouts)
        # a server reads the containers sent with the query; the embedded store, from a
        # file on this machine
        plans = RowPlans(layouts, server=bool(self.settings.clickhouse_url))
        # Every batch is tens of thousands of objects (the messages) that live long
        # enough to reach the oldest generation, so the collector walks the whole heap
        # every few batches; what the process holds by now stays, and is left out of
        # those walks (15 % of the sink's CPU in the benchmark)
        gc.freeze()
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
                    # its rows are made while the insert in flight runs, not after it
                    decoding = plans if self.decode_in_clickhouse else None
                    writer = (
                        _BatchWriter(client, batch, layouts, watermarks, self, decoding)
                        if batch
                        else None
                    )
                    del batch  # the writer holds what it needs of the messages
                    handover.finish(consumer)
                    if writer is not None:
                        insert = inserter.submit(self._insert, writer, stop)
                        handover.pending = (insert, writer.next_offsets)
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


# per table: the batch's indexes of its records, and their (partition, offset)
_Typed = dict[str, tuple[list[int], list[tuple[int, int]]]]


class _BatchWriter:
    """One batch into ``raw_events`` and the typed tables; ``write`` may be retried.

    ``raw_events`` collapses a repeated insert itself; the typed tables are written
    past their watermark only, which advances after each insert, so a retry after a
    partial failure writes only what is missing. An insert that raised may have
    landed all the same (a timeout, a connection dropped after the server committed):
    before its retry the table's watermarks for the batch's partitions are read again.

    The records of a table are grouped by writer schema (their header) and each group
    is decoded by ClickHouse (``plans``); a group it cannot decode, or with no plan, or
    every group without ``plans``, is decoded in Python.
    """

    def __init__(
        self,
        client: Client,
        batch: Sequence[Message],
        layouts: dict[str, TableLayout],
        watermarks: Watermarks,
        sink: ClickHouseSink,
        plans: RowPlans | None = None,
    ) -> None:
        self.client = client
        self.layouts = layouts
        self.watermarks = watermarks
        self.sink = sink
        self.plans = plans
        self.size = len(batch)
        # the work on each message in Python is done here, in the consumer's thread,
        # which waits for the insert thread; the insert thread has ClickHouse's share
        raw, self._values = _raw_rows(batch)
        self._raw: pa.Table | None = raw
        self._typed = self._group(raw)
        self.next_offsets = _next_offsets(raw)  # to commit once it is in
        self._decoded: dict[int, dict[str, Any] | None] = {}  # by Python, None: it failed
        self._unsure: set[str] = set()  # tables whose insert raised: landed or not

    def write(self) -> None:
        if self._raw is not None:
            self.client.insert_arrow(TABLE, self._raw)
            self._raw = None
        for table, (indexes, sources) in self._typed.items():
            if table in self._unsure:
                self.watermarks.refresh(table, {partition for partition, _ in sources})
                self._unsure.discard(table)
            fresh = self.watermarks.fresh(table, sources)
            if not fresh:
                continue
            rows = self._typed_rows(table, [indexes[i] for i in fresh], [sources[i] for i in fresh])
            if rows.num_rows:
                try:
                    self.client.insert_arrow(table, rows)
                except Exception:
                    self._unsure.add(table)
                    raise
            self.watermarks.advance(table, (sources[i] for i in fresh))
            self.sink.typed_rows += rows.num_rows

    def _group(self, raw: pa.Table) -> _Typed:
        """The batch's records by typed table, from their raw rows alone: the record
        type their header names, their topic and their position."""
        topics = self.sink.settings.topics
        typed: _Typed = {}
        kinds, on = raw.column("record_type"), raw.column("topic")
        for kind in pc.unique(kinds).to_pylist():
            table = TABLES.get(kind)
            if table is None:
                continue  # not a header of the catalog: it does not decode
            # a record on a topic not its own stays out too
            mine = pc.and_(pc.equal(kinds, kind), pc.equal(on, topics.for_record(kind)))
            indexes = pc.indices_nonzero(mine)
            partitions = raw.column("partition").take(indexes).to_pylist()
            offsets = raw.column("offset").take(indexes).to_pylist()
            typed[table] = (indexes.to_pylist(), list(zip(partitions, offsets, strict=True)))
        # the rest lands in raw_events only
        self.sink.undecodable += raw.num_rows - sum(len(i) for i, _ in typed.values())
        return typed

    def _typed_rows(
        self, table: str, indexes: list[int], sources: list[tuple[int, int]]
    ) -> pa.Table:
        """The typed rows of the batch's records at ``indexes``, one writer schema at
        a time: by ClickHouse where it can, else in Python."""
        groups: dict[bytes, tuple[list[int], list[tuple[int, int]]]] = {}
        for i, source in zip(indexes, sources, strict=True):
            header = self._values[i][:10]
            group = groups.get(header)
            if group is None:
                group = groups[header] = ([], [])
            group[0].append(i)
            group[1].append(source)
        parts = []
        plans = self.plans
        for header, (members, positions) in groups.items():
            plan = plans.get(table, header) if plans is not None else None
            rows = None
            if plans is not None and plan is not None:
                try:
                    values = [self._values[i] for i in members]
                    rows = select_rows(self.client, plan, values, positions, plans.server)
                except Exception as exc:  # a corrupt record, or the store is away
                    log.warning(
                        "sink: ClickHouse did not decode %d records of writer %s into %s "
                        "(partitions %s): decoding them in Python (%s)",
                        len(members),
                        header[2:].hex(),
                        table,
                        sorted({p for p, _ in positions}),
                        (str(exc).splitlines() or [type(exc).__name__])[0][:300],
                    )
            if rows is None:
                rows = self._decoded_rows(table, members, positions)
                self.sink.decoded_in_python += rows.num_rows
            parts.append(rows)
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _decoded_rows(
        self, table: str, members: list[int], positions: list[tuple[int, int]]
    ) -> pa.Table:
        """The typed rows of the records at ``members``, decoded in Python; a record
        that does not decode is counted (once) and left to raw_events."""
        records, sources = [], []
        for i, source in zip(members, positions, strict=True):
            if i not in self._decoded:
                try:
                    self._decoded[i] = codec.decode(self._values[i])[1]
                except DecodeError:
                    self._decoded[i] = None
                    self.sink.undecodable += 1
            record = self._decoded[i]
            if record is not None:
                records.append(record)
                sources.append(source)
        return self._rows(table, records, sources)

    def _rows(
        self, table: str, records: list[dict[str, Any]], sources: list[tuple[int, int]]
    ) -> pa.Table:
        """The typed rows of ``records``; a record its table cannot hold (a value out of
        its column's range: a negative count into UInt32, say) is left out, logged and
        counted: it stays in ``raw_events``, and the sink goes on."""
        layout = self.layouts[table]
        try:
            return layout.rows(records, sources)
        except UNFIT:
            pass
        fitting = []
        for record, source in zip(records, sources, strict=True):
            try:
                fitting.append(layout.rows([record], [source]))
            except UNFIT as exc:
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


def _next_offsets(raw: pa.Table) -> list[TopicPartition]:
    """The offsets to commit once the raw rows ``raw`` are in: past each partition's last."""
    last = raw.group_by(["topic", "partition"], use_threads=False).aggregate([("offset", "max")])
    topics, partitions, offsets = (
        last.column(name).to_pylist() for name in ("topic", "partition", "offset_max")
    )
    return [
        TopicPartition(t, p, offset + 1)
        for t, p, offset in zip(topics, partitions, offsets, strict=True)
    ]
