"""Stream worker: events/s through the scoring agent vs a plain consume loop; latency.

Not a test: a measurement. One local broker; the same backlog of conversations (an
interaction, a regenerate, the regeneration, a copy, the session's end: five events
each) published once per run on fresh topics, then read by:

* a plain confluent-kafka loop doing the scoring agent's work with dicts for tables:
  decode, ``Scorer`` and ``ConversationPairMiner`` per conversation, and publish what
  the agent publishes (scores, pairs to two topics, the JSON hand-offs to the
  implicit, sampling and rolling agents), at-least-once with an idempotent producer;
* Faust's floor (``bench/faust_floor.py``): the worker's Faust app with one agent that
  discards each event, exactly once: the most any Faust design reaches here;
* the stream worker (``prefloop worker``, every agent running), exactly once with
  in-memory tables (the default), then with RocksDB tables, then at-least-once.

Events/s is the backlog over the time from the first partition assignment to the
consumer group's committed offsets reaching the end of both input topics.

Latency: SDK ``FeedbackClient`` emits (journal durability, the default) at half the
worker's measured rate: conversations of an interaction then a SESSION_END; the
latency of one is from the SESSION_END's emit to its ScoredInteraction arriving at a
read_committed consumer of the scores topic.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from common import machine, median, write_section
from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.infra.local_stack import worker_ready
from prefloop.infra.testing import StreamWorker, local_kafka
from prefloop.settings import Settings, child_environment
from prefloop.streams import rolling
from prefloop.streams.conversation_miner import ConversationPairMiner
from prefloop.streams.normalize import prompt_key
from prefloop.streams.scoring import Scorer
from prefloop.streams.topology import StreamTopics, app_id, ensure_stream_topics
from prefloop.testing import committed_past, free_port, fresh_topics
from prefloop_sdk import FeedbackClient, InteractionIds, decode, encode
from prefloop_sdk.events import key_of

FLOOR = Path(__file__).parent / "faust_floor.py"
CONVERSATIONS = 2000
EVENTS = 5 * CONVERSATIONS
ROUNDS = 3
LATENCY_S = 20.0


def publish_backlog(settings: Settings) -> None:
    producer = kafka.producer(settings)
    for i in range(CONVERSATIONS):
        conv, first, second = f"c{i}", f"c{i}-a", f"c{i}-b"
        messages = [{"role": "user", "content": f"How do I do task number {i}?"}]
        base = {
            "conversation_id": conv,
            "turn": 0,
            "ts": 1_790_000_000_000 + i,
            "user_id": f"u{i % 500}",
            "session_id": "s",
            "experiment_id": "exp",
            "arm": "A" if i % 2 else "B",
            "model_version": "v1",
            "messages": messages,
            "latency_ms": 100,
            "prompt_tokens": 10,
            "completion_tokens": 40,
            "uncertainty": None,
            "metadata": {},
        }
        records = [
            ("interaction", {**base, "interaction_id": f"i-{first}", "response_id": first,
                             "regenerates": None, "response": f"answer {i} " * 20}),
            ("feedback", _feedback("REGENERATE", first, f"{conv}-1", conv)),
            ("interaction", {**base, "interaction_id": f"i-{second}", "response_id": second,
                             "regenerates": first, "response": f"better answer {i} " * 20}),
            ("feedback", _feedback("COPY", second, f"{conv}-2", conv)),
            ("feedback", _feedback("SESSION_END", second, f"{conv}-3", conv, 120.0)),
        ]  # fmt: skip
        for record_type, record in records:
            producer.produce(
                settings.topics.for_record(record_type),
                encode(record_type, record),
                key_of(record_type, record),
            )
        producer.poll(0)
    producer.flush(60)


def _feedback(
    kind: str, rid: str, event_id: str, conv: str, value: float | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": 1_790_000_000_000,
        "kind": kind,
        "interaction_id": f"i-{rid}",
        "response_id": rid,
        "conversation_id": conv,
        "user_id": "u",
        "session_id": None,
        "value": value,
        "text": None,
        "metadata": {},
    }


def plain_loop(settings: Settings) -> float:
    """The scoring agent's work in a confluent-kafka loop with dicts; events/s."""
    t, st = settings.topics, StreamTopics.with_prefix(settings.topic_prefix)
    consumer = kafka.consumer(settings, f"plain-{time.monotonic_ns()}")
    consumer.subscribe([t.interactions, t.feedback])
    producer = kafka.producer(settings)
    scorer, miner = Scorer(), ConversationPairMiner()
    states: dict[str, Any] = {}
    pair_states: dict[str, Any] = {}
    send = partial(kafka.produce_waiting, producer)

    def pairs(found: list[dict[str, Any]]) -> None:
        for pair in found:
            value = encode("preference_pair", pair)
            send(t.preferences, value, key_of("preference_pair", pair))
            send(st.retrain_queue, value, pair["model_version"].encode())

    seen, started = 0, None
    while seen < EVENTS:
        for message in consumer.consume(1000, timeout=1.0):
            if message.error() is not None:
                continue
            started = started or time.perf_counter()
            seen += 1
            now = int(time.time() * 1000)
            record_type, record = decode(message.value())
            source = {"topic": message.topic(), "partition": message.partition(),
                      "offset": message.offset()}  # fmt: skip
            conv = record["conversation_id"]
            if record_type == "interaction":
                step = scorer.on_interaction(states.get(conv), record, now)
                mined = miner.on_interaction(pair_states.get(conv), record, now, source)
                pair_states[conv] = mined.state
                pairs(mined.pairs)
            else:
                step = scorer.on_feedback(states.get(conv), record, now, source)
            states[conv] = step.state
            for score in step.scores:
                send(t.scores, encode("scored_interaction", score), conv.encode())
                mined = miner.on_score(pair_states.get(conv), score, now, source)
                pair_states[conv] = mined.state
                pairs(mined.pairs)
                for scored in mined.scored:
                    text = json.dumps(scored).encode()
                    send(st.by_prompt, text, prompt_key(scored["messages"]).encode())
                    if scored["revision"] == 0:
                        send(st.sampling, text, b"sampler")
                if score["revision"] == 0:
                    send(st.rolling, json.dumps(score).encode(), rolling.metric_key(score).encode())
            producer.poll(0)
    producer.flush(60)
    consumer.close()
    assert started is not None
    return EVENTS / (time.perf_counter() - started)


