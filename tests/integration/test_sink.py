"""The ClickHouse sink against the real broker and the embedded store.

chDB admits one data directory per process, and other test modules of the same pytest
process open their own in-process store, so the store here always lives in a process of
its own, as `prefloop up` runs it: either the real owner (``prefloop.analytics.owner``:
chDB, its HTTP interface and the sink thread, writing with the embedded client), or the
store alone (``python -m prefloop.analytics.owner --store-only``) with the sink
running in a thread of this process and writing over HTTP, where a test can wrap its
client to make inserts fail or crash at a chosen point.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import ConsumerGroupState, KafkaException, Message, TopicPartition
from streams_events import feedback, interaction

from prefloop import kafka
from prefloop.analytics.sink import ClickHouseSink, _Handover, event_id_of, sink_group
from prefloop.analytics.tables import TABLES, Watermarks, load_layouts
from prefloop.clickhouse.client import connect
from prefloop.infra.testing import STORE_ONLY, STORE_OWNER, start_store
from prefloop.settings import REPO_ROOT, Settings, load_settings
from prefloop.testing import free_port, fresh_topics
from prefloop_sdk import RecordType, decode, encode
from prefloop_sdk.events import key_of

DEADLINE_S = 240.0  # generous: a SIGKILLed member holds its partitions for a session timeout
ROWS = "SELECT topic, partition, offset, key, value, record_type, event_id FROM raw_events"
BYTES = {"key": "bytes", "value": "bytes", "event_id": "bytes"}

Position = tuple[str, int, int]  # topic, partition, offset
# the events decoded into typed tables (these tests produce interactions and feedback)
TYPED_ROWS = "SELECT (SELECT count() FROM interactions) + (SELECT count() FROM feedback)"


# -- the store, the events, the checks ------------------------------------------------


def sink_settings(base: Settings, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "clickhouse_port": free_port(),
        "sink_batch_rows": 300,
        "sink_batch_s": 0.5,
    }
    values.update(overrides)
    return fresh_topics(base, **values)


@pytest.fixture
def store_only(kafka_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Fresh topics and a fresh store without a sink of its own (tests run one in a thread)."""
    settings = sink_settings(kafka_settings, tmp_path)
    process = start_store(settings, STORE_ONLY)
    try:
        yield settings
    finally:
        process.stop()


class Produced:
    """Every record produced, by its position on the topic: (key, value, record type, id)."""

    def __init__(self) -> None:
        self.records: dict[Position, tuple[bytes, bytes, str, bytes]] = {}


