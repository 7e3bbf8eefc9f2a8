"""UUIDv7 event ids: format, time, order, uniqueness across threads."""

from __future__ import annotations

import threading
import time
import uuid

from prefloop_sdk.ids import id_time_ms, new_id, stamp, stamp2


def test_ids_are_rfc9562_version_7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    ms, event_id = stamp()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(event_id)
    assert str(parsed) == event_id
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= ms <= after
    assert id_time_ms(event_id) == ms


def test_ids_of_one_process_strictly_increase_as_strings() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    _, first, second = stamp2()
    assert first < second and new_id() > second


def test_ids_made_by_many_threads_at_once_are_unique() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        for _ in range(5_000):
            out.append(new_id())

    threads = [threading.Thread(target=work, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every) == 40_000
    for out in made:  # each thread sees increasing ids
        assert out == sorted(out)
