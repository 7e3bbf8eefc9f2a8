"""What was delivered: the journal watermark, from the producer's reports.

``journal`` durability (``Tracker``): every event is produced with a delivery report
carrying its journal position. Reports arrive out of order across partitions, so the
tracker keeps the positions in produce order and the ones reported early; the
watermark is the end of the longest prefix that is all reported. It moves with every
report, so a crash re-sends only what was in flight.

``memory`` durability (``DrainWatch``): the producer reports failures only, which
spares a Python callback per event. The journal holds only what could not be sent
directly, and the watermark moves to the last journal event produced whenever the
producer's queue is empty: everything given to it before was then acknowledged, or its
failure reported (a report waits in the queue until served, so the queue is not empty
before the failure is handled).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["DrainWatch", "Tracker"]


class Tracker:
    """Journal positions produced and not yet reported, in produce order.

    The emit path appends (under the client's lock) and the delivery thread completes;
    a deque is safe for one appender and one popper. ``held`` positions failed in a way
    that calls for a re-send: the watermark stops before the first of them.
    """

    __slots__ = ("acked", "done", "held", "inflight")

    def __init__(self, acked: int) -> None:
        self.acked = acked
        self.inflight: deque[int] = deque()
        self.done: set[int] = set()  # reported, but behind an unreported one
        self.held = False  # a re-send is pending: the watermark must not pass it

    def complete(self, end: int) -> None:
        """The event ending at ``end`` was delivered (or given up for good)."""
        inflight = self.inflight
        if inflight and inflight[0] == end and not self.held:
            inflight.popleft()
            done = self.done
            while done and inflight and inflight[0] in done:
                end = inflight.popleft()
                done.discard(end)
            self.acked = end
        else:
            self.done.add(end)

    def hold(self) -> None:
        """An event must be sent again: stop the watermark where it is."""
        self.held = True

    def restart(self) -> int:
        """After a re-send was settled: forget what is in flight, keep what was reported
        delivered (the replay skips it); the position to replay from."""
        self.inflight.clear()
        self.held = False
        return self.acked

    def skip(self, end: int) -> bool:
        """Whether the replay may skip ``end`` (reported delivered before a re-send)."""
        if end in self.done:
            self.done.discard(end)
            self.inflight.append(end)
            self.complete(end)
            return True
        return False


class DrainWatch:
    """The watermark of ``memory`` durability: the last journal event produced, once the
    producer's queue is empty."""

    __slots__ = ("produced_end",)

    def __init__(self, acked: int) -> None:
        self.produced_end = acked  # set after each produce(): see advance()

    def advance(self, acked: int, queued: Callable[[], int]) -> int:
        """The new watermark. ``produced_end`` is read before the queue length: an event
        produced after the read is in the queue, so a zero length covers it too."""
        produced_end = self.produced_end
        if produced_end > acked and queued() == 0:
            return produced_end
        return acked
