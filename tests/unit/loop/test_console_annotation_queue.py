"""The annotation queue's rules on a real SQLite file: order, overlap, holds, nobody twice,
late answers; and the agreement measures against hand-worked values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefloop.loop.console.agreement import agreement
from prefloop.loop.console.annotation_queue import AnnotationError, AnnotationQueue, Judgement


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def task(n: int, priority: float = 0.5) -> dict[str, Any]:
    return {
        "task_id": f"t-{n}",
        "interaction_id": f"int-{n}",
        "response_id": f"resp-{n}",
        "conversation_id": f"conv-{n}",
        "model_version": "v1",
        "prompt": [{"role": "user", "content": f"question {n}"}],
        "response": f"original {n}",
        "priority": priority,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


def queue_with(tmp_path: Path, clock: Clock, tasks: list[dict[str, Any]], overlap: int = 1):
    queue = AnnotationQueue(tmp_path / "q.db", lock_s=60.0, clock=clock)
    for t in tasks:
        assert queue.add(t, overlap)
        queue.set_alternative(t["task_id"], f"alternative {t['task_id']}", "v2", "another version")
    return queue


def test_tasks_come_highest_priority_first_and_a_task_is_queued_once(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(1, 0.2), task(2, 0.9), task(3, 0.5)])
    assert not queue.add(task(2), 1)  # read again after a restart: still one task
    sent: list[dict[str, Any]] = []
    order = []
    while (given := queue.take("ann")) is not None:
        order.append(given.task_id)
        queue.answer(given.task_id, "ann", "A", None, sent.append)
    assert order == ["t-2", "t-3", "t-1"]
    assert [r["task_id"] for r in sent] == order
    assert queue.progress("ann") == {
        "done": 3, "left_for_me": 0, "preparing": 0, "complete": 3, "tasks": 3,
    }  # fmt: skip


def test_a_task_without_its_alternative_is_not_given(tmp_path, clock) -> None:
    queue = AnnotationQueue(tmp_path / "q.db", lock_s=60.0, clock=clock)
    queue.add(task(1), 1)
    assert queue.take("ann") is None
    assert [t["task_id"] for t in queue.without_alternative()] == ["t-1"]
    assert queue.open_count() == 0
    queue.set_alternative("t-1", "other", "v1", "other sampling")
    assert queue.open_count() == 1  # the feed generates only this many ahead
    assert queue.take("ann") is not None
    assert queue.open_count() == 0  # held: not open
    assert queue.without_alternative() == []


def test_the_result_names_which_response_was_the_logged_one(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(n) for n in range(8)])
    sent: list[dict[str, Any]] = []
    while (given := queue.take("ann")) is not None:
        queue.answer(given.task_id, "ann", "B", "fine", sent.append)
    sides = set()
    for result in sent:
        n = result["task_id"].removeprefix("t-")
        if result["response_a"] == f"original {n}":
            assert (result["response_a_id"], result["response_b_id"]) == (f"resp-{n}", None)
            assert result["response_b"] == f"alternative t-{n}"
            sides.add("A")
        else:
            assert (result["response_a_id"], result["response_b_id"]) == (None, f"resp-{n}")
            assert result["response_a"] == f"alternative t-{n}"
            sides.add("B")
        assert (result["choice"], result["comment"], result["overlap"]) == ("B", "fine", 1)
    assert sides == {"A", "B"}  # the order is the task's, not always the same side


def test_a_held_task_goes_to_nobody_else_until_the_hold_lapses(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(1)])
    first = queue.take("ann")
    assert first is not None and first.task_id == "t-1"
    assert queue.take("ann").task_id == "t-1"  # asking again (a reload) gives it back
    assert queue.take("bob") is None
    clock.now += 61
    second = queue.take("bob")
    assert second is not None and second.task_id == "t-1"
    assert queue.take("ann") is None  # never the same task twice, even one let lapse
    with pytest.raises(AnnotationError, match="lapsed after 60 s and it went to another"):
        queue.answer("t-1", "ann", "A", None, lambda r: None)
    queue.answer("t-1", "bob", "B", None, lambda r: None)


def test_a_late_answer_counts_while_the_slot_is_free(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(1)])
    queue.take("ann")
    clock.now += 61
    result = queue.answer("t-1", "ann", "A", None, lambda r: None)
    assert result["choice"] == "A"
    assert queue.take("bob") is None  # answered: no slot left


def test_overlap_gives_a_task_to_k_annotators(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(1)], overlap=2)
    a, b = queue.take("ann"), queue.take("bob")
    assert a is not None and b is not None and a.task_id == b.task_id == "t-1"
    assert (a.response_a, a.response_b) == (b.response_a, b.response_b)  # one order
    assert queue.take("cid") is None
    results = []
    queue.answer("t-1", "ann", "A", None, results.append)
    queue.answer("t-1", "bob", "B", None, results.append)
    assert [r["overlap"] for r in results] == [2, 2]
    assert len({r["result_id"] for r in results}) == 2


def test_answers_are_checked(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(1)])
    with pytest.raises(AnnotationError, match="was not given to ann"):
        queue.answer("t-1", "ann", "A", None, lambda r: None)
    queue.take("ann")
    with pytest.raises(AnnotationError, match="choice 'C' is not one of A, B, TIE"):
        queue.answer("t-1", "ann", "C", None, lambda r: None)

    def broker_refuses(record: dict[str, Any]) -> None:
        raise RuntimeError("no broker")

    with pytest.raises(RuntimeError):
        queue.answer("t-1", "ann", "A", None, broker_refuses)
    queue.answer("t-1", "ann", "A", None, lambda r: None)  # nothing was stored: again
    with pytest.raises(AnnotationError, match="already answered"):
        queue.answer("t-1", "ann", "A", None, lambda r: None)


def test_the_queue_survives_a_restart(tmp_path, clock) -> None:
    queue = queue_with(tmp_path, clock, [task(1), task(2)])
    given = queue.take("ann")
    queue.answer(given.task_id, "ann", "TIE", None, lambda r: None)
    queue.close()
    again = AnnotationQueue(tmp_path / "q.db", lock_s=60.0, clock=clock)
    assert [j.choice for j in again.judgements()] == ["TIE"]
    assert again.take("ann").task_id != given.task_id


def test_agreement_kappa_per_pair_and_alpha_overall() -> None:
    # two annotators on four tasks: they agree on three; kappa by hand:
    # p_o = 3/4; ann: A A B B, bob: A A B A -> p_e = (2*3 + 2*1)/16 = 0.5 -> kappa 0.5
    judgements = [
        Judgement(t, who, c)
        for t, who, c in [
            ("t1", "ann", "A"), ("t1", "bob", "A"),
            ("t2", "ann", "A"), ("t2", "bob", "A"),
            ("t3", "ann", "B"), ("t3", "bob", "B"),
            ("t4", "ann", "B"), ("t4", "bob", "A"),
            ("t5", "ann", "SKIP"), ("t5", "bob", "A"),  # a skip is no opinion
            ("t6", "cid", "A"),  # judged alone: in no pair
        ]
    ]  # fmt: skip
    measured = agreement(judgements)
    assert measured["tasks"] == 4 and measured["annotators"] == ["ann", "bob"]
    assert measured["pairs"] == [
        {"annotators": ["ann", "bob"], "tasks": 4, "agreed": 3, "kappa": 0.5}
    ]
    # Krippendorff's alpha, nominal, 2 coders x 4 units: D_o = 2/8, D_e = 2*5*3/(8*7)
    assert measured["alpha"] == pytest.approx(1 - (2 / 8) / (30 / 56), abs=1e-4)


def test_agreement_is_none_where_undefined() -> None:
    same = [Judgement("t1", "ann", "A"), Judgement("t1", "bob", "A")]
    measured = agreement(same)
    assert measured["pairs"][0]["kappa"] is None and measured["alpha"] is None
    assert agreement([]) == {"pairs": [], "alpha": None, "tasks": 0, "annotators": []}
