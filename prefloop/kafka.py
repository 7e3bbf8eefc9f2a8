"""Kafka plumbing shared by every room: clients, topics, counts.

All clients are confluent-kafka (librdkafka) configured from
:meth:`Settings.kafka_client_config`, so SASL/SSL settings reach every one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from prefloop.errors import StackError
from prefloop.process import port_answers
from prefloop.settings import Settings
from prefloop_sdk import decode

# librdkafka's own log: its transient warnings (a coordinator still loading, a
# broker refusing while it starts) are noise to a user; errors still show.
librdkafka_log = logging.getLogger("prefloop.kafka.librdkafka")
librdkafka_log.setLevel(logging.ERROR)


def client_config(settings: Settings) -> dict[str, Any]:
    return {**settings.kafka_client_config(), "logger": librdkafka_log}


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def producer(settings: Settings, **overrides: Any) -> Producer:
    """A durable producer: idempotent, acks=all, lz4, batching by linger."""
    config: dict[str, Any] = {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        # the partitioner of Java clients, aiokafka and Faust (librdkafka defaults to CRC32):
        # one key lands in one partition whoever writes it, so co-partitioning holds
        "partitioner": "murmur2_random",
    }
    config.update(overrides)
    return Producer(config)


def produce_waiting(producer: Producer, topic: str, value: bytes, key: bytes | None = None) -> None:
    """``producer.produce``, waiting while its local queue is full (deliveries drain it)."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.001)


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    config: dict[str, Any] = {
        **client_config(settings),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
    config.update(overrides)
    return Consumer(config)


def broker_count(settings: Settings, timeout: float = 2.0) -> int:
    """How many brokers answer a metadata request (0 if none does in time)."""
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    if not port_answers(int(port), host or "127.0.0.1"):
        return 0  # nothing listens yet: spare librdkafka's connection-refused noise
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException:
        return 0
    return len(metadata.brokers)


def ensure_topics(
    settings: Settings,
    topics: Iterable[str] | None = None,
    timeout: float = 30.0,
    partitions: int | None = None,
    compact: bool = False,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created.

    Partitions (unless given), replication and retention come from the settings
    (``compact``: compacted, no retention, for a table's changelog); with a
    replication factor above 1, min.insync.replicas is 2 so that an acks=all
    write survives the loss of one broker.
    """
    names = list(topics) if topics is not None else settings.topics.all()
    replication = settings.replication_factor
    config = {
        "retention.ms": str(settings.topic_retention_hours * 3600 * 1000),
        "min.insync.replicas": str(2 if replication > 1 else 1),
    }
    if compact:  # a table's changelog: the latest value per key, kept
        config = {"cleanup.policy": "compact", "min.insync.replicas": config["min.insync.replicas"]}
    new = [
        NewTopic(
            name,
            num_partitions=partitions or settings.topic_partitions,
            replication_factor=replication,
            config=config,
        )
        for name in names
    ]
    created = []
    client = admin_client(settings)  # held: a collected client cancels its futures
    futures = client.create_topics(new, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise StackError(f"could not create topic {name}: {error}") from exc
    _wait_for_leaders(client, names, timeout)
    topic_message_counts(settings, names, timeout)  # every leader answers a fetch, too
    return created


def _wait_for_leaders(client: AdminClient, names: list[str], timeout: float) -> None:
    """Block until every partition of ``names`` has a leader (new topics need a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = client.list_topics(timeout=timeout)
        pending = [
            name
            for name in names
            if name not in metadata.topics
            or metadata.topics[name].error is not None
            or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise StackError(f"topics without a partition leader after {timeout:.0f} s: {pending}")
        time.sleep(0.1)


_RETRIABLE = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TRANSPORT,
}


def watermarks(client: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """Low and high watermarks, retried while a new or moved leader settles in."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = client.get_watermark_offsets(partition, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            retriable = isinstance(error, KafkaError) and error.code() in _RETRIABLE
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def topic_message_counts(
    settings: Settings, topics: Iterable[str], timeout: float = 5.0
) -> dict[str, int | None]:
    """Messages held per topic (high minus low watermark, summed over partitions).

    None for a topic that does not exist.
    """
    client = consumer(settings, group_id="prefloop-status")
    try:
        metadata = client.list_topics(timeout=timeout)
        counts: dict[str, int | None] = {}
        for name in topics:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                counts[name] = None
                continue
            total = 0
            for partition in topic.partitions:
                low, high = watermarks(client, TopicPartition(name, partition), timeout)
                total += high - low
            counts[name] = total
        return counts
    finally:
        client.close()


class TopicReader:
    """Every record on a topic, from the start, as a read_committed consumer sees them.

    ``records`` holds ``(record_type, record, partition, offset)``; values that are not
    Avro single-object events (the worker's JSON topics) are kept as bytes.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.records: list[tuple[str, Any, int, int]] = []
        self._consumer = consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])

    def poll(self, seconds: float = 0.5) -> list[tuple[str, Any, int, int]]:
        """Read what arrived within ``seconds``; returns the new records."""
        new: list[tuple[str, Any, int, int]] = []
        for message in self._consumer.consume(10_000, timeout=seconds):
            if message.error() is not None:
                continue
            value = message.value() or b""
            record: Any
            try:
                record_type, record = decode(value)
            except Exception:
                record_type, record = "", value
            new.append((record_type, record, message.partition() or 0, message.offset() or 0))
        self.records += new
        return new

    def wait_for(
        self,
        done: Callable[[list[tuple[str, Any, int, int]]], bool],
        timeout: float,
        what: str,
        watch: Callable[[], None] | None = None,
    ) -> list[tuple[str, Any, int, int]]:
        """Poll until ``done(records)``; an AssertionError naming ``what`` after ``timeout``.

        ``watch`` is called on every round (e.g. ``StreamWorker.check``).
        """
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if watch is not None:
                watch()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not arrive on {self.topic} in {timeout:.0f} s; "
                    f"{len(self.records)} records there: {self.records!r:.2000}"
                )
            self.poll()
        return self.records

    def settle(self, quiet_s: float = 3.0) -> list[tuple[str, Any, int, int]]:
        """Read until nothing new arrives for ``quiet_s`` seconds."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            if self.poll():
                quiet_since = time.monotonic()
        return self.records

    def close(self) -> None:
        self._consumer.close()
