"""The worker's health view: changelogs apart from paused inputs, and a lag that reads 0
on a partition read to its end, transaction markers and all.

What a real worker shows at rest is checked against a broker by
``test_the_health_view_of_a_worker_at_rest_reads_healthy``
(tests/integration/test_streams.py); this pins the rules on a worker that is built but
not started, its consumer's readings set by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from prefloop.settings import load_settings
from prefloop.streams.app import StreamsApp
from prefloop.streams.health import awaiting_commit, partition_lag


def test_a_partition_read_to_its_end_past_its_commit_markers_has_no_lag() -> None:
    # records up to 14 processed and committed (15); 15 and 16 are commit markers
    assert partition_lag(end=17, committed=15, position=17, pending=False) == 0


def test_records_not_yet_read_or_processed_or_committed_are_lag() -> None:
    assert partition_lag(end=100, committed=30, position=40, pending=True) == 70  # reading
    assert partition_lag(end=17, committed=15, position=15, pending=False) == 2  # not yet read
    # read to the end, but a record handed to an agent waits for its commit
    assert partition_lag(end=20, committed=18, position=20, pending=True) == 2
    assert partition_lag(end=20, committed=None, position=None, pending=False) == 20


def test_what_faust_read_says_of_records_awaiting_their_commit() -> None:
    assert not awaiting_commit(read=14, committed=15, acked=False)  # all committed
    assert not awaiting_commit(read=15, committed=15, acked=False)  # sought there: none read
    assert not awaiting_commit(read=None, committed=None, acked=False)  # nothing at all
    assert awaiting_commit(read=15, committed=15, acked=True)  # 15 processed, not committed
    assert awaiting_commit(read=19, committed=15, acked=False)  # 15..19 handed over
    assert awaiting_commit(read=0, committed=None, acked=False)  # the first record


@pytest.fixture
def streams(tmp_path: Path) -> StreamsApp:
    return StreamsApp(load_settings(environ={}, home=tmp_path, topic_prefix="t"))


Reading = tuple[int, int | None, int | None, int | None]


def readings(streams: StreamsApp, assigned: dict[TP, Reading]) -> Any:
    """Give the unstarted consumer ``assigned``: {tp: (end, committed, position, read)}."""
    consumer: Any = streams.app.consumer
    consumer.assignment = lambda: set(assigned)
    consumer.highwater = lambda tp: assigned[tp][0]
    consumer.client_position = lambda tp: assigned[tp][2]
    for tp, (_, committed, _, read) in assigned.items():
        consumer._committed_offset[tp] = committed
        consumer._read_offset[tp] = read
    return consumer


def test_changelogs_paused_by_design_are_not_paused_inputs(streams: StreamsApp) -> None:
    interactions, by_prompt = TP("t.interactions", 0), TP("t.streams-by-prompt", 1)
    changelog, leader = TP("t-streams-conversations-changelog", 0), TP("t-streams-__leader", 0)
    consumer = readings(
        streams,
        {
            interactions: (6, 6, 6, 5),
            by_prompt: (17, 15, 17, 14),  # two commit markers after the last record
            changelog: (22, None, 0, None),  # read at start to rebuild the table, paused since
            leader: (0, None, 0, None),
        },
    )
    consumer.pause_partitions({changelog})
    health = streams.health()
    assert health["assigned"] == sorted(
        f"{tp.topic}:{tp.partition}" for tp in (interactions, by_prompt, changelog, leader)
    )
    assert health["changelogs"] == ["t-streams-conversations-changelog:0"]
    assert health["paused"] == []
    assert health["lag"] == {"t.interactions:0": 0, "t.streams-by-prompt:1": 0}

    consumer.pause_partitions({interactions})  # a rebalance holds an input back
    assert streams.health()["paused"] == ["t.interactions:0"]


def test_a_processed_record_is_lag_until_it_is_committed(streams: StreamsApp) -> None:
    ticks = TP("t.streams-ticks", 0)
    consumer = readings(streams, {ticks: (20, 18, 20, 19)})  # 18 and 19 read
    assert streams.health()["lag"] == {"t.streams-ticks:0": 2}
    consumer._committed_offset[ticks] = 19
    consumer._acked[ticks].append(19)  # processed, the next commit takes it
    assert streams.health()["lag"] == {"t.streams-ticks:0": 1}
    consumer._acked[ticks].clear()
    consumer._committed_offset[ticks] = 20
    assert streams.health()["lag"] == {"t.streams-ticks:0": 0}


def test_a_worker_restarted_at_rest_has_no_lag(streams: StreamsApp) -> None:
    by_prompt = TP("t.streams-by-prompt", 1)
    # sought to the committed offset (Faust's read offset set to it), nothing read
    # since, the client past the two markers
    readings(streams, {by_prompt: (17, 15, 17, 15)})
    assert streams.health()["lag"] == {"t.streams-by-prompt:1": 0}
