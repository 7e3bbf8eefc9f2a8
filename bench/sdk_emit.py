"""SDK emit rate vs raw confluent-kafka producing the same pre-encoded events.

Not a test: a measurement. Starts a local KRaft broker (prefloop.testing), then for
each event kind (interaction, feedback) alternates ROUNDS runs of

* raw: one confluent-kafka Producer with the client's settings producing the events'
  pre-encoded bytes and keys (encoding done before the clock starts), then flush;
* the SDK, durability "journal" and "memory": ``FeedbackClient.interaction`` /
  ``.rate`` with the same field values, then ``flush``.

Each time includes the final flush (every event acknowledged). Prints medians and the
ratio SDK / raw. The broker runs on the same machine, so the numbers are shared-CPU
numbers: read the ratios, not the absolute rates.

Run: ``make bench`` or ``.venv/bin/python bench/run.py sdk_emit`` (``BENCH_EVENTS``,
``BENCH_ROUNDS`` change the sizes); the table goes to bench/RESULTS.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any

from common import write_section
from confluent_kafka import Producer

from prefloop.infra.testing import local_kafka
from prefloop.testing import fresh_topics
from prefloop_sdk import Codec, FeedbackClient, InteractionIds
from prefloop_sdk.delivery import PRODUCER_DEFAULTS

EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Explain the difference between a process and a thread. " * 3},
]
RESPONSE = "A process has its own address space; threads share their process's memory. " * 4


def interaction_args(i: int) -> dict[str, Any]:
    return {
        "user_id": f"user-{i % 5000}",
        "conversation_id": f"conv-{i % 20000}",
        "session_id": f"sess-{i % 5000}",
        "turn": i % 7,
        "messages": MESSAGES,
        "response": RESPONSE,
        "model_version": "m-2026-11-01",
        "latency_ms": 800 + i % 300,
        "prompt_tokens": 60,
        "completion_tokens": 80,
        "experiment_id": "exp-7",
        "arm": "control" if i % 2 else "candidate",
        "metadata": {"client": "web"},
    }


def ids_of(i: int) -> InteractionIds:
    return InteractionIds(
        f"0195f3c2-7d1e-7a3b-8c4d-{i:012x}",
        f"0195f3c2-7d1e-7a3b-9c4d-{i:012x}",
        f"conv-{i % 20000}",
        f"user-{i % 5000}",
    )


def pre_encoded(kind: str) -> list[tuple[bytes, bytes]]:
    """The same events as the SDK emits, encoded by the codec before timing."""
    codec = Codec()
    out = []
    for i in range(EVENTS):
        if kind == "interaction":
            a = interaction_args(i)
            record = {
                **a,
                "interaction_id": f"0195f3c2-7d1e-7a3b-8c4d-{i:012x}",
                "response_id": f"0195f3c2-7d1e-7a3b-9c4d-{i:012x}",
                "ts": 1767225600000 + i,
            }
            out.append((a["conversation_id"].encode(), codec.encode("interaction", record)))
        else:
            ids = ids_of(i)
            record = {
                "event_id": f"0195f3c2-7d1e-7a3b-ac4d-{i:012x}",
                "ts": 1767225600000 + i,
                "kind": "RATING",
                "interaction_id": ids.interaction_id,
                "response_id": ids.response_id,
                "conversation_id": ids.conversation_id,
                "user_id": ids.user_id,
                "value": float(1 + i % 5),
            }
            out.append((ids.conversation_id.encode(), codec.encode("feedback", record)))
    return out


def raw_rate(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": bootstrap})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    produce = producer.produce
    started = time.perf_counter()
    for key, value in events:
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.001)
    producer.poll(0)
    assert producer.flush(120) == 0
    return len(events) / (time.perf_counter() - started)


def sdk_rate(bootstrap: str, prefix: str, kind: str, durability: str) -> tuple[float, Any]:
    with tempfile.TemporaryDirectory() as spool:
        client = FeedbackClient(
            bootstrap,
            topic_prefix=prefix,
            spool_dir=spool,
            durability=durability,  # type: ignore[arg-type]
        )
        client.rate(ids_of(0), 5)  # warm-up: connection, producer id
        assert client.flush(30) == 0
        if kind == "interaction":
            args = [interaction_args(i) for i in range(EVENTS)]
            emit = client.interaction
            started = time.perf_counter()
            for a in args:
                emit(**a)
        else:
            all_ids = [ids_of(i) for i in range(EVENTS)]
            rate = client.rate
            started = time.perf_counter()
            for i, ids in enumerate(all_ids):
                rate(ids, 1 + i % 5)
        emitted = time.perf_counter() - started
        left = client.flush(120)
        total = time.perf_counter() - started
        assert left == 0, client.stats
        stats = client.stats
        client.close()
    return EVENTS / total, (EVENTS / emitted, stats)


def main() -> None:
    print(
        f"{EVENTS:,} events per run, {ROUNDS} rounds, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    rows = []
    with local_kafka() as base:
        settings = fresh_topics(base)
        for kind in ("feedback", "interaction"):
            topic = (
                settings.topics.interactions if kind == "interaction" else settings.topics.feedback
            )
            events = pre_encoded(kind)
            size = statistics.mean(len(v) for _, v in events)
            raw_rate(settings.bootstrap_servers, topic, events)  # warm-up, not counted
            rates: dict[str, list[float]] = {"raw": [], "journal": [], "memory": []}
            calls: dict[str, list[float]] = {"journal": [], "memory": []}
            for _ in range(ROUNDS):
                rates["raw"].append(raw_rate(settings.bootstrap_servers, topic, events))
                for mode in ("journal", "memory"):
                    rate, (call_rate, _stats) = sdk_rate(
                        settings.bootstrap_servers, settings.topic_prefix, kind, mode
                    )
                    rates[mode].append(rate)
                    calls[mode].append(call_rate)
            raw = statistics.median(rates["raw"])
            print(f"\n{kind} events, {size:.0f} B encoded")
            print(
                f"  raw confluent-kafka, pre-encoded: {raw:>9,.0f} ev/s  runs {_fmt(rates['raw'])}"
            )
            rows.append(
                f"| {kind}, {size:.0f} B | raw producer, pre-encoded | {raw:,.0f} | 1.00x "
                f"| {_fmt(rates['raw'])} |"
            )
            for mode in ("journal", "memory"):
                med = statistics.median(rates[mode])
                rows.append(
                    f"| {kind}, {size:.0f} B | SDK, durability={mode} | {med:,.0f} | "
                    f"**{med / raw:.2f}x** | {_fmt(rates[mode])} |"
                )
                print(
                    f"  SDK durability={mode:<8}: {med:>9,.0f} ev/s  ratio {med / raw:.2f}  "
                    f"runs {_fmt(rates[mode])}  (emit calls alone "
                    f"{statistics.median(calls[mode]):,.0f}/s)"
                )

    table = "\n".join(rows)
    write_section(
        "Python SDK: emit rate vs raw producer",
        f"""
{EVENTS:,} events per run, {ROUNDS} alternating runs, one local broker on the same 2 cores;
each rate includes the final flush (every event acknowledged). The SDK builds, validates,
stamps ids, encodes and produces each event; durability=journal also writes it to the
memory-mapped journal before `emit` returns and tracks its delivery.

| events | path | median events/s | vs raw | runs |
|---|---|---|---|---|
{table}

Target: at least 0.5x raw.
""",
    )


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


if __name__ == "__main__":
    main()
