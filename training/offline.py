"""The weekly commands' training side: pending requests, a forced request, re-evaluation.

``prefloop train --if-ready`` carries out the oldest retrain request no trainer has
answered; ``prefloop train --force --base V`` requests a training of V on every pair
of V the retrain queue holds; ``prefloop eval`` and ``prefloop gates`` run a stage
again on a registered version and record it, as the trainer service would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.kafka import TopicReader
from prefloop.model_registry import ModelRegistry, ModelVersion, candidate_version
from prefloop.settings import Settings
from prefloop.training.config import DPOJobConfig
from prefloop.training.exceptions import PairsError, TrainingError
from prefloop.training.pairs import read_pairs
from prefloop.training.service import Outcome, TrainerService, model_event

__all__ = ["evaluate_version", "force_request", "gate_version", "pending_requests", "queue_topic"]


def queue_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.retrain-queue"


def pending_requests(settings: Settings) -> list[dict[str, Any]]:
    """Retrain requests no trainer has answered yet (no event about their candidate)."""
    reader = TopicReader(settings, settings.topics.model_events)
    try:
        records = [r[1] for r in reader.settle(quiet_s=1.5) if r[0] == "model_event"]
    finally:
        reader.close()
    answered = {(e["model_version"], e["parent_version"]) for e in records
                if e["kind"] != "RETRAIN_REQUESTED"}  # fmt: skip
    return [
        e for e in records
        if e["kind"] == "RETRAIN_REQUESTED"
        and (candidate_version(e["model_version"], e["event_id"]), e["model_version"])
        not in answered
    ]  # fmt: skip


def force_request(settings: Settings, base: str) -> dict[str, Any]:
    """A RETRAIN_REQUESTED of ``base`` naming every pair the retrain queue holds now."""
    ModelRegistry.from_settings(settings).get(base)  # an unknown base: the registry's error
    topic = queue_topic(settings)
    consumer = kafka.consumer(settings, f"prefloop-train-force-{uuid.uuid4().hex[:8]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise PairsError(
                f"the retrain queue {topic} does not exist: run the stream worker "
                "(`prefloop up`) so that pairs reach it"
            )
        ranges = []
        for partition in sorted(metadata.topics[topic].partitions):
            low, high = kafka.watermarks(consumer, TopicPartition(topic, partition), timeout=10)
            if high > low:
                ranges.append({"topic": topic, "partition": partition, "first_offset": low,
                               "last_offset": high - 1})  # fmt: skip
    finally:
        consumer.close()
    if not ranges:
        raise PairsError(
            f"the retrain queue {topic} holds no pairs yet: nothing to train {base} on"
        )
    pairs = read_pairs(settings, ranges, base)
    if not pairs.pairs:
        raise PairsError(f"the retrain queue holds no pair of {base}: nothing to train it on")
    return {
        "event_id": f"forced-{uuid.uuid4().hex}",
        "ts": int(time.time() * 1000),
        "kind": "RETRAIN_REQUESTED",
        "model_version": base,
        "parent_version": None,
        "experiment_id": None,
        "artifact_uri": None,
        "pair_count": len(pairs.pairs),
        "pair_ranges": ranges,
        "metrics": {},
        "detail": f"prefloop train --force: every pair of {base} in the retrain queue",
    }


def _request_of(entry: ModelVersion) -> dict[str, Any]:
    if not entry.lineage:
        raise TrainingError(
            f"{entry.version} was not trained by prefloop (its manifest has no lineage): "
            "evaluate and gate versions that `prefloop train` made"
        )
    return {
        "event_id": entry.lineage.get("request_id") or entry.version,
        "model_version": entry.parent,
        "pair_count": entry.lineage.get("pair_count"),
        "pair_ranges": entry.lineage.get("pair_ranges") or [],
    }


def evaluate_version(
    settings: Settings,
    version: str,
    say: Callable[[str], None] = print,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> Mapping[str, Any]:
    """Evaluate ``version`` against its parent again; recorded in the manifest and as EVALUATED."""
    from prefloop.training.evaluation import default_judge, default_safety, evaluate, load_callable

    registry = ModelRegistry.from_settings(settings)
    entry = registry.get(version)
    request = _request_of(entry)
    assert entry.parent is not None
    heldout_ids = set(entry.lineage.get("heldout_pair_ids") or [])
    try:
        pairs = read_pairs(settings, request["pair_ranges"], entry.parent).pairs
    except PairsError as exc:
        say(f"eval: the held-out pairs cannot be read again ({exc}); prompts only")
        pairs = []
    heldout = [p for p in pairs if p.pair_id in heldout_ids]
    config = DPOJobConfig.from_mapping(entry.training.get("hyperparameters") or {})
    cache = settings.home / "cache" / "models"
    say(f"eval: {version} against {entry.parent} on {len(heldout)} held-out pairs ...")
    result = evaluate(
        registry.local_path(version, cache),
        registry.local_path(entry.parent, cache),
        heldout,
        beta=config.beta,
        judge=load_callable(settings.eval_judge, default_judge, "judge (PREFLOOP_EVAL_JUDGE)"),
        safety=load_callable(settings.eval_safety, default_safety, "policy (PREFLOOP_EVAL_SAFETY)"),
    )
    registry.annotate(version, evaluation=result.to_json())
    service = TrainerService(settings, say=say, emit=emit)
    try:
        service.record(model_event("EVALUATED", version, entry.parent, request,
                                  metrics=result.metrics()))  # fmt: skip
    finally:
        service.close()
    return result.to_json()


def gate_version(
    settings: Settings,
    version: str,
    say: Callable[[str], None] = print,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """The quality gates on ``version``'s recorded evaluation; GATES_PASSED or GATES_FAILED."""
    entry = ModelRegistry.from_settings(settings).get(version)
    request = _request_of(entry)
    if not entry.evaluation:
        raise TrainingError(
            f"{version} has no evaluation yet: run `prefloop eval --model {version}`"
        )
    service = TrainerService(settings, say=say, emit=emit)
    try:
        return service.gate(entry, request)
    finally:
        service.close()
