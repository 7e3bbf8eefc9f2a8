"""The producer loop: hands events to librdkafka, learns what was delivered, replays the spool.

One ``Delivery`` owns one confluent-kafka ``Producer`` (idempotent, acks=all, lz4,
batching by linger) and one background thread that serves it.

States, under ``_lock``:

* direct: ``send`` gives each event to the producer at once (in ``journal``
  durability after appending it to the journal);
* backlog: ``send`` only appends to the journal, and the thread produces from the
  journal's ``_cursor`` on, in journal order, at most ``window_bytes`` beyond the
  delivered watermark.

The client is in backlog while the journal holds events from an earlier process,
while the broker is unreachable (in ``memory`` durability also until it was first
reached) and when the producer's queue is full; it returns to direct once the backlog
is produced and the broker answers. Order is kept because the produce calls happen in
journal order (direct ones under the lock; the replay alone while in backlog, and the
switch back under the lock), librdkafka keeps per-partition order (idempotence), and
messages never expire inside librdkafka (``message.timeout.ms=0``): the spool, not a
timer, bounds what waits.

What was delivered moves the journal's watermark (``tracking``): from a report per
event in ``journal`` durability, from the producer's queue emptying in ``memory``
durability. A failure that calls for a re-send (a purge, a fatal idempotence error, an
expiry the user configured) switches to backlog; once the queue has settled the replay
starts again from the watermark, skipping what was reported delivered. Consumers
de-duplicate by event id what a crash or a re-send repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from .errors import ClientClosedError, ClientConfigError
from .spool import FRAME, Frame, Journal, encode_body, topic_head
from .stats import ClientStats
from .tracking import DrainWatch, Tracker

__all__ = ["PRODUCER_DEFAULTS", "Delivery"]

log = logging.getLogger("prefloop_sdk")
librdkafka_log = logging.getLogger("prefloop_sdk.librdkafka")
if librdkafka_log.level == logging.NOTSET:
    # librdkafka repeats every connection failure; the client warns once itself.
    # Lower this logger's level to see librdkafka's own log.
    librdkafka_log.setLevel(logging.CRITICAL)

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 10,
    # the Java client's (and aiokafka's, so Faust's) partitioner: a conversation's key
    # lands in the same partition whichever client produced it
    "partitioner": "murmur2_random",
    "message.timeout.ms": 0,  # never expire inside librdkafka: the spool bounds waiting
    "queue.buffering.max.kbytes": 131072,
    "reconnect.backoff.max.ms": 2000,  # a returning broker is noticed within ~2 s
    "client.id": "prefloop-sdk",
}
"""librdkafka settings of the client's producer; ``producer_config`` overrides them."""

# Failures after which an event is re-sent rather than given up: a purge, an expiry
# the user configured, the network, an idempotence fault. librdkafka retries every
# other retriable error itself (messages never expire), so any other failure it
# reports is final: an unknown topic, a record too large, no authorisation.
_RESEND = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._FATAL,
    KafkaError._FENCED,
}
_REPLAY_CHUNK = 512
_CATCH_UP_BYTES = 512 * 1024
_REPLAY_STEP_S = 0.005
_PASS_S = 0.005
# librdkafka syslog levels for the level of our librdkafka logger
_SYSLOG = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def _is_permanent(err: KafkaError) -> bool:
    return not (err.code() in _RESEND or err.fatal())


