"""Kafka produce rate: confluent-kafka from one Python process vs Kafka's own tool.

Both produce the same 500-byte records to the same local broker with the same
producer settings (acks=all, idempotence, lz4, linger 5 ms), alternating,
ROUNDS times each; the result is the ratio of the medians. Also measured:
the time `prefloop up` takes with the jars cached, and `down`.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import median, write_section

from prefloop import kafka
from prefloop.infra.kafka_broker import java_binary
from prefloop.infra.local_stack import LocalStack
from prefloop.infra.testing import local_kafka
from prefloop.settings import Settings
from prefloop.testing import fresh_topics, isolated_settings

RECORDS = int(os.environ.get("BENCH_KAFKA_RECORDS", "200000"))
RECORD_SIZE = 500
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BIG_BATCHES = {"batch.size": "1048576"}
PRODUCER = {
    "acks": "all",
    "enable.idempotence": "true",
    "compression.type": "lz4",
    "linger.ms": "5",
}


def python_rate(settings: Settings, topic: str) -> float:
    producer = kafka.producer(settings, **PRODUCER)
    # the payload ProducerPerformance sends: random capital letters, drawn once
    payload = bytes(random.randint(65, 90) for _ in range(RECORD_SIZE))
    started = time.perf_counter()
    for _ in range(RECORDS):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.001)  # the local queue is full: let deliveries drain it
    producer.poll(0)
    assert producer.flush(120) == 0
    return RECORDS / (time.perf_counter() - started)


def java_rate(settings: Settings, topic: str, **extra: str) -> float:
    props = [f"{key}={value}" for key, value in {**PRODUCER, **extra}.items()]
    done = subprocess.run(
        [
            java_binary(),
            "-Xmx512m",
            "-cp",
            str(settings.kafka_libs / "*"),
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(RECORDS),
            "--record-size",
            str(RECORD_SIZE),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={settings.bootstrap_servers}",
            *props,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    final = [line for line in done.stdout.splitlines() if f"{RECORDS} records sent" in line][-1]
    match = re.search(r"([\d.]+) records/sec", final)
    assert match, final
    return float(match.group(1))


def up_times() -> tuple[list[float], list[float]]:
    ups, downs = [], []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as home:
            stack = LocalStack(
                isolated_settings(Path(home), ray_object_store_mb=128), say=lambda _: None
            )
            started = time.perf_counter()
            stack.up()
            ups.append(time.perf_counter() - started)
            started = time.perf_counter()
            stack.down()
            downs.append(time.perf_counter() - started)
    return ups, downs


def main() -> None:
    python: list[float] = []
    java: list[float] = []
    java_big: list[float] = []
    with local_kafka() as broker:
        for _ in range(ROUNDS):
            settings = fresh_topics(broker, topic_partitions=6)
            java.append(java_rate(settings, settings.topics.interactions))
            # librdkafka batches up to 1 MB by default, Java's producer 16 KB
            java_big.append(java_rate(settings, settings.topics.scores, **BIG_BATCHES))
            python.append(python_rate(settings, settings.topics.feedback))
            print(
                f"  round: java {java[-1]:,.0f}, java 1 MB batches {java_big[-1]:,.0f}, "
                f"python {python[-1]:,.0f} records/s"
            )
    ratio = median(python) / median(java)
    ratio_big = median(python) / median(java_big)

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:,.0f}" for v in values)

    table = "\n".join(
        f"| {name} | {median(values):,.0f} | {runs(values)} |"
        for name, values in [
            ("Kafka's ProducerPerformance (same jars), its default 16 KB batches", java),
            ("Kafka's ProducerPerformance, batch.size 1 MB (librdkafka's default)", java_big),
            ("confluent-kafka, one Python process", python),
        ]
    )
    ups, downs = up_times()
    body = f"""
Kafka produce rate, {RECORDS:,} records of {RECORD_SIZE} B per run, {ROUNDS} alternating runs
each, one local KRaft broker, producer settings acks=all, idempotence on, lz4, linger 5 ms.

| producer | median records/s | runs |
|---|---|---|
{table}

Ratio Python / Java: **{ratio:.2f}x** against the tool's defaults, **{ratio_big:.2f}x** with equal
batch sizes (target at least 0.7x). The Java tool runs in a fresh JVM each time, so its rate
includes JIT warm-up over the {RECORDS:,} records.

`prefloop up` with the jars cached (Kafka, the embedded ClickHouse owner, a Ray head, topics
created), from an empty state directory: median {median(ups):.1f} s (runs
{", ".join(f"{v:.1f}" for v in ups)}); `prefloop down`: median {median(downs):.1f} s.
"""
    write_section("Kafka: produce rate and stack start", body)
    print(body)


if __name__ == "__main__":
    main()
