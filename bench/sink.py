"""ClickHouse sink rows/s vs insert_arrow of the same rows straight into chDB.

Not a test: a measurement. Starts a local KRaft broker (prefloop.testing) and produces
EVENTS interaction events of about 500 B, encoded by the SDK and keyed as the SDK keys
them, to one fresh topic (6 partitions). chDB is opened in this process (one data
directory per process: each run gets a fresh database in it, dropped afterwards).
Then, alternating, ROUNDS times each:

* sink: ``ClickHouseSink`` (its default batches: ``sink_batch_rows`` rows or
  ``sink_batch_s`` seconds) in a thread with a fresh consumer group, writing with the
  embedded client as the store's owner process does, timed from ``run`` until every
  row is inserted in both tables: consumer start and group join, fetches, and per
  batch ``rows_table`` and ``insert_arrow`` into ``raw_events``, the grouping of the
  records by table and writer schema (headers and Kafka positions only, past the
  ``Watermarks``), the Avro container of each group, the SELECT in which ClickHouse
  decodes it into the typed rows (``avro_rows.select_rows``), ``insert_arrow`` of
  those into ``interactions``, then the offset commit after each batch but the last;
* baseline: the same output with none of the sink's work. The same records, consumed
  into memory beforehand, built (not timed) into Arrow tables of the same batch size:
  the ``raw_events`` rows with the sink's ``rows_table``, and the ``interactions`` rows
  of the decoded records with ``load_layouts(client)["interactions"].rows``; timed:
  for each batch, the same client's ``insert_arrow`` of both, into the same schemas
  (materialized views included);
* the sink decoding in Python (``decode_in_clickhouse=False``: fastavro, then
  ``TableLayout.rows``), as it did before ClickHouse decoded for it, for reference.

Each run ends with ``count() FROM raw_events FINAL`` and ``count() FROM interactions``
equal to EVENTS. Prints and writes medians and the ratio sink / baseline (target at least
0.5x) to bench/RESULTS.md, with where the sink's time goes.

Run: ``make bench`` or ``.venv/bin/python bench/run.py sink`` (``BENCH_SINK_EVENTS``,
``BENCH_ROUNDS`` change the sizes).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from common import median, write_section
from confluent_kafka import Message, TopicPartition

from prefloop import kafka
from prefloop.analytics import sink as sink_module
from prefloop.analytics.avro_rows import RowPlan
from prefloop.analytics.schema import migrate
from prefloop.analytics.sink import ClickHouseSink, rows_table
from prefloop.analytics.tables import load_layouts
from prefloop.clickhouse.client import embedded_client
from prefloop.infra.testing import local_kafka
from prefloop.settings import Settings
from prefloop.testing import fresh_topics
from prefloop_sdk import Codec, codec
from prefloop_sdk.events import key_of

EVENTS = int(os.environ.get("BENCH_SINK_EVENTS", "200000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DEADLINE_S = 300.0
QUESTION = "How do I read a large CSV file in Python without running out of memory?"
ANSWER = (
    "Read it in chunks: pandas.read_csv(path, chunksize=100_000) yields DataFrames you can "
    "process one at a time, or use the csv module and iterate over rows. Keep only the "
    "columns you need (usecols) and pick narrow dtypes."
)


def interaction(i: int) -> dict[str, Any]:
    """An interaction of about 500 B encoded, ids in the shape the SDK stamps."""
    return {
        "interaction_id": f"0195f3c2-7d1e-7a3b-8c4d-{i:012x}",
        "response_id": f"0195f3c2-7d1e-7a3b-9c4d-{i:012x}",
        "regenerates": None,
        "conversation_id": f"conv-{i % 20000}",
        "turn": i % 7,
        "ts": 1767225600000 + i,
        "user_id": f"user-{i % 5000}",
        "session_id": f"sess-{i % 5000}",
        "experiment_id": "exp-7",
        "arm": "control" if i % 2 else "candidate",
        "model_version": "m-2026-11-01",
        "messages": [{"role": "user", "content": QUESTION}],
        "response": ANSWER,
        "latency_ms": 800 + i % 300,
        "prompt_tokens": 60,
        "completion_tokens": 80,
        "uncertainty": None,
        "metadata": {"client": "web"},
    }


def produce(settings: Settings, topic: str) -> float:
    """Produce EVENTS encoded interactions; returns their mean encoded size."""
    codec = Codec()
    events = []
    for i in range(EVENTS):
        record = interaction(i)
        events.append((key_of("interaction", record), codec.encode("interaction", record)))
    producer = kafka.producer(settings)
    for key, value in events:
        kafka.produce_waiting(producer, topic, value, key)
    assert producer.flush(120) == 0
    return statistics.mean(len(value) for _, value in events)


def consume_all(settings: Settings, topic: str) -> list[Message]:
    """Every record of ``topic``, read from the start as the sink reads them."""
    consumer = kafka.consumer(settings, f"bench-preload-{uuid.uuid4().hex[:8]}")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(messages) < EVENTS:
        assert time.monotonic() < deadline, f"read {len(messages)} of {EVENTS} records"
        messages += [m for m in consumer.consume(10_000, timeout=1.0) if m.error() is None]
    consumer.close()
    assert len(messages) == EVENTS
    return messages


def fresh_database(settings: Settings) -> tuple[Settings, Any]:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    client = embedded_client(settings, database)
    migrate(client, database)
    return settings.with_overrides(clickhouse_database=database), client


def finish(client: Any, database: str) -> None:
    count = client.query("SELECT count() FROM raw_events FINAL").result_rows[0][0]
    assert count == EVENTS, f"{count} rows in {database}.raw_events, expected {EVENTS}"
    typed = client.query("SELECT count() FROM interactions").result_rows[0][0]
    assert typed == EVENTS, f"{typed} rows in {database}.interactions, expected {EVENTS}"
    client.command(f"DROP DATABASE `{database}` SYNC")  # no merges left to run beside the next


Steps = list[tuple[str, float, float]]  # (step, start, end), perf_counter seconds


class TimedClient:
    """The embedded client, noting when the sink's first insert returns and the time spent in
    ``insert_arrow`` per table (the sink also queries it at its start: layouts, watermarks)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.first_done: float | None = None
        self.insert_s: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def insert_arrow(self, table: str, data: pa.Table, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = self.client.insert_arrow(table, data, **kwargs)
        done = time.perf_counter()
        self.insert_s[table] = self.insert_s.get(table, 0.0) + done - started
        self.first_done = self.first_done or done
        return result


class TimedConsumer:
    """The sink's consumer, its commits timed (the rebalance callbacks get the real one)."""

    def __init__(self, consumer: Any, steps: Steps) -> None:
        self.consumer = consumer
        self.steps = steps

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.consumer.commit(*args, **kwargs)
        finally:
            self.steps.append(("commit", started, time.perf_counter()))


def timed(steps: Steps, step: str, function: Any) -> Any:
    """``function`` noting each call's start and end as ``step``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            steps.append((step, started, time.perf_counter()))

    return call


class TimedSink(ClickHouseSink):
    """The sink, unchanged, with the start and end of its steps noted: collecting a batch
    from the consumer, and writing it (``rows_table``, ``insert_arrow`` into ``raw_events``,
    grouping the records, their containers, ClickHouse's decoding SELECTs, the Python
    decoding of what ClickHouse did not decode, ``insert_arrow`` into ``interactions``),
    and the commits. The rest of ``run`` is the consumer's start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: Steps = []

    def _collect(self, consumer: Any, stop: threading.Event, handover: Any) -> list[Message]:
        started = time.perf_counter()
        try:
            return super()._collect(consumer, stop, handover)
        finally:
            self.steps.append(("collect", started, time.perf_counter()))

    def _insert(self, writer: Any, stop: threading.Event) -> bool:
        writer._decoded_rows = timed(self.steps, "python_decode", writer._decoded_rows)
        started = time.perf_counter()
        try:
            return super()._insert(writer, stop)
        finally:
            self.steps.append(("insert", started, time.perf_counter()))


def instrument(steps: Steps) -> Any:
    """Time the module functions the sink calls (``rows_table``, ``select_rows``,
    ``RowPlan.container``, the consumer's commits); returns what undoes it."""
    writer = sink_module._BatchWriter
    saved = (
        sink_module._raw_rows,
        sink_module.select_rows,
        RowPlan.container,
        sink_module.kafka.consumer,
        writer._group,
    )
    sink_module._raw_rows = timed(steps, "rows_table", saved[0])
    sink_module.select_rows = timed(steps, "select", saved[1])
    RowPlan.container = timed(steps, "container", saved[2])  # type: ignore[method-assign]
    make_consumer = saved[3]
    sink_module.kafka.consumer = lambda *a, **k: TimedConsumer(make_consumer(*a, **k), steps)
    writer._group = timed(steps, "group", saved[4])  # type: ignore[method-assign]

    def undo() -> None:
        (
            sink_module._raw_rows,
            sink_module.select_rows,
            RowPlan.container,  # type: ignore[method-assign]
            sink_module.kafka.consumer,
            writer._group,  # type: ignore[method-assign]
        ) = saved

    return undo


def sink_run(settings: Settings, topic: str, in_clickhouse: bool = True) -> dict[str, float]:
    scoped, client = fresh_database(settings)
    timed_client = TimedClient(embedded_client(scoped, scoped.clickhouse_database))
    sink = TimedSink(
        scoped,
        lambda: timed_client,
        topics=[topic],
        group_id=f"bench-sink-{uuid.uuid4().hex[:8]}",
        decode_in_clickhouse=in_clickhouse,
    )
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            sink.run(stop)
        except BaseException as exc:
            failure.append(exc)

    undo = instrument(sink.steps)
    thread = threading.Thread(target=run, name="sink")
    cpu_started = time.process_time()  # of every thread of this process, chDB's included
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while sink.rows_inserted < EVENTS:  # rows_inserted grows when an insert has returned
            assert thread.is_alive(), f"the sink stopped: {failure}"
            assert time.monotonic() < deadline, f"the sink inserted {sink.rows_inserted} rows"
            time.sleep(0.01)
        cpu_s = time.process_time() - cpu_started
        stop.set()
        thread.join(60)
    finally:
        undo()
    assert not failure, failure
    assert sink.rows_inserted == EVENTS
    assert (sink.typed_rows, sink.undecodable) == (EVENTS, 0), (sink.typed_rows, sink.undecodable)
    assert sink.decoded_in_python == (0 if in_clickhouse else EVENTS), sink.decoded_in_python
    finish(client, scoped.clickhouse_database)
    assert timed_client.first_done is not None
    # from run() until the insert of the last row returned (the last batch's commit and the
    # collect it began next, cut short by stop, are after that)
    end = max(e for step, _, e in sink.steps if step == "insert")
    elapsed = end - started

    def spent(step: str) -> float:
        return sum(e - s for name, s, e in sink.steps if name == step and s < end)

    container_s = spent("container")
    parts = {
        "collect_s": spent("collect"),
        "rows_table_s": spent("rows_table"),
        "raw_insert_s": timed_client.insert_s.get("raw_events", 0.0),
        "group_s": spent("group"),
        "container_s": container_s,
        "select_s": spent("select") - container_s,  # select_rows builds the container first
        "python_decode_s": spent("python_decode"),
        "typed_insert_s": timed_client.insert_s.get("interactions", 0.0),
        "commit_s": spent("commit"),
    }
    return {
        "rate": EVENTS / elapsed,
        "seconds": elapsed,
        "cpu_s": cpu_s,
        "first_insert_s": timed_client.first_done - started,
        **parts,
        "rest_s": elapsed - sum(parts.values()),
        "batches": sink.batches,
    }


def baseline_run(settings: Settings, tables: list[tuple[pa.Table, pa.Table]]) -> dict[str, float]:
    scoped, client = fresh_database(settings)
    raw_s = typed_s = 0.0
    cpu_started = time.process_time()
    for raw, typed in tables:
        started = time.perf_counter()
        client.insert_arrow("raw_events", raw)
        between = time.perf_counter()
        client.insert_arrow("interactions", typed)
        raw_s += between - started
        typed_s += time.perf_counter() - between
    elapsed = raw_s + typed_s
    cpu_s = time.process_time() - cpu_started
    finish(client, scoped.clickhouse_database)
    return {
        "rate": EVENTS / elapsed,
        "seconds": elapsed,
        "cpu_s": cpu_s,
        "raw_s": raw_s,
        "typed_s": typed_s,
    }


def typed_tables(client: Any, messages: list[Message], batch: int) -> list[pa.Table]:
    """The ``interactions`` rows of each batch, as the sink builds them (not timed)."""
    layout = load_layouts(client, ["interactions"])["interactions"]
    out = []
    for i in range(0, len(messages), batch):
        chunk = messages[i : i + batch]
        records = [codec.decode(m.value() or b"")[1] for m in chunk]
        sources = [(int(m.partition() or 0), int(m.offset() or 0)) for m in chunk]
        out.append(layout.rows(records, sources))
    return out


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def split(r: dict[str, float]) -> str:
    """Where one sink run's time went."""
    return (
        f"{r['seconds']:.2f} s = {r['collect_s']:.2f} consuming + {r['rows_table_s']:.2f} "
        f"rows_table + {r['raw_insert_s']:.2f} insert raw_events + {r['group_s']:.2f} grouping "
        f"+ {r['container_s']:.2f} containers + {r['select_s']:.2f} ClickHouse decoding + "
        f"{r['python_decode_s']:.2f} Python decoding + {r['typed_insert_s']:.2f} insert "
        f"interactions + {r['commit_s']:.2f} commits + {r['rest_s']:.2f} start and overlap"
    )


def main() -> None:
    with local_kafka() as broker, tempfile.TemporaryDirectory() as home:
        settings = fresh_topics(broker, home=Path(home))
        topic = settings.topics.interactions
        size = produce(settings, topic)
        messages = consume_all(settings, topic)
        batch = settings.sink_batch_rows
        warm, client = fresh_database(settings)  # chDB's first inserts, not counted
        raws = [rows_table(messages[i : i + batch]) for i in range(0, EVENTS, batch)]
        tables = list(zip(raws, typed_tables(client, messages, batch), strict=True))
        del messages, raws
        print(
            f"{EVENTS:,} interaction events of {size:.0f} B on {topic}; "
            f"{len(tables)} batches of {batch:,} rows, each a raw_events and an interactions "
            "Arrow table"
        )
        client.insert_arrow("raw_events", tables[0][0])
        client.insert_arrow("interactions", tables[0][1])
        client.command(f"DROP DATABASE `{warm.clickhouse_database}` SYNC")
        sinks: list[dict[str, float]] = []
        bases: list[dict[str, float]] = []
        pythons: list[dict[str, float]] = []
        for _ in range(ROUNDS):
            bases.append(baseline_run(settings, tables))
            sinks.append(sink_run(settings, topic))
            pythons.append(sink_run(settings, topic, in_clickhouse=False))
            last = sinks[-1]
            print(
                f"  round: baseline {bases[-1]['rate']:,.0f} rows/s, sink {last['rate']:,.0f} "
                f"rows/s in {last['batches']:.0f} batches ({split(last)}; "
                f"{last['first_insert_s']:.2f} s to its first insert; CPU {last['cpu_s']:.2f} s "
                f"against the baseline's {bases[-1]['cpu_s']:.2f} s), decoding in Python "
                f"{pythons[-1]['rate']:,.0f} rows/s",
                flush=True,
            )

    sink_rates, base_rates, python_rates = (
        [r["rate"] for r in runs] for runs in (sinks, bases, pythons)
    )
    ratio = median(sink_rates) / median(base_rates)
    m = {name: median([r[name] for r in sinks]) for name in sinks[0]}
    base_s, base_raw_s, base_typed_s = (
        median([r[name] for r in bases]) for name in ("seconds", "raw_s", "typed_s")
    )
    sink_path = (
        "`ClickHouseSink`: consume (read_committed), `rows_table` and `insert_arrow` into "
        "raw_events, headers stripped and grouped, one Avro container per writer schema "
        "decoded by ClickHouse into typed rows, `insert_arrow` into interactions, commit"
    )
    base_path = (
        "`insert_arrow` of the same rows into raw_events and interactions, pre-built tables, "
        "straight into chDB"
    )
    python_path = (
        "the same sink decoding in Python (`decode_in_clickhouse=False`: fastavro and "
        "`TableLayout.rows`, as it did before)"
    )
    consumer_s = m["collect_s"] + m["rows_table_s"] + m["group_s"]
    inserter_s = m["raw_insert_s"] + m["container_s"] + m["select_s"] + m["typed_insert_s"]
    base_cpu, sink_cpu = median([r["cpu_s"] for r in bases]), m["cpu_s"]
    body = f"""
{EVENTS:,} interaction events of {size:.0f} B (SDK-encoded, keyed by conversation) on one
topic of {settings.topic_partitions} partitions, one local broker; chDB opened in the benchmark
process, a fresh database per run; {ROUNDS} alternating runs each, on the same machine's cores.
Batches of {batch:,} rows (the sink's defaults: {batch:,} rows or {settings.sink_batch_s:g} s).
All paths end with the same rows in both tables: every event in `raw_events` and, decoded,
in the typed table `interactions` (with the materialized views on it).

| path | median rows/s | runs |
|---|---|---|
| {sink_path} | {median(sink_rates):,.0f} | {_runs(sink_rates)} |
| {base_path} | {median(base_rates):,.0f} | {_runs(base_rates)} |
| {python_path} | {median(python_rates):,.0f} | {_runs(python_rates)} |

Ratio sink / insert_arrow: **{ratio:.2f}x** (target at least 0.5x). The same sink decoding
every record in Python makes {median(python_rates) / median(base_rates):.2f}x: ClickHouse's
decoding makes the sink {median(sink_rates) / median(python_rates):.1f}x as fast.

Where the sink's time goes, the median of each part, {m["seconds"]:.2f} s in all
({m["first_insert_s"]:.2f} s until the first insert returned). In the consumer's thread:
{m["collect_s"]:.2f} s collecting batches (group join and fetches included) +
{m["rows_table_s"]:.2f} s building the raw_events rows (`rows_table`) + {m["group_s"]:.2f} s
grouping the records by table (record type and position, no decoding) = {consumer_s:.2f} s. In
the insert thread, while the next batch is read: {m["raw_insert_s"]:.2f} s in `insert_arrow`
into raw_events + {m["container_s"]:.2f} s building the Avro containers (headers stripped,
Kafka positions appended, bodies joined) + {m["select_s"]:.2f} s in the queries where
ClickHouse decodes them into typed Arrow rows (the check, the SELECT, the file in /dev/shm) +
{m["python_decode_s"]:.2f} s decoding in Python (what ClickHouse did not decode: nothing here)
+ {m["typed_insert_s"]:.2f} s in `insert_arrow` into interactions = {inserter_s:.2f} s; then
{m["commit_s"]:.2f} s committing offsets; the parts add up to {m["seconds"] - m["rest_s"]:.2f} s
against {m["seconds"]:.2f} s of wall time, as the threads overlap.
The baseline's inserts took {base_s:.2f} s ({base_raw_s:.2f} s into raw_events,
{base_typed_s:.2f} s into interactions), the sink's {m["raw_insert_s"] + m["typed_insert_s"]:.2f}
s: on two cores the consumer's Python, librdkafka's threads and chDB's inserts and merges
compete for the CPUs. CPU time of the process: {sink_cpu:.2f} s for the sink's run,
{base_cpu:.2f} s for the baseline's inserts.
"""
    write_section("ClickHouse sink: rows/s vs insert_arrow into chDB", body)
    print(body)


if __name__ == "__main__":
    main()
