"""``prefloop demo --tour``: every stage of the loop on the embedded stack, one by one.

Each stage prints what it did, on conversations of its own. The stack is brought up
when it is not running and brought down again at the end; a stack that was already up
is left up.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from prefloop import kafka
from prefloop.clickhouse.client import connect
from prefloop.errors import PrefloopError
from prefloop.event_client import feedback_client
from prefloop.infra.local_stack import LocalStack
from prefloop.loop.demo.serving import run_serving_stage
from prefloop.loop.demo.streams import run_streams_stage
from prefloop.loop.demo.training import register_base, run_training_stage
from prefloop.loop.demo.verdict import run_verdict_stage
from prefloop.ray_client import connect as connect_ray
from prefloop.ray_client import head_address
from prefloop.settings import Settings
from prefloop_sdk import encode
from prefloop_sdk.events import key_of


def run_tour(settings: Settings, console: Console) -> None:
    stack = LocalStack(settings, say=lambda line: console.print(f"  {line}"))
    console.rule("[bold]1. the local stack")
    t0 = time.monotonic()
    started = stack.up()
    console.print(f"  up in {time.monotonic() - t0:.1f} s")
    try:
        record = _kafka_round_trip(settings, console)
        _sdk_events(settings, console)
        _clickhouse_sink(settings, console, record)
        _ray_task(settings, console, record)
        register_base(settings, console)
        requests = run_streams_stage(settings, console)
        run_training_stage(settings, console, requests)
        run_serving_stage(settings, console)
        run_verdict_stage(settings, console)
    finally:
        if started:
            console.rule("[bold]down")
            stopped = stack.down()
            console.print(f"  stopped {', '.join(stopped)}")
        else:
            console.print("  the stack was up before the demo: left running")


def _kafka_round_trip(settings: Settings, console: Console) -> dict[str, object]:
    console.rule("[bold]2. an event through the broker")
    topic = settings.topics.interactions
    event: dict[str, Any] = {
        "interaction_id": str(uuid.uuid4()),
        "response_id": str(uuid.uuid4()),
        "regenerates": None,
        "conversation_id": f"demo-{uuid.uuid4().hex[:8]}",
        "turn": 0,
        "ts": int(time.time() * 1000),
        "user_id": "demo-user",
        "session_id": "demo-session",
        "experiment_id": None,
        "arm": None,
        "model_version": "base",
        "messages": [{"role": "user", "content": "Explain quantum computing"}],
        "response": "Quantum computing uses qubits ...",
        "latency_ms": 180,
        "prompt_tokens": 4,
        "completion_tokens": 6,
        "uncertainty": None,
        "metadata": {},
    }
    producer = kafka.producer(settings)
    value = encode("interaction", event)
    producer.produce(topic, key=key_of("interaction", event), value=value)
    producer.flush(30)

    def ours(records: list[tuple[str, Any, int, int]]) -> list[tuple[str, Any, int, int]]:
        return [
            item
            for item in records
            if isinstance(item[1], dict)
            and item[1].get("interaction_id") == event["interaction_id"]
        ]

    reader = kafka.TopicReader(settings, topic)
    try:
        found = reader.wait_for(lambda records: bool(ours(records)), 30, "the demo event")
    finally:
        reader.close()
    _, got, partition, offset = ours(found)[0]
    console.print(
        f"  produced {len(value)} bytes of Avro to {topic} and consumed them back from "
        f"partition {partition} offset {offset}: interaction {got['interaction_id']}"
    )
    return {"topic": topic, "partition": partition, "offset": offset, "event": got}


def _sdk_events(settings: Settings, console: Console) -> None:
    """A chat with every kind of signal, through the SDK, read back decoded from Kafka."""
    console.rule("[bold]3. the SDK: an interaction and every kind of feedback, as Avro")
    conversation = f"demo-{uuid.uuid4().hex[:8]}"
    prompt = [{"role": "user", "content": "Explain quantum computing in one line"}]
    with feedback_client(settings, name="demo") as client:
        first = client.interaction(
            user_id="u_demo",
            conversation_id=conversation,
            turn=0,
            messages=prompt,
            response="It is magic.",
            model_version="base",
            latency_ms=210,
            prompt_tokens=9,
            completion_tokens=4,
        )
        client.regenerate(first)
        second = client.interaction(
            user_id="u_demo",
            conversation_id=conversation,
            turn=0,
            messages=prompt,
            response="Qubits in superposition let some problems be solved faster.",
            model_version="base",
            latency_ms=250,
            prompt_tokens=9,
            completion_tokens=11,
            regenerates=first.response_id,
        )
        client.copy(second)
        client.rate(second, 5)
        client.thumbs(second, 1)
        client.continue_(second)
        client.edit(second, "Qubits in superposition speed up some problems.")
        client.report(first, "unhelpful")
        client.comment(second, "much better")
        client.session_end(second, 340)
        client.flush(30)
        stats = client.stats
    topics = [settings.topics.interactions, settings.topics.feedback]
    events = _read_conversation(settings, topics, conversation, expected=11)
    table = Table("topic", "type", "what", box=None)
    table.add_column("text", no_wrap=True, overflow="ellipsis", max_width=48)
    for topic, record_type, record in events:
        if record_type == "interaction":
            what = f"turn {record['turn']}" + (" (regenerated)" if record["regenerates"] else "")
            detail = record["response"]
        else:
            value = "" if record["value"] is None else f" {record['value']:g}"
            what, detail = f"{record['kind']}{value}", record["text"] or ""
        table.add_row(topic, record_type, what, str(detail))
    console.print(table)
    console.print(f"  SDK counters: {stats}")


def _read_conversation(
    settings: Settings, topics: list[str], conversation: str, expected: int
) -> list[tuple[str, str, dict[str, Any]]]:
    readers = [kafka.TopicReader(settings, topic) for topic in topics]

    def found() -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (reader.topic, str(record_type), record)
            for reader in readers
            for record_type, record, _, _ in reader.records
            if isinstance(record, dict) and record.get("conversation_id") == conversation
        ]

    deadline = time.monotonic() + 30
    try:
        while len(found()) < expected and time.monotonic() < deadline:
            for reader in readers:
                reader.poll(0.25)
    finally:
        for reader in readers:
            reader.close()
    return sorted(found(), key=lambda item: item[2]["ts"])


def _clickhouse_sink(settings: Settings, console: Console, record: dict[str, object]) -> None:
    console.rule("[bold]4. the sink: every topic into ClickHouse")
    client = connect(settings)
    query = (
        "SELECT record_type, event_id FROM raw_events FINAL WHERE topic = {t:String} "
        "AND partition = {p:UInt32} AND offset = {o:UInt64}"
    )
    params = {"t": record["topic"], "p": record["partition"], "o": record["offset"]}
    deadline = time.monotonic() + 60
    rows: list[Any] = []
    while not rows and time.monotonic() < deadline:
        rows = list(client.query(query, parameters=params).result_rows)
        time.sleep(0.5)
    if not rows:
        raise PrefloopError("the sink did not land the demo event in raw_events within 60 s")
    console.print(f"  the round-trip event is in raw_events: {rows[0][0]} {rows[0][1]}")
    counts = client.query(
        "SELECT topic, record_type, uniqExact(event_id) FROM raw_events FINAL "
        "GROUP BY topic, record_type ORDER BY topic"
    ).result_rows
    table = Table("topic", "record type", "events", box=None)
    for topic, record_type, count in counts:
        table.add_row(topic, record_type, str(count))
    console.print(table)


def _ray_task(settings: Settings, console: Console, record: dict[str, object]) -> None:
    import ray

    console.rule("[bold]5. a Ray task")
    connect_ray(settings)
    try:

        @ray.remote
        def words(text: str) -> int:
            return len(text.split())

        event = record["event"]
        assert isinstance(event, dict)
        count = ray.get(words.remote(str(event["response"])), timeout=60)
        console.print(f"  a task on {head_address(settings)} counted {count} words in the response")
    finally:
        ray.shutdown()
