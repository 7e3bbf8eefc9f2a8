"""The Faust app: agents that turn raw events into scores, pairs, tasks and retrains.

::

    interactions, feedback, streams-ticks
        └─► score (Scorer + ConversationPairMiner, one conversation per key)
              ├─► scores
              ├─► preferences + retrain-queue       (REGENERATE, RATING pairs)
              ├─► streams-by-prompt ─► implicit ─► preferences + retrain-queue (IMPLICIT)
              ├─► streams-sampling ──► sample ───► annotation-tasks
              └─► streams-rolling ───► rolling ──► GET /prefloop/rolling/
    annotation-results ─► annotate ─► preferences + retrain-queue (ANNOTATION), dlq (no agreement)
    model-events ───────► lineage ──► retrain-queue (a training's outcome, keyed by its base)
    retrain-queue ──────► trigger ──► model-events  (RETRAIN_REQUESTED)
    every agent ────────► dlq         (what it could not read, and why)

Each agent's state is a changelogged table keyed like its input, and with the
``exactly_once`` guarantee (the default) everything an input causes (table writes,
outputs, dead letters) commits in one transaction with the input's offset
(:mod:`prefloop.streams.transactions`). Timers are ticks: the leader writes one tick
per partition to ``streams-ticks`` (co-partitioned with the inputs) and to the two
single-partition topics, so a timeout is processed in its partition's task like any
event. ``now`` is processing time, or the tick's time for a tick.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
from aiohttp.web import Request, Response
from mode import CrashingSupervisor

from prefloop import kafka
from prefloop.settings import Settings
from prefloop.streams import rolling
from prefloop.streams.annotation_miner import AnnotationPairMiner
from prefloop.streams.consumer import install as install_consumer
from prefloop.streams.conversation_miner import ConversationPairMiner
from prefloop.streams.health import worker_health
from prefloop.streams.implicit_miner import ImplicitPairMiner
from prefloop.streams.inputs import Decoded, Inbox
from prefloop.streams.normalize import prompt_key
from prefloop.streams.preference_pair import PairStep
from prefloop.streams.records import Record
from prefloop.streams.sampler_store import SamplerStore
from prefloop.streams.sampling import Sampler
from prefloop.streams.scoring import Scorer, is_scored
from prefloop.streams.topology import (
    GLOBAL_TABLES,
    PARTITIONED_TABLES,
    StreamTopics,
    app_id,
    pair_config,
    sampling_config,
    scoring_config,
)
from prefloop.streams.transactions import ProcessingGate, install
from prefloop.streams.trigger import ENDS_TRAINING, RetrainTrigger
from prefloop_sdk import Codec, default_codec
from prefloop_sdk.events import key_of

__all__ = ["StreamsApp", "app_id", "faust_app"]

log = logging.getLogger("prefloop.streams")

_SAMPLER_KEY = b"sampler"
_ROLLING_KEEP_S = 2 * 3600


def _now_ms() -> int:
    return int(time.time() * 1000)


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw")


def _state_table(app: faust.App, name: str, partitions: int) -> Any:
    return app.Table(
        name,
        default=None,
        partitions=partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )


def faust_app(settings: Settings, name: str | None = None) -> tuple[faust.App, ProcessingGate]:
    """The Faust app the worker runs, configured from ``settings`` (guarantee, store,
    commit interval, the consumer and transaction fixes installed), with no agent yet,
    and the gate its agents process events in. ``name``: another app id (the
    benchmark's floor runs this app with one agent that discards)."""
    s = settings
    store = "memory://" if s.streams_store == "memory" else "rocksdb://"
    app = faust.App(
        name or app_id(s),
        broker=[f"kafka://{host}" for host in s.bootstrap_servers.split(",")],
        store=store,
        processing_guarantee=s.streams_guarantee,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.replication_factor,
        table_standby_replicas=0,
        datadir=str(s.home / "streams"),
        web_host="127.0.0.1",
        web_port=s.streams_web_port,
        web_bind="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        producer_compression_type="lz4",
        broker_commit_interval=1.0,
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        autodiscover=False,
        agent_supervisor=CrashingSupervisor,
    )
    install_consumer(app)
    gate = ProcessingGate()
    if s.streams_guarantee == "exactly_once":
        install(app, gate)
    return app, gate


class StreamsApp:
    """Builds the Faust app of ``settings`` and holds the logic its agents run."""

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        self.topics = settings.topics
        self.stream_topics = StreamTopics.with_prefix(settings.topic_prefix)
        self.scorer = Scorer(scoring_config(settings))
        pairs = pair_config(settings)
        self.conversation_miner = ConversationPairMiner(pairs)
        self.implicit_miner = ImplicitPairMiner(pairs)
        self.annotation_miner = AnnotationPairMiner(pairs)
        self.sampler = Sampler(sampling_config(settings))
        self.sampler_store = SamplerStore(self.sampler._key)
        self.trigger = RetrainTrigger(settings.retrain_threshold, settings.retrain_busy_timeout_s)
        self.app = self._build()

    # -- construction ---------------------------------------------------------
    def _build(self) -> faust.App:
        s = self.settings
        app, self.gate = faust_app(s)
        t, st = self.topics, self.stream_topics
        self.out = {
            name: _raw_topic(app, name)
            for name in [*t.all(), st.by_prompt, st.retrain_queue, st.sampling, st.rolling]
        }
        parts = s.topic_partitions
        tables = {name: _state_table(app, name, parts) for name in PARTITIONED_TABLES}
        tables.update({name: _state_table(app, name, 1) for name in GLOBAL_TABLES})
        self.conversations = tables["conversations"]
        self.conversation_pairs = tables["conversation-pairs"]
        self.prompts = tables["prompts"]
        self.annotations = tables["annotations"]
        self.lineages = tables["lineages"]
        self.sampler_table = tables["sampler"]
        self.rolling_table = tables["rolling"]
        self._sampler_state: dict[str, Any] | None = None
        self._sampler_loaded = False

        app.agent(app.topic(t.interactions, t.feedback, st.ticks, **_RAW), name="score")(
            self._score_agent
        )
        app.agent(app.topic(st.by_prompt, **_RAW), name="implicit")(self._implicit_agent)
        app.agent(app.topic(st.sampling, **_RAW), name="sample")(self._sample_agent)
        app.agent(app.topic(st.rolling, **_RAW), name="rolling")(self._rolling_agent)
        app.agent(app.topic(t.annotation_results, **_RAW), name="annotate")(self._annotate_agent)
        app.agent(app.topic(t.model_events, **_RAW), name="lineage")(self._lineage_agent)
        app.agent(app.topic(st.retrain_queue, **_RAW), name="trigger")(self._trigger_agent)
        app.timer(s.streams_tick_s, on_leader=True)(self._tick)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

        async def rolling_view(web: Any, request: Request) -> Response:
            return await self._rolling_view(web, request)

        async def health_view(web: Any, request: Request) -> Response:
            return await self._health_view(web, request)

        route = app.table_route(table=self.rolling_table, exact_key="rolling")
        app.page("/prefloop/rolling/")(route(rolling_view))  # type: ignore[arg-type]
        app.page("/prefloop/health/")(health_view)  # type: ignore[arg-type]
        self._inboxes = {
            name: Inbox(self.codec, f"{app_id(s)}.{name}")
            for name in ("score", "implicit", "sample", "annotate", "lineage", "trigger")
        }
        self._tick_producer: Any = None
        return app

    async def _on_assigned(self, sender: Any, *_: Any, **__: Any) -> None:
        self._sampler_loaded = False  # reload from the table: it may have moved

    # -- sending --------------------------------------------------------------
    def _publish(self, record_type: str, record: Record, topic: str | None = None) -> None:
        name = topic or self.topics.for_record(record_type)
        value = self.codec.encode(record_type, record)
        self.out[name].send_soon(key=key_of(record_type, record), value=value)

    def _dead_letter(self, letter: Record, key: bytes | None = None) -> None:
        if key is not None and letter.get("key") is None:
            letter = {**letter, "key": key}
        value = self.codec.encode("dead_letter", letter)
        self.out[self.topics.dlq].send_soon(key=key, value=value)
        log.warning(
            "dead letter from %s:%s:%s: %s",
            letter["source_topic"],
            letter["source_partition"],
            letter["source_offset"],
            letter["reason"],
        )

    def _pairs(self, pairs: Iterable[Record]) -> None:
        """Each pair to ``preferences`` (keyed by conversation) and to the retrain queue
        (keyed by model version), encoded once."""
        preferences = self.out[self.topics.preferences]
        queue = self.out[self.stream_topics.retrain_queue]
        for pair in pairs:
            value = self.codec.encode("preference_pair", pair)
            preferences.send_soon(key=key_of("preference_pair", pair), value=value)
            queue.send_soon(key=pair["model_version"].encode(), value=value)

    def _send_json(self, topic: str, key: bytes, record: Record) -> None:
        self.out[topic].send_soon(key=key, value=json.dumps(record).encode())

    def _read(self, agent: str, event: Any, expected: tuple[str, ...], now: int) -> Any:
        message = event.message
        return self._inboxes[agent].read(
            message.topic, message.partition, message.offset, event.key, event.value, expected, now
        )

    # -- score: one conversation's interactions, feedback and timeouts -------------
    async def _score_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            message, now = event.message, _now_ms()
            if message.topic == self.stream_topics.ticks:
                tick = json.loads(event.value)
                self._score_timeouts(message.partition, int(tick["now"]))
                continue
            expected = (
                ("interaction",) if message.topic == self.topics.interactions else ("feedback",)
            )
            decoded, letter = self._read("score", event, expected, now)
            if letter is not None:
                self._dead_letter(letter, event.key)
                continue
            self._score_event(decoded, message.partition, now)

    def _score_event(self, decoded: Decoded, partition: int, now: int) -> None:
        record, source = decoded.record, decoded.source
        if decoded.record_type == "interaction" and not is_scored(record):
            return  # logged and stored, never scored, sampled or paired
        conversation = record["conversation_id"]
        held = self.conversations.get(conversation)
        state = held["s"] if held else None
        mined: PairStep | None = None
        if decoded.record_type == "interaction":
            step = self.scorer.on_interaction(state, record, now)
            held_pairs = self.conversation_pairs.get(conversation)
            mined = self.conversation_miner.on_interaction(held_pairs, record, now, source)
            self.conversation_pairs[conversation] = mined.state
            self._pairs(mined.pairs)
        else:
            step = self.scorer.on_feedback(state, record, now, source)
        if step.state is not state:
            self.conversations[conversation] = {"p": partition, "s": step.state}
        self._after_scoring(conversation, step.scores, step.rejected, now, source)

    def _score_timeouts(self, partition: int, now: int) -> None:
        due = [
            key for key, held in list(self.conversations.items()) if held and held["p"] == partition
        ]
        for conversation in due:
            held = self.conversations.get(conversation)
            if held is None:
                continue
            step = self.scorer.on_timer(held["s"], now)
            if step.state is not held["s"]:
                self.conversations[conversation] = {"p": partition, "s": step.state}
            self._after_scoring(conversation, step.scores, step.rejected, now, None)
            if self.scorer.can_forget(step.state, now):
                del self.conversations[conversation]
                self.conversation_pairs.pop(conversation, None)

    def _after_scoring(
        self, conversation: str, scores: list[Record], rejected: list[Any], now: int, source: Any
    ) -> None:
        inbox = self._inboxes["score"]
        for item in rejected:
            self._dead_letter(inbox.rejected(item, now))
        for score in scores:
            self._publish("scored_interaction", score)
            mined = self.conversation_miner.on_score(
                self.conversation_pairs.get(conversation), score, now, source
            )
            self.conversation_pairs[conversation] = mined.state
            self._pairs(mined.pairs)
            for scored in mined.scored:
                self._send_json(
                    self.stream_topics.by_prompt, prompt_key(scored["messages"]).encode(), scored
                )
                if scored["revision"] == 0:
                    self._send_json(self.stream_topics.sampling, _SAMPLER_KEY, scored)
            if score["revision"] == 0:
                self._send_json(
                    self.stream_topics.rolling, rolling.metric_key(score).encode(), score
                )

    # -- implicit: responses to one normalized prompt across conversations ---------
    async def _implicit_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            message, now = event.message, _now_ms()
            scored = json.loads(event.value)
            source = {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            }
            key = event.key.decode()
            held = self.prompts.get(key)
            step = self.implicit_miner.on_scored(held, scored, now, source)
            if step.state is not held:
                self.prompts[key] = step.state
            self._pairs(step.pairs)

    # -- sample: the global annotation sampler ------------------------------------
    def _load_sampler(self) -> None:
        if not self._sampler_loaded:
            self._sampler_state = self.sampler_store.load(list(self.sampler_table.items()))
            self._sampler_loaded = True

    def _save_sampler(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        writes, deletes = self.sampler_store.changes(old, new)
        for key, value in writes.items():
            self.sampler_table[key] = value
        for key in deletes:
            del self.sampler_table[key]
        self._sampler_state = new

    async def _sample_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            now = _now_ms()
            self._load_sampler()
            item = json.loads(event.value)
            state = self._sampler_state
            if "tick" in item:
                if state is None:
                    continue
                step = self.sampler.on_timer(state, int(item["now"]))
            else:
                step = self.sampler.observe(state, item, now)
            if step.state is not state:
                self._save_sampler(state, step.state)
            for task in step.tasks:
                self._publish("annotation_task", task)

    # -- rolling: one-minute buckets per model version and arm ------------------------
    async def _rolling_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            item = json.loads(event.value)
            if "tick" in item:
                oldest = rolling.bucket_start(int(item["now"]) - _ROLLING_KEEP_S * 1000)
                for key in [k for k in list(self.rolling_table.keys()) if _bucket_of(k) < oldest]:
                    del self.rolling_table[key]
                continue
            key = f"{event.key.decode()}|{rolling.bucket_start(int(item['ts']))}"
            self.rolling_table[key] = rolling.add(self.rolling_table.get(key), item)

    async def _rolling_view(self, web: Any, request: Request) -> Response:
        try:
            window_s = float(request.query.get("window_s", "3600"))
            if not 0 < window_s <= _ROLLING_KEEP_S:
                raise ValueError
        except ValueError:
            return web.json(
                {"error": f"window_s must be a number of seconds in (0, {_ROLLING_KEEP_S}]"},
                status=400,
            )
        now = _now_ms()
        end = rolling.bucket_start(now) + rolling.BUCKET_S * 1000
        start = end - int(window_s * 1000)
        by_key: dict[str, list[tuple[int, Any]]] = {}
        for key, bucket in list(self.rolling_table.items()):
            name, _, begin = key.rpartition("|")
            by_key.setdefault(name, []).append((int(begin), bucket))
        metrics = {
            name: rolling.summary(rolling.window_sum(buckets, start, end))
            for name, buckets in sorted(by_key.items())
        }
        return web.json(
            {
                "window_start": start,
                "window_end": end,
                "hop_s": rolling.BUCKET_S,
                "metrics": metrics,
            }
        )

    async def _health_view(self, web: Any, request: Request) -> Response:
        return web.json(self.health())

    def health(self) -> dict[str, Any]:
        """The worker's partitions, those it is not reading now, and its lag per input
        partition (:func:`prefloop.streams.health.worker_health`)."""
        return worker_health(self.app)

    # -- annotate: AnnotationResults into ANNOTATION pairs ---------------------------
    async def _annotate_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            now = _now_ms()
            decoded, letter = self._read("annotate", event, ("annotation_result",), now)
            if letter is not None:
                self._dead_letter(letter, event.key)
                continue
            self._annotate_event(decoded, event.key, now)

    def _annotate_event(self, decoded: Decoded, key: bytes | None, now: int) -> None:
        """One result into the miner: its pair, or the dead letter of a task whose
        annotators disagree (or judge neither response better)."""
        name = (key or b"").decode() or decoded.record["task_id"]
        step = self.annotation_miner.on_result(
            self.annotations.get(name), decoded.record, now, decoded.source
        )
        self.annotations[name] = step.state
        self._pairs(step.pairs)
        inbox = self._inboxes["annotate"]
        for item in step.rejected:
            self._dead_letter(inbox.rejected(item, now))

    # -- lineage and trigger: pairs per model version into RETRAIN_REQUESTED --------
    async def _lineage_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            now = _now_ms()
            decoded, letter = self._read("lineage", event, ("model_event",), now)
            if letter is not None:
                self._dead_letter(letter, event.key)
                continue
            record = decoded.record
            parent = record.get("parent_version")
            if parent and (record["kind"] in ENDS_TRAINING or record["kind"] == "TRAINING_STARTED"):
                self.out[self.stream_topics.retrain_queue].send_soon(
                    key=parent.encode(), value=event.value
                )

    async def _trigger_agent(self, stream: Any) -> None:
        async for event in self.gate.gated(stream.events()):
            now = _now_ms()
            decoded, letter = self._read("trigger", event, ("preference_pair", "model_event"), now)
            if letter is not None:
                self._dead_letter(letter, event.key)
                continue
            record = decoded.record
            if decoded.record_type == "preference_pair":
                version = record["model_version"]
                step = self.trigger.on_pair(self.lineages.get(version), record, decoded.source, now)
            else:
                version = record["parent_version"]
                step = self.trigger.on_model_event(self.lineages.get(version), record, now)
                step = self.trigger.request_if_ready(step.state, version, event.message.topic, now)
            self.lineages[version] = step.state
            for model_event in step.events:
                self._publish("model_event", model_event)
                log.warning(
                    "retrain requested for %s on %s pairs",
                    model_event["model_version"],
                    model_event["pair_count"],
                )

    # -- ticks ----------------------------------------------------------------------
    async def _tick(self) -> None:
        if self._tick_producer is None:
            self._tick_producer = kafka.producer(self.settings)
        value = json.dumps({"tick": True, "now": _now_ms()}).encode()
        st = self.stream_topics
        for partition in range(self.settings.topic_partitions):
            self._tick_producer.produce(st.ticks, value=value, partition=partition)
        for topic in st.single_partition():
            self._tick_producer.produce(topic, value=value, partition=0)
        self._tick_producer.poll(0)


_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "value_serializer": "raw"}


def _bucket_of(key: str) -> int:
    return int(key.rpartition("|")[2])
