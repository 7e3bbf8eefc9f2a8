"""The stream worker against the real broker: scripted conversations, poison input,
a SIGKILL mid-stream, two workers sharing the partitions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from streams_events import MINUTE, SECOND, feedback, interaction

from prefloop import kafka
from prefloop.infra.testing import StreamWorker
from prefloop.kafka import TopicReader
from prefloop.settings import Settings
from prefloop.streams.scoring import UNSCORED
from prefloop.streams.topology import (
    GLOBAL_TABLES,
    PARTITIONED_TABLES,
    StreamTopics,
    app_id,
    changelog_topic,
)
from prefloop.testing import committed_past, free_port, fresh_topics, http_request
from prefloop_sdk import encode
from prefloop_sdk.events import key_of

SORT_Q = {"role": "user", "content": "How do I sort a list in Python?"}
SAME_Q = {"role": "user", "content": "how do i sort a list in python"}
CAPITAL = {"role": "user", "content": "What's the capital of Australia?"}


def stream_settings(base: Settings, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "streams_web_port": free_port(),
        "streams_tick_s": 0.5,
        "streams_inactivity_s": 4.0,
        "streams_unknown_grace_s": 3.0,
        "retrain_threshold": 3,
        "streams_sampling_count": 4,
        "streams_sampling_window_s": 3600.0,
    }
    values.update(overrides)
    return fresh_topics(base, **values)


class Feed:
    """Publishes records the way clients do (keyed by conversation) and notes offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = kafka.producer(settings)
        self.delivered: list[tuple[str, int, int]] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        assert err is None, err
        self.delivered.append((msg.topic(), msg.partition(), msg.offset()))

    def send(self, record_type: str, record: dict[str, Any]) -> None:
        self.raw(
            self.settings.topics.for_record(record_type),
            encode(record_type, record),
            key_of(record_type, record),
        )

    def raw(self, topic: str, value: bytes, key: bytes | None) -> tuple[str, int, int]:
        before = len(self.delivered)
        self.producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
        self.producer.flush(10)
        assert len(self.delivered) == before + 1
        return self.delivered[-1]

    def interaction(self, *args: Any, **kwargs: Any) -> None:
        self.send("interaction", interaction(*args, **kwargs))
        self.wait_consumed()

    def feedback(self, *args: Any, **kwargs: Any) -> None:
        self.send("feedback", feedback(*args, **kwargs))
        self.wait_consumed()

    def wait_consumed(self, timeout: float = 60.0) -> None:
        """Wait until the worker committed past everything sent: the next event is then
        processed after this one, as it happens when a person reads between turns (Kafka
        orders one partition, not interactions against feedback)."""
        wanted: dict[tuple[str, int], int] = {}
        for topic, partition, offset in self.delivered:
            wanted[(topic, partition)] = max(wanted.get((topic, partition), 0), offset + 1)
        group = kafka.consumer(self.settings, app_id(self.settings))
        try:
            deadline = time.monotonic() + timeout
            while not committed_past(group, wanted):
                assert time.monotonic() < deadline, f"the worker did not consume {wanted}"
                time.sleep(0.1)
        finally:
            group.close()


@pytest.fixture
def worker_settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return stream_settings(kafka_settings, tmp_path)


@pytest.fixture
def worker(worker_settings: Settings) -> Iterator[StreamWorker]:
    process = StreamWorker(worker_settings).start()
    try:
        yield process
    finally:
        process.stop()


def readers(settings: Settings, *names: str) -> dict[str, TopicReader]:
    return {name: TopicReader(settings, getattr(settings.topics, name)) for name in names}


def scores_of(reader: TopicReader) -> list[tuple[str, int, float, str]]:
    return sorted(
        (r["response_id"], r["revision"], r["implicit_score"], r["settled_reason"])
        for _, r, _, _ in reader.records
    )


