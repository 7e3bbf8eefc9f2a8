"""Configuration of the stream agents' logic: frozen dataclasses with the product's defaults.

The defaults are the product specification's numbers (implicit-feedback weights,
sampling priorities, the 70/30 split). Every value is checked when the object is
built; a bad one raises :class:`StreamsConfigError` naming the parameter, the value
and the fix. Times are in seconds here; records and ``now`` are in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from prefloop.streams.exceptions import StreamsConfigError

__all__ = ["PairConfig", "SamplingConfig", "ScoringConfig", "ScoringWeights"]

DEFAULT_REFUSAL_PHRASES: tuple[str, ...] = (
    "i cant help with",
    "i cannot help with",
    "i cant assist with",
    "i cannot assist with",
    "im sorry but i cant",
    "im sorry but i cannot",
    "i am unable to",
    "im unable to",
    "im not able to",
    "i wont be able to",
    "as an ai language model",
)


def _require(config: object, name: str, ok: bool, fix: str) -> None:
    if not ok:
        raise StreamsConfigError(type(config).__name__, name, getattr(config, name), fix)


def _finite(config: object) -> None:
    """Every float field of ``config`` must be a finite number."""
    for f in fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if isinstance(value, float | int) and not isinstance(value, bool):
            _require(config, f.name, math.isfinite(value), "give a finite number")


@dataclass(frozen=True)
class ScoringWeights:
    """Points each implicit signal adds to a response's implicit score (product defaults)."""

    continued: float = field(default=2.0, metadata={"help": "the user kept chatting"})
    long_session: float = field(
        default=1.0, metadata={"help": "session longer than the long limit"}
    )
    copied: float = field(default=2.0, metadata={"help": "the user copied the response"})
    regenerated: float = field(default=-2.0, metadata={"help": "the user asked for another one"})
    short_session: float = field(
        default=-1.0, metadata={"help": "session shorter than the short limit"}
    )
    reported: float = field(default=-5.0, metadata={"help": "the user reported the response"})
    edited: float = field(
        default=0.0, metadata={"help": "the user edited it (no weight in the product spec)"}
    )

    def __post_init__(self) -> None:
        _finite(self)


@dataclass(frozen=True)
class ScoringConfig:
    """How the scorer turns one conversation's events into ScoredInteraction records."""

    weights: ScoringWeights = field(default_factory=ScoringWeights)
    long_session_s: float = field(
        default=300.0, metadata={"help": "a session longer than this (seconds) is long"}
    )
    short_session_s: float = field(
        default=30.0, metadata={"help": "a session shorter than this (seconds) is short"}
    )
    inactivity_timeout_s: float = field(
        default=1800.0,
        metadata={"help": "a conversation idle this long settles its open responses (TIMEOUT)"},
    )
    unknown_grace_s: float = field(
        default=300.0,
        metadata={"help": "feedback whose interaction has not arrived after this is a dead letter"},
    )
    max_pending: int = field(
        default=64, metadata={"help": "feedback held per conversation while its interaction is due"}
    )
    max_responses: int = field(
        default=256, metadata={"help": "responses remembered per conversation (for late feedback)"}
    )
    max_seen_events: int = field(
        default=512, metadata={"help": "feedback event ids remembered per conversation (dedup)"}
    )
    forget_after_s: float = field(
        default=86400.0,
        metadata={"help": "a settled conversation idle this long may be dropped from the table"},
    )

    def __post_init__(self) -> None:
        _finite(self)
        _require(self, "short_session_s", self.short_session_s >= 0, "give seconds >= 0")
        _require(
            self,
            "long_session_s",
            self.long_session_s >= self.short_session_s,
            f"give seconds >= short_session_s ({self.short_session_s})",
        )
        for name in ("inactivity_timeout_s", "unknown_grace_s", "forget_after_s"):
            _require(self, name, getattr(self, name) > 0, "give a number of seconds > 0")
        for name in ("max_pending", "max_responses", "max_seen_events"):
            _require(self, name, getattr(self, name) >= 1, "give a count >= 1")


