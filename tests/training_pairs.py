"""Synthetic preference pairs with a learnable preference, on a real retrain queue.

Users prefer answers that thank them ("Thanks for asking. ...") over answers that
hedge ("I am not sure, ..."), across the tiny model's topics: a model that learns
it favours the thanking answer on topics it never trained on. :func:`thanks_judge`
scores answers by that preference, for the offline evaluation's win rate
(``PREFLOOP_EVAL_JUDGE=training_pairs:thanks_judge``, with this folder importable).
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from prefloop import kafka
from prefloop.settings import Settings
from prefloop.tiny_model import QUESTIONS, TOPICS
from prefloop.training.offline import queue_topic
from prefloop_sdk import encode

JUDGE = "training_pairs:thanks_judge"


def thanks_judge(prompt: list[dict[str, str]], response: str) -> float:
    """The hidden preference as a reward: 1 for an answer that thanks, 0 otherwise."""
    return 1.0 if response.lstrip().lower().startswith("thanks") else 0.0


def preference_pairs(version: str, count: int, **changes: Any) -> list[dict[str, Any]]:
    """``count`` pairs with ids that depend only on ``version`` and their position."""
    pairs = []
    for n, (topic, question) in enumerate(itertools.islice(
        itertools.cycle(itertools.product(TOPICS, QUESTIONS)), count
    )):  # fmt: skip
        subject = topic[:1].upper() + topic[1:]
        pairs.append(
            {
                "pair_id": f"pair-{version}-{n}",
                "prompt": [{"role": "user", "content": question.format(topic)}],
                "chosen": f"Thanks for asking. {subject} works best when you keep things simple.",
                "rejected": f"I am not sure, but {subject} usually depends on what you want to do.",
                "source": "IMPLICIT",
                "weight": 1.0,
                "conversation_id": f"c-{n}",
                "model_version": version,
                "ts": int(time.time() * 1000),
                **changes,
            }
        )
    return pairs


def write_pairs(settings: Settings, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Produce ``pairs`` to the retrain queue (one partition); the ranges a request names."""
    topic = queue_topic(settings)
    kafka.ensure_topics(settings, [topic], partitions=1)
    producer = kafka.producer(settings)
    offsets: list[int] = []

    def delivered(err: Any, message: Any) -> None:
        assert err is None, err
        offsets.append(message.offset())

    for pair in pairs:
        producer.produce(topic, encode("preference_pair", pair), pair["model_version"].encode(),
                         partition=0, on_delivery=delivered)  # fmt: skip
    producer.flush(30)
    return [{"topic": topic, "partition": 0, "first_offset": min(offsets),
             "last_offset": max(offsets)}]  # fmt: skip


def retrain_request(version: str, ranges: list[dict[str, Any]], count: int) -> dict[str, Any]:
    return {
        "event_id": f"req-{uuid.uuid4().hex}",
        "ts": int(time.time() * 1000),
        "kind": "RETRAIN_REQUESTED",
        "model_version": version,
        "parent_version": None,
        "experiment_id": None,
        "artifact_uri": None,
        "pair_count": count,
        "pair_ranges": ranges,
        "metrics": {},
        "detail": "test request",
    }