def test_scripted_conversations_give_the_products_scores_pairs_tasks_and_one_trigger(
    worker_settings: Settings, worker: StreamWorker
) -> None:
    s = worker_settings
    feed = Feed(s)
    out = readers(s, "scores", "preferences", "model_events", "annotation_tasks", "dlq")
    t0 = int(time.time() * 1000)
    # c1: an answer regenerated, the regeneration copied, a follow-up, a 400 s session
    feed.interaction("r1", conv="c1", messages=[SORT_Q], ts=t0)
    feed.feedback("REGENERATE", "r1", "f1", conv="c1", ts=t0 + 5 * SECOND)
    feed.interaction("r1b", conv="c1", messages=[SORT_Q], regenerates="r1", ts=t0 + 6 * SECOND)
    feed.feedback("COPY", "r1b", "f2", conv="c1", ts=t0 + 20 * SECOND)
    follow = [SORT_Q, {"role": "assistant", "content": "answer r1b"}]
    follow.append({"role": "user", "content": "And in reverse order?"})
    feed.interaction("r2", conv="c1", turn=1, messages=follow, ts=t0 + MINUTE)
    feed.feedback("SESSION_END", "r2", "f3", conv="c1", ts=t0 + 7 * MINUTE, value=400.0)
    out["scores"].wait_for(lambda r: len(r) == 5, 60, "c1's five scores", worker.check)
    # c2: the same question differently written, reported, a 20 s session
    feed.interaction("x1", conv="c2", user="u2", messages=[SAME_Q], ts=t0 + 8 * MINUTE)
    feed.feedback("REPORT", "x1", "g1", conv="c2", ts=t0 + 8 * MINUTE + SECOND)
    feed.feedback("SESSION_END", "x1", "g2", conv="c2", ts=t0 + 9 * MINUTE, value=20.0)
    # c3: two answers to one question, rated 5 and 2, then silence (the 4 s timeout)
    feed.interaction("y1", conv="c3", messages=[CAPITAL], ts=t0 + 10 * MINUTE)
    feed.interaction("y2", conv="c3", messages=[CAPITAL], ts=t0 + 10 * MINUTE + 1)
    # c9: an answer no user saw (the console's alternative to judge a task against),
    # to c1's question: logged, never scored, sampled or paired (nothing below shows it)
    unscored = dict([UNSCORED])
    feed.interaction("z1", conv="c9", messages=[SORT_Q], ts=t0 + 10 * MINUTE, metadata=unscored)
    feed.feedback("RATING", "y1", "h1", conv="c3", ts=t0 + 11 * MINUTE, value=5.0)
    feed.feedback("RATING", "y2", "h2", conv="c3", ts=t0 + 11 * MINUTE, value=2.0)

    out["scores"].wait_for(lambda r: len(r) >= 8, 60, "eight scores", worker.check)
    out["model_events"].wait_for(lambda r: len(r) >= 1, 60, "the retrain request", worker.check)
    for reader in out.values():
        reader.settle(3.0)

    # the product's weights: continued +2, session > 300 s +1, copied +2,
    # regenerated -2, session < 30 s -1, reported -5
    assert scores_of(out["scores"]) == [
        ("r1", 0, -2.0, "NEXT_TURN"),  # regenerated
        ("r1", 1, -1.0, "LATE_FEEDBACK"),  # + the long session
        ("r1b", 0, 4.0, "NEXT_TURN"),  # copied, continued
        ("r1b", 1, 5.0, "LATE_FEEDBACK"),
        ("r2", 0, 1.0, "SESSION_END"),
        ("x1", 0, -6.0, "SESSION_END"),  # reported, short session
        ("y1", 0, 0.0, "TIMEOUT"),
        ("y2", 0, 0.0, "TIMEOUT"),
    ]
    pairs = [r for _, r, _, _ in out["preferences"].records]
    assert sorted(
        (p["source"], p["chosen_response_id"], p["rejected_response_id"], round(p["weight"], 6))
        for p in pairs
    ) == [
        # r1 (-1) vs x1 (-6) across conversations: no pair, r1 was itself rejected
        ("IMPLICIT", "r1b", "x1", 1.0),  # 5 vs -6
        ("RATING", "y1", "y2", 0.75),
        ("REGENERATE", "r1b", "r1", 1.0),
    ]
    assert all(p["source_offsets"] for p in pairs)  # lineage
    # three pairs on v1 reach the threshold of 3: exactly one request, naming them
    (request,) = [r for _, r, _, _ in out["model_events"].records]
    assert (request["kind"], request["model_version"], request["pair_count"]) == (
        "RETRAIN_REQUESTED",
        "v1",
        3,
    )
    queue = TopicReader(s, StreamTopics.with_prefix(s.topic_prefix).retrain_queue)
    queued = queue.settle(2.0)
    named = {
        r["pair_id"]
        for rt, r, p, o in queued
        for span in request["pair_ranges"]
        if rt == "preference_pair"
        and p == span["partition"]
        and span["first_offset"] <= o <= span["last_offset"]
    }
    assert named == {p["pair_id"] for p in pairs}
    # the sampling window is open (an hour): nothing sampled yet, nothing dead
    assert out["annotation_tasks"].records == []
    assert out["dlq"].records == []

    # the live monitor's rolling window: six settled responses on v1/control
    status, _, body = http_request(
        "GET", f"http://127.0.0.1:{s.streams_web_port}/prefloop/rolling/"
    )
    assert status == 200, body
    monitor = json.loads(body)["metrics"]["v1|control"]
    assert monitor["responses"] == 6
    assert monitor["mean_implicit_score"] == pytest.approx((-2 + 4 + 1 - 6 + 0 + 0) / 6)
    assert monitor["mean_rating"] == pytest.approx(3.5)
    assert (monitor["regenerate_rate"], monitor["copy_rate"], monitor["report_rate"]) == (
        pytest.approx(1 / 6),
        pytest.approx(1 / 6),
        pytest.approx(1 / 6),
    )
    status, _, body = http_request(
        "GET", f"http://127.0.0.1:{s.streams_web_port}/prefloop/rolling/?window_s=-1"
    )
    assert status == 400 and "window_s" in body


