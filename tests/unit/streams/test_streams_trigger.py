"""The retrain trigger: counting, one request per threshold, busy lineages, determinism."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from streams_events import MINUTE, SECOND, T0

from prefloop.model_registry import candidate_version
from prefloop.streams.records import source_offset
from prefloop.streams.trigger import ENDS_TRAINING, RetrainTrigger
from prefloop_sdk import decode, encode

QUEUE = "prefloop.retrain-queue"
HOUR = 60 * MINUTE


def pair(pair_id: str, version: str = "v1") -> dict[str, Any]:
    """What the trigger reads of a PreferencePair: its id and the version that served it."""
    return {"pair_id": pair_id, "model_version": version}


def model_event(kind: str, version: str = "v2", parent: str | None = "v1") -> dict[str, Any]:
    """A schema-valid ModelEvent about ``version``, trained from ``parent``."""
    record = {
        "event_id": f"me-{kind}-{version}",
        "ts": T0,
        "kind": kind,
        "model_version": version,
        "parent_version": parent,
        "experiment_id": None,
        "artifact_uri": None,
        "pair_count": None,
        "pair_ranges": [],
        "metrics": {},
        "detail": None,
    }
    encode("model_event", record)
    return record


class Lineage:
    """Drives one model version's trigger state, as the agent would, checking each event."""

    def __init__(self, trigger: RetrainTrigger, version: str = "v1") -> None:
        self.trigger, self.version = trigger, version
        self.state: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []

    def _take(self, step: Any) -> list[dict[str, Any]]:
        for event in step.events:
            kind, decoded = decode(encode("model_event", event))  # schema-valid
            assert kind == "model_event" and decoded == event
        self.state = json.loads(json.dumps(step.state))  # what a table round trip does
        assert self.state == step.state
        self.events += step.events
        return step.events

    def pair(self, pair_id: str, partition: int, offset: int, now: int) -> list[dict[str, Any]]:
        where = source_offset(QUEUE, partition, offset)
        return self._take(self.trigger.on_pair(self.state, pair(pair_id, self.version), where, now))

    def outcome(self, kind: str, now: int) -> list[dict[str, Any]]:
        """An event about the candidate of the request under way (any, when idle)."""
        about = (self.state or {}).get("busy_candidate") or "v2"
        self._take(self.trigger.on_model_event(self.state, model_event(kind, about), now))
        assert self.state is not None
        return self._take(self.trigger.request_if_ready(self.state, self.version, QUEUE, now))


# -- counting and the request ------------------------------------------------------------


def test_one_request_exactly_when_the_count_reaches_the_threshold():
    lineage = Lineage(RetrainTrigger(threshold=3))
    assert lineage.pair("p1", 0, 10, T0) == []
    assert lineage.pair("p2", 0, 11, T0 + 1) == []
    assert lineage.state is not None and lineage.state["count"] == 2
    (event,) = lineage.pair("p3", 0, 12, T0 + 2)
    assert event["kind"] == "RETRAIN_REQUESTED"
    assert event["model_version"] == "v1" and event["ts"] == T0 + 2
    assert event["pair_count"] == 3
    assert event["pair_ranges"] == [
        {"topic": QUEUE, "partition": 0, "first_offset": 10, "last_offset": 12}
    ]
    assert event["metrics"] == {"threshold": 3.0}
    assert event["parent_version"] is None
    assert "3 preference pairs on v1" in event["detail"] and "request 1" in event["detail"]
    assert lineage.state == {
        "count": 0,
        "first": {},
        "last": {},
        "busy_since": T0 + 2,
        "busy_candidate": candidate_version("v1", event["event_id"]),
        "requests": 1,
        "seen": {"p1": True, "p2": True, "p3": True},
    }


def test_threshold_one_requests_on_every_pair_once_idle():
    lineage = Lineage(RetrainTrigger(threshold=1))
    (event,) = lineage.pair("p1", 2, 7, T0)
    assert event["pair_count"] == 1
    assert event["pair_ranges"] == [
        {"topic": QUEUE, "partition": 2, "first_offset": 7, "last_offset": 7}
    ]


def test_pair_ranges_name_first_and_last_offset_of_each_partition():
    lineage = Lineage(RetrainTrigger(threshold=6))
    script = [("a", 3, 100), ("b", 0, 5), ("c", 3, 104), ("d", 11, 0), ("e", 0, 9)]
    for pair_id, partition, offset in script:
        assert lineage.pair(pair_id, partition, offset, T0) == []
    (event,) = lineage.pair("f", 3, 120, T0)
    assert event["pair_count"] == 6
    assert event["pair_ranges"] == [  # sorted by partition number, not as text
        {"topic": QUEUE, "partition": 0, "first_offset": 5, "last_offset": 9},
        {"topic": QUEUE, "partition": 3, "first_offset": 100, "last_offset": 120},
        {"topic": QUEUE, "partition": 11, "first_offset": 0, "last_offset": 0},
    ]


