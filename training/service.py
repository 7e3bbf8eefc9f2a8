"""The trainer service: each RETRAIN_REQUESTED becomes one Ray job and its lifecycle.

It consumes ``<prefix>.model-events`` (read_committed) and, for each retrain request:

1. submits one Ray job through the Jobs API, its submission id derived from the
   request's event id: a replayed or duplicated request finds the job already there
   and follows it instead of starting a second, and so does a restarted trainer;
2. records TRAINING_STARTED, then follows the job (its log lines are the progress);
3. on success records TRAINED, REGISTERED and EVALUATED from the version's manifest,
   checks the quality gates and records GATES_PASSED, or GATES_FAILED and ARCHIVED
   with the failing gates named; on failure records TRAINING_FAILED with the reason;
4. commits the request's offset only then, so a crash at any step replays it.

Every event is about the candidate version with ``parent_version`` its base (the
stream trigger ends the base's busy state on TRAINED, TRAINING_FAILED, GATES_FAILED),
and has an id derived from the request and its kind, so a replay writes the same
events again rather than new ones. Starting the A/B on GATES_PASSED is not this
room's business: the orchestration that composes the rooms does it.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from prefloop import kafka
from prefloop.errors import first_line
from prefloop.event_client import feedback_client
from prefloop.model_registry import (
    ModelRegistry,
    ModelVersion,
    UnknownModelError,
    candidate_version,
)
from prefloop.ray_client import jobs_client
from prefloop.settings import Settings, child_environment
from prefloop.training.config import DPOJobConfig
from prefloop.training.exceptions import JobError
from prefloop.training.gates import check_gates, describe_failures
from prefloop_sdk import decode

__all__ = ["Outcome", "TrainerService", "model_event", "submission_id"]

log = logging.getLogger(__name__)
GROUP = "prefloop-trainer"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
NO_AGENT = "No available agent"  # the Jobs API's 500 while the head's agent registers
AGENT_WAIT_S = 120.0


def submission_id(request_id: str) -> str:
    """The Ray job of a request: the same id for every replay of it."""
    return "prefloop-train-" + re.sub(r"[^A-Za-z0-9_-]", "-", request_id)[:96]


def model_event(
    kind: str,
    version: str,
    parent: str,
    request: Mapping[str, Any],
    *,
    metrics: Mapping[str, float] | None = None,
    detail: str | None = None,
    artifact_uri: str | None = None,
    with_pairs: bool = False,
) -> dict[str, Any]:
    """A lifecycle ModelEvent of ``version``, its id derived from the request and ``kind``."""
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"prefloop/{request['event_id']}/{kind}")),
        "ts": int(time.time() * 1000),
        "kind": kind,
        "model_version": version,
        "parent_version": parent,
        "experiment_id": None,
        "artifact_uri": artifact_uri,
        "pair_count": int(request.get("pair_count") or 0) if with_pairs else None,
        "pair_ranges": list(request.get("pair_ranges") or []) if with_pairs else [],
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "detail": detail,
    }


@dataclass(frozen=True)
class Outcome:
    request_id: str
    version: str
    kind: str  # GATES_PASSED, GATES_FAILED or TRAINING_FAILED
    detail: str


class TrainerService:
    """Requests in, Ray jobs out; ``emit`` records each ModelEvent (default: to Kafka)."""

    def __init__(
        self,
        settings: Settings,
        say: Callable[[str], None] = print,
        emit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.say = say
        self.registry = ModelRegistry.from_settings(settings)
        self._client = feedback_client(settings, name="trainer") if emit is None else None
        self._emit = emit or self._to_kafka
        self._jobs: Any = None

    # -- events ----------------------------------------------------------------
    def _to_kafka(self, event: dict[str, Any]) -> None:
        assert self._client is not None
        self._client.emit("model_event", event)
        self._client.flush()

    def record(self, event: dict[str, Any]) -> None:
        """Record one ModelEvent (on Kafka unless another ``emit`` was given)."""
        self._emit(event)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- the loop --------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Handle requests until ``stop`` is set; the offset of each is committed after it."""
        consumer = kafka.consumer(self.settings, GROUP)
        consumer.subscribe([self.settings.topics.model_events])
        self.say(f"trainer: waiting for retrain requests on {self.settings.topics.model_events}")
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
                except Exception as exc:  # not ours to judge: the stream agents dead-letter it
                    log.warning("model events: undecodable record skipped (%s)", exc)
                    record_type, event = "", {}
                if record_type == "model_event" and event.get("kind") == "RETRAIN_REQUESTED":
                    self.handle(event, stop)
                    if stop.is_set():
                        break  # stopped while following a job: the request replays
                consumer.commit(message=message, asynchronous=False)
        finally:
            consumer.close()
            self.close()

    # -- one request -----------------------------------------------------------
    def handle(
        self, request: Mapping[str, Any], stop: threading.Event | None = None
    ) -> Outcome | None:
        """Carry out one request; None when stopped before the job ended."""
        base = str(request["model_version"])
        request_id = str(request["event_id"])
        version = candidate_version(base, request_id)
        job_id = submission_id(request_id)
        try:
            config = DPOJobConfig.from_settings(self.settings)
            fresh = self._submit(job_id, request, version, config)
        except Exception as exc:
            return self._failed(
                request, version, base, f"the job could not start: {first_line(exc)}"
            )
        self.say(
            f"trainer: {'submitted' if fresh else 'found'} job {job_id} training {version} "
            f"from {base} on {request.get('pair_count')} pairs"
        )
        self._emit(model_event("TRAINING_STARTED", version, base, request, with_pairs=True,
                               detail=f"Ray job {job_id}"))  # fmt: skip
        status = self._follow(job_id, stop)
        if status is None:
            return None
        if status != "SUCCEEDED":
            return self._failed(request, version, base, self._reason(job_id, status))
        try:
            entry = self.registry.get(version)
        except UnknownModelError:
            return self._failed(request, version, base, "the job succeeded but registered nothing")
        return self.finish(entry, request)

    def finish(self, entry: ModelVersion, request: Mapping[str, Any]) -> Outcome:
        """TRAINED, REGISTERED and EVALUATED from the manifest, then the gates."""
        base = entry.parent or str(request["model_version"])
        uri = f"{self.registry.url}/{entry.version}"
        metrics = entry.training.get("metrics") or {}
        self._emit(model_event("TRAINED", entry.version, base, request, metrics=metrics,
                               artifact_uri=uri, with_pairs=True))  # fmt: skip
        self._emit(model_event("REGISTERED", entry.version, base, request, artifact_uri=uri,
                               with_pairs=True, detail=f"trained from {base}"))  # fmt: skip
        evaluation = {k: v for k, v in entry.evaluation.items() if isinstance(v, int | float)}
        self._emit(model_event("EVALUATED", entry.version, base, request, metrics=evaluation))
        return self.gate(entry, request)

    def gate(self, entry: ModelVersion, request: Mapping[str, Any]) -> Outcome:
        base = entry.parent or str(request["model_version"])
        evaluation = {k: v for k, v in entry.evaluation.items() if isinstance(v, int | float)}
        gates = check_gates(evaluation)
        passed = all(g.passed for g in gates)
        summary = describe_failures(gates)
        self.registry.annotate(
            entry.version,
            gates={"passed": passed, "summary": summary, "gates": [g.to_json() for g in gates]},
        )
        values = {g.name: float(g.value) for g in gates if g.value is not None}
        kind = "GATES_PASSED" if passed else "GATES_FAILED"
        self._emit(model_event(kind, entry.version, base, request, metrics=values, detail=summary))
        if not passed:
            self._emit(model_event("ARCHIVED", entry.version, base, request, detail=summary))
        self.say(f"trainer: {entry.version}: {kind} ({summary})")
        return Outcome(str(request["event_id"]), entry.version, kind, summary)

    def _failed(self, request: Mapping[str, Any], version: str, base: str, reason: str) -> Outcome:
        self._emit(model_event("TRAINING_FAILED", version, base, request, detail=reason))
        self.say(f"trainer: training {version} failed: {reason}")
        return Outcome(str(request["event_id"]), version, "TRAINING_FAILED", reason)

    # -- Ray jobs --------------------------------------------------------------
    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            self._jobs = jobs_client(self.settings)
        return self._jobs

    def _submit(
        self, job_id: str, request: Mapping[str, Any], version: str, config: DPOJobConfig
    ) -> bool:
        """Submit the job unless it exists; whether this call submitted it."""
        if self._job_exists(job_id):
            return False
        python = shlex.quote(sys.executable) if not self.settings.ray_address else "python"
        entrypoint = " ".join([
            python, "-m", "prefloop.training.job",
            "--request", shlex.quote(json.dumps(dict(request), default=str)),
            "--version", shlex.quote(version),
            "--config", shlex.quote(config.to_json()),
        ])  # fmt: skip
        env = {k: v for k, v in child_environment(self.settings).items()
               if k.startswith(("PREFLOOP_", "PYTHON", "HF_", "TRANSFORMERS_"))}  # fmt: skip
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self.jobs.submit_job(
                    entrypoint=entrypoint,
                    submission_id=job_id,
                    runtime_env={"env_vars": env},
                    entrypoint_num_cpus=self.settings.train_num_cpus,
                    entrypoint_num_gpus=self.settings.train_num_gpus,
                    metadata={"request": str(request["event_id"]), "version": version},
                )
                return True
            except RuntimeError as exc:
                if self._job_exists(job_id):  # submitted meanwhile by a twin
                    return False
                # a head that has just (re)started has no job agent for a few seconds
                if NO_AGENT in str(exc) and time.monotonic() < deadline:
                    log.info("the Ray head has no job agent yet; submitting again")
                    time.sleep(1.0)
                    continue
                raise JobError(f"Ray refused job {job_id}: {first_line(exc)}") from exc

    def _job_exists(self, job_id: str) -> bool:
        try:
            self.jobs.get_job_info(job_id)
        except RuntimeError:  # the Jobs API answers 404 for an unknown id
            return False
        return True

    def _follow(self, job_id: str, stop: threading.Event | None) -> str | None:
        shown = 0
        while True:
            status = str(self.jobs.get_job_status(job_id).value)
            logs = self.jobs.get_job_logs(job_id)
            lines = logs.splitlines()
            for line in lines[shown:]:
                if line.startswith(("training:", "error:")):
                    self.say(f"  {line}")
            shown = len(lines)
            if status in TERMINAL:
                return status
            if stop is not None and stop.wait(self.settings.train_poll_s):
                return None
            if stop is None:
                time.sleep(self.settings.train_poll_s)

    def _reason(self, job_id: str, status: str) -> str:
        """Why the job ended: its own one-line error, else its last traceback line."""
        logs = [line.strip() for line in self.jobs.get_job_logs(job_id).splitlines()]
        errors = [line[len("error: ") :] for line in logs if line.startswith("error: ")]
        if errors:
            return errors[-1]
        raised = [line for line in logs if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line)]
        if raised:
            return f"the job raised {raised[-1]}"
        if status == "STOPPED":
            return f"Ray job {job_id} was stopped before it finished"
        info = self.jobs.get_job_info(job_id)
        message = (info.message or "").splitlines()[0] if info.message else "no output"
        return f"Ray job {job_id} {status.lower()}: {message}"
