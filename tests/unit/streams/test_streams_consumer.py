"""The worker's consumer: a partition resume waits for flow control to resume.

Faust clears every agent's queue when flow control resumes; a partition resumed before
that delivers records into queues about to be cleared. The end-to-end proof is the
SIGKILL test (tests/integration/test_streams.py); this pins the mechanism."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.types import TP

from prefloop.streams.consumer import WorkerConsumer, install

INPUT, OTHER, GONE = TP("t.interactions", 0), TP("t.interactions", 1), TP("t.feedback", 0)


@pytest.fixture
def consumer() -> Iterator[Any]:
    app = faust.App("test-worker-consumer", broker="kafka://127.0.0.1:1")
    install(app)
    held: Any = app.consumer  # built, not started: no broker is contacted
    held.assignment = lambda: {INPUT, OTHER}
    held.pause_partitions({INPUT, OTHER})
    yield held


def test_the_app_uses_the_worker_consumer(consumer: Any) -> None:
    assert isinstance(consumer, WorkerConsumer)


def test_a_resumed_partition_is_read_only_once_flow_resumes(consumer: Any) -> None:
    consumer.resume_partitions({INPUT})
    assert INPUT not in consumer._get_active_partitions()
    consumer.app.flow_control.resume()  # clears the queues: nothing of INPUT is in them
    consumer.resume_flow()
    assert consumer._get_active_partitions() == {INPUT}
    assert INPUT not in consumer._paused_partitions


def test_a_partition_taken_by_a_rebalance_meanwhile_is_not_resumed(consumer: Any) -> None:
    consumer.resume_partitions({OTHER, GONE})
    consumer.resume_flow()
    assert consumer._get_active_partitions() == {OTHER}


def test_a_resume_flow_with_nothing_deferred_changes_nothing(consumer: Any) -> None:
    consumer.resume_flow()
    assert consumer._get_active_partitions() == set()
    consumer.resume_partitions({INPUT})
    consumer.resume_flow()
    consumer.resume_flow()
    assert consumer._get_active_partitions() == {INPUT}