def worker_run(settings: Settings, argv: list[str] | None = None) -> float:
    """The worker (or ``argv``: the floor) through the backlog; events/s from assignment
    to the last commit."""
    t = settings.topics
    probe = kafka.consumer(settings, app_id(settings))
    ends = {}
    for topic in (t.interactions, t.feedback):
        for p in range(settings.topic_partitions):
            ends[(topic, p)] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    worker = StreamWorker(settings)
    argv = argv or [sys.executable, "-m", "prefloop.loop.cli", "worker"]
    worker.process.start(argv, env=child_environment(settings))
    try:
        while not worker_ready(settings.streams_web_port):
            worker.check()
            time.sleep(0.05)
        started = time.perf_counter()
        while not committed_past(probe, ends):
            worker.check()
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
        probe.close()
    return EVENTS / elapsed


def latency(settings: Settings, rate: float) -> tuple[float, float, int]:
    """p50, p99 (ms) and the count, from SESSION_END emit to its score on the topic."""
    emitted: dict[str, float] = {}
    seen: list[float] = []
    stop = threading.Event()
    consumer = kafka.consumer(settings, f"latency-{time.monotonic_ns()}", **{
        "auto.offset.reset": "latest"})  # fmt: skip
    consumer.subscribe([settings.topics.scores])
    while not consumer.assignment():
        consumer.poll(0.1)

    def read() -> None:
        while not stop.is_set():
            for message in consumer.consume(500, timeout=0.2):
                if message.error() is not None:
                    continue
                arrived = time.perf_counter()
                _, score = decode(message.value())
                sent = emitted.get(score["response_id"])
                if sent is not None and score["settled_reason"] == "SESSION_END":
                    seen.append((arrived - sent) * 1000)

    reader = threading.Thread(target=read)
    reader.start()
    spool = Path(tempfile.mkdtemp(prefix="prefloop-bench-spool-"))
    client = FeedbackClient(
        settings.bootstrap_servers, topic_prefix=settings.topic_prefix, spool_dir=spool
    )
    interval = 2.0 / rate  # two events per conversation
    began = time.perf_counter()
    i = 0
    while time.perf_counter() - began < LATENCY_S:
        ids: InteractionIds = client.interaction(
            user_id=f"u{i}", conversation_id=f"lat-{i}", turn=0,
            messages=[{"role": "user", "content": f"latency probe {i}"}],
            response="an answer", model_version="v1", latency_ms=50,
            prompt_tokens=5, completion_tokens=5,
        )  # fmt: skip
        emitted[ids.response_id] = time.perf_counter()
        client.session_end(ids, 42.0)
        i += 1
        pause = began + i * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    client.flush()
    deadline = time.monotonic() + 30
    while len(seen) < i and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    reader.join()
    client.close()
    consumer.close()
    ordered = sorted(seen)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50, p99, len(ordered)