@dataclass(frozen=True)
class PairConfig:
    """How preference pairs are mined and weighted (weights are in (0, 1])."""

    implicit_margin: float = field(
        default=3.0,
        metadata={"help": "least implicit-score difference that makes an IMPLICIT pair"},
    )
    implicit_full_weight_diff: float = field(
        default=6.0,
        metadata={"help": "implicit-score difference that earns weight 1.0 (diff / this, capped)"},
    )
    rating_span: float = field(
        default=4.0,
        metadata={"help": "rating difference that earns weight 1.0 (5 - 1 on the 1-5 scale)"},
    )
    regenerate_weight: float = field(
        default=1.0,
        metadata={"help": "weight of a REGENERATE pair whose kept response was copied/continued"},
    )
    annotation_weight: float = field(
        default=1.0, metadata={"help": "weight of an ANNOTATION pair (a human A/B judgement)"}
    )
    min_agreement: float = field(
        default=0.66,
        metadata={
            "help": "least share of the opinions on a task judged by several annotators "
            "that its majority (A or B) must have to make a pair"
        },
    )
    max_seen_pairs: int = field(
        default=1024,
        metadata={"help": "pair ids (and decided annotation tasks) remembered per state"},
    )
    max_groups: int = field(
        default=16, metadata={"help": "turns (prompt groups) remembered per conversation"}
    )
    max_pending_scores: int = field(
        default=64, metadata={"help": "scores held per conversation until their interaction"}
    )
    max_responses_per_prompt: int = field(
        default=32, metadata={"help": "responses remembered per normalized prompt (IMPLICIT)"}
    )

    def __post_init__(self) -> None:
        _finite(self)
        _require(self, "implicit_margin", self.implicit_margin > 0, "give a number > 0")
        for name in ("implicit_full_weight_diff", "rating_span"):
            _require(self, name, getattr(self, name) > 0, "give a number > 0")
        for name in ("regenerate_weight", "annotation_weight"):
            value = getattr(self, name)
            _require(self, name, 0 < value <= 1, "give a weight in (0, 1]")
        _require(self, "min_agreement", 0 <= self.min_agreement <= 1, "give a share in [0, 1]")
        for name in ("max_seen_pairs", "max_groups", "max_pending_scores"):
            _require(self, name, getattr(self, name) >= 1, "give a count >= 1")
        _require(self, "max_responses_per_prompt", self.max_responses_per_prompt >= 2, "give >= 2")


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are prioritised and drawn for annotation (product defaults)."""

    count: int = field(default=1000, metadata={"help": "tasks drawn per window"})
    top_fraction: float = field(
        default=0.7,
        metadata={"help": "share of the count taken by priority; the rest is drawn uniformly"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the uniform draw and tie-breaks"})
    window_s: float = field(default=3600.0, metadata={"help": "length of a sampling window"})
    new_topic_points: float = field(default=3.0, metadata={"help": "priority of a new topic"})
    engaged_points: float = field(
        default=2.0, metadata={"help": "priority of positive engagement (implicit score > 0)"}
    )
    uncertain_points: float = field(
        default=2.0, metadata={"help": "priority of model uncertainty above the threshold"}
    )
    edge_case_points: float = field(
        default=3.0,
        metadata={"help": "priority of an edge case (reported, very long, refusal)"},
    )
    uncertainty_threshold: float = field(
        default=0.5, metadata={"help": "uncertainty above this counts as uncertain"}
    )
    novelty_threshold: float = field(
        default=0.5,
        metadata={
            "help": "a prompt whose Jaccard estimate to every recent prompt is below this "
            "is a new topic"
        },
    )
    num_perm: int = field(default=64, metadata={"help": "MinHash permutations"})
    bands: int = field(
        default=32, metadata={"help": "LSH bands over the permutations (num_perm % bands == 0)"}
    )
    minhash_seed: int = field(default=1, metadata={"help": "seed of the MinHash permutations"})
    shingle_size: int = field(default=3, metadata={"help": "words per shingle"})
    memory_size: int = field(
        default=1000, metadata={"help": "recent prompts remembered for novelty"}
    )
    long_prompt_chars: int = field(
        default=4000, metadata={"help": "a last user message longer than this is an edge case"}
    )
    long_response_chars: int = field(
        default=8000, metadata={"help": "a response longer than this is an edge case"}
    )
    refusal_phrases: tuple[str, ...] = field(
        default=DEFAULT_REFUSAL_PHRASES,
        metadata={"help": "phrases (matched after normalization) that mark a refusal"},
    )
    refusal_scan_chars: int = field(
        default=300, metadata={"help": "how much of the response start is searched for them"}
    )
    max_sampled_ids: int = field(
        default=100_000, metadata={"help": "sampled interaction ids remembered (never twice)"}
    )

    def __post_init__(self) -> None:
        _finite(self)
        _require(self, "count", self.count >= 1, "give a count >= 1")
        _require(self, "top_fraction", 0 <= self.top_fraction <= 1, "give a share in [0, 1]")
        _require(self, "window_s", self.window_s > 0, "give a number of seconds > 0")
        for name in ("uncertainty_threshold", "novelty_threshold"):
            _require(self, name, 0 <= getattr(self, name) <= 1, "give a number in [0, 1]")
        _require(self, "num_perm", self.num_perm >= 1, "give a count >= 1, e.g. 64")
        _require(
            self,
            "bands",
            self.bands >= 1 and self.num_perm % self.bands == 0,
            f"give a divisor of num_perm ({self.num_perm}), e.g. 32 for 64",
        )
        for name in (
            "shingle_size",
            "memory_size",
            "long_prompt_chars",
            "long_response_chars",
            "max_sampled_ids",
            "refusal_scan_chars",
        ):
            _require(self, name, getattr(self, name) >= 1, "give a count >= 1")
        _require(
            self,
            "refusal_phrases",
            all(isinstance(p, str) and p.strip() for p in self.refusal_phrases),
            "give a tuple of non-empty strings",
        )

    @property
    def top_count(self) -> int:
        """Tasks taken by priority: count * top_fraction rounded down, as the product does.

        The epsilon keeps float error from taking one off (30 * 0.7 is 20.999...).
        """
        return math.floor(self.count * self.top_fraction + 1e-9)

    @property
    def uniform_count(self) -> int:
        """Tasks drawn uniformly from the rest."""
        return self.count - self.top_count
