"""From the training room to the A/B: a candidate that passed its gates meets users.

The trainer records GATES_PASSED on ``<prefix>.model-events``; :func:`follow_gates`
reads those events (read_committed, its own consumer group) and starts an experiment
of the candidate against its parent at ``PREFLOOP_AB_START_SPLIT`` percent, through
the same serving control as ``prefloop ab start`` (which records AB_STARTED). From
there the verdict loop decides PROMOTED or ROLLED_BACK. One experiment at a time: a
candidate that passes while another experiment is undecided waits for it; one whose
parent is no longer what users are served is left for an operator to start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from prefloop import kafka
from prefloop.errors import PrefloopError
from prefloop.settings import Settings
from prefloop_sdk import decode

__all__ = ["follow_gates", "start_candidate"]

log = logging.getLogger("prefloop.loop.handoff")
GROUP = "prefloop-handoff"
RETRY_S = 5.0


def start_candidate(settings: Settings, event: Mapping[str, Any]) -> str:
    """Start the A/B of a GATES_PASSED event's candidate; what was done, in words.

    Raises a PrefloopError while it cannot be done yet (no router, another experiment
    undecided): the caller tries again.
    """
    from prefloop.serving import control
    from prefloop.serving.assignment import Split

    candidate, parent = str(event["model_version"]), event.get("parent_version")
    if not parent:
        return f"{candidate} has no parent version: no experiment to start"
    routing = control.current_routing(settings)
    if routing is None:
        raise PrefloopError("no router is running: start it (`prefloop serve`)")
    running = routing.experiment
    if running is not None and candidate in (running.a, running.b):
        return f"{candidate} is already in experiment {running.experiment_id}"
    if running is not None and running.split not in (0.0, 100.0):
        raise PrefloopError(
            f"experiment {running.experiment_id} is still undecided: {candidate} waits for it"
        )
    if running is None:
        serving = routing.version
    else:
        serving = running.b if running.split == 100.0 else running.a
    if serving != parent:
        return (
            f"{candidate} not put into an A/B: users are served {serving}, not its parent "
            f"{parent} (start one by hand: `prefloop ab start --a {serving} --b {candidate}`)"
        )
    experiment = Split(f"ab-{candidate}", parent, candidate, settings.ab_start_split)
    control.start_ab(settings, experiment)
    return (
        f"experiment {experiment.experiment_id}: {candidate} on {experiment.split:g} % of "
        f"users against {parent}"
    )


def follow_gates(settings: Settings, stop: threading.Event) -> None:
    """Start the A/B of every candidate that passes its gates, until ``stop`` is set."""
    consumer = kafka.consumer(settings, GROUP)
    consumer.subscribe([settings.topics.model_events])
    try:
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is None:
                continue
            if (error := message.error()) is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("model events: %s", error)
                continue
            try:
                record_type, event = decode(message.value() or b"")
            except Exception:
                record_type, event = "", {}
            if record_type == "model_event" and event.get("kind") == "GATES_PASSED":
                while not stop.is_set():
                    try:
                        log.warning("gates passed: %s", start_candidate(settings, event))
                        break
                    except PrefloopError as exc:
                        log.warning("gates passed, A/B not started yet: %s", exc)
                        stop.wait(RETRY_S)
                if stop.is_set():
                    break  # not committed: replays at the next start
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
