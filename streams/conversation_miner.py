"""Pairs within one conversation: rules (a) REGENERATE and (b) RATING.

:class:`ConversationPairMiner` consumes the two records keyed by the conversation:
Interactions (the texts, the ``regenerates`` links) and ScoredInteractions (signals
and ratings, from the scorer). Responses are grouped by turn and exact prompt
messages: regenerations of one answer share both. Each event re-evaluates its group,
so a pair comes out as soon as its evidence is complete, once.

A response is *regenerated* when its score says so or another response names it in
``regenerates``; a later response of the group (later by the ``regenerates`` chain
or by time) is *kept* when its score shows it copied or continued, or when it is
rated higher than the regenerated one. The record and the weights:
:mod:`prefloop.streams.preference_pair`.

State per conversation (JSON-serialisable; the state passed in is never modified)::

    {"groups": {group_key: {"turn", "messages", "seq"}},
     "responses": {response_id: {"interaction": Interaction without messages,
                                 "group", "seq", "sources", "score", "score_source",
                                 "passed": revision last passed on}},
     "pending_scores": {response_id: {"score", "source"}},   # score before interaction
     "seen": {pair_id: True}, "seq": int}

Bounds: ``max_groups`` turns (the oldest group goes with its responses; a late rating
for it no longer makes a pair), ``max_pending_scores`` held scores, ``max_seen_pairs``.
"""

from __future__ import annotations

from typing import Any

from prefloop.streams.candidates import scored_response
from prefloop.streams.config import PairConfig
from prefloop.streams.normalize import exact_prompt_key
from prefloop.streams.preference_pair import PairStep, Side, build_pair, emit_once
from prefloop.streams.records import Record, SourceOffset, bounded_add

__all__ = ["ConversationPairMiner"]


