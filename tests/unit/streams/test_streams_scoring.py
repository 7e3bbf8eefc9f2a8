"""The implicit scorer: the product's weights, settling, revisions, duplicates, order."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from streams_events import MINUTE, SECOND, T0, brief, feedback, interaction

from prefloop.streams.config import ScoringConfig, ScoringWeights
from prefloop.streams.records import Rejected, dead_letter, source_offset
from prefloop.streams.scoring import Scorer, implicit_score
from prefloop_sdk import decode, encode


class Conversation:
    """Drives one conversation's state through a scorer, as an agent would."""

    def __init__(self, scorer: Scorer | None = None) -> None:
        self.scorer = scorer or Scorer()
        self.state: dict[str, Any] | None = None
        self.rejected: list[Rejected] = []
        self.records: list[dict[str, Any]] = []

    def _take(self, step: Any) -> list[tuple[str, int, float, str]]:
        self.state = step.state
        self.rejected += step.rejected
        self.records += step.scores
        return brief(step.scores)

    def interaction(self, record: dict[str, Any], now: int | None = None) -> list[Any]:
        return self._take(self.scorer.on_interaction(self.state, record, now or record["ts"]))

    def feedback(self, record: dict[str, Any], now: int | None = None) -> list[Any]:
        return self._take(self.scorer.on_feedback(self.state, record, now or record["ts"]))

    def tick(self, now: int) -> list[Any]:
        assert self.state is not None
        return self._take(self.scorer.on_timer(self.state, now))


def _timeout() -> int:
    return int(ScoringConfig().inactivity_timeout_s * 1000)


# -- the product's weights, one by one ---------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("COPY", None, 2.0),
        ("REGENERATE", None, -2.0),
        ("REPORT", None, -5.0),
        ("EDIT", None, 0.0),
        ("CONTINUE", None, 2.0),
        ("COMMENT", None, 0.0),
        ("RATING", 5.0, 0.0),  # explicit: its own field, not in the implicit score
        ("THUMBS", 1.0, 0.0),
    ],
)
def test_each_signal_weight_settled_by_timeout(kind: str, value: float | None, expected: float):
    conv = Conversation()
    conv.interaction(interaction("r1"))
    conv.feedback(feedback(kind, "r1", "e1", ts=T0 + SECOND, value=value))
    assert conv.tick(T0 + SECOND + _timeout()) == [("r1", 0, expected, "TIMEOUT")]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(301.0, 1.0), (300.0, 0.0), (120.0, 0.0), (30.0, 0.0), (29.0, -1.0), (0.0, -1.0)],
)
def test_session_length_weights(seconds: float, expected: float):
    conv = Conversation()
    conv.interaction(interaction("r1"))
    end = feedback("SESSION_END", "r1", "e1", ts=T0 + SECOND, value=seconds)
    assert conv.feedback(end) == [("r1", 0, expected, "SESSION_END")]
    assert conv.records[0]["signals"]["session_seconds"] == seconds


def test_continued_by_the_next_turn():
    conv = Conversation()
    assert conv.interaction(interaction("r1", turn=0)) == []
    assert conv.interaction(interaction("r2", turn=1, ts=T0 + MINUTE)) == [
        ("r1", 0, 2.0, "NEXT_TURN")
    ]
    assert conv.records[0]["signals"]["continued"] is True


def test_rating_and_thumbs_are_separate_fields():
    conv = Conversation()
    conv.interaction(interaction("r1"))
    conv.feedback(feedback("RATING", "r1", "e1", ts=T0 + 1, value=4.0))
    conv.feedback(feedback("THUMBS", "r1", "e2", ts=T0 + 2, value=-1.0))
    conv.feedback(feedback("COPY", "r1", "e3", ts=T0 + 3))
    conv.tick(T0 + 3 + _timeout())
    (record,) = conv.records
    assert (record["implicit_score"], record["rating"], record["thumbs"]) == (2.0, 4.0, -1)


def test_custom_weights():
    weights = ScoringWeights(copied=1.5, edited=0.5)
    conv = Conversation(Scorer(ScoringConfig(weights=weights)))
    conv.interaction(interaction("r1"))
    conv.feedback(feedback("COPY", "r1", "e1"))
    conv.feedback(feedback("EDIT", "r1", "e2"))
    assert conv.tick(T0 + _timeout()) == [("r1", 0, 2.0, "TIMEOUT")]


