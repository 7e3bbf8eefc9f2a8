"""The produce/consume round trip and the three-node cluster, on real brokers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import KafkaError

from prefloop import kafka
from prefloop.infra.kafka_broker import KafkaCluster
from prefloop.infra.testing import local_kafka
from prefloop.settings import Settings
from prefloop.testing import fresh_topics


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.1)


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 60) -> list[bytes]:
    consumer = kafka.consumer(settings, group_id=f"test-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            values.append(message.value())
    finally:
        consumer.close()
    return values


def test_round_trip_keeps_every_record_and_per_key_order(settings: Settings) -> None:
    topic = settings.topics.interactions
    producer = kafka.producer(settings)
    sent = [(f"conv-{i % 5}", f"{i}".encode()) for i in range(500)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    values = consume_all(settings, topic, len(sent))
    assert sorted(values, key=int) == [v for _, v in sent]
    counts = kafka.topic_message_counts(settings, [topic, "no-such-topic"])
    assert counts == {topic: 500, "no-such-topic": None}


def test_topics_get_their_settings(settings: Settings) -> None:
    metadata = kafka.admin_client(settings).list_topics(timeout=10)
    for name in settings.topics.all():
        assert len(metadata.topics[name].partitions) == settings.topic_partitions
    assert kafka.ensure_topics(settings) == []  # idempotent


def test_three_node_cluster_loses_no_acknowledged_record_when_a_broker_dies() -> None:
    with local_kafka(nodes=3) as cluster_settings:
        settings = fresh_topics(cluster_settings, topic_partitions=3)
        topic = settings.topics.preferences
        acked: set[bytes] = set()
        failed: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, message: object) -> None:
            if error is None:
                acked.add(message.value())  # type: ignore[attr-defined]
            else:
                failed.append(error)

        producer = kafka.producer(settings, **{"delivery.timeout.ms": 60000})
        stop = threading.Event()

        def produce_forever() -> None:
            i = 0
            while not stop.is_set():
                producer.produce(
                    topic, key=str(i % 7), value=f"{i}".encode(), on_delivery=on_delivery
                )
                producer.poll(0)
                i += 1
                time.sleep(0.002)

        writer = threading.Thread(target=produce_forever)
        writer.start()
        try:
            # a fresh cluster takes a while to hand out producer ids: wait for real acks
            wait_for(lambda: len(acked) >= 200, 90, "acknowledgements before the kill")
            victim = KafkaCluster(settings).nodes[1]
            victim.process.kill()  # SIGKILL: no controlled shutdown
            killed_at = len(acked)
            wait_for(lambda: len(acked) >= killed_at + 500, 90, "acknowledgements after the kill")
        finally:
            stop.set()
            writer.join()
        assert producer.flush(60) == 0
        assert killed_at > 0
        assert len(acked) > killed_at, "the cluster stopped acknowledging after losing one broker"
        values = set(consume_all(settings, topic, len(acked), timeout=90))
        assert acked <= values, f"{len(acked - values)} acknowledged records were lost"
