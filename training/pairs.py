"""The pairs a retrain request names: read, filtered, de-duplicated and split.

A RETRAIN_REQUESTED names its pairs as offset ranges of ``<prefix>.retrain-queue``.
:func:`read_pairs` reads exactly those ranges (read_committed: an aborted write is
never trained on), keeps the pairs whose ``model_version`` is the requested base (a
range may hold other versions' pairs sharing the partition) and the first of each
``pair_id``. A range whose first offset the retention has already deleted fails the
request: training on part of what was asked would be a quiet lie.

:func:`split` puts each pair in the training or the held-out set by a hash of its
id, so the same pair always lands on the same side, whichever job reads it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import xxhash
from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.settings import Settings
from prefloop.training.exceptions import PairsError
from prefloop_sdk import decode

__all__ = ["Pair", "PairSet", "read_pairs", "select", "split"]

READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Pair:
    """One preference pair as the job trains on it."""

    pair_id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    weight: float
    source: str
    model_version: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Pair:
        return cls(
            pair_id=str(record["pair_id"]),
            prompt=[{"role": m["role"], "content": m["content"]} for m in record["prompt"]],
            chosen=str(record["chosen"]),
            rejected=str(record["rejected"]),
            weight=float(record.get("weight", 1.0)),
            source=str(record.get("source", "UNKNOWN")),
            model_version=str(record["model_version"]),
        )

    def as_row(self) -> dict[str, Any]:
        """The conversational row TRL's DPOTrainer reads, with the pair's weight."""
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
            "weight": self.weight,
            "pair_id": self.pair_id,
        }


@dataclass(frozen=True)
class PairSet:
    """The pairs of one request, and what was left out of them."""

    pairs: list[Pair]
    read: int  # records read in the ranges
    other_versions: int  # pairs of another model version in the same ranges
    duplicates: int  # repeated pair ids

    def sources(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pair in self.pairs:
            counts[pair.source] = counts.get(pair.source, 0) + 1
        return dict(sorted(counts.items()))


def select(records: Iterable[Mapping[str, Any]], base_version: str) -> PairSet:
    """The pairs of ``base_version`` among ``records``, each ``pair_id`` once, checked."""
    pairs: list[Pair] = []
    seen: set[str] = set()
    read = other = duplicates = 0
    empty: list[str] = []
    for record in records:
        read += 1
        if record.get("model_version") != base_version:
            other += 1
            continue
        pair = Pair.from_record(record)
        if pair.pair_id in seen:
            duplicates += 1
            continue
        seen.add(pair.pair_id)
        if (
            not pair.chosen.strip()
            or not pair.rejected.strip()
            or not any(m["content"].strip() for m in pair.prompt)
        ):
            empty.append(pair.pair_id)
            continue
        if not (pair.weight >= 0):  # also NaN
            raise PairsError(
                f"pair {pair.pair_id} has weight {pair.weight!r}: weights must be 0 or more"
            )
        pairs.append(pair)
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise PairsError(
            f"{len(empty)} pair(s) of {base_version} have an empty prompt, chosen or rejected "
            f"text ({shown}): fix the producer of these pairs; nothing was trained"
        )
    return PairSet(pairs, read, other, duplicates)


def split(
    pairs: Iterable[Pair], heldout_fraction: float, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): a pair is held out when the hash of its id falls below the fraction."""
    train: list[Pair] = []
    heldout: list[Pair] = []
    for pair in pairs:
        bucket = xxhash.xxh64_intdigest(pair.pair_id.encode(), seed=seed) / 2**64
        (heldout if bucket < heldout_fraction else train).append(pair)
    return train, heldout


def read_pairs(settings: Settings, ranges: list[Mapping[str, Any]], base_version: str) -> PairSet:
    """The pairs of ``base_version`` in the offset ``ranges`` of a request."""
    if not ranges:
        raise PairsError("the request names no pair ranges: nothing to train on")
    consumer = kafka.consumer(settings, f"prefloop-trainer-read-{uuid.uuid4().hex[:8]}")
    try:
        records = list(_read_ranges(consumer, ranges))
    finally:
        consumer.close()
    return select(records, base_version)


def _read_ranges(consumer: Any, ranges: list[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    wanted: dict[tuple[str, int], tuple[int, int]] = {}
    for r in ranges:
        key = (str(r["topic"]), int(r["partition"]))
        first, last = int(r["first_offset"]), int(r["last_offset"])
        if last < first:
            raise PairsError(f"pair range {key[0]}[{key[1]}] {first}..{last} is empty")
        wanted[key] = (first, last)
    for (topic, partition), (first, last) in wanted.items():
        low, high = kafka.watermarks(consumer, TopicPartition(topic, partition), timeout=10)
        if first < low:
            raise PairsError(
                f"pairs {topic}[{partition}] from offset {first} no longer exist (the topic "
                f"now starts at {low}: the retention deleted them); nothing was trained. Raise "
                "PREFLOOP_TOPIC_RETENTION_HOURS or train sooner after a request"
            )
        if last >= high:
            raise PairsError(
                f"pairs {topic}[{partition}] up to offset {last} do not exist (the partition "
                f"ends at {high}): the request names pairs that were never written"
            )
    consumer.assign([TopicPartition(t, p, wanted[(t, p)][0]) for t, p in wanted])
    open_partitions = set(wanted)
    deadline = time.monotonic() + READ_TIMEOUT_S
    while open_partitions:
        if time.monotonic() > deadline:
            raise PairsError(
                f"reading the requested pairs timed out after {READ_TIMEOUT_S:.0f} s with "
                f"{sorted(open_partitions)} unfinished: is the broker reachable?"
            )
        for message in consumer.consume(1000, timeout=1.0):
            if message.error() is not None:
                continue
            key = (message.topic(), message.partition())
            if key not in open_partitions:
                continue
            offset = message.offset()
            if offset > wanted[key][1]:
                open_partitions.discard(key)
                continue
            record_type, record = decode(message.value())
            if record_type == "preference_pair":
                yield record
            if offset >= wanted[key][1]:
                open_partitions.discard(key)
        # transaction markers take offsets too: a partition is done once its position
        # has passed the last offset, even if no record sat exactly there
        for tp in consumer.position([TopicPartition(t, p) for t, p in open_partitions]):
            if tp.offset is not None and tp.offset > wanted[(tp.topic, tp.partition)][1]:
                open_partitions.discard((tp.topic, tp.partition))
