"""``FeedbackClient``: emit chat interactions and user feedback as Avro events on Kafka.

>>> with FeedbackClient("localhost:9092") as client:                   # doctest: +SKIP
...     ids = client.interaction(user_id="u-1", conversation_id="c-1", turn=0,
...                              messages=[{"role": "user", "content": "Hi"}],
...                              response="Hello!", model_version="m-1",
...                              latency_ms=420, prompt_tokens=3, completion_tokens=2)
...     client.rate(ids, 5)
...     client.copy(ids)

Two kinds of trouble, two behaviours. A wrong argument (a rating of 7, no user id, a
string where an int belongs) is API misuse and raises a typed ``InvalidEventError`` at
the call. A delivery problem (the broker down, a timeout, a full queue) never raises:
the client logs one warning, keeps the events in its spool and sends them when it can;
past ``spool_max_bytes`` it drops new events and counts them in ``stats.dropped``.

Delivery is at least once: after a crash, or a broker fault that forces a re-send,
an event can arrive twice (the journal's delivered watermark is persisted shortly after
the acknowledgements it follows). Every event carries a unique time-ordered id (UUIDv7:
``event_id``, ``interaction_id``, ``exposure_id``...); consumers de-duplicate on it.
Order: the events of one conversation reach their partition in emit order, across
outages and restarts (only ``memory`` durability, at a ``close()`` during an outage,
may put what librdkafka still held after what the spool held).

Topics (``topic_prefix`` ``prefloop``): Interaction -> ``prefloop.interactions``,
Feedback -> ``prefloop.feedback``, Exposure -> ``prefloop.exposures`` (the others:
``events.TOPIC_SUFFIXES``). Every event is keyed by its conversation id (an exposure
without one by its user id). The topics must exist: a rejected event is counted in
``stats.failed`` with a warning naming the topic.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .codec import Codec, EventCodec
from .delivery import PRODUCER_DEFAULTS, Delivery
from .errors import ClientConfigError, UnknownRecordTypeError, WrongTypeError
from .events import (
    ID_FIELDS,
    TOPIC_SUFFIXES,
    FeedbackKind,
    InteractionIds,
    check_number,
    check_rating,
    check_text,
    check_thumbs,
    feedback_kind,
    feedback_record,
    interaction_record,
    key_of,
)
from .ids import stamp
from .slots import free_slots, open_slot
from .spool import Journal, encode_body, topic_head
from .stats import ClientStats
from .writers import Fallback, FastEncoder

__all__ = ["Durability", "FeedbackClient", "default_spool_dir"]

Durability = Literal["journal", "memory"]

_MiB = 1024 * 1024
_new_tuple = tuple.__new__


def default_spool_dir(bootstrap_servers: str) -> Path:
    """``~/.cache/prefloop/spool/<hash of the bootstrap servers>``: one spool per cluster,
    so events are never re-sent to another cluster than the one they were meant for."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(bootstrap_servers.encode()).hexdigest()[:12]
    return cache / "prefloop" / "spool" / digest