def test_poison_input_goes_to_the_dead_letter_topic_and_the_worker_goes_on(
    worker_settings: Settings, worker: StreamWorker
) -> None:
    s = worker_settings
    feed = Feed(s)
    out = readers(s, "scores", "dlq")
    t = s.topics
    garbage = feed.raw(t.interactions, b"not an event at all", b"c-poison")
    unknown = feed.raw(t.interactions, b"\xc3\x01" + bytes(8) + b"\x02x", b"c-poison")
    misplaced_record = feedback("COPY", "z1", "e-misplaced", conv="c-poison")
    misplaced = feed.raw(t.interactions, encode("feedback", misplaced_record), b"c-poison")
    # feedback for an interaction that never comes: held, then dead after the grace
    feed.feedback("COPY", "ghost", "e-ghost", conv="c-orphan")
    # out of order and duplicated: the copy before its interaction, everything twice
    feed.feedback("COPY", "o1", "e-copy", conv="c-ooo")
    feed.feedback("COPY", "o1", "e-copy", conv="c-ooo")
    feed.interaction("o1", conv="c-ooo")
    feed.interaction("o1", conv="c-ooo")
    feed.feedback("SESSION_END", "o1", "e-end", conv="c-ooo", value=100.0)
    feed.feedback("SESSION_END", "o1", "e-end", conv="c-ooo", value=100.0)

    out["dlq"].wait_for(lambda r: len(r) >= 4, 60, "four dead letters", worker.check)
    out["scores"].wait_for(lambda r: len(r) >= 1, 60, "o1's score", worker.check)
    out["dlq"].settle(2.0)
    out["scores"].settle(2.0)

    letters = {r["error_type"]: r for _, r, _, _ in out["dlq"].records}
    assert set(letters) == {
        "NotSingleObjectError",
        "UnknownFingerprintError",
        "UnexpectedRecordType",
        "UnknownInteraction",
    }
    for error_type, position, value in (
        ("NotSingleObjectError", garbage, b"not an event at all"),
        ("UnknownFingerprintError", unknown, b"\xc3\x01" + bytes(8) + b"\x02x"),
        ("UnexpectedRecordType", misplaced, encode("feedback", misplaced_record)),
    ):
        letter = letters[error_type]
        where = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
        assert where == position
        assert (letter["value"], letter["key"]) == (value, b"c-poison")
        assert letter["reason"]
    assert letters["UnknownFingerprintError"]["writer_fingerprint"] == "00" * 8
    assert "interactions" in letters["UnexpectedRecordType"]["reason"]
    ghost = letters["UnknownInteraction"]
    assert ghost["source_topic"] == t.feedback and "ghost" in ghost["reason"]
    # the out-of-order, duplicated conversation: one score, copied (+2), 100 s session
    assert scores_of(out["scores"]) == [("o1", 0, 2.0, "SESSION_END")]


