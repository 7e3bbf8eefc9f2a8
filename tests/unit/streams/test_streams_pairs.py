"""Preference pairs: rules (a)-(d), weights, lineage, emit-once."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from streams_events import MINUTE, SECOND, T0, feedback, interaction, scored

from prefloop.streams.annotation_miner import AnnotationPairMiner, annotation_pair
from prefloop.streams.config import PairConfig, ScoringConfig
from prefloop.streams.conversation_miner import ConversationPairMiner
from prefloop.streams.implicit_miner import ImplicitPairMiner
from prefloop.streams.normalize import prompt_key
from prefloop.streams.preference_pair import pair_id, response_ref
from prefloop.streams.records import source_offset
from prefloop.streams.scoring import Scorer
from prefloop_sdk import encode

TIMEOUT = int(ScoringConfig().inactivity_timeout_s * 1000)


class Loop:
    """Scorer and conversation miner on one conversation, wired as the agent will."""

    def __init__(self, miner: ConversationPairMiner | None = None) -> None:
        self.scorer, self.miner = Scorer(), miner or ConversationPairMiner()
        self.scores_state: dict[str, Any] | None = None
        self.pairs_state: dict[str, Any] | None = None
        self.pairs: list[dict[str, Any]] = []
        self.scored: list[dict[str, Any]] = []
        self.offset = 0

    def _scores(self, scores: list[dict[str, Any]], now: int) -> None:
        for record in scores:
            self.offset += 1
            where = source_offset("prefloop.scores", 0, self.offset)
            step = self.miner.on_score(self.pairs_state, record, now, where)
            self._take(step)

    def _take(self, step: Any) -> None:
        self.pairs_state = step.state
        for pair in step.pairs:
            encode("preference_pair", pair)
        self.pairs += step.pairs
        self.scored += step.scored

    def interaction(self, record: dict[str, Any]) -> None:
        now = record["ts"]
        step = self.scorer.on_interaction(self.scores_state, record, now)
        self.scores_state = step.state
        self.offset += 1
        where = source_offset("prefloop.interactions", 0, self.offset)
        self._take(self.miner.on_interaction(self.pairs_state, record, now, where))
        self._scores(step.scores, now)

    def feedback(self, record: dict[str, Any]) -> None:
        step = self.scorer.on_feedback(self.scores_state, record, record["ts"])
        self.scores_state = step.state
        self._scores(step.scores, record["ts"])

    def tick(self, now: int) -> None:
        assert self.scores_state is not None
        step = self.scorer.on_timer(self.scores_state, now)
        self.scores_state = step.state
        self._scores(step.scores, now)


def brief(pairs: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None, float]]:
    return [
        (p["source"], p["chosen_response_id"], p["rejected_response_id"], p["weight"])
        for p in pairs
    ]


# -- (a) regenerate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kept_by", "weight"),
    [("CONTINUE", 1.0), ("COPY", 1.0), ("next turn", 1.0)],
)
def test_regenerated_response_is_rejected_against_the_kept_one(kept_by: str, weight: float):
    loop = Loop()
    loop.interaction(interaction("r1", ts=T0))
    loop.feedback(feedback("REGENERATE", "r1", "e1", ts=T0 + SECOND))
    loop.interaction(interaction("r1b", ts=T0 + 2 * SECOND, regenerates="r1"))
    if kept_by == "next turn":
        loop.interaction(interaction("r2", turn=1, ts=T0 + MINUTE))
    else:
        loop.feedback(feedback(kept_by, "r1b", "e2", ts=T0 + 3 * SECOND))
        loop.tick(T0 + 3 * SECOND + TIMEOUT)
    assert brief(loop.pairs) == [("REGENERATE", "r1b", "r1", weight)]
    (pair,) = loop.pairs
    assert pair["prompt"] == [{"role": "user", "content": "question 0 of c1"}]
    assert (pair["chosen"], pair["rejected"]) == ("answer r1b", "answer r1")
    assert (pair["chosen_interaction_id"], pair["rejected_interaction_id"]) == ("i-r1b", "i-r1")
    assert (pair["conversation_id"], pair["user_id"], pair["model_version"]) == ("c1", "u1", "v1")
    assert pair["pair_id"] == pair_id("r1b", "r1")
    topics = {(o["topic"], o["offset"]) for o in pair["source_offsets"]}
    assert ("prefloop.interactions", 1) in topics and ("prefloop.interactions", 2) in topics


def test_kept_by_a_higher_rating_only_weighs_the_rating_difference():
    loop = Loop()
    loop.interaction(interaction("r1", ts=T0))
    loop.interaction(interaction("r1b", ts=T0 + SECOND, regenerates="r1"))
    loop.feedback(feedback("RATING", "r1", "e1", ts=T0 + 2 * SECOND, value=2.0))
    loop.feedback(feedback("RATING", "r1b", "e2", ts=T0 + 3 * SECOND, value=5.0))
    loop.tick(T0 + 3 * SECOND + TIMEOUT)
    # the regenerate rule comes first; the rating rule's identical pair is not repeated
    assert brief(loop.pairs) == [("REGENERATE", "r1b", "r1", 0.75)]


def test_regeneration_that_was_not_kept_makes_no_pair():
    loop = Loop()
    loop.interaction(interaction("r1", ts=T0))
    loop.interaction(interaction("r1b", ts=T0 + SECOND, regenerates="r1"))
    loop.tick(T0 + SECOND + TIMEOUT)
    assert loop.pairs == []
    assert [s["response_id"] for s in loop.scored] == ["r1", "r1b"]


def test_a_chain_of_regenerations_rejects_each_one():
    loop = Loop()
    loop.interaction(interaction("a", ts=T0))
    loop.interaction(interaction("b", ts=T0 + 1, regenerates="a"))
    loop.interaction(interaction("c", ts=T0 + 2, regenerates="b"))
    loop.feedback(feedback("COPY", "c", "e1", ts=T0 + 3))
    loop.tick(T0 + 3 + TIMEOUT)
    assert brief(loop.pairs) == [("REGENERATE", "c", "a", 1.0), ("REGENERATE", "c", "b", 1.0)]


def test_contradicting_ratings_block_the_regenerate_pair():
    loop = Loop()
    loop.interaction(interaction("r1", ts=T0))
    loop.interaction(interaction("r1b", ts=T0 + 1, regenerates="r1"))
    loop.feedback(feedback("COPY", "r1b", "e1", ts=T0 + 2))
    loop.feedback(feedback("RATING", "r1b", "e2", ts=T0 + 3, value=2.0))
    loop.feedback(feedback("RATING", "r1", "e3", ts=T0 + 4, value=4.0))
    loop.tick(T0 + 4 + TIMEOUT)
    assert brief(loop.pairs) == [("RATING", "r1", "r1b", 0.5)]


# -- (b) ratings ----------------------------------------------------------------------------


def test_two_rated_responses_to_one_prompt_make_a_rating_pair():
    loop = Loop()
    loop.interaction(interaction("r1", ts=T0))
    loop.interaction(interaction("r2", ts=T0 + 1))  # same turn and prompt, no regenerate
    loop.feedback(feedback("RATING", "r1", "e1", ts=T0 + 2, value=5.0))
    loop.feedback(feedback("RATING", "r2", "e2", ts=T0 + 3, value=4.0))
    loop.interaction(interaction("r3", turn=1, ts=T0 + MINUTE))
    loop.feedback(feedback("RATING", "r3", "e3", ts=T0 + MINUTE + 1, value=1.0))  # another turn
    loop.tick(T0 + MINUTE + 1 + TIMEOUT)
    assert brief(loop.pairs) == [("RATING", "r1", "r2", 0.25)]


def test_a_late_rating_revision_makes_the_pair_once():
    loop = Loop()
    loop.interaction(interaction("r1", ts=T0))
    loop.interaction(interaction("r2", ts=T0 + 1))
    loop.interaction(interaction("r3", turn=1, ts=T0 + 2))
    assert loop.pairs == []
    loop.feedback(feedback("RATING", "r1", "e1", ts=T0 + MINUTE, value=1.0))
    loop.feedback(feedback("RATING", "r2", "e2", ts=T0 + MINUTE, value=5.0))
    loop.feedback(feedback("RATING", "r2", "e3", ts=T0 + 2 * MINUTE, value=4.0))
    loop.feedback(feedback("RATING", "r1", "e4", ts=T0 + 3 * MINUTE, value=5.0))  # reversal
    assert brief(loop.pairs) == [("RATING", "r2", "r1", 1.0)]


def test_a_score_before_its_interaction_waits_for_it():
    miner = ConversationPairMiner()
    scorer = Scorer()
    state = scorer.on_interaction(None, interaction("r1"), T0).state
    state = scorer.on_interaction(state, interaction("r2", ts=T0 + 1), T0 + 1).state
    state = scorer.on_feedback(state, feedback("RATING", "r1", "e1", value=5.0), T0 + 2).state
    state = scorer.on_feedback(state, feedback("RATING", "r2", "e2", value=3.0), T0 + 3).state
    scores = scorer.on_timer(state, T0 + 3 + TIMEOUT).scores
    pstate = None
    for record in scores:  # the scores topic is read ahead of the interactions topic
        pstate = miner.on_score(pstate, record, T0).state
    assert pstate is not None and set(pstate["pending_scores"]) == {"r1", "r2"}
    step = miner.on_interaction(pstate, interaction("r1"), T0)
    assert step.pairs == []
    step = miner.on_interaction(step.state, interaction("r2", ts=T0 + 1), T0)
    assert brief(step.pairs) == [("RATING", "r1", "r2", 0.5)]
    assert step.state["pending_scores"] == {}


def test_conversation_miner_state_is_json_and_untouched():
    miner = ConversationPairMiner()
    state = miner.on_interaction(None, interaction("r1"), T0).state
    before = copy.deepcopy(state)
    score = {
        "interaction_id": "i-r1",
        "response_id": "r1",
        "revision": 0,
        "implicit_score": 2.0,
        "signals": {"continued": True, "copied": False, "regenerated": False, "reported": False},
        "rating": None,
    }
    step = miner.on_score(state, score, T0)
    assert state == before
    assert json.loads(json.dumps(step.state)) == step.state
    (item,) = step.scored
    assert (item["response_id"], item["implicit_score"], item["messages"]) == (
        "r1",
        2.0,
        interaction("r1")["messages"],
    )
    # the same revision again is not passed on twice
    assert miner.on_score(step.state, score, T0).scored == []


def test_old_turns_are_forgotten_beyond_max_groups():
    miner = ConversationPairMiner(PairConfig(max_groups=2))
    state = None
    for turn in range(3):
        state = miner.on_interaction(state, interaction(f"r{turn}", turn=turn), T0).state
    assert state is not None
    assert sorted(state["responses"]) == ["r1", "r2"] and len(state["groups"]) == 2


# -- (c) implicit ---------------------------------------------------------------------------


def test_implicit_pairs_across_conversations_with_a_margin():
    miner = ImplicitPairMiner()
    variants = [
        "How do I sort a list in Python?",
        "how do i   sort a list in python",
        "HOW DO I SORT A LIST IN PYTHON!!",
    ]
    keys = {prompt_key([{"role": "user", "content": v}]) for v in variants}
    assert len(keys) == 1  # the agent repartitions by this key
    good = scored("good", conv="c1", prompt=variants[0], score=4.0, user="u1")
    step = miner.on_scored(None, good, T0, source_offset("prefloop.scores", 1, 7))
    assert step.pairs == []
    same = scored("same-conv", conv="c1", prompt=variants[2], score=-1.0)  # same conversation
    step = miner.on_scored(step.state, same, T0)
    assert step.pairs == []
    close = scored("close", conv="c2", prompt=variants[1], score=2.0, user="u2")
    step = miner.on_scored(step.state, close, T0)  # 2 from good: no; 3 from same-conv: yes
    assert brief(step.pairs) == [("IMPLICIT", "close", "same-conv", 0.5)]
    bad = scored("bad", conv="c3", prompt=variants[2], score=-1.0, user="u3")
    step = miner.on_scored(step.state, bad, T0 + 1, source_offset("prefloop.scores", 2, 9))
    assert brief(step.pairs) == [
        ("IMPLICIT", "good", "bad", 5 / 6),
        ("IMPLICIT", "close", "bad", 0.5),
    ]
    first = step.pairs[0]
    encode("preference_pair", first)
    assert first["user_id"] is None and first["conversation_id"] == "c1"
    assert first["prompt"] == [{"role": "user", "content": variants[0]}]
    assert first["source_offsets"] == [
        {"topic": "prefloop.scores", "partition": 1, "offset": 7},
        {"topic": "prefloop.scores", "partition": 2, "offset": 9},
    ]
    # a later revision with the same verdicts does not repeat the pairs
    again = miner.on_scored(step.state, {**bad, "revision": 1, "implicit_score": -3.0}, T0 + 2)
    assert again.pairs == []
    assert again.state["responses"]["bad"]["implicit_score"] == -3.0
    # an old revision arriving late is ignored
    stale = miner.on_scored(again.state, {**bad, "revision": 0, "implicit_score": 5.0}, T0 + 3)
    assert stale.state is again.state


def test_an_implicit_pair_needs_a_chosen_answer_the_user_liked():
    miner = ImplicitPairMiner()
    step = miner.on_scored(None, scored("reported", conv="c1", score=-6.0), T0)
    step = miner.on_scored(step.state, scored("regenerated", conv="c2", score=-1.0), T0)
    assert step.pairs == []  # the lesser of two rejected answers is no example
    step = miner.on_scored(step.state, scored("ignored", conv="c3", score=0.0), T0)
    assert step.pairs == []  # nor is an answer nobody reacted to
    step = miner.on_scored(step.state, scored("copied", conv="c4", score=2.0), T0)
    assert brief(step.pairs) == [  # and "ignored" is within the margin
        ("IMPLICIT", "copied", "reported", 1.0),
        ("IMPLICIT", "copied", "regenerated", 0.5),
    ]
    # a revision that makes a rejected answer liked pairs it then
    step = miner.on_scored(
        step.state, {**scored("regenerated", conv="c2", score=4.0), "revision": 1}, T0 + 1
    )
    assert brief(step.pairs) == [
        ("IMPLICIT", "regenerated", "reported", 1.0),
        ("IMPLICIT", "regenerated", "ignored", 4 / 6),
    ]


def test_implicit_weight_caps_at_one_and_bounds_hold():
    miner = ImplicitPairMiner(PairConfig(max_responses_per_prompt=2))
    step = miner.on_scored(None, scored("a", conv="c1", score=5.0), T0)
    step = miner.on_scored(step.state, scored("b", conv="c2", score=-8.0), T0)
    assert brief(step.pairs) == [("IMPLICIT", "a", "b", 1.0)]
    step = miner.on_scored(step.state, scored("c", conv="c3", score=0.0), T0)
    assert sorted(step.state["responses"]) == ["b", "c"]
    assert miner.on_scored(step.state, scored("d", conv="c4", score=None), T0).pairs == []


# -- (d) annotation ---------------------------------------------------------------------------


def _result(choice: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "result_id": "res-1",
        "task_id": "task-1",
        "annotator_id": "ann-1",
        "prompt": [{"role": "user", "content": "Explain quantum computing"}],
        "response_a": "Quantum computing uses qubits...",
        "response_b": "I don't know.",
        "response_a_id": "r-a",
        "response_b_id": None,
        "choice": choice,
        "interaction_id": "i-r-a",
        "conversation_id": "c9",
        "model_version": "v3",
        "ts": T0,
        "comment": None,
    }
    record.update(overrides)
    encode("annotation_result", record)
    return record


def test_annotation_a_or_b_makes_a_pair_and_the_rest_none():
    a = annotation_pair(_result("A"), T0)
    assert a is not None
    encode("preference_pair", a)
    assert (a["source"], a["weight"], a["chosen"], a["rejected"]) == (
        "ANNOTATION",
        1.0,
        "Quantum computing uses qubits...",
        "I don't know.",
    )
    assert (a["chosen_response_id"], a["chosen_interaction_id"]) == ("r-a", "i-r-a")
    assert (a["rejected_response_id"], a["rejected_interaction_id"]) == (None, None)
    assert a["pair_id"] == pair_id("r-a", response_ref(None, "I don't know."))
    assert (a["conversation_id"], a["model_version"], a["user_id"]) == ("c9", "v3", None)
    b = annotation_pair(_result("B"), T0)
    assert b is not None and b["chosen"] == "I don't know." and b["chosen_response_id"] is None
    for choice in ("TIE", "BOTH_BAD", "SKIP", "UNKNOWN"):
        assert annotation_pair(_result(choice), T0) is None


def test_annotation_without_conversation_falls_back_to_the_task():
    pair = annotation_pair(_result("A", conversation_id=None, model_version=None), T0)
    assert pair is not None
    assert (pair["conversation_id"], pair["model_version"]) == ("task-1", "unknown")


def test_annotation_pairs_are_emitted_once():
    miner = AnnotationPairMiner(PairConfig(annotation_weight=0.8))
    where = source_offset("prefloop.annotation-results", 0, 5)
    step = miner.on_result(None, _result("A"), T0, where)
    assert brief(step.pairs) == [("ANNOTATION", "r-a", None, 0.8)]
    assert step.pairs[0]["source_offsets"] == [where]
    again = miner.on_result(step.state, _result("A", result_id="res-2"), T0)
    assert again.pairs == [] and again.state is step.state
    reverse = miner.on_result(step.state, _result("B", result_id="res-3"), T0)
    assert reverse.pairs == []
    assert miner.on_result(step.state, _result("TIE"), T0).pairs == []


def test_pair_ids_are_deterministic_and_ordered():
    assert pair_id("x", "y") == pair_id("x", "y")
    assert pair_id("x", "y") != pair_id("y", "x")
    assert len(pair_id("x", "y")) == 36


def test_scores_waiting_for_their_interaction_are_bounded():
    miner = ConversationPairMiner(PairConfig(max_pending_scores=2))
    state = None
    for n in range(3):
        score = {"response_id": f"r{n}", "revision": 0, "implicit_score": 0.0, "signals": {}}
        state = miner.on_score(state, score, T0).state
    assert state is not None and list(state["pending_scores"]) == ["r1", "r2"]
    newer = {"response_id": "r1", "revision": 1, "implicit_score": 2.0, "signals": {}}
    state = miner.on_score(state, newer, T0).state
    assert state["pending_scores"]["r1"]["score"]["revision"] == 1
    stale = miner.on_score(state, {**newer, "revision": 0}, T0)
    assert stale.state is state