class FeedbackClient:
    """Emits Interaction, Feedback and other prefloop events to Kafka, durably.

    ``bootstrap_servers``: the Kafka cluster (``host:port,...``).
    ``topic_prefix``: topics are ``<topic_prefix>.interactions``, ``.feedback``,
    ``.exposures``, ...
    ``spool_dir``: the local journal; default ``default_spool_dir(bootstrap_servers)``.
    Several processes may share one: each takes its own ``slot-N`` inside, and a
    slot left by a dead process is re-sent by the next client that starts there.
    ``producer_config``: extra librdkafka settings (SASL/SSL, ``linger.ms``...), over
    ``delivery.PRODUCER_DEFAULTS`` (idempotence, acks=all, lz4, linger 10 ms).
    ``spool_max_bytes``: bound of the undelivered bytes in the spool; past it new
    events are dropped and counted (``stats.dropped``) while the broker is unreachable,
    and sent without the journal (``stats.unjournaled``) while it is not; size it for
    the outage to ride out, and at least a second or two of peak traffic.
    ``durability``:

    * ``"journal"`` (default): every event is appended to the spool journal before
      the emit call returns. An event whose emit returned is never lost, even if the
      process is SIGKILLed (the page cache outlives the process); the journal is
      synced to disk every ``fsync_interval`` s against machine crashes.
    * ``"memory"``: events go straight to the producer; the journal is used only
      while the broker is unreachable (or not yet reached), when the producer's queue
      is full, and at ``close()`` for what was not delivered. Faster; a process crash
      loses what was in the producer's memory.

    ``codec``: the encoder (default: Avro single-object encoding of the bundled
    schemas; a ``RegistryCodec`` for the Confluent wire format).

    Thread-safe: one client may serve every thread of a process. Create it after a
    ``fork()`` (in each worker of a pre-forking server), never before: librdkafka's
    threads do not survive one. For asyncio, see ``AsyncFeedbackClient``. Close it (or
    use ``with``) to deliver what is pending. ``spool_slot`` is the slot directory it
    holds; ``stats`` its counters.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "prefloop",
        spool_dir: str | os.PathLike[str] | None = None,
        producer_config: Mapping[str, Any] | None = None,
        spool_max_bytes: int = 256 * _MiB,
        durability: Durability = "journal",
        fsync_interval: float = 0.1,
        codec: EventCodec | None = None,
    ) -> None:
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers:
            raise ClientConfigError(
                f"bootstrap_servers must be 'host:port[,host:port...]', got {bootstrap_servers!r}"
            )
        if durability not in ("journal", "memory"):
            raise ClientConfigError(f"durability must be 'journal' or 'memory', got {durability!r}")
        if not isinstance(spool_max_bytes, int) or spool_max_bytes < 64 * 1024:
            raise ClientConfigError(
                f"spool_max_bytes must be an int >= 65536, got {spool_max_bytes!r}"
            )
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.durability = durability
        self._codec = codec if codec is not None else Codec()
        self._encoder = FastEncoder(self._codec)
        self.topics = {rt: f"{topic_prefix}.{suffix}" for rt, suffix in TOPIC_SUFFIXES.items()}
        self._routes = {rt: (topic_head(t), t) for rt, t in self.topics.items()}
        self._has_ts = {
            str(rt): any(f["name"] == "ts" for f in self._codec_fields(rt)) for rt in self.topics
        }
        self._write_interaction = self._writer("interaction")
        self._write_feedback = self._writer("feedback")
        self._interaction_route = self._routes["interaction"]
        self._feedback_route = self._routes["feedback"]

        root = Path(spool_dir) if spool_dir is not None else default_spool_dir(bootstrap_servers)
        self.spool_dir = root
        slot, self._slot_lock = open_slot(root)
        self.spool_slot = slot
        try:
            self._journal = Journal(
                slot,
                spool_max_bytes,
                segment_bytes=max(64 * 1024, min(16 * _MiB, spool_max_bytes // 8)),
            )
            self._adopt_orphans(root, slot)
            config = {
                **PRODUCER_DEFAULTS,
                "bootstrap.servers": bootstrap_servers,
                **dict(producer_config or {}),
            }
            self._delivery = Delivery(
                config,
                self._journal,
                journal_all=durability == "journal",
                fsync_interval=fsync_interval,
                window_bytes=min(16 * _MiB, spool_max_bytes // 4),
                describe=f"Kafka at {bootstrap_servers}",
            )
        except BaseException:
            os.close(self._slot_lock)
            raise
        self._send = self._delivery.send
        # close at interpreter exit if the application did not (weakly: no leak)
        ref = weakref.ref(self)
        self._atexit = lambda: (c := ref()) is not None and c.close(timeout=2.0)
        atexit.register(self._atexit)

    def _codec_fields(self, record_type: str) -> list[dict[str, Any]]:
        catalog = getattr(self._codec, "catalog", None)
        if catalog is None or record_type not in catalog.record_types:
            return []
        fields: list[dict[str, Any]] = catalog.latest(record_type).raw["fields"]
        return fields

    def _writer(self, record_type: str) -> Any:
        compiled = self._encoder.compiled(record_type)
        if compiled is not None:
            return compiled
        codec = self._codec

        def write(record: Mapping[str, Any]) -> bytes:
            return codec.encode(record_type, record)

        return write

    def _adopt_orphans(self, root: Path, own: Path) -> None:
        """Move the undelivered events of slots whose process died into this journal
        (after its own), so that one client re-sends them; the emptied slots stay."""
        moved = 0
        for slot, _fd in free_slots(root, own):
            if not any(slot.glob("seg-*.log")):
                continue
            orphan = Journal(slot, 1 << 62, segment_bytes=1 << 62)
            for _end, topic, key, value in orphan.drain():
                if self._journal.append(encode_body(topic_head(topic), key, value)) >= 0:
                    moved += 1
            self._journal.sync()
            orphan.close()
            orphan.clear()
        self._journal.pending_frames += moved

    # -- interactions ------------------------------------------------------------------

    def interaction(
        self,
        *,
        user_id: str,
        conversation_id: str,
        turn: int,
        messages: Sequence[Mapping[str, str]],
        response: str,
        model_version: str,
        latency_ms: int,
        prompt_tokens: int,
        completion_tokens: int,
        session_id: str = "",
        experiment_id: str | None = None,
        arm: str | None = None,
        regenerates: str | None = None,
        uncertainty: float | None = None,
        metadata: Mapping[str, str] | None = None,
        response_id: str | None = None,
        interaction_id: str | None = None,
        ts: Any = None,
    ) -> InteractionIds:
        """Emit one Interaction: a generated response with the prompt it answered.

        ``messages``: the prompt as the model saw it, ``[{"role", "content"}, ...]``.
        ``turn``: index of the user turn, from 0. ``regenerates``: the response id this
        one replaces after a regenerate. ``uncertainty``: 0..1 where the server has it.
        ``interaction_id``/``response_id``: new UUIDv7s unless given (pass the ids you
        already have to keep re-sent events de-duplicable). ``ts``: now, unless given
        as ms since the epoch or an aware datetime.

        Returns the ``InteractionIds`` that feedback methods take. Raises
        ``InvalidEventError`` (a subclass naming the argument) on a bad argument.
        """
        record = interaction_record(
            user_id,
            conversation_id,
            session_id,
            turn,
            messages,
            response,
            model_version,
            latency_ms,
            prompt_tokens,
            completion_tokens,
            experiment_id,
            arm,
            regenerates,
            uncertainty,
            metadata,
            response_id,
            interaction_id,
            ts,
        )
        try:
            data = self._write_interaction(record)
        except Fallback:
            data = self._codec.encode("interaction", record)
        head, topic = self._interaction_route
        self._send(head, topic, conversation_id.encode(), data)
        # tuple.__new__ directly: a NamedTuple's own __new__ is a Python-level call
        return _new_tuple(
            InteractionIds,
            (
                record["interaction_id"],
                record["response_id"],
                conversation_id,
                user_id,
                session_id or None,
            ),
        )

    # -- feedback ----------------------------------------------------------------------

    def _feedback(
        self,
        kind: str,
        about: InteractionIds,
        value: float | None,
        text: str | None,
        metadata: Mapping[str, str] | None,
        event_id: str | None,
        ts: Any,
    ) -> str:
        record = feedback_record(kind, about, value, text, metadata, event_id, ts)
        try:
            data = self._write_feedback(record)
        except Fallback:
            data = self._codec.encode("feedback", record)
        head, topic = self._feedback_route
        self._send(head, topic, record["conversation_id"].encode(), data)
        event: str = record["event_id"]
        return event

    def feedback(
        self,
        about: InteractionIds,
        kind: FeedbackKind | str,
        *,
        value: float | None = None,
        text: str | None = None,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """Emit a Feedback event of any ``kind``, checked as its own method checks it."""
        symbol = feedback_kind(kind)
        checks = {
            "RATING": lambda: (check_rating(value), None),
            "THUMBS": lambda: (check_thumbs(value), None),
            "SESSION_END": lambda: (check_number("seconds", value, 0.0, 1e9), None),
            "EDIT": lambda: (None, check_text("text", text, True)),
            "COMMENT": lambda: (None, check_text("text", text, True)),
            "REPORT": lambda: (None, check_text("reason", text, False)),
        }
        checked = checks.get(symbol, lambda: (None, None))()
        for name, given, allowed in (("value", value, checked[0]), ("text", text, checked[1])):
            if given is not None and allowed is None:
                raise WrongTypeError(name, given, f"None: {symbol} feedback has no {name}")
        return self._feedback(symbol, about, checked[0], checked[1], metadata, event_id, ts)

    def rate(
        self,
        about: InteractionIds,
        rating: int,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user rated the response ``rating`` stars (1 to 5). Returns the event id."""
        return self._feedback("RATING", about, check_rating(rating), None, metadata, event_id, ts)

    def thumbs(
        self,
        about: InteractionIds,
        thumbs: int,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """Thumbs up (``+1``) or down (``-1``). Returns the event id."""
        return self._feedback("THUMBS", about, check_thumbs(thumbs), None, metadata, event_id, ts)

    def regenerate(
        self,
        about: InteractionIds,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user asked for another answer instead of this one.

        Emit the new answer with ``interaction(..., regenerates=about.response_id)``.
        """
        return self._feedback("REGENERATE", about, None, None, metadata, event_id, ts)

    def copy(
        self,
        about: InteractionIds,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user copied the response."""
        return self._feedback("COPY", about, None, None, metadata, event_id, ts)

    def continue_(
        self,
        about: InteractionIds,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user went on with the conversation after this response."""
        return self._feedback("CONTINUE", about, None, None, metadata, event_id, ts)

    def edit(
        self,
        about: InteractionIds,
        text: str,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user edited the response into ``text``."""
        checked = check_text("text", text, True)
        return self._feedback("EDIT", about, None, checked, metadata, event_id, ts)

    def session_end(
        self,
        about: InteractionIds,
        seconds: float,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The session ended after ``seconds``; ``about`` is its last interaction."""
        value = check_number("seconds", seconds, 0.0, 1e9)
        return self._feedback("SESSION_END", about, value, None, metadata, event_id, ts)

    def report(
        self,
        about: InteractionIds,
        reason: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user reported the response (harmful, wrong...), with an optional reason."""
        checked = check_text("reason", reason, False)
        return self._feedback("REPORT", about, None, checked, metadata, event_id, ts)

    def comment(
        self,
        about: InteractionIds,
        text: str,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        ts: Any = None,
    ) -> str:
        """The user commented on the response."""
        checked = check_text("text", text, True)
        return self._feedback("COMMENT", about, None, checked, metadata, event_id, ts)

    # -- any record type ---------------------------------------------------------------

    def emit(
        self,
        record_type: str,
        record: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        topic: str | None = None,
    ) -> str | None:
        """Emit a record of any type (``"exposure"``, ``"model_event"``...) as it is.

        The type's id field (``exposure_id``...) gets a new UUIDv7 and ``ts`` the
        current time when missing. The topic is ``<prefix>.<suffix>`` of
        ``events.TOPIC_SUFFIXES`` (exposure: ``<prefix>.exposures``) unless ``topic``
        is given; the key is the conversation id, else the user id (``key`` overrides).
        Returns the event id, if the type has one. Raises ``UnknownRecordTypeError`` or
        ``InvalidRecordError`` for a record the schema does not accept.
        """
        route = self._routes.get(record_type)
        if topic is not None:
            route = (topic_head(topic), topic)
        elif route is None:
            raise UnknownRecordTypeError(record_type, sorted(self._routes))
        if not isinstance(record, Mapping):
            raise WrongTypeError("record", record, "a mapping of field names to values")
        id_field = ID_FIELDS.get(record_type)
        missing_id = id_field is not None and record.get(id_field) is None
        if missing_id or ("ts" not in record and self._has_ts.get(record_type)):
            ms, new_id = stamp()
            record = dict(record)
            if missing_id:
                record[id_field] = new_id  # type: ignore[index]
            if self._has_ts.get(record_type):
                record.setdefault("ts", ms)
        data = self._encoder.encode(record_type, record)
        raw_key = key.encode() if isinstance(key, str) else key
        if raw_key is None:
            raw_key = key_of(record_type, record)
        self._send(route[0], route[1], raw_key, data)
        return record.get(id_field) if id_field else None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters: emitted, delivered, spooled, dropped, failed..."""
        return self._delivery.stats()

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` s until every event is delivered; the number left.

        Events left stay safe in the spool (``journal`` durability); nothing raises.
        """
        return self._delivery.flush(timeout)

    def close(self, timeout: float = 10.0) -> int:
        """Deliver for up to ``timeout`` s, then stop; returns how many are left undelivered.

        What is left stays in the spool and is re-sent by the next client over the same
        ``spool_dir``. Emitting after ``close`` raises ``ClientClosedError``.
        """
        if not hasattr(self, "_delivery"):
            return 0
        left = self._delivery.close(timeout)
        if self._slot_lock >= 0:
            os.close(self._slot_lock)  # frees the slot for the next client
            self._slot_lock = -1
            atexit.unregister(self._atexit)
        return left

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FeedbackClient({self.bootstrap_servers!r}, topic_prefix={self.topic_prefix!r}, "
            f"durability={self.durability!r}, spool_dir={str(self.spool_dir)!r})"
        )