def annotation_result(task: str, annotator: str, choice: str, a: str, b: str) -> dict[str, Any]:
    """A v2 AnnotationResult of a task given to two annotators."""
    return {
        "result_id": f"{task}-{annotator}",
        "task_id": task,
        "annotator_id": annotator,
        "prompt": [CAPITAL],
        "response_a": f"answer {a}",
        "response_b": f"answer {b}",
        "response_a_id": a,
        "response_b_id": b,
        "choice": choice,
        "conversation_id": "c-annotated",
        "model_version": "v1",
        "ts": int(time.time() * 1000),
        "overlap": 2,
    }


def test_annotators_who_disagree_make_a_dead_letter_and_no_pair(
    worker_settings: Settings, worker: StreamWorker
) -> None:
    s = worker_settings
    feed = Feed(s)
    out = readers(s, "preferences", "dlq")
    feed.send("annotation_result", annotation_result("t-split", "ann-1", "A", "r-1", "r-2"))
    feed.send("annotation_result", annotation_result("t-split", "ann-2", "B", "r-1", "r-2"))
    feed.send("annotation_result", annotation_result("t-agreed", "ann-1", "B", "r-3", "r-4"))
    feed.send("annotation_result", annotation_result("t-agreed", "ann-2", "B", "r-3", "r-4"))

    out["dlq"].wait_for(lambda r: len(r) >= 1, 60, "t-split's dead letter", worker.check)
    out["preferences"].wait_for(lambda r: len(r) >= 1, 60, "t-agreed's pair", worker.check)
    out["dlq"].settle(2.0)
    out["preferences"].settle(2.0)

    pairs = [r for _, r, _, _ in out["preferences"].records]
    assert [(p["chosen_response_id"], p["rejected_response_id"]) for p in pairs] == [("r-4", "r-3")]
    assert len(pairs[0]["source_offsets"]) == 2
    [letter] = [r for _, r, _, _ in out["dlq"].records]
    assert letter["reason"] == (
        "annotators disagree on task t-split: A by ann-1, B by ann-2 "
        "(agreement 0.50 < 0.66): no pair"
    )
    assert (letter["error_type"], letter["source_topic"]) == (
        "AnnotatorsDisagree",
        s.topics.annotation_results,
    )
    assert letter["source_offset"] == feed.delivered[1][2]


def conversation_workload(feed: Feed, count: int, prefix: str = "k") -> None:
    """``count`` conversations: an answer regenerated, the regeneration copied, the end.

    Whatever order the worker sees them in, each yields one REGENERATE pair."""
    for i in range(count):
        conv, first, second = f"{prefix}{i}", f"{prefix}{i}-a", f"{prefix}{i}-b"
        question = [{"role": "user", "content": f"question number {i} about {prefix}"}]
        records = [
            ("interaction", interaction(first, conv=conv, messages=question)),
            ("feedback", feedback("REGENERATE", first, f"{conv}-f1", conv=conv)),
            ("interaction", interaction(second, conv=conv, messages=question, regenerates=first)),
            ("feedback", feedback("COPY", second, f"{conv}-f2", conv=conv)),
            ("feedback", feedback("SESSION_END", second, f"{conv}-f3", conv=conv, value=100.0)),
        ]
        for record_type, record in records:
            feed.producer.produce(
                feed.settings.topics.for_record(record_type),
                value=encode(record_type, record),
                key=key_of(record_type, record),
            )
        feed.producer.poll(0)
    feed.producer.flush(30)