class ConversationPairMiner:
    """Mines REGENERATE and RATING pairs from one conversation's interactions and scores."""

    def __init__(self, config: PairConfig | None = None) -> None:
        self.config = config or PairConfig()

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"groups": {}, "responses": {}, "pending_scores": {}, "seen": {}, "seq": 0}

    def on_interaction(
        self,
        state: dict[str, Any] | None,
        interaction: Record,
        now: int,
        source: SourceOffset | None = None,
    ) -> PairStep:
        """Take one Interaction (its text and its place in the conversation)."""
        state = state if state is not None else self.new_state()
        rid = interaction["response_id"]
        if rid in state["responses"]:
            return PairStep(state)
        new = {**state, "seq": state["seq"] + 1}
        key = f"{interaction['turn']}:{exact_prompt_key(interaction['messages'])}"
        groups = dict(state["groups"])
        if key not in groups:
            groups[key] = {
                "turn": interaction["turn"],
                "messages": interaction["messages"],
                "seq": new["seq"],
            }
        responses = dict(state["responses"])
        responses[rid] = {
            "interaction": {k: v for k, v in interaction.items() if k != "messages"},
            "group": key,
            "seq": new["seq"],
            "sources": [source] if source is not None else [],
            "score": None,
            "score_source": None,
            "passed": None,
        }
        held = state["pending_scores"].get(rid)
        if held is not None:
            pending = dict(state["pending_scores"])
            del pending[rid]
            new["pending_scores"] = pending
            responses[rid].update(score=held["score"], score_source=held["source"])
        new.update(groups=groups, responses=responses)
        self._evict_groups(new)
        return self._evaluate(new, key, rid, now)

    def on_score(
        self,
        state: dict[str, Any] | None,
        score: Record,
        now: int,
        source: SourceOffset | None = None,
    ) -> PairStep:
        """Take one ScoredInteraction; an older or equal revision than the one held is a no-op."""
        state = state if state is not None else self.new_state()
        rid = score["response_id"]
        entry = state["responses"].get(rid)
        if entry is None:
            held = state["pending_scores"].get(rid)
            if held is not None and held["score"]["revision"] >= score["revision"]:
                return PairStep(state)
            pending = bounded_add(state["pending_scores"], rid, self.config.max_pending_scores)
            pending[rid] = {"score": score, "source": source}
            return PairStep({**state, "pending_scores": pending})
        if entry["score"] is not None and entry["score"]["revision"] >= score["revision"]:
            return PairStep(state)
        responses = dict(state["responses"])
        responses[rid] = {**entry, "score": score, "score_source": source}
        return self._evaluate({**state, "responses": responses}, entry["group"], rid, now)

    # -- internals ------------------------------------------------------------

    def _evict_groups(self, state: dict[str, Any]) -> None:
        groups = state["groups"]
        excess = len(groups) - self.config.max_groups
        if excess <= 0:
            return
        gone = {k for k, _ in sorted(groups.items(), key=lambda kv: kv[1]["seq"])[:excess]}
        state["groups"] = {k: g for k, g in groups.items() if k not in gone}
        state["responses"] = {r: e for r, e in state["responses"].items() if e["group"] not in gone}

    def _evaluate(self, state: dict[str, Any], key: str, rid: str, now: int) -> PairStep:
        if key not in state["groups"]:  # evicted at once: an interaction of a long-gone turn
            return PairStep(state)
        members = sorted(
            (e for e in state["responses"].values() if e["group"] == key),
            key=lambda e: (e["interaction"]["ts"], e["seq"]),
        )
        messages = state["groups"][key]["messages"]
        regenerated_ids = {
            e["interaction"].get("regenerates")
            for e in state["responses"].values()
            if e["interaction"].get("regenerates")
        }
        candidates = self._regenerate_pairs(members, regenerated_ids, messages, now)
        candidates += self._rating_pairs(members, messages, now)
        seen, pairs = emit_once(state["seen"], candidates, self.config.max_seen_pairs)
        state = {**state, "seen": seen}
        scored = []
        entry = state["responses"].get(rid)
        if entry is not None and entry["score"] is not None:
            revision = entry["score"]["revision"]
            if entry["passed"] is None or revision > entry["passed"]:
                responses = dict(state["responses"])
                responses[rid] = {**entry, "passed": revision}
                state["responses"] = responses
                interaction = {**entry["interaction"], "messages": messages}
                scored.append(scored_response(interaction, entry["score"]))
        return PairStep(state, pairs, scored)

    def _regenerate_pairs(
        self,
        members: list[dict[str, Any]],
        regenerated_ids: set[Any],
        messages: list[Record],
        now: int,
    ) -> list[Record]:
        out = []
        for kept in members:
            score = kept["score"]
            if score is None:
                continue
            signals = score["signals"]
            for rejected in members:
                if rejected is kept or not self._after(kept, rejected, members):
                    continue
                rid = rejected["interaction"]["response_id"]
                rejected_score = rejected["score"]
                if not (
                    rid in regenerated_ids
                    or (rejected_score is not None and rejected_score["signals"]["regenerated"])
                ):
                    continue
                r_kept = score.get("rating")
                r_rej = rejected_score.get("rating") if rejected_score is not None else None
                both_rated = r_kept is not None and r_rej is not None
                if both_rated and r_kept < r_rej:
                    continue  # the ratings say otherwise
                if signals["continued"] or signals["copied"]:
                    weight = self.config.regenerate_weight
                elif both_rated and r_kept > r_rej:
                    weight = min(1.0, (r_kept - r_rej) / self.config.rating_span)
                else:
                    continue
                out.append(self._pair(kept, rejected, "REGENERATE", weight, messages, now))
        return out

    @staticmethod
    def _after(
        later: dict[str, Any], earlier: dict[str, Any], members: list[dict[str, Any]]
    ) -> bool:
        """Whether ``later`` regenerates ``earlier`` (through the chain) or came after it."""
        by_id = {e["interaction"]["response_id"]: e for e in members}
        target = earlier["interaction"]["response_id"]
        node: dict[str, Any] | None = later
        for _ in range(len(members)):
            parent = node["interaction"].get("regenerates") if node is not None else None
            if parent is None:
                break
            if parent == target:
                return True
            node = by_id.get(parent)
        return (later["interaction"]["ts"], later["seq"]) > (
            earlier["interaction"]["ts"],
            earlier["seq"],
        )

    def _rating_pairs(
        self, members: list[dict[str, Any]], messages: list[Record], now: int
    ) -> list[Record]:
        rated = [
            e for e in members if e["score"] is not None and e["score"].get("rating") is not None
        ]
        out = []
        for high in rated:
            for low in rated:
                diff = high["score"]["rating"] - low["score"]["rating"]
                if diff > 0:
                    weight = min(1.0, diff / self.config.rating_span)
                    out.append(self._pair(high, low, "RATING", weight, messages, now))
        return out

    @staticmethod
    def _pair(
        chosen: dict[str, Any],
        rejected: dict[str, Any],
        source: str,
        weight: float,
        messages: list[Record],
        now: int,
    ) -> Record:
        ci, ri = chosen["interaction"], rejected["interaction"]
        return build_pair(
            prompt=messages,
            chosen=Side(ci["response"], ci["response_id"], ci["interaction_id"]),
            rejected=Side(ri["response"], ri["response_id"], ri["interaction_id"]),
            source=source,
            weight=weight,
            conversation_id=ci["conversation_id"],
            user_id=ci.get("user_id"),
            model_version=ci["model_version"],
            source_offsets=[
                *chosen["sources"],
                chosen["score_source"],
                *rejected["sources"],
                rejected["score_source"],
            ],
            now=now,
        )
