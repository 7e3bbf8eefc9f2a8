"""Helpers of the client tests: read back every event on a topic, decoded."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.settings import Settings
from prefloop_sdk import decode


@dataclass(frozen=True)
class Event:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    record_type: str
    record: dict[str, Any]

    @property
    def event_id(self) -> str:
        for field in ("event_id", "interaction_id", "exposure_id"):
            if field in self.record:
                return str(self.record[field])
        raise KeyError("no id field")


def read_topics(
    settings: Settings, topics: list[str], expect: int, timeout: float = 30.0
) -> list[Event]:
    """Every message on ``topics``, once at least ``expect`` are there in all (or
    ``timeout`` passed), in topic, partition and offset order."""
    consumer = kafka.consumer(settings, f"sdk-test-{uuid.uuid4().hex}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            ends: dict[tuple[str, int], tuple[int, int]] = {}
            for topic in topics:
                metadata = consumer.list_topics(topic, timeout=10)
                for p in metadata.topics[topic].partitions:
                    tp = TopicPartition(topic, p)
                    low, high = consumer.get_watermark_offsets(tp, timeout=10)
                    if high > low:
                        ends[(topic, p)] = (low, high)
            held = sum(high - low for low, high in ends.values())
            if held >= expect or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        consumer.assign([TopicPartition(t, p, low) for (t, p), (low, _) in ends.items()])
        remaining = {tp: high for tp, (_, high) in ends.items()}
        events: list[Event] = []
        while remaining and time.monotonic() < deadline + 10:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            where = (msg.topic(), msg.partition())
            record_type, record = decode(msg.value())
            events.append(Event(where[0], where[1], msg.offset(), msg.key(), record_type, record))
            if msg.offset() + 1 >= remaining.get(where, 0):
                remaining.pop(where, None)
        return sorted(events, key=lambda e: (e.topic, e.partition, e.offset))
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 30.0) -> list[Event]:
    """Every message on one topic (see ``read_topics``)."""
    return read_topics(settings, [topic], expect, timeout)


def by_key(events: list[Event]) -> dict[bytes | None, list[Event]]:
    """Events grouped by key, each group in offset order (one key: one partition)."""
    groups: dict[bytes | None, list[Event]] = defaultdict(list)
    for event in events:
        groups[event.key].append(event)
    return groups