class Delivery:
    """The producer, the journal and the thread between them (see the module docstring)."""

    def __init__(
        self,
        config: dict[str, Any],
        journal: Journal,
        *,
        journal_all: bool,
        fsync_interval: float,
        window_bytes: int,
        describe: str,
    ) -> None:
        level = librdkafka_log.getEffectiveLevel()
        self._config: dict[str, Any] = {
            "log_level": next((v for k, v in sorted(_SYSLOG.items()) if k >= level), 2),
            **config,
            "logger": librdkafka_log,
            "error_cb": self._on_error,
        }
        if not journal_all:  # no Python call per delivered event; see tracking
            self._config["delivery.report.only.error"] = True
            self._config["on_delivery"] = self._on_direct_failed
        self._journal = journal
        self._journal_all = journal_all
        self._fsync_interval = fsync_interval
        self._window = window_bytes
        self._describe = describe  # "Kafka at host:port", for log messages
        self._lock = threading.Lock()
        self._closed = False
        self._closing = False
        self._fatal = False
        self._rewind = False
        self._warned: set[str] = set()
        self._heads: dict[str, bytes] = {}
        self.online = False
        self.emitted = self.spooled = self.dropped = self.failed = self.unjournaled = 0
        self.recovered = journal.pending_frames
        self.delivered = 0
        self._produced = 0  # memory durability: produce() calls that succeeded
        self._reported = 0  # memory durability: failure reports received
        self._tracker = Tracker(journal.acked)
        self._drain = DrainWatch(journal.acked)
        self._skipped: deque[int] = deque()  # journal events refused by produce()
        self._cursor = journal.acked
        # journal durability starts direct unless there is a backlog to re-send first;
        # memory durability journals until the broker was reached once
        self._direct = journal_all and journal.pending_frames == 0
        self._producer = self._new_producer()
        self._produce = self._producer.produce
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefloop-sdk-delivery", daemon=True)
        self._thread.start()

    def _new_producer(self) -> Producer:
        try:
            return Producer(self._config)
        except KafkaException as exc:
            raise ClientConfigError(
                f"librdkafka refused the producer settings: {exc.args[0]}. Fix producer_config "
                "(keys are librdkafka's, e.g. 'security.protocol', 'sasl.mechanism')."
            ) from exc

    # -- the emit path ---------------------------------------------------------------

    def send(self, head: bytes, topic: str, key: bytes | None, value: bytes) -> None:
        """Journal (per durability) and produce one event. Never raises for delivery
        problems; raises ``ClientClosedError`` after ``close``."""
        with self._lock:
            if self._closed:
                raise ClientClosedError()
            self.emitted += 1
            if self._journal_all:
                body = encode_body(head, key, value)
                # direct: not known to be unreachable (an outage turns to backlog)
                taking = self._direct
                end = self._append(body, drop=not taking)
                if end < 0:
                    if taking:  # a spool too small for the rate (or a broken disk)
                        self._send_unjournaled(topic, key, value)
                    return
                if not self._direct:
                    self.spooled += 1
                    return
                tracker = self._tracker
                tracker.inflight.append(end)
                try:
                    self._produce(topic, value, key, on_delivery=partial(self._on_report, end))
                except BufferError:  # the producer's queue is full: go via the journal
                    tracker.inflight.pop()
                    self._direct = False
                    self._cursor = end - FRAME.size - len(body)
                    self.spooled += 1
                except KafkaException as exc:  # refused outright (too large...)
                    self._refused(exc, topic)
                    self._skipped.append(end)
                return
            if self._direct:
                try:
                    self._produce(topic, value, key)
                except BufferError:
                    self._direct = False
                    self._cursor = self._journal.end
                except KafkaException as exc:
                    self._refused(exc, topic)
                    return
                else:
                    self._produced += 1
                    return
            if self._append(encode_body(head, key, value)) >= 0:
                self.spooled += 1

    def _send_unjournaled(self, topic: str, key: bytes | None, value: bytes) -> None:
        """The spool is full while Kafka takes events: send without the journal."""
        try:
            self._produce(topic, value, key, on_delivery=self._on_unjournaled_report)
        except (BufferError, KafkaException):
            self.dropped += 1
            return
        self.unjournaled += 1
        self._warn_once(
            "unjournaled",
            "prefloop: the spool %s takes no more events (full at spool_max_bytes=%d, or "
            "the disk refused) while %s does: events go out without the journal (counted "
            "in stats.unjournaled) until it has room; size the spool for a second or more "
            "of traffic",
            self._journal.directory,
            self._journal.max_bytes,
            self._describe,
        )

    def _append(self, body: bytes, drop: bool = True) -> int:
        """Append under the lock; -1 when it cannot be kept (and, with ``drop``,
        counted and warned about as a dropped event)."""
        journal = self._journal
        try:
            end = journal.append(body)
        except OSError as exc:
            if not drop:
                return -1
            self.dropped += 1
            self._warn_once(
                "disk",
                "prefloop: the spool %s refused a write (%s): dropping events until it "
                "accepts them (counted in stats.dropped)",
                journal.directory,
                exc,
            )
            return -1
        if end < 0 and drop:
            self.dropped += 1
            self._warn_once(
                "full",
                "prefloop: the spool %s is full (%d undelivered bytes, spool_max_bytes=%d) "
                "while %s does not take events: dropping new ones (counted in stats.dropped)",
                journal.directory,
                journal.undelivered_bytes,
                journal.max_bytes,
                self._describe,
            )
        return end

    def _refused(self, exc: KafkaException, topic: str) -> None:
        self.failed += 1
        err = exc.args[0]
        name = err.name() if isinstance(err, KafkaError) else type(exc).__name__
        self._warn_once(
            f"refused-{name}",
            "prefloop: the producer refused an event for %s: %s; it is dropped "
            "(counted in stats.failed)",
            topic,
            err,
        )

    # -- reports, served by the delivery thread --------------------------------------

    def _on_report(self, end: int, err: KafkaError | None, msg: Message) -> None:
        """The report of a journaled event (``journal`` durability)."""
        if err is None:
            self.delivered += 1
            if not self.online:
                self._went_online()
            self._tracker.complete(end)
        elif _is_permanent(err):
            self._gave_up(err, msg)
            self._tracker.complete(end)
        else:
            self._resend(err)

    def _on_unjournaled_report(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        elif _is_permanent(err):
            self._gave_up(err, msg)
        else:  # not in the journal: all that can be done is to try to keep it now
            self._keep(msg)

    def _on_direct_failed(self, err: KafkaError | None, msg: Message) -> None:
        """A failed event produced by ``send`` (``memory`` durability)."""
        if err is None:
            return
        self._reported += 1
        if _is_permanent(err):
            self._gave_up(err, msg)
        else:  # the event exists only here: keep it in the journal
            self._keep(msg)

    def _on_replay_failed(self, err: KafkaError | None, msg: Message) -> None:
        """A failed event produced from the journal (``memory`` durability)."""
        if err is None:
            return
        self._reported += 1
        if _is_permanent(err):
            self._gave_up(err, msg)
        else:
            self._resend(err)

    def _keep(self, msg: Message) -> None:
        topic = msg.topic() or ""
        head = self._heads.get(topic) or self._heads.setdefault(topic, topic_head(topic))
        with self._lock:
            if self._direct:
                self._direct = False
                self._cursor = self._journal.end
            if self._append(encode_body(head, msg.key(), msg.value() or b"")) >= 0:
                self.spooled += 1

    def _resend(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True
        if self._closing:
            return  # the event stays in the journal for the next client
        if not self._rewind:
            log.info("prefloop: re-sending undelivered events from the spool (%s)", err.str())
        self._rewind = True
        self._tracker.hold()

    def _gave_up(self, err: KafkaError, msg: Message) -> None:
        self.failed += 1
        self._warn_once(
            f"failed-{err.name()}",
            "prefloop: Kafka rejected an event for %s for good (%s): it is dropped "
            "(counted in stats.failed)",
            msg.topic(),
            err.str(),
        )

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if err.fatal():
            self._fatal = True
            log.error("prefloop: the Kafka producer failed (%s); starting a new one", err.str())
        elif code == KafkaError._ALL_BROKERS_DOWN:
            self.online = False
            self._to_backlog()
            self._warn_once(
                "offline",
                "prefloop: cannot reach %s (%s); events are kept in the spool %s and sent "
                "when it is back (warned once per outage)",
                self._describe,
                err.str(),
                self._journal.directory,
            )
        elif code in (
            KafkaError._AUTHENTICATION,
            KafkaError._SSL,
            KafkaError.SASL_AUTHENTICATION_FAILED,
        ):
            self._warn_once(
                f"auth-{code}",
                "prefloop: %s refused the credentials (%s): check producer_config's "
                "security settings",
                self._describe,
                err.str(),
            )
        else:
            log.debug("prefloop: producer error %s", err.str())

    def _went_online(self) -> None:
        self.online = True
        if "offline" in self._warned:
            self._warned.discard("offline")
            log.warning(
                "prefloop: %s is reachable again; sending the spooled events", self._describe
            )

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # -- the delivery thread ---------------------------------------------------------

    def _run(self) -> None:
        last_sync = time.monotonic()
        while not self._stop.is_set():
            try:
                replaying = self._replayable()
                self._producer.poll(0 if replaying else 0.02 if self._direct else 0.005)
                self._step()
                now = time.monotonic()
                if self._journal.unsynced and now - last_sync >= self._fsync_interval:
                    last_sync = now
                    self._journal.sync()
                self._journal.prepare()
                if not replaying:
                    # let reports gather: one pass serves many, and each pass costs the
                    # emitting threads a GIL hand-over or two
                    time.sleep(_PASS_S)
            except Exception as exc:  # never let the thread die: log once, back off, go on
                if f"thread-{exc!r}" not in self._warned:
                    self._warned.add(f"thread-{exc!r}")
                    log.exception("prefloop: error in the delivery thread; it goes on")
                time.sleep(0.1)

    def _step(self) -> None:
        while self._skipped:
            self._tracker.complete(self._skipped.popleft())
        if not self._journal_all:
            self._observe()
        if self._fatal:
            self._renew_producer()
        if self._rewind:
            self._to_backlog()
            if len(self._producer) == 0:  # everything given out has settled
                with self._lock:
                    self._rewind = False
                    self._cursor = self._restart_point()
            return
        self._advance()
        if not self._direct:
            self._replay()
        self._journal.persist()
        if self._journal.undelivered_bytes * 2 < self._journal.max_bytes:
            self._warned.discard("full")
            self._warned.discard("unjournaled")

    def _observe(self) -> None:
        """``memory`` durability: count deliveries (produced - queued - failed)."""
        delivered = self._produced - len(self._producer) - self._reported
        if delivered > self.delivered:
            self.delivered = delivered
            if not self.online:
                self._went_online()

    def _acked(self) -> int:
        """Where the watermark is, by the reports so far."""
        if self._journal_all:
            return self._tracker.acked
        return self._drain.advance(self._journal.acked, self._producer.__len__)

    def _advance(self) -> None:
        self._journal.set_acked(self._acked())

    def _restart_point(self) -> int:
        """After a re-send settled: the position the replay starts from (under the lock)."""
        if self._journal_all:
            return self._tracker.restart()
        return self._journal.acked

    def _to_backlog(self) -> None:
        """Stop producing directly; every event up to the journal's end was produced."""
        with self._lock:
            if self._direct:
                self._direct = False
                self._cursor = self._journal.end

    def _replayable(self) -> bool:
        """Whether the backlog has frames to produce and the window has room for them."""
        cursor = self._cursor
        return (
            not self._direct
            and not self._rewind
            and cursor < self._journal.end
            and cursor - self._journal.acked < self._window
        )

    def _replay(self) -> None:
        """Produce the next backlog frames, in order; back to direct when caught up."""
        journal = self._journal
        # Several chunks per step: an emitting thread holds the GIL for up to the switch
        # interval (5 ms) between steps, and one chunk per step would fall behind it.
        # No lock: in backlog ``send`` only appends, so this thread alone produces; the
        # lock (which emitting threads hold most of the time) is taken only to switch.
        deadline = time.monotonic() + _REPLAY_STEP_S
        while self._replayable():
            frames = journal.read(self._cursor, journal.end, _REPLAY_CHUNK)
            if not frames or not self._produce_frames(frames):
                break
            if time.monotonic() > deadline:
                break
        if self.online and not self._closed and not self._rewind:
            with self._lock:
                # emits append while the replay runs: the last stretch is produced
                # under the lock, which holds them back, so the switch is exact
                if journal.end - self._cursor <= _CATCH_UP_BYTES:
                    while self._cursor < journal.end:
                        frames = journal.read(self._cursor, journal.end, _REPLAY_CHUNK)
                        if not frames or not self._produce_frames(frames):
                            break
                if journal.next_position(self._cursor) >= journal.end:
                    self._direct = True
                    self._cursor = journal.end

    def _produce_frames(self, frames: list[Frame]) -> bool:
        """Produce journal frames in order; False when the queue filled. Only the delivery
        thread calls it, while ``send`` does not produce (backlog) or under the lock."""
        tracker = self._tracker
        for end, topic, key, value in frames:
            try:
                if self._journal_all:
                    if tracker.skip(end):  # reported delivered before a re-send
                        self._cursor = end
                        continue
                    tracker.inflight.append(end)
                    self._produce(topic, value, key, on_delivery=partial(self._on_report, end))
                else:
                    self._produce(topic, value, key, on_delivery=self._on_replay_failed)
                    self._produced += 1
                    self._drain.produced_end = end  # after produce(): see DrainWatch
            except BufferError:
                if self._journal_all:
                    tracker.inflight.pop()
                return False
            except KafkaException as exc:
                self._refused(exc, topic)
                if self._journal_all:
                    tracker.complete(end)
                else:
                    self._drain.produced_end = end
            self._cursor = end
        return True

    def _renew_producer(self) -> None:
        """After a fatal error: a new producer; the old one's events are re-sent."""
        self._fatal = False
        with self._lock:
            old = self._producer
            self._producer = self._new_producer()
            self._produce = self._producer.produce
            self._direct = False
        self._rewind = True
        self._tracker.hold()
        old.purge(in_queue=True, in_flight=True, blocking=False)
        old.flush(1.0)  # serves its reports: memory durability journals its events

    # -- flush, close, stats ---------------------------------------------------------

    def _settled(self) -> bool:
        """Nothing in the producer, nothing in the journal still to produce."""
        if self._rewind or len(self._producer):
            return False
        return self._direct or self._journal.next_position(self._cursor) >= self._journal.end

    def _delivered(self) -> int:
        if self._journal_all:
            return self.delivered
        return max(self.delivered, self._produced - len(self._producer) - self._reported)

    @property
    def pending(self) -> int:
        """Events neither delivered nor given up (an estimate: see ``ClientStats``)."""
        done = self._delivered() + self.failed + self.dropped
        return max(0, self.emitted + self.recovered - done)

    def flush(self, timeout: float) -> int:
        """Wait until everything is delivered or ``timeout`` s passed; the number left."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            if self._settled():
                return 0
            left = deadline - time.monotonic()
            if left <= 0 or not self._thread.is_alive():
                return max(self.pending, 1)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)

    def close(self, timeout: float) -> int:
        """Stop accepting events, deliver for up to ``timeout`` s, keep the rest in the
        journal for the next client; returns how many were left undelivered."""
        with self._lock:
            if self._closed:
                return self.pending
            self._closed = True
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join()
        self._closing = True
        if left:
            # the undelivered stay in the journal (journal durability) or come back
            # through their failure reports and go there (memory durability)
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer.flush(1.0)  # serves the last reports
        while self._skipped:
            self._tracker.complete(self._skipped.popleft())
        if not left:
            self._advance()
        elif self._journal_all:
            self._journal.set_acked(self._tracker.acked)
        self._journal.close()
        if left:
            log.warning(
                "prefloop: closed with about %d undelivered event(s) kept in the spool %s; a "
                "client over the same spool_dir re-sends them",
                left,
                self._journal.directory,
            )
        return left

    def stats(self) -> ClientStats:
        return ClientStats(
            emitted=self.emitted,
            delivered=self._delivered(),
            spooled=self.spooled,
            dropped=self.dropped,
            unjournaled=self.unjournaled,
            failed=self.failed,
            recovered=self.recovered,
            pending=self.pending,
            spool_bytes=self._journal.undelivered_bytes,
            connected=self.online,
        )
