"""The PreferencePair record the pair miners share: its sides, its id, emit-once.

Four rules make pairs (schema preference_pair/v1, ``source`` in brackets), each in a
miner of its own that builds its records here:

(a) ``REGENERATE`` — a regenerated response is rejected against a later response to
    the same prompt that the user kept (copied it, continued after it, or rated it
    higher); :mod:`prefloop.streams.conversation_miner`.
(b) ``RATING`` — two responses to the same prompt of one conversation with different
    ratings: the higher rated is chosen; same module.
(c) ``IMPLICIT`` — two responses in different conversations to the same normalized
    prompt whose implicit scores differ by at least ``implicit_margin``;
    :mod:`prefloop.streams.implicit_miner`.
(d) ``ANNOTATION`` — an AnnotationResult choosing A or B (TIE, BOTH_BAD, SKIP and
    UNKNOWN make no pair); a task given to several annotators (``overlap``) makes its
    pair once all have answered, and only when enough of them agree
    (``min_agreement``); :mod:`prefloop.streams.annotation_miner`.

Weights, all in (0, 1]:

* REGENERATE: ``regenerate_weight`` (1.0) when the kept response was copied or
  continued; kept only by a higher rating: ``(r_kept - r_regenerated) / rating_span``.
  A pair whose ratings say the opposite (kept rated lower) is not made.
* RATING: ``(r_chosen - r_rejected) / rating_span`` (span 4: ratings 5 vs 1 weigh 1.0,
  adjacent ratings 0.25).
* IMPLICIT: ``min(1, |score difference| / implicit_full_weight_diff)`` (defaults: the
  margin 3 weighs 0.5, a difference of 6 or more 1.0).
* ANNOTATION: ``annotation_weight`` (1.0).

``pair_id`` is a UUIDv5 of (chosen ref, rejected ref), a ref being the response_id or,
for an unlogged response (a generated alternative in an annotation), a hash of its
text. Each miner state keeps the ids it emitted (bounded, ``max_seen_pairs``) and
emits a pair only when neither its id nor its reverse's is there: a pair comes out
once, and a later signal that contradicts an emitted one is not turned into the
opposite pair. Miners with different states (rule (c)'s per prompt, (d)'s) may emit
the same pair_id as (a)/(b); training deduplicates on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefloop.streams.ids import derived_id
from prefloop.streams.records import Record, Rejected, SourceOffset, bounded_add

__all__ = [
    "PairStep",
    "Side",
    "build_pair",
    "emit_once",
    "pair_id",
    "response_ref",
]


@dataclass(frozen=True)
class PairStep:
    """What one event did: the new state, the pairs to emit, from the conversation
    miner the scored responses to pass on (to the implicit miner and the sampler), and
    from the annotation miner the tasks that make no pair (for the dead-letter topic)."""

    state: dict[str, Any]
    pairs: list[Record] = field(default_factory=list)
    scored: list[Record] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class Side:
    """One response of a pair: its text and, when it was logged, its ids."""

    text: str
    response_id: str | None = None
    interaction_id: str | None = None

    @property
    def ref(self) -> str:
        return response_ref(self.response_id, self.text)


def response_ref(response_id: str | None, text: str) -> str:
    """What identifies a response in a pair id: its id, or a hash of an unlogged one's text."""
    if response_id is not None:
        return response_id
    return "text:" + hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def pair_id(chosen_ref: str, rejected_ref: str) -> str:
    """The deterministic id of the pair (chosen over rejected)."""
    return derived_id("preference-pair", chosen_ref, rejected_ref)


def build_pair(
    *,
    prompt: Sequence[Record],
    chosen: Side,
    rejected: Side,
    source: str,
    weight: float,
    conversation_id: str,
    user_id: str | None,
    model_version: str,
    source_offsets: Iterable[SourceOffset | None] = (),
    now: int,
) -> Record:
    """A PreferencePair record (schema preference_pair/v1)."""
    offsets: list[SourceOffset] = []
    for offset in source_offsets:
        if offset is not None and offset not in offsets:
            offsets.append(dict(offset))
    return {
        "pair_id": pair_id(chosen.ref, rejected.ref),
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
        "chosen": chosen.text,
        "rejected": rejected.text,
        "source": source,
        "weight": float(weight),
        "chosen_interaction_id": chosen.interaction_id,
        "chosen_response_id": chosen.response_id,
        "rejected_interaction_id": rejected.interaction_id,
        "rejected_response_id": rejected.response_id,
        "conversation_id": conversation_id,
        "user_id": user_id,
        "model_version": model_version,
        "source_offsets": offsets,
        "ts": int(now),
    }


def _reverse_id(pair: Record) -> str:
    chosen = response_ref(pair["chosen_response_id"], pair["chosen"])
    rejected = response_ref(pair["rejected_response_id"], pair["rejected"])
    return pair_id(rejected, chosen)


def emit_once(
    seen: dict[str, Any], pairs: Iterable[Record], capacity: int
) -> tuple[dict[str, Any], list[Record]]:
    """The pairs not emitted before (nor their reverse), and the seen-set with them added."""
    kept = []
    for pair in pairs:
        if pair["pair_id"] in seen or _reverse_id(pair) in seen:
            continue
        seen = bounded_add(seen, pair["pair_id"], capacity)
        kept.append(pair)
    return seen, kept