def test_implicit_score_sums_every_weight():
    signals = {
        "continued": True,
        "copied": True,
        "regenerated": True,
        "edited": True,
        "reported": True,
        "session_seconds": 400.0,
    }
    assert implicit_score(signals, ScoringConfig()) == 2 + 2 - 2 + 0 - 5 + 1


# -- a scripted set of conversations -------------------------------------------------


def test_scripted_conversations_yield_the_product_scores():
    conv = Conversation()
    # turn 0: r0 is copied, then regenerated into r0b, which the user keeps
    assert conv.interaction(interaction("r0", turn=0, ts=T0)) == []
    assert conv.feedback(feedback("COPY", "r0", "f1", ts=T0 + 5 * SECOND)) == []
    assert conv.feedback(feedback("REGENERATE", "r0", "f2", ts=T0 + 6 * SECOND)) == []
    assert conv.interaction(interaction("r0b", turn=0, ts=T0 + 8 * SECOND, regenerates="r0")) == []
    # turn 1 arrives: both turn-0 responses settle; only the latest one was continued
    assert conv.interaction(interaction("r1", turn=1, ts=T0 + MINUTE)) == [
        ("r0", 0, 0.0, "NEXT_TURN"),  # copied +2, regenerated -2
        ("r0b", 0, 2.0, "NEXT_TURN"),  # continued +2
    ]
    # r1 is reported, then the 10-minute session ends
    assert conv.feedback(feedback("REPORT", "r1", "f3", ts=T0 + 2 * MINUTE)) == []
    end = feedback("SESSION_END", "r1", "f4", ts=T0 + 10 * MINUTE, value=600.0)
    assert conv.feedback(end) == [
        ("r0", 1, 1.0, "LATE_FEEDBACK"),  # + long session
        ("r0b", 1, 3.0, "LATE_FEEDBACK"),
        ("r1", 0, -4.0, "SESSION_END"),  # reported -5, long session +1
    ]
    # a second conversation, a short session with one regenerate and no kept answer
    other = Conversation()
    other.interaction(interaction("x0", conv="c2", session="s2"))
    other.interaction(interaction("x0b", conv="c2", session="s2", regenerates="x0", ts=T0 + 1))
    end = feedback("SESSION_END", "x0b", "g1", conv="c2", ts=T0 + 20 * SECOND, value=20.0)
    assert other.feedback(end) == [("x0", 0, -3.0, "SESSION_END"), ("x0b", 0, -1.0, "SESSION_END")]
    assert conv.rejected == other.rejected == []


# -- settling and revisions -------------------------------------------------------------


def test_timeout_settles_only_when_due_and_once():
    conv = Conversation()
    conv.interaction(interaction("r1"), now=T0)
    conv.feedback(feedback("COPY", "r1", "e1", ts=T0 + MINUTE), now=T0 + MINUTE)
    assert conv.state is not None
    assert conv.scorer.next_deadline(conv.state) == T0 + MINUTE + _timeout()
    waiting = conv.state
    assert conv.tick(T0 + MINUTE + _timeout() - 1) == []
    assert conv.state is waiting  # nothing due: the agent can skip the table write
    assert conv.tick(T0 + MINUTE + _timeout()) == [("r1", 0, 2.0, "TIMEOUT")]
    assert conv.tick(T0 + 10 * _timeout()) == []
    assert conv.scorer.next_deadline(conv.state) is None


