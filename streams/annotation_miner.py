"""Rule (d) ANNOTATION: an annotator's choice between two responses makes a pair.

:class:`AnnotationPairMiner` keeps one state per key of the annotation-results topic
(a result's id; the task's for an unkeyed result): the ids of the pairs it emitted,
so a result read twice makes one pair. The record and the weights:
:mod:`prefloop.streams.preference_pair`.
"""

from __future__ import annotations

from typing import Any

from prefloop.streams.config import PairConfig
from prefloop.streams.preference_pair import PairStep, Side, build_pair, emit_once
from prefloop.streams.records import Record, SourceOffset

__all__ = ["AnnotationPairMiner", "annotation_pair"]


def annotation_pair(
    result: Record, now: int, config: PairConfig | None = None, source: SourceOffset | None = None
) -> Record | None:
    """The ANNOTATION pair of an AnnotationResult; None for TIE, BOTH_BAD, SKIP, UNKNOWN.

    ``conversation_id`` falls back to the task id (the result topic's key when the
    conversation is unknown) and ``model_version`` to ``"unknown"``. The result's
    interaction id goes to the logged side when exactly one side is logged (the other
    being a generated alternative); with two logged sides it cannot be placed.
    """
    config = config or PairConfig()
    choice = result.get("choice")
    if choice not in ("A", "B"):
        return None
    a = Side(result["response_a"], result.get("response_a_id"))
    b = Side(result["response_b"], result.get("response_b_id"))
    iid = result.get("interaction_id")
    if iid is not None and (a.response_id is None) != (b.response_id is None):
        if a.response_id is not None:
            a = Side(a.text, a.response_id, iid)
        else:
            b = Side(b.text, b.response_id, iid)
    chosen, rejected = (a, b) if choice == "A" else (b, a)
    return build_pair(
        prompt=result["prompt"],
        chosen=chosen,
        rejected=rejected,
        source="ANNOTATION",
        weight=config.annotation_weight,
        conversation_id=result.get("conversation_id") or result["task_id"],
        user_id=None,  # the annotator is not the user behind the conversation
        model_version=result.get("model_version") or "unknown",
        source_offsets=[source],
        now=now,
    )


class AnnotationPairMiner:
    """Rule (d) with emit-once: state ``{"seen": {pair_id: True}}`` per result-topic key."""

    def __init__(self, config: PairConfig | None = None) -> None:
        self.config = config or PairConfig()

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"seen": {}}

    def on_result(
        self,
        state: dict[str, Any] | None,
        result: Record,
        now: int,
        source: SourceOffset | None = None,
    ) -> PairStep:
        """Take one AnnotationResult; at most one pair comes out."""
        state = state if state is not None else self.new_state()
        pair = annotation_pair(result, now, self.config, source)
        if pair is None:
            return PairStep(state)
        seen, pairs = emit_once(state["seen"], [pair], self.config.max_seen_pairs)
        if not pairs:
            return PairStep(state)
        return PairStep({**state, "seen": seen}, pairs)