def test_duplicate_pair_ids_are_counted_once():
    trigger = RetrainTrigger(threshold=3)
    lineage = Lineage(trigger)
    lineage.pair("p1", 0, 1, T0)
    before = lineage.state
    # the same pair replayed, even from another offset, changes nothing
    step = trigger.on_pair(before, pair("p1"), source_offset(QUEUE, 0, 2), T0 + 1)
    assert step.state is before and step.events == []
    assert lineage.pair("p1", 1, 50, T0 + 2) == []
    assert lineage.pair("p2", 0, 3, T0 + 3) == []
    assert lineage.state is not None and lineage.state["count"] == 2
    (event,) = lineage.pair("p3", 0, 4, T0 + 4)
    assert event["pair_count"] == 3
    assert event["pair_ranges"] == [  # neither duplicate's offset widened the range
        {"topic": QUEUE, "partition": 0, "first_offset": 1, "last_offset": 4}
    ]


def test_a_pair_counted_before_a_request_is_not_counted_again_after_it():
    lineage = Lineage(RetrainTrigger(threshold=2))
    lineage.pair("p1", 0, 1, T0)
    assert len(lineage.pair("p2", 0, 2, T0)) == 1
    assert lineage.pair("p1", 0, 1, T0 + 1) == []  # a replay after the request
    assert lineage.state is not None and lineage.state["count"] == 0


# -- busy lineages --------------------------------------------------------------------------


def test_no_second_request_while_busy_and_pairs_keep_counting():
    lineage = Lineage(RetrainTrigger(threshold=2))
    lineage.pair("p1", 0, 1, T0)
    assert len(lineage.pair("p2", 0, 2, T0)) == 1
    for n in range(3, 8):
        assert lineage.pair(f"p{n}", 0, n, T0 + n * SECOND) == []
    assert lineage.state is not None
    assert lineage.state["count"] == 5 and lineage.state["busy_since"] == T0
    assert lineage.trigger.ready(lineage.state, T0 + 8 * SECOND) is False
    assert len(lineage.events) == 1


@pytest.mark.parametrize("kind", ["GATES_FAILED", "ROLLED_BACK"])
def test_an_outcome_frees_the_lineage_and_the_waiting_request_goes_out(kind: str):
    lineage = Lineage(RetrainTrigger(threshold=2))
    lineage.pair("p1", 0, 1, T0)
    (first,) = lineage.pair("p2", 0, 2, T0)
    lineage.pair("p3", 1, 30, T0 + MINUTE)
    lineage.pair("p4", 0, 3, T0 + MINUTE)
    lineage.pair("p5", 1, 31, T0 + MINUTE)
    (second,) = lineage.outcome(kind, T0 + HOUR)
    assert second["kind"] == "RETRAIN_REQUESTED" and second["ts"] == T0 + HOUR
    assert second["pair_count"] == 3
    assert second["pair_ranges"] == [
        {"topic": QUEUE, "partition": 0, "first_offset": 3, "last_offset": 3},
        {"topic": QUEUE, "partition": 1, "first_offset": 30, "last_offset": 31},
    ]
    assert "request 2" in second["detail"]
    assert second["event_id"] != first["event_id"]
    assert lineage.state is not None
    assert lineage.state["busy_since"] == T0 + HOUR and lineage.state["requests"] == 2
    assert lineage.state["count"] == 0


def test_an_outcome_below_the_threshold_only_frees_the_lineage():
    lineage = Lineage(RetrainTrigger(threshold=2))
    lineage.pair("p1", 0, 1, T0)
    lineage.pair("p2", 0, 2, T0)
    lineage.pair("p3", 0, 3, T0 + 1)
    assert lineage.outcome("GATES_FAILED", T0 + HOUR) == []
    assert lineage.state is not None and lineage.state["busy_since"] is None
    (event,) = lineage.pair("p4", 0, 4, T0 + HOUR + 1)  # the next pair reaches it
    assert event["pair_count"] == 2
    assert event["pair_ranges"][0]["first_offset"] == 3


@pytest.mark.parametrize("kind", sorted(ENDS_TRAINING))
def test_every_ending_kind_frees_the_lineage(kind: str):
    trigger = RetrainTrigger(threshold=1)
    step = trigger.on_pair(None, pair("p1"), source_offset(QUEUE, 0, 0), T0)
    assert step.state["busy_since"] == T0
    about = step.state["busy_candidate"]
    freed = trigger.on_model_event(step.state, model_event(kind, about), T0 + 1)
    assert freed.state["busy_since"] is None and freed.events == []


