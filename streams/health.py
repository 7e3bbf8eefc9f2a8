"""The worker's health view (``GET /prefloop/health/``): what it holds, what it reads,
and how far behind it is.

Faust's bookkeeping, shown as it is, makes a worker at rest look unwell (seen against
a real broker; ``test_the_health_view_of_a_worker_at_rest_reads_healthy`` in
tests/integration/test_streams.py holds the view to what follows):

* Faust assigns a worker its tables' changelog partitions along with its inputs. With
  no standby replicas it reads them only to rebuild the tables (at start, after a
  rebalance) and keeps them paused otherwise, by design. They are listed under
  ``changelogs``; ``paused`` names only the input partitions the agents are held
  back from, which at rest is none.
* Under exactly-once every transaction writes a commit marker into each partition it
  wrote to. A topic the worker both writes and reads (streams-by-prompt, retrain-queue,
  model-events) so ends in markers: its end offset (the last stable offset) stays a
  marker or a few past the committed offset with nothing left to read. The Kafka
  client's position moves past markers and aborted records; Faust's committed offset
  stops after the last record. :func:`partition_lag` reads a partition whose position
  has reached the end, with every record handed to an agent committed, as 0.

A tick read and processed still counts until the next commit (``broker_commit_interval``,
1 s), as its effects are not visible before: at rest the partitions ticks go to show a
lag of 1 for up to a second after each tick, and 0 in between.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust

__all__ = ["awaiting_commit", "partition_lag", "worker_health"]


def partition_lag(end: int, committed: int | None, position: int | None, pending: bool) -> int:
    """How many offsets of a partition the worker has yet to process and commit.

    ``end`` is the last stable offset under exactly-once (the high watermark
    otherwise), ``committed`` the worker's committed offset, ``position`` the next
    offset its Kafka client hands over, ``pending`` whether a record handed to an
    agent is not yet covered by a commit (:func:`awaiting_commit`).

    0 when the client has reached the end and nothing handed to an agent waits for a
    commit: what lies between the committed offset and the end holds no record. Else
    the end less the committed offset, counting any markers in between: an upper
    bound, and one that keeps growing on a partition whose commits are stuck.
    """
    done = committed or 0
    if position is not None and position >= end and not pending:
        return 0
    return max(0, end - done)


def awaiting_commit(read: int | None, committed: int | None, acked: bool) -> bool:
    """Whether a record handed to an agent is not yet covered by a commit.

    ``read`` is Faust's read offset: the offset of the last record handed to an agent
    or, right after the seek that follows an assignment, the committed offset itself
    with nothing handed over (None: nothing either). ``acked``: processed records
    wait for the next commit. (The one record at the committed offset handed over and
    not yet processed reads as not pending, for the moment that lasts; while an
    agent's queue is full its partition is ``buffered``.)
    """
    if read is None:
        return False
    if committed is None:
        return True
    return read > committed or (read == committed and acked)


def worker_health(app: faust.App) -> dict[str, Any]:
    """The partitions ``app``'s worker holds, those it is not reading now, and its lag.

    ``assigned``: every partition held; ``changelogs``: those of them that are table
    changelogs (read only to rebuild a table, paused otherwise); ``paused``: input
    partitions Faust holds back (table recovery, a rebalance); ``buffered``: input
    partitions whose agent's queue is full; ``lag``: per input partition,
    :func:`partition_lag`. An input partition that stays paused or buffered while its
    lag grows is stuck.
    """
    consumer: Any = app.consumer
    assigned = set(consumer.assignment())
    changelog_topics = app.tables.changelog_topics
    input_topics = {name for agent in app.agents.values() for name in _topics_of(agent)}
    changelogs = {tp for tp in assigned if tp.topic in changelog_topics}
    inputs = {tp for tp in assigned if tp.topic in input_topics}
    lag = {}
    for tp in inputs:
        end = consumer.highwater(tp)
        if end is None or end < 0:  # not fetched yet: unknown, not zero
            continue
        committed = consumer._committed_offset.get(tp)
        read = consumer._read_offset.get(tp)
        pending = awaiting_commit(read, committed, bool(consumer._acked.get(tp)))
        lag[_name(tp)] = partition_lag(end, committed, consumer.client_position(tp), pending)
    return {
        "app": app.conf.id,
        "assigned": _names(assigned),
        "changelogs": _names(changelogs),
        "paused": _names(consumer._paused_partitions & inputs),
        "buffered": _names(consumer._buffered_partitions & inputs),
        "in_recovery": bool(app.in_recovery),
        "flow_active": bool(consumer.flow_active),
        "lag": dict(sorted(lag.items())),
    }


def _topics_of(agent: Any) -> Iterable[str]:
    return getattr(agent.channel, "topics", None) or ()


def _name(tp: Any) -> str:
    return f"{tp.topic}:{tp.partition}"


def _names(tps: Iterable[Any]) -> list[str]:
    return sorted(_name(tp) for tp in tps)
