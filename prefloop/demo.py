"""The main job, ``prefloop demo``: every stage of the loop on the embedded stack.

Each stage prints what it did. The stack is brought up when it is not running
and brought down again at the end; a stack that was already up is left up.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime

from rich.console import Console

from prefloop import kafka
from prefloop.clickhouse.client import connect
from prefloop.settings import Settings
from prefloop.stack.local import LocalStack
from prefloop.stack.ray import head_address


def run_demo(settings: Settings, console: Console) -> None:
    stack = LocalStack(settings, say=lambda line: console.print(f"  {line}"))
    console.rule("[bold]1. the local stack")
    t0 = time.monotonic()
    started = stack.up()
    console.print(f"  up in {time.monotonic() - t0:.1f} s")
    try:
        record = _kafka_round_trip(settings, console)
        _clickhouse_round_trip(settings, console, record)
        _ray_task(settings, console, record)
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
    event = {
        "interaction_id": str(uuid.uuid4()),
        "conversation_id": f"demo-{uuid.uuid4().hex[:8]}",
        "user_id": "demo-user",
        "ts": datetime.now(UTC).isoformat(),
        "messages": [{"role": "user", "content": "Explain quantum computing"}],
        "response": "Quantum computing uses qubits ...",
    }
    producer = kafka.producer(settings)
    producer.produce(topic, key=str(event["conversation_id"]), value=json.dumps(event))
    producer.flush(30)
    consumer = kafka.consumer(settings, group_id=f"prefloop-demo-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = message.value()
            if value is None:
                continue
            got = json.loads(value)
            if got["interaction_id"] != event["interaction_id"]:
                continue
            console.print(
                f"  produced to {topic} and consumed back from partition "
                f"{message.partition()} offset {message.offset()}: {got['interaction_id']}"
            )
            return {
                "topic": topic,
                "partition": message.partition(),
                "offset": message.offset(),
                "key": got["conversation_id"],
                "value": value.decode(),
                "event": got,
            }
    finally:
        consumer.close()
    raise RuntimeError(f"the event sent to {topic} did not come back within 30 s")


def _clickhouse_round_trip(settings: Settings, console: Console, record: dict[str, object]) -> None:
    console.rule("[bold]3. the event into ClickHouse and back")
    client = connect(settings)
    client.insert(
        "raw_events",
        [
            [
                record["topic"],
                record["partition"],
                record["offset"],
                record["key"],
                record["value"],
                datetime.now(UTC),
            ]
        ],
        column_names=["topic", "partition", "offset", "key", "value", "ts"],
    )
    rows = client.query(
        "SELECT topic, partition, offset, JSONExtractString(value, 'user_id') "
        "FROM raw_events FINAL WHERE topic = {t:String} AND offset = {o:UInt64} "
        "AND partition = {p:UInt32}",
        parameters={"t": record["topic"], "o": record["offset"], "p": record["partition"]},
    ).result_rows
    console.print(f"  wrote raw_events and read back {rows}")


def _ray_task(settings: Settings, console: Console, record: dict[str, object]) -> None:
    import ray

    console.rule("[bold]4. a Ray task")
    ray.init(address=head_address(settings), logging_level=logging.ERROR, log_to_driver=False)
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