def test_only_events_about_the_pending_candidate_end_or_refresh_its_attempt():
    trigger = RetrainTrigger(threshold=1)
    first = trigger.on_pair(None, pair("p1"), source_offset(QUEUE, 0, 0), T0)
    candidate = first.state["busy_candidate"]
    assert candidate == candidate_version("v1", first.events[0]["event_id"])
    failed = trigger.on_model_event(first.state, model_event("GATES_FAILED", candidate), T0 + 1)
    second = trigger.request_if_ready(
        trigger.on_pair(failed.state, pair("p2"), source_offset(QUEUE, 0, 1), T0 + 2).state,
        "v1", QUEUE, T0 + 2,
    )  # fmt: skip
    now = second.state
    assert now["requests"] == 2 and now["busy_candidate"] not in (None, candidate)
    # the first attempt's late ARCHIVED, or a forced training's outcome: still busy
    for late in (model_event("ARCHIVED", candidate), model_event("GATES_FAILED", "v1-manual")):
        step = trigger.on_model_event(now, late, T0 + 3)
        assert step.state is now and trigger.ready(step.state, T0 + 3) is False
    started = trigger.on_model_event(now, model_event("TRAINING_STARTED", candidate), T0 + 9)
    assert started.state["busy_since"] == now["busy_since"]  # not refreshed by the old one
    ended = trigger.on_model_event(now, model_event("ROLLED_BACK", now["busy_candidate"]), T0 + 4)
    assert ended.state["busy_since"] is None and ended.state["busy_candidate"] is None


def test_a_promoted_candidates_parent_is_retired_and_never_requests_again():
    lineage = Lineage(RetrainTrigger(threshold=2))
    lineage.pair("p1", 0, 1, T0)
    (request,) = lineage.pair("p2", 0, 2, T0)
    for n in range(3, 8):  # its A/B runs: pairs on the parent keep coming
        lineage.pair(f"p{n}", 0, n, T0 + n)
    assert lineage.outcome("PROMOTED", T0 + HOUR) == []  # 5 pairs waiting: none requested
    assert lineage.state is not None and lineage.state["retired"] is True
    assert lineage.pair("p9", 0, 9, T0 + HOUR + 1) == []
    assert lineage.pair("p10", 0, 10, T0 + 2 * HOUR) == []
    assert [e["event_id"] for e in lineage.events] == [request["event_id"]]


@pytest.mark.parametrize(
    "kind", ["TRAINED", "REGISTERED", "EVALUATED", "GATES_PASSED", "AB_STARTED"]
)
def test_other_kinds_change_nothing(kind: str):
    trigger = RetrainTrigger(threshold=1)
    busy = trigger.on_pair(None, pair("p1"), source_offset(QUEUE, 0, 0), T0).state
    step = trigger.on_model_event(busy, model_event(kind, busy["busy_candidate"]), T0 + 1)
    assert step.state is busy and step.events == []


def test_an_outcome_on_an_idle_lineage_changes_nothing():
    trigger = RetrainTrigger(threshold=5)
    idle = trigger.on_pair(None, pair("p1"), source_offset(QUEUE, 0, 0), T0).state
    assert trigger.on_model_event(idle, model_event("GATES_FAILED"), T0).state is idle
    started = trigger.on_model_event(idle, model_event("TRAINING_STARTED"), T0 + 1)
    assert started.state is idle  # not busy: nothing to refresh
    fresh = trigger.on_model_event(None, model_event("GATES_FAILED"), T0)
    assert fresh.state == RetrainTrigger.new_state() and fresh.events == []


def test_training_started_refreshes_busy_since():
    trigger = RetrainTrigger(threshold=1, busy_timeout_s=3600)
    busy = trigger.on_pair(None, pair("p1"), source_offset(QUEUE, 0, 0), T0).state
    training = model_event("TRAINING_STARTED", busy["busy_candidate"])
    started = trigger.on_model_event(busy, training, T0 + 50 * MINUTE)
    assert started.state["busy_since"] == T0 + 50 * MINUTE and started.events == []
    # an older TRAINING_STARTED does not move it back
    older = trigger.on_model_event(started.state, training, T0 + MINUTE)
    assert older.state["busy_since"] == T0 + 50 * MINUTE
    # past the original timeout but inside the refreshed one: still busy
    step = trigger.on_pair(started.state, pair("p2"), source_offset(QUEUE, 0, 1), T0 + 70 * MINUTE)
    assert step.events == [] and step.state["count"] == 1
    assert trigger.ready(step.state, T0 + 110 * MINUTE - 1) is False
    assert trigger.ready(step.state, T0 + 110 * MINUTE) is True