BACKLOG = {"streams_unknown_grace_s": 900.0, "streams_inactivity_s": 900.0}
"""For a workload published before the worker reads it: Kafka orders a partition, not
the interactions topic against the feedback topic, so on a backlog a feedback event can
be read well before its interaction; the scorer holds it for the grace (processing time)."""


def assert_exactly_once(out: dict[str, TopicReader], conversations: int) -> None:
    assert out["dlq"].records == []
    pairs = [r for _, r, _, _ in out["preferences"].records]
    assert len(pairs) == conversations, "a pair lost or duplicated"
    assert len({p["pair_id"] for p in pairs}) == conversations
    assert {(p["source"], p["weight"]) for p in pairs} == {("REGENERATE", 1.0)}
    scores = [(r["response_id"], r["revision"]) for _, r, _, _ in out["scores"].records]
    assert len(scores) == len(set(scores)), "a score emitted twice"
    by_response: dict[str, list[int]] = {}
    for response, revision in scores:
        by_response.setdefault(response, []).append(revision)
    assert len(by_response) == 2 * conversations
    assert all(sorted(r) == list(range(len(r))) for r in by_response.values())
    requests = [r for _, r, _, _ in out["model_events"].records]
    assert [(r["kind"], r["model_version"]) for r in requests] == [("RETRAIN_REQUESTED", "v1")]


