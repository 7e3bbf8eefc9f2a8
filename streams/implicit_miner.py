"""Rule (c) IMPLICIT: responses to the same normalized prompt across conversations.

:class:`ImplicitPairMiner` keeps one state per normalized prompt
(:func:`prefloop.streams.normalize.prompt_key` of the messages): the agent
repartitions the scored responses (:mod:`prefloop.streams.candidates`) by that key.
When a response's implicit score arrives or changes, it is compared with every
response held for the prompt from *another* conversation (within one conversation
rules (a) and (b) apply); a difference of at least ``implicit_margin`` makes a pair,
the higher score chosen, weighted ``min(1, diff / implicit_full_weight_diff)``, when
the chosen response carries a positive signal of its own (an implicit score above
0): of two answers the users both rejected, neither is an example to learn from.

State per prompt key (JSON-serialisable; the state passed in is never modified)::

    {"responses": {response_id: {...the response, "implicit_score", "revision",
                                 "sources", "seq"}},
     "seen": {pair_id: True}, "seq": int}

Bounds: ``max_responses_per_prompt`` responses (the earliest arrived go first),
``max_seen_pairs`` pair ids.
"""

from __future__ import annotations

from typing import Any

from prefloop.streams.config import PairConfig
from prefloop.streams.normalize import prompt_key
from prefloop.streams.preference_pair import PairStep, Side, build_pair, emit_once
from prefloop.streams.records import Record, SourceOffset

__all__ = ["ImplicitPairMiner", "prompt_key"]

_KEPT = ("response_id", "interaction_id", "conversation_id", "user_id", "model_version")


class ImplicitPairMiner:
    """Mines IMPLICIT pairs among the scored responses of one normalized prompt."""

    def __init__(self, config: PairConfig | None = None) -> None:
        self.config = config or PairConfig()

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"responses": {}, "seen": {}, "seq": 0}

    def on_scored(
        self,
        state: dict[str, Any] | None,
        scored: Record,
        now: int,
        source: SourceOffset | None = None,
    ) -> PairStep:
        """Take one scored response (no score, or a revision not newer than held: no-op)."""
        state = state if state is not None else self.new_state()
        score = scored.get("implicit_score")
        if score is None:
            return PairStep(state)
        rid = scored["response_id"]
        old = state["responses"].get(rid)
        revision = scored.get("revision") or 0
        if old is not None and old["revision"] >= revision:
            return PairStep(state)
        seq = state["seq"] + 1
        entry = {k: scored.get(k) for k in _KEPT}
        entry.update(
            messages=scored["messages"],
            response=scored["response"],
            implicit_score=float(score),
            revision=revision,
            sources=[*(old["sources"] if old else []), *([source] if source else [])],
            seq=old["seq"] if old else seq,
        )
        responses = {**state["responses"], rid: entry}
        while len(responses) > self.config.max_responses_per_prompt:
            oldest = min(responses.values(), key=lambda e: e["seq"])
            del responses[oldest["response_id"]]
        candidates = []
        for other in sorted(responses.values(), key=lambda e: e["seq"]):
            if other["conversation_id"] == entry["conversation_id"]:
                continue
            diff = entry["implicit_score"] - other["implicit_score"]
            if abs(diff) < self.config.implicit_margin:
                continue
            chosen, rejected = (entry, other) if diff > 0 else (other, entry)
            if chosen["implicit_score"] <= 0:  # the lesser of two rejected answers
                continue
            weight = min(1.0, abs(diff) / self.config.implicit_full_weight_diff)
            candidates.append(self._pair(chosen, rejected, weight, now))
        seen, pairs = emit_once(state["seen"], candidates, self.config.max_seen_pairs)
        return PairStep({"responses": responses, "seen": seen, "seq": seq}, pairs)

    @staticmethod
    def _pair(chosen: dict[str, Any], rejected: dict[str, Any], weight: float, now: int) -> Record:
        same_user = chosen["user_id"] == rejected["user_id"]
        return build_pair(
            prompt=chosen["messages"],
            chosen=Side(chosen["response"], chosen["response_id"], chosen["interaction_id"]),
            rejected=Side(
                rejected["response"], rejected["response_id"], rejected["interaction_id"]
            ),
            source="IMPLICIT",
            weight=weight,
            conversation_id=chosen["conversation_id"],
            user_id=chosen["user_id"] if same_user else None,
            model_version=chosen["model_version"],
            source_offsets=[*chosen["sources"], *rejected["sources"]],
            now=now,
        )