def main() -> None:
    with local_kafka() as broker, tempfile.TemporaryDirectory() as home:
        runs: dict[str, list[float]] = {
            "plain": [], "floor": [], "memory": [], "rocksdb": [], "alo": [],
        }  # fmt: skip
        variants = {
            "memory": {},
            "rocksdb": {"streams_store": "rocksdb"},
            "alo": {"streams_guarantee": "at_least_once"},
        }
        for round_ in range(ROUNDS):
            for name in ("plain", "floor", "memory", "rocksdb", "alo"):
                settings = fresh_topics(
                    broker,
                    home=Path(home) / f"{name}-{round_}",
                    streams_web_port=free_port(),
                    retrain_threshold=10**9,
                    **variants.get(name, {}),
                )
                ensure_stream_topics(settings)
                publish_backlog(settings)
                if name == "plain":
                    rate = plain_loop(settings)
                elif name == "floor":
                    rate = worker_run(settings, [sys.executable, str(FLOOR)])
                else:
                    rate = worker_run(settings)
                runs[name].append(rate)
                print(f"  round {round_}: {name} {rate:,.0f} events/s", flush=True)
        worker_rate = median(runs["memory"])
        settings = fresh_topics(
            broker, home=Path(home) / "latency", streams_web_port=free_port(),
            retrain_threshold=10**9,
        )  # fmt: skip
        worker = StreamWorker(settings).start()
        try:
            p50, p99, count = latency(settings, worker_rate / 2)
        finally:
            worker.stop()
        print(f"  latency at {worker_rate / 2:,.0f} events/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms")

    plain = median(runs["plain"])

    def row(label: str, name: str) -> str:
        values = runs[name]
        return (
            f"| {label} | {median(values):,.0f} | {median(values) / plain:.2f}x | "
            + ", ".join(f"{v:,.0f}" for v in values)
            + " |"
        )

    body = f"""
{machine()}. {CONVERSATIONS:,} conversations, {EVENTS:,} events (interaction, regenerate,
regeneration, copy, session end) published before each run on fresh topics of 6
partitions, one local broker; {ROUNDS} rounds, the variants in turn within each round.

| path | median events/s | vs plain loop | runs |
|---|---|---|---|
{row("plain confluent-kafka loop, the scoring agent's work with dicts", "plain")}
{row("Faust's floor: the worker's app, one agent discarding each event, exactly once", "floor")}
{row("`prefloop worker`, exactly once, in-memory tables (default)", "memory")}
{row("`prefloop worker`, exactly once, RocksDB tables", "rocksdb")}
{row("`prefloop worker`, at-least-once, in-memory tables", "alo")}

Target: the worker with in-memory tables at least 0.5x of the plain loop, or, where
Faust's floor (`bench/faust_floor.py`: the worker's own Faust app, same guarantee and
fixes, one agent that consumes the same topics and discards each event) is itself below
0.5x, at least 0.8x of that floor: {median(runs["memory"]) / median(runs["floor"]):.2f}x
of the floor here. The worker runs
every agent (scoring, implicit pairs, sampling, rolling windows, trigger) on the same two
cores, writes each table change to its changelog and commits a transaction per task
every second; the plain loop keeps its dicts in memory and writes nothing else.

End-to-end latency, SDK emit of a SESSION_END to its ScoredInteraction read by a
read_committed consumer, at half the worker's rate ({worker_rate / 2:,.0f} events/s),
{count:,} conversations over {LATENCY_S:.0f} s: **p50 {p50:.0f} ms, p99 {p99:.0f} ms**. An output is
visible when its transaction commits (every second); beyond that it is queueing: each
conversation here is two events whose scores fan out into hand-offs and changelog writes,
so half the backlog rate keeps the worker close to its capacity.

Where the worker's time goes: every input event becomes about ten Kafka messages (changelog
writes of two tables, the score, the hand-offs to the implicit, sampling and rolling agents,
which write their own tables), and Faust publishes its buffered messages one at a time from
a single task; at-least-once is slower still, as Faust flushes that buffer before each
commit. A sampled profile of the worker on this backlog (py-spy, 15 s at 50 Hz) puts about
half of its time in producing those messages (aiokafka's sender building and sending
produce requests 33 %, Faust's buffer handing each message to its transactional producer
16 %), 13 % in the fetch thread and 16 % in the agents, of which the scoring and pair logic
with the Avro codec is 6 %; the loop idles 17 %. A producer linger of 5 ms or a ten times
larger Faust buffer did not change the rate beyond run-to-run noise. Reaching the target
needs an output path that skips Faust's per-message producer machinery.
"""
    write_section("Stream worker: events/s vs a plain consume loop, and latency", body)
    print(body)


if __name__ == "__main__":
    main()