def test_sigkill_mid_stream_then_restart_loses_and_repeats_nothing(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    conversations = 600
    s = stream_settings(kafka_settings, tmp_path, **BACKLOG, retrain_threshold=conversations // 2)
    feed = Feed(s)
    conversation_workload(feed, conversations)
    out = readers(s, "scores", "preferences", "model_events", "dlq")
    worker = StreamWorker(s).start()
    try:
        out["preferences"].wait_for(lambda r: len(r) >= 20, 120, "the first pairs", worker.check)
        worker.kill()
        done_at_kill = len(out["preferences"].poll(0.1)) + 20
        assert done_at_kill < conversations, "the worker finished before it was killed"
        worker = StreamWorker(s).start()
        try:
            out["preferences"].wait_for(
                lambda r: len(r) >= conversations, 180, "every pair", worker.check
            )
        except AssertionError as stalled:
            raise AssertionError(f"{stalled}\nthe worker's health: {worker.health()}") from None
        out["model_events"].wait_for(lambda r: len(r) >= 1, 60, "the retrain request")
        for reader in out.values():
            reader.settle(4.0)
    finally:
        worker.stop()
    assert_exactly_once(out, conversations)


def test_two_workers_share_the_partitions_and_give_the_same_results(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    conversations = 200
    s = stream_settings(kafka_settings, tmp_path, **BACKLOG, retrain_threshold=conversations // 2)
    other = s.with_overrides(streams_web_port=free_port(), home=tmp_path / "second")
    first = StreamWorker(s).start()
    second = StreamWorker(other, name="worker-2").start()
    try:
        assignments = wait_for_split(s, other)
        feed = Feed(s)
        conversation_workload(feed, conversations)
        out = readers(s, "scores", "preferences", "model_events", "dlq")
        out["preferences"].wait_for(
            lambda r: len(r) >= conversations, 180, "every pair", first.check
        )
        out["model_events"].wait_for(lambda r: len(r) >= 1, 60, "the retrain request")
        for reader in out.values():
            reader.settle(4.0)
        second.check()
    finally:
        first.stop()
        second.stop()
    assert_exactly_once(out, conversations)
    interactions = [
        {a for a in assigned if a.startswith(s.topics.interactions + ":")}
        for assigned in assignments
    ]
    assert all(interactions) and not interactions[0] & interactions[1]
    assert len(interactions[0] | interactions[1]) == s.topic_partitions


def test_the_health_view_of_a_worker_at_rest_reads_healthy(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Everything consumed: no input partition paused, the changelogs (paused by Faust by
    design) apart, and a lag of 0 everywhere, the partitions ending in transaction
    markers included. No ticks (an hour apart): a tick read and not yet committed is a
    true lag of 1 for up to a commit interval, and the view is read at rest."""
    conversations = 12
    s = stream_settings(kafka_settings, tmp_path, streams_tick_s=3600.0)
    out = readers(s, "preferences", "model_events")
    worker = StreamWorker(s).start()
    try:
        conversation_workload(Feed(s), conversations)
        out["preferences"].wait_for(
            lambda r: len(r) >= conversations, 120, "every pair", worker.check
        )
        out["model_events"].wait_for(lambda r: len(r) >= 1, 60, "the retrain request")
        deadline = time.monotonic() + 60
        while not at_rest(health := worker.health()):
            assert time.monotonic() < deadline, f"the worker never came to rest: {health}"
            time.sleep(0.5)
    finally:
        worker.stop()

    held = set(health["assigned"])
    changelogs = {
        f"{changelog_topic(s, table)}:{p}"
        for tables, partitions in ((PARTITIONED_TABLES, s.topic_partitions), (GLOBAL_TABLES, 1))
        for table in tables
        for p in range(partitions)
    }
    assert set(health["changelogs"]) == changelogs and changelogs <= held
    stream_topics = StreamTopics.with_prefix(s.topic_prefix)
    inputs = [
        *(getattr(s.topics, name) for name in ("interactions", "feedback")),
        *(getattr(s.topics, name) for name in ("annotation_results", "model_events")),
        stream_topics.ticks,
        stream_topics.by_prompt,
        stream_topics.retrain_queue,
    ]
    expected = {f"{t}:{p}" for t in inputs for p in range(s.topic_partitions)}
    expected |= {f"{t}:0" for t in stream_topics.single_partition()}
    assert set(health["lag"]) == expected
    # the view reads 0 where the group's committed offset is behind the end: the
    # partitions the worker writes in transactions end in commit markers
    behind = markers_past_commit(s, [stream_topics.by_prompt, stream_topics.retrain_queue])
    assert behind, "no partition ends in transaction markers: the check proves nothing"
    assert {name: health["lag"][name] for name in behind} == dict.fromkeys(behind, 0)


def at_rest(health: dict[str, Any]) -> bool:
    return (
        not health["in_recovery"]
        and health["flow_active"]
        and not health["paused"]
        and not health["buffered"]
        and not any(health["lag"].values())
    )


def markers_past_commit(settings: Settings, topics: list[str]) -> dict[str, int]:
    """The partitions of ``topics`` whose end offset is past the worker's committed one,
    by how many offsets, as the broker tells it."""
    group = kafka.consumer(settings, app_id(settings))
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        behind = {}
        for tp in group.committed(tps, timeout=10):
            end = group.get_watermark_offsets(tp, timeout=10)[1]
            if tp.offset >= 0 and end > tp.offset:
                behind[f"{tp.topic}:{tp.partition}"] = end - tp.offset
        return behind
    finally:
        group.close()


def wait_for_split(*settings: Settings, timeout: float = 120.0) -> list[set[str]]:
    """The partitions each worker holds, once every input partition has one owner."""
    deadline = time.monotonic() + timeout
    while True:
        assigned = []
        for one in settings:
            url = f"http://127.0.0.1:{one.streams_web_port}/prefloop/health/"
            try:
                status, _, body = http_request("GET", url, timeout=5)
            except OSError:
                status, body = 0, ""
            assigned.append(set(json.loads(body)["assigned"]) if status == 200 else set())
        inputs = [{a for a in held if ".interactions:" in a} for held in assigned]
        if all(inputs) and sum(map(len, inputs)) == settings[0].topic_partitions:
            return assigned
        assert time.monotonic() < deadline, f"the workers did not split the partitions: {assigned}"
        time.sleep(0.5)
