"""FeedbackClient against a real Kafka broker: records, order, outages, kills, bounds, asyncio."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from client_helpers import Event, by_key, read_topic, read_topics

from prefloop import kafka
from prefloop.infra.testing import local_kafka
from prefloop.settings import Settings
from prefloop.testing import free_port
from prefloop_sdk import AsyncFeedbackClient, FeedbackClient, InteractionIds
from prefloop_sdk.ids import id_time_ms

pytestmark = pytest.mark.integration

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is Kafka?"},
]


def turn(conversation: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": f"user-{conversation}",
        "conversation_id": conversation,
        "session_id": "s-1",
        "turn": i,
        "messages": MESSAGES,
        "response": f"answer {i}",
        "model_version": "m-1",
        "latency_ms": 100 + i,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "metadata": {"seq": str(i)},
        **extra,
    }


def client_for(settings: Settings, spool: Path, **options: Any) -> FeedbackClient:
    return FeedbackClient(
        settings.bootstrap_servers, topic_prefix=settings.topic_prefix, spool_dir=spool, **options
    )


def assert_order_kept(events: list[Event]) -> None:
    """Within each conversation (key), events arrive in the order they were emitted."""
    for key, group in by_key(events).items():
        assert len({e.partition for e in group}) == 1, key
        seqs = [int(e.record["metadata"]["seq"]) for e in group]
        assert seqs == sorted(seqs), (key, seqs[:20])


def test_every_method_emits_a_record_that_decodes_with_its_fields(
    sdk_topics: Settings, spool: Path
) -> None:
    started = int(time.time() * 1000)
    with client_for(sdk_topics, spool) as client:
        ids = client.interaction(
            **turn("c-1", 0),
            experiment_id="exp-1",
            arm="candidate",
            uncertainty=0.25,
        )
        again = client.interaction(**turn("c-1", 0), regenerates=ids.response_id)
        expected = {
            "REGENERATE": (client.regenerate(ids), None, None),
            "COPY": (client.copy(ids, metadata={"via": "button"}), None, None),
            "RATING": (client.rate(again, 4), 4.0, None),
            "THUMBS": (client.thumbs(again, -1), -1.0, None),
            "CONTINUE": (client.continue_(again), None, None),
            "EDIT": (client.edit(again, "a better answer"), None, "a better answer"),
            "SESSION_END": (client.session_end(again, 312.5), 312.5, None),
            "REPORT": (client.report(again, "wrong"), None, "wrong"),
            "COMMENT": (client.comment(again, "nice"), None, "nice"),
        }
        exposure_id = client.emit(
            "exposure",
            {
                "experiment_id": "exp-1",
                "user_id": "user-c-1",
                "arm": "candidate",
                "model_version": "m-1",
                "bucket": 4242,
                "conversation_id": "c-1",
            },
        )
        assert client.flush(30) == 0
        stats = client.stats
    assert (stats.emitted, stats.delivered, stats.dropped, stats.failed) == (12, 12, 0, 0)
    ended = int(time.time() * 1000)

    interactions = read_topic(sdk_topics, sdk_topics.topics.interactions, 2)
    assert [e.record["interaction_id"] for e in interactions] == [
        ids.interaction_id,
        again.interaction_id,
    ]
    first, second = (e.record for e in interactions)
    assert first["experiment_id"] == "exp-1" and first["arm"] == "candidate"
    assert first["uncertainty"] == 0.25 and first["regenerates"] is None
    assert first["messages"] == MESSAGES and first["response"] == "answer 0"
    assert (first["latency_ms"], first["prompt_tokens"], first["completion_tokens"]) == (
        100,
        12,
        30,
    )
    assert first["response_id"] == ids.response_id != ids.interaction_id
    assert second["regenerates"] == ids.response_id
    assert all(e.key == b"c-1" and e.record_type == "interaction" for e in interactions)

    feedback = read_topic(sdk_topics, sdk_topics.topics.feedback, len(expected))
    assert len(feedback) == len(expected)
    for event in feedback:
        record = event.record
        event_id, value, text = expected[record["kind"]]
        about = ids if record["kind"] in ("REGENERATE", "COPY") else again
        assert record["event_id"] == event_id
        assert (record["value"], record["text"]) == (value, text)
        assert record["interaction_id"] == about.interaction_id
        assert record["response_id"] == about.response_id
        assert (record["conversation_id"], record["user_id"]) == ("c-1", "user-c-1")
        assert started <= record["ts"] <= ended
        assert id_time_ms(event_id) == record["ts"]
        assert event.key == b"c-1"
    assert next(e for e in feedback if e.record["kind"] == "COPY").record["metadata"] == {
        "via": "button"
    }

    (exposure,) = read_topic(sdk_topics, f"{sdk_topics.topic_prefix}.exposures", 1)
    assert exposure.record["exposure_id"] == exposure_id
    assert exposure.record["bucket"] == 4242 and exposure.key == b"c-1"


@pytest.mark.parametrize("durability", ["journal", "memory"])
def test_each_conversation_arrives_in_emit_order(
    sdk_topics: Settings, spool: Path, durability: str
) -> None:
    with client_for(sdk_topics, spool, durability=durability) as client:
        last: dict[str, InteractionIds] = {}
        for i in range(3000):
            conversation = f"c-{i % 37}"
            if i % 3 == 0 or conversation not in last:
                last[conversation] = client.interaction(**turn(conversation, i))
            else:
                client.rate(last[conversation], 1 + i % 5, metadata={"seq": str(i)})
        assert client.flush(30) == 0
    topics = [sdk_topics.topics.interactions, sdk_topics.topics.feedback]
    events = read_topics(sdk_topics, topics, 3000)
    assert len(events) == 3000 == len({e.event_id for e in events})
    # interactions and feedback live on two topics: check each topic's order
    for topic in (sdk_topics.topics.interactions, sdk_topics.topics.feedback):
        assert_order_kept([e for e in events if e.topic == topic])


def test_a_broker_down_at_emit_time_gets_everything_in_order_when_it_appears(
    tmp_path: Path, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    caplog.set_level(logging.WARNING, logger="prefloop_sdk")
    client = FeedbackClient(f"127.0.0.1:{port}", topic_prefix=prefix, spool_dir=spool)
    slowest = 0.0
    try:
        for wave in range(2):  # before and after the client learns the broker is down
            for i in range(wave * 300, wave * 300 + 300):
                started = time.perf_counter()
                client.interaction(**turn(f"c-{i % 11}", i))
                slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.5)
        stats = client.stats
        assert stats.emitted == 600 and stats.delivered == 0 and stats.dropped == 0
        assert stats.pending == 600 and stats.spooled >= 300 and not stats.connected
        assert stats.spool_bytes > 0
        # an emit that waited on the dead broker would take seconds (socket timeouts);
        # the bound is loose so that a busy machine does not fail it
        assert slowest < 2.0, f"an emit took {slowest * 1000:.1f} ms with the broker down"
        warnings = [r for r in caplog.records if "cannot reach" in r.getMessage()]
        assert len(warnings) == 1  # warned once, not per event

        with local_kafka(home=tmp_path / "late-broker", kafka_port=port) as late:
            settings = late.with_overrides(topic_prefix=prefix)
            kafka.ensure_topics(settings)
            assert client.flush(60) == 0
            assert client.stats.delivered == 600 and client.stats.connected
            events = read_topic(settings, settings.topics.interactions, 600)
    finally:
        client.close(timeout=0)
    assert len(events) == 600 == len({e.event_id for e in events})
    assert_order_kept(events)
    assert any("reachable again" in r.getMessage() for r in caplog.records)


CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from prefloop_sdk import FeedbackClient

    bootstrap, spool, prefix, first, count, durability = sys.argv[1:7]
    client = FeedbackClient(bootstrap, topic_prefix=prefix, spool_dir=spool,
                            durability=durability)
    last = {}
    for i in range(int(first), int(first) + int(count)):
        conversation = f"c{first}-{i % 23}"  # each process its own conversations
        if i % 4 == 0 or conversation not in last:
            last[conversation] = client.interaction(
                user_id="u-1", conversation_id=conversation, turn=i,
                messages=[{"role": "user", "content": "hi"}], response="hello",
                model_version="m-1", latency_ms=5, prompt_tokens=1, completion_tokens=1,
                metadata={"seq": str(i)})
        else:
            client.rate(last[conversation], 1 + i % 5, metadata={"seq": str(i)})
    print("emitted", flush=True)  # every emit call above has returned
    if sys.argv[7] == "self":
        os.kill(os.getpid(), signal.SIGKILL)  # at once: no time for any background work
    time.sleep(600)  # never closes: the test kills it
    """
)


