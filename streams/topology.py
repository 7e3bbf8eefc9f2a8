"""The worker's topics beyond the public nine, and the logic configured from settings.

Internal topics carry the worker's own traffic between agents (JSON, or Avro where
another room reads them); the public topics come from :class:`prefloop.settings.Topics`.

* ``<prefix>.streams-ticks`` — timer ticks, one per partition, co-partitioned with
  interactions and feedback so a tick is processed in the same task (and the same
  transaction) as the events of its partition;
* ``<prefix>.streams-by-prompt`` — scored responses keyed by normalized prompt
  (rule (c), IMPLICIT pairs);
* ``<prefix>.streams-sampling`` — first scores of responses and ticks, one
  partition: the sampler's recent-prompt memory is global;
* ``<prefix>.streams-rolling`` — settled responses keyed by model version and arm,
  one partition, for the rolling windows the live monitor reads;
* ``<prefix>.retrain-queue`` — PreferencePairs (Avro) keyed by model version, and
  the ModelEvents that end a training, keyed by the version trained from: the
  retrain trigger counts there, and a RETRAIN_REQUESTED names its offset ranges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import isfinite

from prefloop import kafka
from prefloop.errors import SettingsError
from prefloop.settings import Settings
from prefloop.streams.config import PairConfig, SamplingConfig, ScoringConfig, ScoringWeights

__all__ = [
    "GLOBAL_TABLES",
    "PARTITIONED_TABLES",
    "StreamTopics",
    "app_id",
    "changelog_topic",
    "ensure_stream_topics",
    "pair_config",
    "sampling_config",
    "scoring_config",
]


@dataclass(frozen=True)
class StreamTopics:
    """Names of the worker's own topics under a prefix."""

    ticks: str
    by_prompt: str
    sampling: str
    rolling: str
    retrain_queue: str

    @classmethod
    def with_prefix(cls, prefix: str) -> StreamTopics:
        return cls(
            ticks=f"{prefix}.streams-ticks",
            by_prompt=f"{prefix}.streams-by-prompt",
            sampling=f"{prefix}.streams-sampling",
            rolling=f"{prefix}.streams-rolling",
            retrain_queue=f"{prefix}.retrain-queue",
        )

    def single_partition(self) -> list[str]:
        """Topics whose agent holds one global state."""
        return [self.sampling, self.rolling]

    def partitioned(self) -> list[str]:
        return [self.ticks, self.by_prompt, self.retrain_queue]


PARTITIONED_TABLES = ("conversations", "conversation-pairs", "prompts", "annotations", "lineages")
"""Tables keyed like the partitioned topics (one changelog partition per input partition)."""
GLOBAL_TABLES = ("sampler", "rolling")
"""Tables of the single-partition topics."""


def app_id(settings: Settings) -> str:
    """The worker's Kafka consumer group (and the prefix of its changelog topics)."""
    return f"{settings.topic_prefix}-streams"


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id(settings)}-{table}-changelog"


def ensure_stream_topics(settings: Settings) -> StreamTopics:
    """Create the public topics, the worker's own and its tables' changelogs (idempotent).

    The changelogs are created here rather than by Faust so that their partitions are
    known to every client before the first table write.
    """
    names = StreamTopics.with_prefix(settings.topic_prefix)
    kafka.ensure_topics(settings, settings.topics.all() + names.partitioned())
    kafka.ensure_topics(settings, names.single_partition(), partitions=1)
    changelogs = [changelog_topic(settings, t) for t in PARTITIONED_TABLES]
    kafka.ensure_topics(settings, changelogs, compact=True)
    singles = [changelog_topic(settings, t) for t in GLOBAL_TABLES]
    kafka.ensure_topics(settings, singles, partitions=1, compact=True)
    return names


def scoring_config(settings: Settings) -> ScoringConfig:
    """The scorer's configuration: product defaults, weights overridden by settings."""
    variable = "PREFLOOP_STREAMS_SCORING_WEIGHTS"
    try:
        overrides = json.loads(settings.streams_scoring_weights)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{variable} is not JSON ({exc.msg}); give an object such as "
            '{"copied": 3, "reported": -5}'
        ) from exc
    if not isinstance(overrides, dict):
        raise SettingsError(
            f"{variable} must be a JSON object of weights, such as "
            '{"copied": 3, "reported": -5}; it is ' + type(overrides).__name__
        )
    known = set(ScoringWeights.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SettingsError(
            f"{variable} has unknown weights {unknown}; the weights are {', '.join(sorted(known))}"
        )
    for name, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not isfinite(value):
            raise SettingsError(
                f"{variable}: the weight {name!r} must be a number, not {json.dumps(value)}"
            )
    weights = ScoringWeights(**{k: float(v) for k, v in overrides.items()})
    return ScoringConfig(
        weights=weights,
        inactivity_timeout_s=settings.streams_inactivity_s,
        unknown_grace_s=settings.streams_unknown_grace_s,
    )


def sampling_config(settings: Settings) -> SamplingConfig:
    return SamplingConfig(
        count=settings.streams_sampling_count, window_s=settings.streams_sampling_window_s
    )


def pair_config(settings: Settings) -> PairConfig:
    """The pair miners' configuration: product defaults, the annotators' agreement from
    settings (``PREFLOOP_ANNOTATION_MIN_AGREEMENT``)."""
    return PairConfig(min_agreement=settings.annotation_min_agreement)
