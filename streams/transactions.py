"""Exactly-once for every output, not only for table changelogs.

faust-streaming (0.15) opens one transactional producer per task (topic group and
partition) and commits each task's offsets in its transaction, but it picks the
producer of a *sent* record by the record's destination partition: a record sent to
a topic no agent of the app reads fails (no producer for it), and one sent to
another partition lands in another task's transaction, committed independently of
the input that caused it (faust-streaming issues 177 and 517). Kafka Streams' rule
is the one that makes consume-transform-produce exactly once: everything produced
while processing an input goes into the transaction of the input's task.

:class:`TaskTransactionManager` applies that rule: a send made while an agent
processes an event goes through the transactional producer of the event's task,
whatever the destination; the task's next commit then covers the input offset, the
changelog writes and the outputs together, and a crash aborts all of them.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.consumer import TransactionManager

__all__ = ["TaskTransactionManager", "install"]


class TaskTransactionManager(TransactionManager):
    """Routes each send to the transaction of the task whose event caused it."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        event = faust.current_event()
        if event is None:  # not caused by an input: Faust's own rule
            return await super().send(topic, key, value, partition, timestamp, headers)
        source = event.message.tp
        group = self.app.assignor.group_for_topic(source.topic)
        task = f"{self.app.conf.id}-{group}-{source.partition}"
        destination = self.consumer.key_partition(topic, key, partition)
        return await self.producer.send(
            topic, key, value, destination, timestamp, headers, transactional_id=task
        )


def install(app: faust.App) -> None:
    """Make ``app`` use :class:`TaskTransactionManager` (before its worker starts)."""
    app.transport.TransactionManager = TaskTransactionManager  # type: ignore[attr-defined]