def test_late_feedback_emits_a_revision_never_a_second_revision_zero():
    conv = Conversation()
    conv.interaction(interaction("r1"))
    conv.interaction(interaction("r2", turn=1, ts=T0 + MINUTE))
    assert conv.feedback(feedback("COPY", "r1", "e1", ts=T0 + 2 * MINUTE)) == [
        ("r1", 1, 4.0, "LATE_FEEDBACK")
    ]
    assert conv.feedback(feedback("RATING", "r1", "e2", ts=T0 + 3 * MINUTE, value=2.0)) == [
        ("r1", 2, 4.0, "LATE_FEEDBACK")
    ]
    # a signal that changes nothing (copied again, a comment) emits nothing
    assert conv.feedback(feedback("COPY", "r1", "e3", ts=T0 + 4 * MINUTE)) == []
    assert conv.feedback(feedback("COMMENT", "r1", "e4", ts=T0 + 5 * MINUTE)) == []
    assert [r["revision"] for r in conv.records] == [0, 1, 2]
    # continuing after a timeout settled the response is late feedback too
    conv.tick(T0 + 5 * MINUTE + _timeout())
    assert conv.interaction(interaction("r3", turn=2, ts=T0 + 3 * _timeout())) == [
        ("r2", 1, 2.0, "LATE_FEEDBACK")
    ]


def test_an_older_rating_arriving_late_does_not_replace_a_newer_one():
    conv = Conversation()
    conv.interaction(interaction("r1"))
    conv.feedback(feedback("RATING", "r1", "new", ts=T0 + 2 * MINUTE, value=5.0))
    conv.feedback(feedback("RATING", "r1", "old", ts=T0 + MINUTE, value=1.0))
    conv.tick(T0 + 3 * MINUTE + _timeout())
    assert conv.records[-1]["rating"] == 5.0


def test_regenerates_link_marks_the_earlier_response_even_out_of_order():
    conv = Conversation()
    conv.interaction(interaction("r1b", regenerates="r1", ts=T0 + SECOND))
    conv.interaction(interaction("r1", ts=T0))
    assert conv.tick(T0 + _timeout() + SECOND) == [
        ("r1", 0, -2.0, "TIMEOUT"),
        ("r1b", 0, 0.0, "TIMEOUT"),
    ]


# -- duplicates and out-of-order events ------------------------------------------------


def test_duplicate_events_change_nothing():
    scorer = Scorer()
    first = scorer.on_interaction(None, interaction("r1"), T0)
    again = scorer.on_interaction(first.state, interaction("r1"), T0 + 5)
    assert again.state is first.state and again.scores == [] and again.rejected == []
    copied = scorer.on_feedback(first.state, feedback("COPY", "r1", "e1"), T0 + 10)
    twice = scorer.on_feedback(copied.state, feedback("COPY", "r1", "e1"), T0 + 20)
    assert twice.state is copied.state and twice.scores == []
    # same event id with another kind (a replayed, garbled copy) is still the same event
    other = scorer.on_feedback(copied.state, feedback("REPORT", "r1", "e1"), T0 + 30)
    assert other.state is copied.state


def test_duplicate_late_feedback_yields_one_revision():
    conv = Conversation()
    conv.interaction(interaction("r1"))
    conv.tick(T0 + _timeout())
    late = feedback("REPORT", "r1", "e1", ts=T0 + 2 * _timeout())
    assert conv.feedback(late) == [("r1", 1, -5.0, "LATE_FEEDBACK")]
    assert conv.feedback(late) == []


def test_feedback_before_its_interaction_is_held_then_applied():
    conv = Conversation()
    assert conv.feedback(feedback("COPY", "r1", "e1", ts=T0)) == []
    assert conv.feedback(feedback("RATING", "r1", "e2", ts=T0, value=3.0)) == []
    assert conv.state is not None and len(conv.state["pending"]) == 2
    conv.interaction(interaction("r1", ts=T0 - SECOND), now=T0 + SECOND)
    assert conv.state["pending"] == []
    assert conv.tick(T0 + SECOND + _timeout()) == [("r1", 0, 2.0, "TIMEOUT")]
    assert conv.records[0]["rating"] == 3.0
    assert conv.rejected == []


def test_session_end_before_its_interaction_settles_it_on_arrival():
    conv = Conversation()
    end = feedback("SESSION_END", "r1", "e1", ts=T0, value=10.0)
    assert conv.feedback(end) == []
    assert conv.interaction(interaction("r1"), now=T0 + 1) == [("r1", 0, -1.0, "SESSION_END")]


