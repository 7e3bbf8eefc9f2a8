"""Exactly-once for every output, not only for table changelogs.

faust-streaming (0.15) opens one transactional producer per task (topic group and
partition) and commits each task's offsets in its transaction, but it picks the
producer of a *sent* record by the record's destination partition: a record sent to
a topic no agent of the app reads fails (no producer for it), and one sent to
another partition lands in another task's transaction, committed independently of
the input that caused it (faust-streaming issues 177 and 517). Kafka Streams' rule
is the one that makes consume-transform-produce exactly once: everything produced
while processing an input goes into the transaction of the input's task.

Faust also commits from its own task at any moment, even while an agent is half way
through an event: outputs sent so far would commit without the event's offset and be
sent again on replay. So the agents never await inside an event: their outputs and
table writes go to Faust's producer buffer (``send_soon``) in one synchronous step,
acked in the same step; and a :class:`ProcessingGate` holds new events back while a
commit publishes what the acked events buffered and commits it with their offsets.

Buffered messages are published later, from the buffer's own task, outside the event:
Faust picked their producer by the destination's topic group (for a changelog, one whose
transaction no input offset ever commits), so they sat in a transaction that timed out
and were lost to a crash while their inputs counted as done. Each buffered message is
routed to the task of the event that made it, a commit first waits for the buffer, and
a task that produced without a new offset is committed too (all found by the SIGKILL
test).

:class:`TaskTransactionManager` applies that rule: a send made while an agent
processes an event goes through the transactional producer of the event's task,
whatever the destination; the task's next commit then covers the input offset, the
changelog writes and the outputs together, and a crash aborts all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import faust
from faust.transport.consumer import TransactionManager
from faust.types import TP

__all__ = ["ProcessingGate", "TaskTransactionManager", "install"]


_SOURCE: ContextVar[TP | None] = ContextVar("prefloop_source_partition", default=None)
"""The input partition whose event made the buffered table write being published."""


class ProcessingGate:
    """Agents process events inside the gate; a commit closes it and waits until no
    event is in flight, so a transaction never holds half of an event's effects."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    async def gated(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``events`` with each one processed inside the gate.

        The agent's loop body runs while this generator waits at ``yield``; leaving the
        gate and Faust's ack of the event happen with no await in between.
        """
        async for event in events:
            while not self._open.is_set():
                await self._open.wait()
            self._in_flight += 1
            self._idle.clear()
            try:
                yield event
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

    @asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


class TaskTransactionManager(TransactionManager):
    """Routes each send to the transaction of the task whose event caused it, and
    commits only once every buffered table write is in its transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffered: dict[asyncio.Future[Any], TP | None] = {}
        self._dirty: set[str] = set()  # tasks that produced since the last commit
        buffer_send = self.producer.send_soon
        buffer: Any = self.producer.buffer
        publish = buffer._send_pending

        def send_soon(fut: Any) -> None:  # a table write, inside the event that made it
            event = faust.current_event()
            self._buffered[fut] = event.message.tp if event is not None else None
            fut.add_done_callback(self._buffered.pop)
            buffer_send(fut)

        async def send_pending(fut: Any) -> None:  # later, from the buffer's own task
            token = _SOURCE.set(self._buffered.get(fut))
            try:
                await publish(fut)
            finally:
                _SOURCE.reset(token)

        self.producer.send_soon = send_soon  # type: ignore[method-assign]
        buffer._send_pending = send_pending

    gate: ProcessingGate  # set by install()

    async def commit(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        async with self.gate.closed():
            if self._buffered:  # table writes made before this commit belong to it
                await asyncio.wait(list(self._buffered))
            # events acked while the gate closed are in this transaction: commit them too
            # added to Faust's own mapping, in place: Faust records what it committed
            # from that same mapping once this returns; an offset committed here but
            # missing there would leave Faust's idea of the committed offset behind,
            # and it would never commit that partition again
            consumer: Any = self.consumer
            assigned = consumer.assignment()
            acked = consumer._filter_committable_offsets(set(consumer._acked))
            offsets.update({tp: o for tp, o in acked.items() if tp in assigned})
            done = bool(await super().commit(offsets, start_new_transaction))
            # a task that produced since its last commit but has no new offset (its last
            # table writes left the buffer after that commit): commit it too, or its
            # transaction would stay open until the broker times it out and aborts it
            committed = {self._task_of(tp) for tp in offsets}
            producer: Any = self.producer
            for task in sorted(self._dirty - committed):
                if task in producer._transaction_producers:
                    await producer.commit_transaction(task)
                    await producer.begin_transaction(task)
            self._dirty.clear()
        return done

    def _task_of(self, tp: TP) -> str:
        return f"{self.app.conf.id}-{self.app.assignor.group_for_topic(tp.topic)}-{tp.partition}"

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
        source = event.message.tp if event is not None else _SOURCE.get()
        if source is None:  # not caused by an input: Faust's own rule
            return await super().send(topic, key, value, partition, timestamp, headers)
        task = self._task_of(source)
        self._dirty.add(task)
        destination = self.consumer.key_partition(topic, key, partition)
        return await self.producer.send(
            topic, key, value, destination, timestamp, headers, transactional_id=task
        )


def install(app: faust.App, gate: ProcessingGate) -> None:
    """Make ``app`` use :class:`TaskTransactionManager` with ``gate`` (before it starts)."""
    manager = type("GatedTransactionManager", (TaskTransactionManager,), {"gate": gate})
    app.transport.TransactionManager = manager  # type: ignore[misc]
