"""What a ``FeedbackClient`` has done so far: one immutable snapshot of its counters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientStats"]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters of one client since it started (``FeedbackClient.stats``).

    ``emitted``: events accepted by an emit call (validated, encoded).
    ``delivered``: events Kafka acknowledged (acks=all); a re-sent duplicate counts once
    per acknowledgement.
    ``spooled``: events held in the spool instead of being handed to the producer at
    once (the broker unreachable, the producer's queue full, replay in progress).
    ``dropped``: events discarded because the spool was full (``spool_max_bytes``) or
    the disk refused them while the broker could not take them either.
    ``unjournaled``: (``journal`` durability) events sent without being journaled
    because the spool was full while the broker was taking events: ``spool_max_bytes``
    is too small for the event rate (it must hold about a second of traffic).
    ``failed``: events Kafka rejected for good (too large, not authorised).
    ``recovered``: undelivered events found in the spool at start (left by an earlier
    process, possibly already delivered once) and re-sent.
    ``pending``: events neither delivered nor given up yet.
    ``spool_bytes``: undelivered bytes in the spool journal.
    ``connected``: whether the last news from the broker was a delivery rather than
    an outage.
    """

    emitted: int
    delivered: int
    spooled: int
    dropped: int
    unjournaled: int
    failed: int
    recovered: int
    pending: int
    spool_bytes: int
    connected: bool
