"""The worker's Kafka consumer: no input read while Faust can still drop it unseen.

faust-streaming (0.15) restores a worker's tables, then resumes its input partitions,
seeks them to their committed offsets, and finally resumes flow control, which clears
every agent's queue (``FlowControlEvent.resume``). Its fetcher is already running (it
read the changelogs), so records it delivers between the resume of the partitions and
that clear sit in the agents' queues and are thrown away unseen. Two defects follow,
both found by the SIGKILL test after a restart on a backlog:

* the lost records are never acknowledged, so the committed offset of their partition
  never moves again: the partition is stuck;
* the seek, running on the Kafka client's thread meanwhile, sets Faust's read offset
  back to the committed offset behind the records already delivered; Faust takes the
  next record for a jump over offsets it will never see (as it does for transaction
  markers) and counts the lost records as processed: they are committed unseen.

:class:`WorkerConsumer` defers every partition resume to the ``resume_flow`` that
follows it at each call site, after the clear: nothing is delivered in between, the
seek cannot race a delivery, and the clear has nothing of ours to drop.

It also tells the health view (:mod:`prefloop.streams.health`) the Kafka client's
position, which, unlike Faust's read offset, moves past transaction markers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

__all__ = ["WorkerConsumer", "install"]


class WorkerConsumer(Consumer):
    """Faust's aiokafka consumer, resuming partitions only when flow resumes."""

    _resume_deferred: set[TP] | None = None

    def client_position(self, tp: TP) -> int | None:
        """The next offset the Kafka client hands over for ``tp``: past the transaction
        markers and aborted records it skips, unlike Faust's own read offset. None
        while the partition has no position (just assigned, not yet sought).

        The client lives on the consumer's thread; this reads its state from the app's,
        as Faust's own ``highwater`` does: a snapshot, never a change."""
        client: Any = getattr(self._thread, "_consumer", None)
        subscription = client._subscription.subscription if client is not None else None
        assignment = subscription.assignment if subscription is not None else None
        state = assignment.state_value(tp) if assignment is not None else None
        if state is None or not state.has_valid_position:
            return None
        return int(state.position)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        deferred = self._resume_deferred or set()
        deferred.update(tps)
        self._resume_deferred = deferred

    def resume_flow(self) -> None:
        super().resume_flow()
        deferred, self._resume_deferred = self._resume_deferred, None
        if deferred:
            held = deferred & self.assignment()  # a rebalance may have taken some
            if held:
                super().resume_partitions(held)


def install(app: faust.App) -> None:
    """Make ``app`` use :class:`WorkerConsumer` (before it starts)."""
    transport: Any = app.transport
    transport.Consumer = WorkerConsumer
