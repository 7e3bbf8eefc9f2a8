"""Python SDK emit rate vs raw confluent-kafka producing pre-encoded bytes.

The same feedback events, to the same local broker: the raw baseline produces
the already encoded bytes with the same producer settings (idempotent,
acks=all, lz4, linger); the SDK builds, validates, encodes, journals and
produces each one. Rates include the final flush. ROUNDS alternating runs.
"""

from __future__ import annotations

import os
import tempfile
import time

from common import median, write_section

from prefloop import kafka
from prefloop.testing import fresh_topics, local_kafka
from prefloop_sdk import FeedbackClient, encode

N = int(os.environ.get("BENCH_SDK_N", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def raw_rate(settings: kafka.Settings, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = kafka.producer(settings, **{"linger.ms": 10})
    started = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.001)
    assert producer.flush(120) == 0
    return len(payloads) / (time.perf_counter() - started)


def sdk_rate(settings: kafka.Settings, durability: str) -> float:
    with tempfile.TemporaryDirectory() as spool:
        client = FeedbackClient(settings.bootstrap_servers, topic_prefix=settings.topic_prefix,
                                spool_dir=spool, durability=durability)  # type: ignore[arg-type]
        started = time.perf_counter()
        for i in range(N):
            client.rate(user_id="u-1", conversation_id=f"c-{i % 97}", interaction_id=f"i-{i}",
                        response_id=f"r-{i}", rating=1 + i % 5)
        client.flush(120)
        elapsed = time.perf_counter() - started
        stats = client.stats
        client.close()
    assert stats.delivered >= N, stats
    return N / elapsed


def main() -> None:
    rates: dict[str, list[float]] = {"raw": [], "journal": [], "memory": []}
    with local_kafka() as broker:
        for _ in range(ROUNDS):
            settings = fresh_topics(broker)
            payloads = []
            for i in range(N):
                record = {"event_id": f"e-{i}", "ts": 1767225600000 + i, "kind": "RATING",
                          "interaction_id": f"i-{i}", "response_id": f"r-{i}",
                          "conversation_id": f"c-{i % 97}", "user_id": "u-1",
                          "session_id": None, "value": float(1 + i % 5), "text": None,
                          "metadata": {}}
                payloads.append((record["conversation_id"].encode(), encode("feedback", record)))
            rates["raw"].append(raw_rate(settings, settings.topics.scores, payloads))
            rates["journal"].append(sdk_rate(settings, "journal"))
            rates["memory"].append(sdk_rate(settings, "memory"))
            print("  round: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
    raw = median(rates["raw"])
    rows = "\n".join(
        f"| {label} | {median(rates[key]):,.0f} | {median(rates[key]) / raw:.2f}x | "
        f"{', '.join(f'{v:,.0f}' for v in rates[key])} |"
        for key, label in [
            ("raw", "raw confluent-kafka, pre-encoded bytes"),
            ("journal", "SDK `rate()`, durability=journal (default)"),
            ("memory", "SDK `rate()`, durability=memory"),
        ]
    )
    body = f"""
{N:,} feedback events per run, {ROUNDS} alternating runs, one local broker; the SDK builds,
validates, stamps ids, encodes, journals (journal mode) and produces each event.

| path | median events/s | vs raw | runs |
|---|---|---|---|
{rows}

Target: the SDK at least 0.5x raw.
"""
    write_section("Python SDK: emit rate vs raw producer", body)
    print(body)


if __name__ == "__main__":
    main()