def test_unknown_feedback_is_rejected_after_the_grace_period():
    scorer = Scorer(ScoringConfig(unknown_grace_s=60))
    conv = Conversation(scorer)
    conv.interaction(interaction("r1"))
    where = source_offset("prefloop.feedback", 3, 41)
    step = scorer.on_feedback(conv.state, feedback("COPY", "ghost", "e1"), T0, source=where)
    assert step.rejected == [] and scorer.next_deadline(step.state) == T0 + MINUTE
    assert scorer.on_timer(step.state, T0 + MINUTE - 1).rejected == []
    late = scorer.on_timer(step.state, T0 + MINUTE)
    (rejected,) = late.rejected
    assert rejected.record["response_id"] == "ghost" and rejected.source == where
    assert "no Interaction with response_id 'ghost'" in rejected.reason
    assert late.state["pending"] == []
    value = encode("feedback", rejected.record)
    letter = dead_letter(rejected, consumer="scorer", now=T0 + MINUTE, value=value, key=b"c1")
    kind, decoded = decode(encode("dead_letter", letter))
    assert kind == "dead_letter"
    assert (decoded["source_topic"], decoded["source_partition"], decoded["source_offset"]) == (
        "prefloop.feedback",
        3,
        41,
    )
    assert decoded["value"] == value and decoded["error_type"] == "UnknownInteraction"


def test_held_feedback_is_bounded():
    conv = Conversation(Scorer(ScoringConfig(max_pending=2)))
    for n in range(3):
        conv.feedback(feedback("COPY", f"ghost{n}", f"e{n}"))
    assert [r.record["response_id"] for r in conv.rejected] == ["ghost0"]
    assert "max_pending=2" in conv.rejected[0].reason
    assert conv.state is not None and len(conv.state["pending"]) == 2


@pytest.mark.parametrize(
    ("kind", "value"), [("RATING", 7.0), ("RATING", None), ("THUMBS", 0.0), ("SESSION_END", -1.0)]
)
def test_invalid_feedback_values_are_rejected(kind: str, value: float | None):
    conv = Conversation()
    conv.interaction(interaction("r1"))
    assert conv.feedback(feedback(kind, "r1", "e1", value=value)) == []
    (rejected,) = conv.rejected
    assert rejected.error_type == "InvalidFeedback" and kind in rejected.reason


# -- the state ----------------------------------------------------------------------------


def test_state_is_json_and_never_modified_in_place():
    scorer = Scorer()
    script = [
        ("i", interaction("r1")),
        ("f", feedback("COPY", "r1", "e1", ts=T0 + 1)),
        ("f", feedback("COPY", "zz", "e2", ts=T0 + 2)),
        ("i", interaction("r2", turn=1, ts=T0 + 3)),
        ("f", feedback("RATING", "r1", "e3", ts=T0 + 4, value=5.0)),
    ]
    state = None
    for kind, record in script:
        before = copy.deepcopy(state)
        call = scorer.on_interaction if kind == "i" else scorer.on_feedback
        step = call(state, record, record["ts"])
        assert state == before  # the caller's state is untouched
        state = json.loads(json.dumps(step.state))  # what a table round trip does
        assert state == step.state
    assert state is not None
    assert set(state["responses"]) == {"r1", "r2"} and state["responses"]["r1"]["revision"] == 1


def test_responses_are_bounded_and_forgettable():
    scorer = Scorer(ScoringConfig(max_responses=2, forget_after_s=60))
    conv = Conversation(scorer)
    for turn in range(4):
        conv.interaction(interaction(f"r{turn}", turn=turn, ts=T0 + turn))
    assert conv.state is not None and set(conv.state["responses"]) == {"r2", "r3"}
    assert set(conv.state["interactions"]) == {"i-r2", "i-r3"}
    assert not scorer.can_forget(conv.state, T0 + 10 * MINUTE)  # r3 is open
    assert conv.tick(T0 + 3 + _timeout()) == [("r3", 0, 0.0, "TIMEOUT")]
    assert brief(conv.records) == [
        ("r0", 0, 2.0, "NEXT_TURN"),
        ("r1", 0, 2.0, "NEXT_TURN"),
        ("r2", 0, 2.0, "NEXT_TURN"),
        ("r3", 0, 0.0, "TIMEOUT"),
    ]
    assert not scorer.can_forget(conv.state, T0 + 3 + MINUTE - 1)
    assert scorer.can_forget(conv.state, T0 + 3 + MINUTE)