def produce(settings: Settings, pairs: int, first: int = 0) -> Produced:
    """``pairs`` interactions and as many feedback events, keyed as the SDK keys them (ids
    numbered from ``first``)."""
    events: list[tuple[str, dict[str, Any], bytes]] = []
    for i in range(first, first + pairs):
        conv = f"c{i % 37}"
        asked = interaction(f"r{i}", conv=conv, turn=i % 5)
        rating = feedback("RATING", f"r{i}", f"f-{i}", conv=conv, value=float(i % 5 + 1))
        events.append(("interaction", asked, f"i-r{i}".encode()))
        events.append(("feedback", rating, f"f-{i}".encode()))
    produced = Produced()
    errors: list[Any] = []

    def delivered(meta: tuple[str, bytes], err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
            return
        produced.records[(msg.topic(), msg.partition(), msg.offset())] = (
            msg.key(),
            msg.value(),
            *meta,
        )

    producer = kafka.producer(settings)
    for record_type, record, event_id in events:
        key = key_of(record_type, record)
        assert key is not None
        producer.produce(
            settings.topics.for_record(record_type),
            encode(record_type, record),
            key,
            on_delivery=functools.partial(delivered, (record_type, event_id)),
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    assert len(produced.records) == len(events)
    return produced


def topic_partitions(settings: Settings, topics: list[str]) -> list[TopicPartition]:
    admin = kafka.admin_client(settings)
    metadata = admin.list_topics(timeout=10)
    return [TopicPartition(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offset per partition of its topics (-1001 where none)."""
    partitions = topic_partitions(settings, settings.topics.all())
    consumer = kafka.consumer(settings, group)  # never subscribes: does not join the group
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, 10)}
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = kafka.consumer(settings, "end-offsets")
    try:
        return {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in topic_partitions(settings, settings.topics.all())
        }
    finally:
        consumer.close()


def committed_rows(offsets: dict[tuple[str, int], int]) -> int:
    """Records below the committed offsets (the topics are fresh: they start at 0)."""
    return sum(max(offset, 0) for offset in offsets.values())


def scalar(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def wait_for(
    what: str,
    done: Callable[[], bool],
    timeout: float = DEADLINE_S,
    watch: Callable[[], None] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if watch is not None:
            watch()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def wait_until_sunk(
    settings: Settings,
    client: Client,
    n: int,
    watch: Callable[[], None] | None = None,
) -> None:
    """Until raw_events holds ``n`` rows (FINAL) and the sink committed the end offsets."""
    ends = end_offsets(settings)
    group = sink_group(settings)
    wait_for(
        f"{n} rows in raw_events",
        lambda: scalar(client, "SELECT count() FROM raw_events FINAL") >= n,
        watch=watch,
    )
    # a partition nothing was written to has no commit (-1001) and ends at 0
    at_end = {tp: end for tp, end in ends.items() if end > 0}
    last: list[dict[tuple[str, int], int]] = [{}]

    def committed_at_end() -> bool:
        offsets = committed(settings, group)
        last[0] = {tp: offset for tp, offset in offsets.items() if offset >= 0}
        return last[0] == at_end

    try:
        wait_for("the sink's commit of the end offsets", committed_at_end)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: committed {last[0]}, end offsets {at_end}") from None


def assert_exactly(settings: Settings, client: Client, produced: Produced) -> None:
    """raw_events (FINAL) holds every produced record once, as it was on the topic."""
    n = len(produced.records)
    assert scalar(client, "SELECT count() FROM raw_events FINAL") == n
    assert scalar(client, "SELECT uniqExact(event_id) FROM raw_events FINAL") == n
    rows = client.query(f"{ROWS} FINAL", column_formats=BYTES).result_rows
    stored = {(t, p, o): (k, v, rt, eid) for t, p, o, k, v, rt, eid in rows}
    assert stored == produced.records
    expected_types = {
        settings.topics.interactions: {"interaction"},
        settings.topics.feedback: {"feedback"},
    }
    types = client.query("SELECT topic, groupUniqArray(record_type) FROM raw_events GROUP BY topic")
    assert {topic: set(found) for topic, found in types.result_rows} == expected_types
    # and each decoded into its typed table, once (no FINAL: the views count inserts)
    kinds = Counter(record_type for _, _, record_type, _ in produced.records.values())
    assert scalar(client, "SELECT count() FROM interactions") == kinds["interaction"]
    assert scalar(client, "SELECT count() FROM feedback") == kinds["feedback"]
    ratings = client.query("SELECT event_id, kind, value FROM feedback ORDER BY event_id LIMIT 3")
    for event_id, kind, value in ratings.result_rows:
        assert kind == "RATING" and value == float(int(event_id.split("-")[1]) % 5 + 1)
    for (topic, _, _), (_, value, record_type, event_id) in list(stored.items())[::97]:
        decoded_type, record = decode(value)
        assert decoded_type == record_type
        first_field = "interaction_id" if decoded_type == "interaction" else "event_id"
        assert record[first_field].encode() == event_id
        assert topic == settings.topics.for_record(decoded_type)


# -- a sink in a thread of this process, its client wrapped ----------------------------


class Crash(BaseException):
    """What a process dying right after an insert looks like to the sink: nothing more runs."""


class RecordingClient:
    """A client whose inserts are noted and may be steered.

    ``raw_events`` inserts (one per batch) note the positions of the batch and call
    ``before``/``after`` with the batch's number; each typed-table insert that follows
    notes (batch number, table, rows) and calls ``after_typed`` with it.
    """

    def __init__(
        self,
        client: Client,
        before: Callable[[int], None] = lambda call: None,
        after: Callable[[int], None] = lambda call: None,
        after_typed: Callable[[int, str], None] = lambda call, table: None,
    ) -> None:
        self.client = client
        self.before = before
        self.after = after
        self.after_typed = after_typed
        self.calls: list[list[Position]] = []
        self.inserted: list[list[Position]] = []
        self.typed: list[tuple[int, str, int]] = []

    def insert_arrow(self, table: str, data: pa.Table, **kwargs: Any) -> Any:
        if table != "raw_events":
            result = self.client.insert_arrow(table, data, **kwargs)
            self.typed.append((len(self.calls) - 1, table, data.num_rows))
            self.after_typed(len(self.calls) - 1, table)
            return result
        positions = list(
            zip(
                data.column("topic").to_pylist(),
                data.column("partition").to_pylist(),
                data.column("offset").to_pylist(),
                strict=True,
            )
        )
        call = len(self.calls)
        self.calls.append(positions)
        self.before(call)
        result = self.client.insert_arrow(table, data, **kwargs)
        self.inserted.append(positions)
        self.after(call)
        return result

    def fed(self, call: int) -> bool:
        """Whether batch ``call`` is in every typed table it feeds (after raw_events)."""
        topics = {t for t, _, _ in self.calls[call]}
        feeds = {"interactions" if "interactions" in t else "feedback" for t in topics}
        return {t for c, t, _ in self.typed if c == call} == feeds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class SinkThread:
    """``ClickHouseSink.run`` in a thread; what ended it is kept in ``error``."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sink.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if not self.thread.is_alive():
            raise AssertionError(f"the sink thread ended: {self.error!r}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the sink did not stop within 60 s"


def crashed_after_batch(settings: Settings, batch: int) -> RecordingClient:
    """A sink run until batch number ``batch`` (from 0) is in raw_events and in every
    typed table it feeds, then crashed before its commit; its client, with what went in."""

    def crash(call: int, table: str) -> None:
        if call == batch and client.fed(batch):
            raise Crash()

    client = RecordingClient(connect(settings), after_typed=crash)
    crashed = SinkThread(ClickHouseSink(settings, lambda: client))
    crashed.thread.join(timeout=DEADLINE_S)
    assert not crashed.thread.is_alive(), f"the sink never reached its insert {batch + 1}"
    assert isinstance(crashed.error, Crash), crashed.error
    return client


# -- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["owner process", "thread"])
def test_every_event_lands_once_as_it_was_and_offsets_are_committed(
    kafka_settings: Settings, tmp_path: Path, where: str
) -> None:
    settings = sink_settings(kafka_settings, tmp_path)
    produced = produce(settings, 1000)
    process = start_store(settings, STORE_OWNER if where == "owner process" else STORE_ONLY)
    runner = None
    try:
        if where == "thread":
            runner = SinkThread(ClickHouseSink(settings, lambda: connect(settings)))
        client = connect(settings)

        def watch() -> None:
            if runner is not None:
                runner.check()
            assert process.is_running(), process.log_tail()

        wait_until_sunk(settings, client, len(produced.records), watch)
        assert_exactly(settings, client, produced)
        if runner is not None:
            assert runner.sink.rows_inserted == len(produced.records)
            assert runner.sink.batches >= len(produced.records) // settings.sink_batch_rows
    finally:
        if runner is not None:
            runner.close()
        process.stop()
    assert runner is None or runner.error is None


def test_a_crash_between_insert_and_commit_replays_the_batch_and_counts_it_once(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    # batches fill to 250 rows: the events are all on the topics before the sink starts
    settings = sink_settings(kafka_settings, tmp_path, sink_batch_rows=250, sink_batch_s=10.0)
    produced = produce(settings, 1000)
    n = len(produced.records)
    group = sink_group(settings)
    process = start_store(settings, STORE_ONLY)
    try:
        client = connect(settings)
        first = crashed_after_batch(settings, 2)
        assert [len(batch) for batch in first.inserted] == [250, 250, 250]
        # the third batch is in the tables; only the first two were committed
        assert scalar(client, "SELECT count() FROM raw_events FINAL") == 750
        assert scalar(client, TYPED_ROWS) == 750
        assert committed_rows(committed(settings, group)) == 500

        after_replay: list[tuple[int, int]] = []  # rows, rows FINAL after the first insert

        def note_copies(call: int) -> None:
            if call == 0:
                after_replay.append(
                    (
                        scalar(client, "SELECT count() FROM raw_events"),
                        scalar(client, "SELECT count() FROM raw_events FINAL"),
                    )
                )

        second = RecordingClient(connect(settings), after=note_copies)
        restarted = SinkThread(ClickHouseSink(settings, lambda: second))
        try:
            wait_until_sunk(settings, client, n, restarted.check)
            copies = scalar(client, "SELECT count() FROM raw_events")
            assert_exactly(settings, client, produced)
        finally:
            restarted.close()
        assert restarted.error is None

        # the restarted sink began at the committed offsets: the crashed batch, and only
        # it, went in twice; every record went in at least once
        times = Counter(p for batch in first.inserted + second.inserted for p in batch)
        assert set(times) == set(produced.records)
        assert {p for p, k in times.items() if k == 2} == set(first.inserted[2])
        assert max(times.values()) == 2
        assert sum(len(batch) for batch in second.inserted) == n - 500
        # the typed tables feed counting views: there the replayed batch was skipped, by
        # offset, and every event is in its table once without FINAL
        assert sum(rows for _, _, rows in second.typed) == n - 750
        assert scalar(client, TYPED_ROWS) == n
        assert scalar(client, "SELECT uniqExact(interaction_id) FROM interactions") == n // 2
        assert scalar(client, "SELECT sum(interactions) FROM arm_daily") == n // 2
        # until a merge collapses them both copies are there; FINAL counts each record once
        (rows_then, final_then) = after_replay[0]
        assert rows_then >= final_then >= 750
        assert n <= copies <= n + 250
        print(
            f"\nafter the replayed insert: {rows_then} rows, {final_then} FINAL; at the end: "
            f"{copies} rows, {n} FINAL ({copies - n} copies left unmerged)"
        )
    finally:
        process.stop()


def test_the_owner_killed_mid_stream_loses_nothing_and_counts_each_once(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_settings, tmp_path, sink_batch_rows=100, sink_batch_s=0.2)
    produced = produce(settings, 2000)
    n = len(produced.records)
    group = sink_group(settings)
    process = start_store(settings, STORE_OWNER)
    try:
        client = connect(settings)

        def alive() -> None:
            assert process.is_running(), process.log_tail()

        wait_for(
            "a first share of the rows",
            lambda: scalar(client, "SELECT count() FROM raw_events") >= 200,
            watch=alive,
        )
        process.kill()  # SIGKILL: no commit, no consumer close, chDB mid-write
        process.pid_file.unlink(missing_ok=True)
        commits_at_kill = committed_rows(committed(settings, group))

        process = start_store(settings, STORE_OWNER)
        client = connect(settings)
        stored_at_restart = scalar(client, "SELECT count() FROM raw_events FINAL")
        # what the killed owner committed, it had inserted first
        assert stored_at_restart >= commits_at_kill
        wait_until_sunk(settings, client, n)
        copies = scalar(client, "SELECT count() FROM raw_events")
        assert copies >= n
        assert_exactly(settings, client, produced)
        print(
            f"\nkilled with {commits_at_kill} rows committed and {stored_at_restart} stored; "
            f"after the restart {copies} rows without FINAL for {n} events"
        )
    finally:
        process.stop()


def test_a_failing_insert_is_retried_keeps_its_batch_and_commits_nothing_meanwhile(
    store_only: Settings,
) -> None:
    settings = store_only
    produced = produce(settings, 500)
    n = len(produced.records)
    group = sink_group(settings)
    client = connect(settings)
    seen: list[tuple[int, int]] = []  # (rows committed, rows stored) at each insert call

    def fail_twice(call: int) -> None:
        stored = scalar(client, "SELECT count() FROM raw_events")
        seen.append((committed_rows(committed(settings, group)), stored))
        if call < 2:
            raise ConnectionError(f"store away (call {call})")

    flaky = RecordingClient(connect(settings), before=fail_twice)
    runner = SinkThread(ClickHouseSink(settings, lambda: flaky))
    try:
        wait_until_sunk(settings, client, n, runner.check)
        assert_exactly(settings, client, produced)
    finally:
        runner.close()
    assert runner.error is None
    # the first batch was offered three times, the same rows each time; nothing was
    # committed or stored until the third call went through
    assert flaky.calls[0] == flaky.calls[1] == flaky.calls[2]
    assert seen[:3] == [(0, 0), (0, 0), (0, 0)]
    assert flaky.inserted[0] == flaky.calls[2]
    assert sum(len(batch) for batch in flaky.inserted) == n
    assert runner.sink.rows_inserted == n


def test_an_insert_that_lands_but_raises_is_retried_and_counts_each_once(
    store_only: Settings,
) -> None:
    settings = store_only
    produced = produce(settings, 500)
    n = len(produced.records)
    client = connect(settings)
    raised: list[int] = []  # the batch whose insert into interactions landed, then raised

    def land_then_raise(call: int, table: str) -> None:
        if table == "interactions" and not raised:
            raised.append(call)
            raise TimeoutError("read timed out")  # the server committed; the answer was lost

    flaky = RecordingClient(connect(settings), after_typed=land_then_raise)
    runner = SinkThread(ClickHouseSink(settings, lambda: flaky))
    try:
        wait_until_sunk(settings, client, n, runner.check)
        assert_exactly(settings, client, produced)  # interactions counted without FINAL
    finally:
        runner.close()
    assert runner.error is None
    assert raised == [0]
    # the retry read back that the rows were in, and wrote none of them again
    offered = [position for call in flaky.calls for position in call]
    assert len(offered) == len(set(offered))  # raw_events was not offered a record twice
    interactions = settings.topics.interactions
    first = sum(1 for topic, _, _ in flaky.calls[0] if topic == interactions)
    landed = [(call, rows) for call, table, rows in flaky.typed if table == "interactions"]
    assert [rows for call, rows in landed if call == 0] == [first]
    assert sum(rows for _, rows in landed) == n // 2
    assert scalar(client, "SELECT sum(interactions) FROM arm_daily") == n // 2


def test_partitions_another_sink_wrote_after_this_one_started_are_not_written_again(
    store_only: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late sink reads its watermarks, then the first one writes a batch and dies
    before committing it; the partitions are assigned to the late sink afterwards, and it
    reads that batch again from the committed offsets."""
    # batches fill to 250 rows: the events are all on the topics before a sink starts
    settings = store_only.with_overrides(sink_batch_rows=250, sink_batch_s=10.0)
    produced = produce(settings, 1000)
    n = len(produced.records)
    group = sink_group(settings)
    client = connect(settings)

    # the late sink makes its consumer first, after its watermarks are read: held there
    joining, join = threading.Event(), threading.Event()
    make_consumer = kafka.consumer

    def held_once(*args: Any, **kwargs: Any) -> Any:
        if not joining.is_set():
            joining.set()
            join.wait(DEADLINE_S)
        return make_consumer(*args, **kwargs)

    monkeypatch.setattr(kafka, "consumer", held_once)
    second = RecordingClient(connect(settings))
    late = SinkThread(ClickHouseSink(settings, lambda: second))
    try:
        assert joining.wait(DEADLINE_S), "the late sink never made its consumer"
        first = crashed_after_batch(settings, 0)
        assert [len(batch) for batch in first.inserted] == [250]
        assert scalar(client, TYPED_ROWS) == 250
        assert committed_rows(committed(settings, group)) == 0
        assert second.inserted == []

        join.set()  # the late sink joins the group, alone: every partition is its own
        wait_until_sunk(settings, client, n, late.check)
        assert_exactly(settings, client, produced)  # each event once in its typed table
    finally:
        join.set()
        late.close()
    assert late.error is None
    # it read every record, the first sink's batch too, and wrote that batch to
    # raw_events only
    assert sum(len(batch) for batch in second.inserted) == n
    assert set(first.inserted[0]) <= {p for batch in second.inserted for p in batch}
    assert sum(rows for _, _, rows in second.typed) == n - 250
    assert scalar(client, TYPED_ROWS) == n
    assert scalar(client, "SELECT sum(interactions) FROM arm_daily") == n // 2


def test_two_sinks_of_one_group_hand_partitions_over_and_count_each_event_once(
    store_only: Settings,
) -> None:
    """A second sink joins the group while the first one's insert is held; once both hold
    partitions more events come, and every event lands once in its typed table."""
    settings = store_only.with_overrides(sink_batch_rows=100, sink_batch_s=0.2)
    produced = produce(settings, 1000)
    group = sink_group(settings)
    client = connect(settings)
    admin = kafka.admin_client(settings)
    joined = threading.Event()

    def hold_third(call: int) -> None:
        if call == 2:
            joined.wait(DEADLINE_S)

    def group_is(state: ConsumerGroupState, members: int) -> bool:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        held = [m for m in described.members if m.assignment.topic_partitions]
        return described.state == state and len(held) >= members

    first = RecordingClient(connect(settings), before=hold_third)
    second = RecordingClient(connect(settings))
    one = SinkThread(ClickHouseSink(settings, lambda: first))
    two: SinkThread | None = None
    try:
        wait_for("the first sink's third insert", lambda: len(first.calls) == 3, watch=one.check)
        two = SinkThread(ClickHouseSink(settings, lambda: second))
        # the first sink, its insert held, rejoins only once it is let go
        wait_for(
            "the rebalance the second sink starts",
            lambda: group_is(ConsumerGroupState.PREPARING_REBALANCING, 0),
            watch=two.check,
        )
        joined.set()
        wait_for(
            "both sinks holding partitions",
            lambda: group_is(ConsumerGroupState.STABLE, 2),
            watch=two.check,
        )
        produced.records.update(produce(settings, 1000, first=1000).records)  # onto both sinks

        def both_alive() -> None:
            one.check()
            if two is not None:
                two.check()

        wait_until_sunk(settings, client, len(produced.records), both_alive)
        assert_exactly(settings, client, produced)
    finally:
        joined.set()
        one.close()
        if two is not None:
            two.close()
    assert one.error is None and two.error is None
    assert first.inserted and second.inserted
    n = len(produced.records)
    assert sum(rows for recording in (first, second) for _, _, rows in recording.typed) == n
    assert scalar(client, "SELECT sum(interactions) FROM arm_daily") == n // 2


def test_watermarks_refresh_reads_the_partitions_named_and_never_goes_down(
    store_only: Settings,
) -> None:
    client = connect(store_only)

    def write(*sources: tuple[int, int]) -> None:  # as another writer would
        now = datetime.now(UTC)  # ids of their own: rows of one id collapse
        rows = [[f"i-{p}-{offset}", now, p, offset] for p, offset in sources]
        columns = ["interaction_id", "ts", "_partition", "_offset"]
        client.insert("interactions", rows, column_names=columns)

    write((0, 4), (1, 7))
    watermarks = Watermarks(client, ["interactions", "feedback"])
    sources = [(0, 4), (0, 5), (1, 7), (1, 8), (2, 0)]
    assert watermarks.fresh("interactions", sources) == [1, 3, 4]
    assert watermarks.fresh("feedback", sources) == [0, 1, 2, 3, 4]

    write((0, 9), (1, 20), (2, 3))  # after the watermarks were read
    assert watermarks.fresh("interactions", sources) == [1, 3, 4]
    watermarks.refresh("interactions", [0, 2])
    later = [(0, 9), (0, 10), (1, 8), (2, 3), (2, 4)]
    assert watermarks.fresh("interactions", later) == [1, 2, 4]  # partition 1: not named
    watermarks.refresh("interactions", [])  # nothing named: nothing read

    watermarks.advance("interactions", [(0, 30), (0, 12)])  # 30 did not fit: no row
    watermarks.refresh("interactions", [0, 1])
    assert watermarks.fresh("interactions", [(0, 30), (0, 31), (1, 20), (1, 21)]) == [1, 3]
    assert watermarks.fresh("feedback", sources) == [0, 1, 2, 3, 4]


class CommitLog:
    """A consumer as the rebalance callbacks see it: its commits noted, or failing."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert not asynchronous
        if self.failing:
            raise KafkaException("ILLEGAL_GENERATION")
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])


def _handover() -> _Handover:
    watermarks = Watermarks(None, ())  # no table: no query
    return _Handover(load_settings(environ={}), watermarks)


def test_a_revoke_waits_for_the_insert_in_flight_commits_it_and_drops_what_was_read() -> None:
    handover = _handover()
    insert: Future[bool] = Future()
    handover.pending = (insert, [TopicPartition("t", 0, 300), TopicPartition("t", 1, 50)])
    consumer = CommitLog()
    revoking = threading.Thread(
        target=handover.on_revoke, args=(consumer, [TopicPartition("t", 0)])
    )
    revoking.start()
    revoking.join(0.5)
    assert revoking.is_alive() and consumer.commits == []  # held by the insert
    insert.set_result(True)
    revoking.join(10)
    assert not revoking.is_alive()
    assert consumer.commits == [[("t", 0, 300), ("t", 1, 50)]]
    assert handover.pending is None
    # what the batch being collected had read of the revoked partition is dropped, once
    batch = [Message(topic="t", partition=p, offset=o) for p, o in [(0, 300), (1, 50), (0, 301)]]
    assert [(m.partition(), m.offset()) for m in handover.kept(batch)] == [(1, 50)]
    assert handover.kept(batch) == batch


def test_a_revoke_commits_only_an_insert_that_went_in_and_never_raises_a_failed_commit() -> None:
    def revoked(went_in: bool, consumer: CommitLog, lost: bool = False) -> None:
        handover = _handover()
        insert: Future[bool] = Future()
        insert.set_result(went_in)
        handover.pending = (insert, [TopicPartition("t", 0, 300)])
        revoke = handover.on_lost if lost else handover.on_revoke
        revoke(consumer, [TopicPartition("t", 0)])
        assert handover.pending is None and handover.revoked == {("t", 0)}

    committing = CommitLog()
    revoked(True, committing)
    assert committing.commits == [[("t", 0, 300)]]
    stopped = CommitLog()
    revoked(False, stopped)  # the sink stopped before the insert went in
    assert stopped.commits == []
    revoked(True, CommitLog(failing=True))  # the generation is gone: logged, not raised
    lost = CommitLog()
    revoked(True, lost, lost=True)  # another member may own it already: not committed
    assert lost.commits == []


def _vectors() -> list[dict[str, Any]]:
    return list(json.loads((REPO_ROOT / "schemas/vectors/vectors.json").read_text())["vectors"])


def _first_field(record_type: str) -> str:
    schema = json.loads((REPO_ROOT / f"schemas/{record_type}/v1.avsc").read_text())
    return str(schema["fields"][0]["name"])


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_event_id_of_reads_the_first_field_of_every_record_type(vector: dict[str, Any]) -> None:
    record_type = vector["record_type"]
    expected = (record_type, vector["event"][_first_field(record_type)].encode())
    assert event_id_of(bytes.fromhex(vector["hex"])) == expected
    # re-encoded by the SDK from its decoded form (the vector's bytes fields are JSON text)
    assert event_id_of(encode(record_type, decode(bytes.fromhex(vector["hex"]))[1])) == expected


def test_the_vectors_cover_every_record_type() -> None:
    assert {v["record_type"] for v in _vectors()} == {t.value for t in RecordType}


def test_event_id_of_long_and_non_ascii_ids() -> None:
    record = interaction("x")
    for event_id in ["é" * 70, "i-" + "7" * 300, ""]:  # two-byte varint lengths, an empty id
        record["interaction_id"] = event_id
        assert event_id_of(encode("interaction", record)) == ("interaction", event_id.encode())


def _invalid(errors: set[str]) -> list[bytes]:
    vectors = json.loads((REPO_ROOT / "schemas/vectors/vectors.json").read_text())["invalid"]
    return [bytes.fromhex(v["hex"]) for v in vectors if v["error"] in errors]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xc3",
        b"\xc3\x01",
        b"not avro at all",
        b"\xc3\x01" + b"\x00" * 8 + b"\x04ab",  # an unknown fingerprint
        b'{"interaction_id": "i-1"}',
        *_invalid({"NotSingleObjectError", "UnknownFingerprintError"}),
    ],
)
def test_event_id_of_garbage_is_empty(value: bytes) -> None:
    assert event_id_of(value) == ("", b"")


def test_event_id_of_a_cut_id_is_empty_and_a_cut_body_keeps_its_id() -> None:
    value = encode("interaction", interaction("truncated"))
    assert event_id_of(value[:12])[1] == b""  # the length says 11 bytes, 1 is there
    assert event_id_of(value[:10])[1] == b""  # the header alone
    # only the first field is read: a body cut or padded after the id still names it
    assert _invalid({"CorruptEventError"})
    for corrupt in _invalid({"CorruptEventError"}):
        assert event_id_of(corrupt) == ("interaction", b"0b7e4a52-3c1f-4f7a-9d2e-1a6b5c4d3e2f")


# -- typed rows decoded by ClickHouse ----------------------------------------------------


class TypedCapture:
    """A client keeping every typed-table insert (the Arrow table the sink built)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.tables: dict[str, list[pa.Table]] = {}

    def insert_arrow(self, table: str, data: pa.Table, **kwargs: Any) -> Any:
        if table != "raw_events":
            self.tables.setdefault(table, []).append(data)
        return self.client.insert_arrow(table, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def produce_values(settings: Settings, events: list[tuple[str, bytes]]) -> list[Position]:
    """Each (topic, value) produced with key b"k"; their positions, in the same order."""
    positions: dict[int, Position] = {}

    def delivered(i: int, err: Any, msg: Any) -> None:
        assert err is None, err
        positions[i] = (msg.topic(), msg.partition(), msg.offset())

    producer = kafka.producer(settings)
    for i, (topic, value) in enumerate(events):
        producer.produce(topic, value, b"k", on_delivery=functools.partial(delivered, i))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert len(positions) == len(events)
    return [positions[i] for i in range(len(events))]


def python_rows(
    client: Client, values: dict[Position, bytes], table: str, record_type: str
) -> pa.Table:
    """The rows the Python path makes of the ``values`` of one record type (by its own
    layout), in (partition, offset) order."""
    layout = load_layouts(client, [table])[table]
    mine = sorted((p, o, v) for (_, p, o), v in values.items() if event_id_of(v)[0] == record_type)
    records = [decode(v)[1] for _, _, v in mine]
    return layout.rows(records, [(p, o) for p, o, _ in mine])


def in_order(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables).sort_by([("_partition", "ascending"), ("_offset", "ascending")])


def test_clickhouse_decodes_every_record_type_into_the_rows_python_makes(
    store_only: Settings,
) -> None:
    """Every bundled vector (both versions of the types that have two), text that
    json.dumps and ClickHouse escape differently, a table column no version has and one
    only the newer writer has (the older one's rows take the reader's default)."""
    settings = store_only
    client = connect(settings)
    client.command("ALTER TABLE annotation_results ADD COLUMN overlap UInt32")
    client.command("ALTER TABLE exposures ADD COLUMN region LowCardinality(String)")
    topics = settings.topics
    events = [
        (topics.for_record(v["record_type"]), bytes.fromhex(v["hex"]))
        for v in _vectors()
        for _ in range(3)
    ]
    odd = ["a/b \u2028 \u2029 \x0b \x1f \x7f \\u2028 \\ \" ' \t\n é 🚀", "", "x" * 300]
    for i, text in enumerate(odd):
        messages = [{"role": "user", "content": text}, {"role": text, "content": "ok"}]
        record = interaction(f"odd-{i}", messages=messages, response=text)
        events.append((topics.interactions, encode("interaction", record)))
    positions = produce_values(settings, events)
    values = dict(zip(positions, (value for _, value in events), strict=True))

    capture = TypedCapture(connect(settings))
    runner = SinkThread(ClickHouseSink(settings, lambda: capture))
    try:
        wait_until_sunk(settings, client, len(events), runner.check)
    finally:
        runner.close()
    assert runner.error is None
    sink = runner.sink
    assert sink.undecodable == 0 and sink.unfit == 0
    assert sink.decoded_in_python == 0  # ClickHouse decoded every one
    assert sink.typed_rows == len(events)
    assert set(capture.tables) == set(TABLES.values())
    for record_type, table in TABLES.items():
        expected = python_rows(client, values, table, record_type)
        assert in_order(capture.tables[table]).equals(expected), table
    overlaps = in_order(capture.tables["annotation_results"]).column("overlap").to_pylist()
    assert Counter(overlaps) == {1: 3, 3: 3}  # v1's rows take v2's default, 1
    regions = in_order(capture.tables["exposures"]).column("region").to_pylist()
    assert regions == [b""] * 3  # no version has it: the type's zero
    stored = client.query(
        "SELECT messages, response FROM interactions WHERE interaction_id = 'i-odd-0'"
    ).result_rows
    first = [{"role": "user", "content": odd[0]}, {"role": odd[0], "content": "ok"}]
    assert stored == [(json.dumps(first, ensure_ascii=False, separators=(",", ":")), odd[0])]


def test_a_group_clickhouse_cannot_decode_is_decoded_in_python_and_its_poison_kept_raw(
    store_only: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated body, a body with bytes after it and a count no UInt32 holds, among
    good interactions: the interactions of that batch are decoded in Python, the three
    land in raw_events only; the feedback beside them is decoded by ClickHouse."""
    topics = store_only.topics
    good = [encode("interaction", interaction(f"g{i}", turn=i)) for i in range(10)]
    negative = interaction("neg")
    negative["turn"] = -1
    poison = [*_invalid({"CorruptEventError"}), encode("interaction", negative)]
    assert len(poison) == 3
    ratings = [
        encode("feedback", feedback("RATING", f"g{i}", f"f-{i}", value=4.0)) for i in range(10)
    ]
    events = [(topics.interactions, v) for v in good[:5] + poison + good[5:]]
    events += [(topics.feedback, v) for v in ratings]
    # one batch: it fills once every record is read
    settings = store_only.with_overrides(sink_batch_rows=len(events), sink_batch_s=30.0)
    positions = produce_values(settings, events)
    values = dict(zip(positions, (value for _, value in events), strict=True))
    client = connect(settings)

    capture = TypedCapture(connect(settings))
    runner = SinkThread(ClickHouseSink(settings, lambda: capture))
    try:
        with caplog.at_level(logging.WARNING, logger="prefloop.sink"):
            wait_until_sunk(settings, client, len(events), runner.check)
    finally:
        runner.close()
    assert runner.error is None
    sink = runner.sink
    assert sink.batches == 1
    assert (sink.undecodable, sink.unfit) == (2, 1)
    assert sink.decoded_in_python == 10  # the good interactions, none of the feedback
    assert scalar(client, "SELECT count() FROM raw_events FINAL") == len(events)
    assert scalar(client, "SELECT count() FROM interactions") == 10
    assert scalar(client, "SELECT count() FROM feedback") == 10
    ids = client.query("SELECT interaction_id FROM interactions ORDER BY interaction_id")
    assert [r[0] for r in ids.result_rows] == sorted(f"i-g{i}" for i in range(10))
    for table, record_type in (("interactions", "interaction"), ("feedback", "feedback")):
        # the Python path's rows: all but the poison (it does not decode or fit)
        kept = {pos: v for pos, v in values.items() if v not in poison}
        assert in_order(capture.tables[table]).equals(python_rows(client, kept, table, record_type))
    warned = [r.getMessage() for r in caplog.records if "did not decode" in r.getMessage()]
    assert len(warned) == 1 and "into interactions" in warned[0]


def test_the_python_path_stores_what_the_clickhouse_path_stores(store_only: Settings) -> None:
    """``decode_in_clickhouse=False``: every group is decoded in Python, same rows."""
    settings = store_only
    topics = settings.topics
    events = [(topics.for_record(v["record_type"]), bytes.fromhex(v["hex"])) for v in _vectors()]
    positions = produce_values(settings, events)
    values = dict(zip(positions, (value for _, value in events), strict=True))
    client = connect(settings)
    capture = TypedCapture(connect(settings))
    runner = SinkThread(ClickHouseSink(settings, lambda: capture, decode_in_clickhouse=False))
    try:
        wait_until_sunk(settings, client, len(events), runner.check)
    finally:
        runner.close()
    assert runner.error is None
    assert runner.sink.decoded_in_python == len(events)
    for record_type, table in TABLES.items():
        expected = python_rows(client, values, table, record_type)
        assert in_order(capture.tables[table]).equals(expected), table
