"""How far the ClickHouse sink is behind on its topics, read from the broker.

The sink commits its offsets only after the insert returned, so what lies below the
committed offsets of its consumer group is in ClickHouse and what lies above is not.
Per topic, :func:`sink_lag` gives the records not committed yet (the high watermark
minus the committed offset, summed over partitions; a partition the group never
committed counts from its low watermark) and the age of the oldest of them: the
record at each lagging partition's committed offset, the oldest across partitions.

Those records are read by a throwaway consumer that assigns itself the partitions:
it never joins the sink's group nor commits, so measuring moves nothing. It reads
them as the sink does (read_committed): a transaction's commit marker takes an
offset the sink never commits past, so a partition where nothing is left to read
but markers (or aborted records) is not behind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from prefloop import kafka
from prefloop.analytics.exceptions import SinkLagError
from prefloop.analytics.sink import sink_group
from prefloop.settings import Settings

__all__ = ["SinkLagError", "TopicLag", "sink_lag"]

Partition = tuple[str, int]  # topic, partition
Span = tuple[int, int]  # the first offset not consumed, the high watermark

# one record per partition is all the reader needs: keep its fetches small
_READER = {
    "enable.partition.eof": True,
    "max.partition.fetch.bytes": str(64 << 10),
    "queued.max.messages.kbytes": str(1 << 10),
}


@dataclass(frozen=True)
class TopicLag:
    """How far the sink is behind on one topic."""

    topic: str
    events: int  # offsets the sink has not committed yet (a transaction marker takes one)
    oldest_s: float  # age of the oldest of them by its Kafka timestamp, in s; 0.0: none


def sink_lag(
    settings: Settings, topics: Iterable[str], timeout: float = 10.0
) -> dict[str, TopicLag]:
    """How far the sink's consumer group (:func:`sink_group`) is behind on each of
    ``topics``."""
    names = list(topics)
    group = sink_group(settings)
    reader = kafka.consumer(settings, f"prefloop-lag-{uuid.uuid4().hex[:8]}", **_READER)
    try:
        spans = _spans(settings, reader, group, names, timeout)
        lagging = {tp: span for tp, span in spans.items() if span[1] > span[0]}
        firsts = _first_records(reader, lagging, timeout)
    except KafkaException as exc:
        raise SinkLagError(
            f"could not read how far consumer group {group} is behind on "
            f"{', '.join(names)} from the broker: {exc.args[0]}"
        ) from exc
    finally:
        reader.close()
    now_ms = time.time() * 1000
    lags = {name: TopicLag(name, 0, 0.0) for name in names}
    for (topic, partition), timestamp_ms in firsts.items():
        if timestamp_ms is None:
            continue  # nothing the sink would read: markers or aborted records only
        start, high = lagging[(topic, partition)]
        age_s = max(now_ms - timestamp_ms, 0.0) / 1000
        seen = lags[topic]
        lags[topic] = TopicLag(topic, seen.events + high - start, max(seen.oldest_s, age_s))
    return lags


def _spans(
    settings: Settings, reader: Consumer, group: str, names: list[str], timeout: float
) -> dict[Partition, Span]:
    """Each partition's first offset the group has not consumed, and its high watermark."""
    admin = kafka.admin_client(settings)
    metadata = admin.list_topics(timeout=timeout)
    partitions = []
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            raise SinkLagError(
                f"topic {name} is not on the broker, so the sink's lag on it cannot be read: "
                "check PREFLOOP_TOPIC_PREFIX, or create the topics with `prefloop up`"
            )
        partitions += [TopicPartition(name, p) for p in sorted(topic.partitions)]
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=timeout)
    spans = {}
    for committed in futures[group].result().topic_partitions:
        if committed.error is not None:
            raise KafkaException(committed.error)
        partition = TopicPartition(committed.topic, committed.partition)
        low, high = kafka.watermarks(reader, partition, timeout)
        # no commit (a negative offset) or one below what retention kept: the sink
        # starts from the low watermark (auto.offset.reset=earliest)
        spans[(committed.topic, committed.partition)] = (max(committed.offset, low), high)
    return spans


def _first_records(
    reader: Consumer, lagging: dict[Partition, Span], timeout: float
) -> dict[Partition, float | None]:
    """The timestamp (ms) of the first record the group has not consumed, per lagging
    partition; None where the read finds nothing before the end."""
    if not lagging:
        return {}
    reader.assign([TopicPartition(t, p, start) for (t, p), (start, _) in lagging.items()])
    firsts: dict[Partition, float | None] = {}
    last_error: KafkaError | None = None  # librdkafka retries on its own: report it at the end
    deadline = time.monotonic() + timeout
    while len(firsts) < len(lagging):
        if time.monotonic() > deadline:
            missing = ", ".join(f"{t}[{p}]" for t, p in sorted(set(lagging) - set(firsts)))
            raise SinkLagError(
                f"could not read {missing} within {timeout:g} s"
                + (f" ({last_error.str()})" if last_error is not None else "")
            )
        for message in reader.consume(100, timeout=0.2):
            error = message.error()
            key = (str(message.topic()), int(message.partition() or 0))
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise KafkaException(error)
                last_error = error
            elif key in lagging and key not in firsts:
                firsts[key] = None if error is not None else _timestamp_ms(message)
                reader.pause([TopicPartition(*key)])
    return firsts


def _timestamp_ms(message: Message) -> float:
    kind, timestamp_ms = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE:  # no record format since Kafka 0.10 lacks one
        return time.time() * 1000
    return float(timestamp_ms)