def test_busy_timeout_lets_a_new_request_out():
    trigger = RetrainTrigger(threshold=1, busy_timeout_s=600)
    lineage = Lineage(trigger)
    assert len(lineage.pair("p1", 0, 0, T0)) == 1
    timeout = 600 * SECOND
    assert lineage.pair("p2", 0, 1, T0 + timeout - 1) == []  # still busy, one ms before
    assert lineage.state is not None and lineage.state["count"] == 1
    assert trigger.ready(lineage.state, T0 + timeout - 1) is False
    assert trigger.ready(lineage.state, T0 + timeout) is True
    (event,) = lineage.pair("p3", 0, 2, T0 + timeout)  # a trainer that died silently
    assert event["pair_count"] == 2
    assert event["pair_ranges"] == [
        {"topic": QUEUE, "partition": 0, "first_offset": 1, "last_offset": 2}
    ]
    assert lineage.state["busy_since"] == T0 + timeout and lineage.state["requests"] == 2


def test_request_if_ready_on_a_timed_out_lineage():
    trigger = RetrainTrigger(threshold=1, busy_timeout_s=60)
    lineage = Lineage(trigger)
    lineage.pair("p1", 0, 0, T0)
    lineage.pair("p2", 0, 1, T0 + SECOND)
    assert lineage.state is not None
    assert trigger.request_if_ready(lineage.state, "v1", QUEUE, T0 + MINUTE - 1).events == []
    (event,) = trigger.request_if_ready(lineage.state, "v1", QUEUE, T0 + MINUTE).events
    assert event["pair_count"] == 1


def test_request_if_ready_with_nothing_counted_emits_nothing():
    trigger = RetrainTrigger(threshold=1)
    state = RetrainTrigger.new_state()
    step = trigger.request_if_ready(state, "v1", QUEUE, T0)
    assert step.state is state and step.events == []


# -- determinism and state ----------------------------------------------------------------


def _run(trigger: RetrainTrigger) -> list[dict[str, Any]]:
    lineage = Lineage(trigger)
    lineage.pair("p1", 0, 1, T0)
    lineage.pair("p2", 0, 2, T0 + 1)
    lineage.pair("p3", 0, 3, T0 + 2)
    lineage.pair("p4", 0, 4, T0 + 3)
    lineage.outcome("GATES_FAILED", T0 + HOUR)
    return lineage.events


def test_event_ids_are_deterministic():
    first, again = _run(RetrainTrigger(threshold=2)), _run(RetrainTrigger(threshold=2))
    assert len(first) == 2
    assert first == again  # the same input, the same events (ids included)
    assert first[0]["event_id"] != first[1]["event_id"]
    other = Lineage(RetrainTrigger(threshold=1), version="v9")
    (event,) = other.pair("p1", 0, 1, T0)
    assert event["model_version"] == "v9"
    assert event["event_id"] != first[0]["event_id"]  # another version, another id


def test_a_trigger_that_lost_its_state_names_new_pairs_with_a_new_id():
    """A request's number starts again with a lost table; its pairs' offsets do not."""
    (first,) = Lineage(RetrainTrigger(threshold=1)).pair("p1", 0, 1, T0)
    (later,) = Lineage(RetrainTrigger(threshold=1)).pair("p9", 0, 9, T0 + HOUR)
    assert "request 1" in first["detail"] and "request 1" in later["detail"]
    assert later["event_id"] != first["event_id"]  # the trainer will not take it for a replay


def test_state_passed_in_is_never_modified():
    trigger = RetrainTrigger(threshold=2, busy_timeout_s=60)
    state: dict[str, Any] | None = None
    calls = [
        ("pair", ("p1", 0, 1), T0),
        ("pair", ("p2", 1, 5), T0 + 1),  # the request
        ("pair", ("p3", 1, 6), T0 + 2),
        ("pair", ("p3", 1, 6), T0 + 3),  # a duplicate
        ("event", "TRAINING_STARTED", T0 + 4),
        ("pair", ("p4", 0, 2), T0 + 5),
        ("event", "GATES_FAILED", T0 + 6),
        ("ready", None, T0 + 7),
        ("pair", ("p5", 0, 3), T0 + MINUTE + 7),
    ]
    emitted = 0
    for what, arg, now in calls:
        before = copy.deepcopy(state)
        if what == "pair":
            pair_id, partition, offset = arg
            where = source_offset(QUEUE, partition, offset)
            step = trigger.on_pair(state, pair(pair_id), where, now)
        elif what == "event":
            step = trigger.on_model_event(state, model_event(arg), now)
        else:
            assert state is not None
            step = trigger.request_if_ready(state, "v1", QUEUE, now)
        assert state == before
        emitted += len(step.events)
        state = step.state
    assert emitted == 2


@pytest.mark.parametrize("threshold", [0, -1])
def test_threshold_below_one_raises(threshold: int):
    with pytest.raises(ValueError, match=f"threshold={threshold}"):
        RetrainTrigger(threshold=threshold)
