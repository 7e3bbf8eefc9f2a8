"""What fills the annotation queue and where its answers go.

One thread reads the annotation-tasks topic (read_committed, consumer group
``<prefix>.console-annotation``), queues each task for ``PREFLOOP_ANNOTATION_OVERLAP``
annotators and commits its offset once the task is stored, so a restart re-reads
nothing it stored and loses nothing it did not. The same thread asks the router for
the alternative responses, as the product's spec does, a few tasks ahead of the
annotators (``LOOKAHEAD`` open tasks, highest priority first): a sampler drawing a
thousand tasks an hour costs the router only what annotators judge. An alternative
comes from

* **another version**: the router's other served version (during an A/B, the other
  arm) answers the task's prompt, pinned by its name;
* **other sampling**: when the router serves the task's version alone, that version
  answers again at temperature 1.0 with a seed of its own.

The alternatives' requests name the user ``prefloop-annotation`` and conversations
``prefloop-annotation-<task id>``, and carry OpenAI's ``metadata`` with
:data:`~prefloop.streams.scoring.UNSCORED`: the router logs them like any answer
(outside every experiment, as a pinned version is), and the stream agents never score
them, so no user's signal is read into them, none is sampled as a task, none is paired
(an unsignalled answer rejected against a liked one would teach nothing true). While
the router is away the tasks wait, and the thread asks again every ``RETRY_S``.

Answers go out as AnnotationResults through the SDK's client (journaled: a broker
outage spools them, nothing is lost).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from prefloop.errors import first_line
from prefloop.event_client import feedback_client
from prefloop.kafka import broker_count, consumer
from prefloop.settings import Settings
from prefloop.streams.scoring import UNSCORED
from prefloop_sdk import decode

from . import router_client
from .annotation_queue import AnnotationQueue

__all__ = ["ALTERNATIVE_USER", "AnnotationFeed"]

_log = logging.getLogger(__name__)
ALTERNATIVE_USER = "prefloop-annotation"
ALTERNATIVE_CONVERSATION = "prefloop-annotation-"
RETRY_S = 5.0
LOOKAHEAD = 16
POLL_S = 1.0


class AnnotationFeed:
    def __init__(self, settings: Settings, queue: AnnotationQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.status = "starting"  # what the page shows of the feed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="annotation-feed", daemon=True)
        self._client: Any = None
        self._client_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._client_lock:
            if self._client is not None:
                self._client.close(timeout=5.0)

    # -- results -------------------------------------------------------------
    def emit(self, result: dict[str, Any]) -> None:
        """Send one AnnotationResult (journaled first: a broker away spools it)."""
        with self._client_lock:
            if self._client is None:
                self._client = feedback_client(self.settings, "console")
            self._client.emit("annotation_result", result)

    # -- tasks ---------------------------------------------------------------
    def _run(self) -> None:
        while broker_count(self.settings) == 0:
            self.status = f"waiting for Kafka at {self.settings.bootstrap_servers}"
            if self._stop.wait(RETRY_S):
                return
        group = f"{self.settings.topic_prefix}.console-annotation"
        reader = consumer(self.settings, group)
        reader.subscribe([self.settings.topics.annotation_tasks])
        retry_at = 0.0
        try:
            while not self._stop.is_set():
                messages = reader.consume(200, timeout=POLL_S)
                stored = [m for m in messages if m.error() is None]
                for message in stored:
                    self._store(message.value() or b"")
                if stored:
                    reader.commit(asynchronous=False)
                now = time.monotonic()
                if now >= retry_at and not self._alternatives():
                    retry_at = now + RETRY_S
        except Exception as exc:
            self.status = f"stopped: {first_line(exc)}"
            _log.exception("annotation feed stopped")
        finally:
            reader.close()

    def _store(self, value: bytes) -> None:
        try:
            record_type, task = decode(value)
        except Exception as exc:  # the topic's contract says otherwise: name it, go on
            _log.error("annotation feed: a record that is no event skipped: %s", first_line(exc))
            return
        if record_type != "annotation_task":
            _log.error("annotation feed: a %s on the tasks topic skipped", record_type)
            return
        self.queue.add(task, self.settings.annotation_overlap)

    def _alternatives(self) -> bool:
        """Generate what is missing; False when the router could not be asked."""
        wanted = LOOKAHEAD - self.queue.open_count()
        waiting = self.queue.without_alternative(wanted) if wanted > 0 else []
        if not waiting:
            self.status = "ready"
            return True
        try:
            versions = router_client.served_versions(self.settings)
            for task in waiting:
                if self._stop.is_set():
                    break
                self._alternative(task, versions)
        except router_client.RouterUnavailable as exc:
            self.status = f"{len(waiting)} tasks wait for their alternative: {exc}"
            return False
        self.status = "ready"
        return True

    def _alternative(self, task: dict[str, Any], versions: list[str]) -> None:
        others = [v for v in versions if v != task["model_version"]]
        body: dict[str, Any] = {
            "messages": task["prompt"],
            "user": ALTERNATIVE_USER,
            "conversation_id": f"{ALTERNATIVE_CONVERSATION}{task['task_id']}",
            "metadata": dict([UNSCORED, ("prefloop_annotation_task", task["task_id"])]),
        }
        if others:
            version, how = others[-1], "another version"
        else:
            seed = int.from_bytes(hashlib.sha256(task["task_id"].encode()).digest()[:4])
            version, how = task["model_version"], "other sampling"
            body.update(temperature=1.0, seed=seed)
        answer = router_client.chat(self.settings, {**body, "model": version})
        if answer.status != 200:
            message = (answer.body or {}).get("error", {}).get("message", answer.body)
            raise router_client.RouterUnavailable(
                f"the router answered {answer.status} for task {task['task_id']}: {message}"
            )
        text = answer.body["choices"][0]["message"]["content"]
        self.queue.set_alternative(task["task_id"], text, version, how)