@pytest.mark.parametrize("durability", ["journal", "memory"])
def test_events_of_a_sigkilled_process_are_delivered_by_the_next_one(
    sdk_topics: Settings, tmp_path: Path, spool: Path, durability: str
) -> None:
    """THE KILL TEST: two processes emit with the broker unreachable and are SIGKILLed
    once their emit calls returned (one by the test, one by itself the instant its
    last emit returned); one new client over the same spool_dir, broker up, delivers
    every event: its own slot's, and the other dead process's slot, adopted."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    dead = f"127.0.0.1:{free_port()}"
    per_child = 1000
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                dead,
                str(spool),
                sdk_topics.topic_prefix,
                str(n * per_child),
                str(per_child),
                durability,
                "self" if n else "parent",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.strip() == "emitted", child.stderr.read() if child.stderr else ""
    finally:
        for child in children:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    assert all(child.returncode == -signal.SIGKILL for child in children)

    with client_for(sdk_topics, spool) as client:
        assert client.stats.recovered == 2 * per_child
        assert client.flush(60) == 0
        assert client.stats.delivered >= 2 * per_child
    topics = [sdk_topics.topics.interactions, sdk_topics.topics.feedback]
    events = read_topics(sdk_topics, topics, 2 * per_child)
    distinct = {e.event_id for e in events}
    duplicates = len(events) - len(distinct)
    print(
        f"\nkill test ({durability}): emitted {2 * per_child}, distinct delivered "
        f"{len(distinct)}, duplicates for de-duplication to remove: {duplicates}"
    )
    assert len(distinct) == 2 * per_child
    seqs = {int(e.record["metadata"]["seq"]) for e in events}
    assert seqs == set(range(2 * per_child))
    for topic in (sdk_topics.topics.interactions, sdk_topics.topics.feedback):
        assert_order_kept([e for e in events if e.topic == topic])
    # nothing is left behind in any slot
    with client_for(sdk_topics, spool) as again:
        assert again.stats.recovered == 0


def test_a_full_spool_drops_and_counts_and_keeps_the_rest(
    sdk_topics: Settings, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="prefloop_sdk")
    dead = f"127.0.0.1:{free_port()}"
    client = FeedbackClient(
        dead, topic_prefix=sdk_topics.topic_prefix, spool_dir=spool, spool_max_bytes=64 * 1024
    )
    ids = InteractionIds("i-1", "r-1", "c-1", "u-1")
    deadline = time.monotonic() + 10
    while not any("cannot reach" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the client never noticed the broker is down"
        time.sleep(0.01)  # until then a full spool sends without it (stats.unjournaled)
    for i in range(2000):
        client.rate(ids, 1 + i % 5, metadata={"seq": str(i)})
    stats = client.stats
    assert stats.emitted == 2000 and stats.unjournaled == 0
    assert 0 < stats.dropped < 2000
    assert stats.spool_bytes <= 64 * 1024
    kept = stats.emitted - stats.dropped
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1
    client.close(timeout=0)

    with client_for(sdk_topics, spool) as live:
        assert live.stats.recovered == kept
        assert live.flush(30) == 0
    events = read_topic(sdk_topics, sdk_topics.topics.feedback, kept)
    seqs = [int(e.record["metadata"]["seq"]) for e in events]
    assert seqs == list(range(kept))  # the first ones kept, in order; the rest dropped


def test_the_asyncio_client_never_blocks_the_event_loop(sdk_topics: Settings, spool: Path) -> None:
    async def main() -> tuple[float, int, Any]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:  # how long the loop goes without running us
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        async with AsyncFeedbackClient(
            sdk_topics.bootstrap_servers, topic_prefix=sdk_topics.topic_prefix, spool_dir=spool
        ) as client:
            for i in range(500):
                ids = await client.interaction(**turn(f"c-{i % 5}", i))
                await client.thumbs(ids, 1 if i % 2 else -1, metadata={"seq": str(i)})
                if i % 50 == 0:
                    await asyncio.sleep(0)  # a request handler yields now and then
            left = await client.flush(30)  # waits in a thread: the ticker keeps ticking
            stats = client.stats
        stop.set()
        await tick
        return max(gaps), left, stats

    slowest_gap, left, stats = asyncio.run(main())
    assert left == 0 and stats.delivered == 1000
    assert slowest_gap < 0.25, f"the event loop stalled for {slowest_gap * 1000:.0f} ms"
    assert len(read_topic(sdk_topics, sdk_topics.topics.feedback, 500)) == 500


def test_memory_durability_keeps_what_close_could_not_deliver(
    sdk_topics: Settings, spool: Path
) -> None:
    # a linger of 1 s holds every event in librdkafka's memory for a while
    client = client_for(sdk_topics, spool, durability="memory", producer_config={"linger.ms": 1000})
    ids = client.interaction(**turn("c-0", 0))  # journaled: the broker is not reached yet
    assert client.flush(30) == 0 and client.stats.connected
    time.sleep(0.2)  # the client now produces directly, journaling nothing
    for i in range(1, 2001):
        client.rate(ids, 1 + i % 5, metadata={"seq": str(i)})
    assert client.stats.spooled == 1
    assert client.close(timeout=0) == 2000  # purged from librdkafka into the spool
    assert client.stats.spooled == 2001
    with client_for(sdk_topics, spool) as next_client:
        assert next_client.stats.recovered == 2000
        assert next_client.flush(30) == 0
    events = read_topic(sdk_topics, sdk_topics.topics.feedback, 2000)
    assert sorted(int(e.record["metadata"]["seq"]) for e in events) == list(range(1, 2001))


def test_under_steady_load_the_journal_is_trimmed_and_never_fills(
    sdk_topics: Settings, spool: Path
) -> None:
    """Journal durability writes every event to the spool: the watermark must follow the
    deliveries so delivered segments go, or a spool smaller than the traffic fills."""
    bound = 4 * 1024 * 1024
    client = client_for(sdk_topics, spool, spool_max_bytes=bound)
    segment_bytes = bound // 8
    ids = InteractionIds("i-1", "r-1", "c-1", "u-1")
    client.rate(ids, 5, metadata={"seq": "-1"})  # warm up: connection, producer id
    assert client.flush(30) == 0
    padding = "x" * 400
    most_segments = sent = 0
    # a steady stream the broker keeps up with, whatever the machine's speed: each
    # chunk is delivered before the next, so only a watermark that fails to follow the
    # deliveries (and to free their segments) can fill the spool
    while sent * 500 <= 4 * bound:
        for _ in range(250):
            client.rate(ids, 1 + sent % 5, metadata={"seq": str(sent), "pad": padding})
            sent += 1
        most_segments = max(most_segments, len(list(client.spool_slot.glob("seg-*.log"))))
        assert client.flush(30) == 0
    stats = client.stats
    assert client.flush(30) == 0
    client.close()
    traffic = sent * 500
    assert traffic > 3 * bound, f"only {traffic} bytes: the test proves nothing"
    assert stats.dropped == 0 and stats.unjournaled == 0
    assert most_segments <= bound // segment_bytes + 2
    assert client.stats.delivered == sent + 1
    events = read_topic(sdk_topics, sdk_topics.topics.feedback, sent + 1)
    assert [int(e.record["metadata"]["seq"]) for e in events] == list(range(-1, sent))
