"""The training room on the real broker and a local Ray: request -> job -> version.

One Ray head (with its dashboard: the Jobs API lives there) and one tiny base model
serve the module. Each test has its own topics; the trainer service submits real Ray
jobs that train with TRL on the CPU.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import binomtest
from training_pairs import JUDGE, preference_pairs, retrain_request, write_pairs

from prefloop.infra.testing import local_ray_head
from prefloop.kafka import TopicReader
from prefloop.loop.handoff import follow_gates
from prefloop.model_registry import ModelRegistry, UnknownModelError, candidate_version
from prefloop.serving import control
from prefloop.serving.assignment import Routing
from prefloop.settings import Settings
from prefloop.testing import free_port, fresh_topics
from prefloop.tiny_model import tiny_model
from prefloop.training.service import TrainerService, submission_id
from prefloop_sdk import FeedbackClient

# a learning rate for a random tiny model (the product's 5e-7 is for real checkpoints)
CONFIG = {"learning_rate": 3e-3, "epochs": 2.0, "batch_size": 8, "heldout_fraction": 0.25,
          "max_length": 128}  # fmt: skip


@pytest.fixture(scope="module")
def ray_home(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("training-home")
    # the jobs import the test judge from this folder
    tests = str(Path(__file__).resolve().parents[1])
    patch = pytest.MonkeyPatch()
    patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    settings = kafka_settings.with_overrides(
        home=home,
        ray_port=free_port(),
        ray_dashboard=True,
        ray_dashboard_port=free_port(),
        ray_object_store_mb=128,
        serve_port=free_port(),
        train_config=json.dumps(CONFIG),
        train_poll_s=0.5,
        eval_judge=JUDGE,
    )
    base = tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    ModelRegistry.from_settings(settings).register("base", base)
    try:
        with local_ray_head(settings):
            yield settings
    finally:
        patch.undo()


@pytest.fixture
def trainer_settings(ray_home: Settings) -> Settings:
    return fresh_topics(ray_home)


OUTCOMES = ("GATES_PASSED", "GATES_FAILED", "TRAINING_FAILED")


def _service(settings: Settings, events: list[dict[str, Any]]) -> TrainerService:
    return TrainerService(settings, say=print, emit=events.append)


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_a_request_becomes_a_version_that_learnt_the_preference_and_enters_the_ab(
    trainer_settings: Settings,
) -> None:
    """request -> Ray job -> registry -> evaluation -> gates -> AB_STARTED, on the topics."""
    s = trainer_settings
    control.deploy(s, Routing(version="base"))  # users are on the base version
    pairs = preference_pairs("base", 160)
    pairs += preference_pairs("other", 8)  # another version's pairs in the same range
    pairs.append(dict(pairs[0]))  # a duplicate
    ranges = write_pairs(s, pairs)
    request = retrain_request("base", ranges, 160)
    stop = threading.Event()
    service = TrainerService(s)  # records on Kafka, as in production
    threads = [
        threading.Thread(target=service.run, args=(stop,), daemon=True),
        threading.Thread(target=follow_gates, args=(s, stop), daemon=True),
    ]
    for thread in threads:
        thread.start()
    reader = TopicReader(s, s.topics.model_events)
    try:
        with FeedbackClient(s.bootstrap_servers, topic_prefix=s.topic_prefix,
                            spool_dir=s.home / "spool" / "test") as client:  # fmt: skip
            client.emit("model_event", request)
        records = reader.wait_for(
            lambda rs: any(r[1]["kind"] in ("AB_STARTED", *OUTCOMES[1:]) for r in rs),
            timeout=420,
            what="the request's outcome",
        )
        routing = control.current_routing(s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        reader.close()
        control.stop(s)
    ours = [r[1] for r in records if r[1]["kind"] != "RETRAIN_REQUESTED"]
    version = candidate_version("base", request["event_id"])
    assert _kinds(ours) == ["TRAINING_STARTED", "TRAINED", "REGISTERED", "EVALUATED",
                            "GATES_PASSED", "AB_STARTED"], ours  # fmt: skip
    started = ours[-1]
    assert started["experiment_id"] == f"ab-{version}"
    assert started["metrics"]["split"] == s.ab_start_split == 10.0
    assert routing is not None and routing.experiment is not None
    assert (routing.experiment.a, routing.experiment.b) == ("base", version)
    assert all(e["model_version"] == version and e["parent_version"] == "base" for e in ours)
    ours = ours[:-1]  # the lifecycle the trainer recorded
    registry = ModelRegistry.from_settings(s)
    entry = registry.get(version)
    assert entry.parent == "base"
    assert entry.lineage["pair_ranges"] == ranges
    assert entry.lineage["pair_count"] == 160  # the other version's and the duplicate left out
    assert entry.lineage["sources"] == {"IMPLICIT": 160}
    assert entry.training["hyperparameters"]["learning_rate"] == CONFIG["learning_rate"]
    assert "trl" in entry.training["libraries"]
    assert entry.gates["passed"] is True
    # held-out preference accuracy significantly above one half
    heldout = int(entry.evaluation["heldout_pairs"])
    correct = round(entry.evaluation["heldout_accuracy"] * heldout)
    assert heldout >= 20
    assert binomtest(correct, heldout, 0.5, alternative="greater").pvalue < 0.01
    assert ours[3]["metrics"]["heldout_accuracy"] == entry.evaluation["heldout_accuracy"]
    # the weights moved
    before = _weights(registry.local_path("base", s.home / "cache"))
    after = _weights(registry.local_path(version, s.home / "cache"))
    assert any(not torch.equal(before[name], after[name]) for name in before)


def _wait_for_training(service: TrainerService, job_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "training: step" in service.jobs.get_job_logs(job_id):
                return
        except RuntimeError:  # not submitted yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} showed no training step in {timeout:.0f} s")


def test_a_trainer_restarted_while_its_job_runs_adopts_it_and_a_replay_starts_none(
    trainer_settings: Settings,
) -> None:
    s = trainer_settings.with_overrides(train_config=json.dumps({**CONFIG, "max_steps": 40}))
    ranges = write_pairs(s, preference_pairs("base", 24))
    request = retrain_request("base", ranges, 24)
    job_id = submission_id(request["event_id"])
    events: list[dict[str, Any]] = []
    first = _service(s, events)
    outcomes: list[Any] = []
    running = threading.Thread(target=lambda: outcomes.append(first.handle(request)), daemon=True)
    running.start()
    _wait_for_training(first, job_id)
    # a second trainer (the first one restarted) meets the same request mid-job
    said: list[str] = []
    restarted = TrainerService(s, say=said.append, emit=events.append).handle(dict(request))
    running.join(timeout=300)
    assert outcomes and outcomes[0] is not None and restarted is not None
    assert restarted.version == outcomes[0].version and restarted.kind == outcomes[0].kind
    assert restarted.kind in ("GATES_PASSED", "GATES_FAILED")
    assert any("found job" in line for line in said), said
    # and once more after the job ended (a replay of the request)
    said.clear()
    replay = TrainerService(s, say=said.append, emit=events.append).handle(dict(request))
    assert replay is not None and replay.version == restarted.version
    assert any("found job" in line for line in said), said
    jobs = [j for j in first.jobs.list_jobs() if j.submission_id == job_id]
    assert len(jobs) == 1
    # every trainer recorded the same events under the same ids: consumers dedupe them
    ids: dict[str, set[str]] = {}
    for event in events:
        ids.setdefault(event["kind"], set()).add(event["event_id"])
    assert all(len(v) == 1 for v in ids.values()), ids


def test_a_job_stopped_mid_training_fails_and_the_next_request_trains(
    trainer_settings: Settings,
) -> None:
    s = trainer_settings.with_overrides(train_config=json.dumps({**CONFIG, "max_steps": 400}))
    ranges = write_pairs(s, preference_pairs("base", 32))
    request = retrain_request("base", ranges, 32)
    events: list[dict[str, Any]] = []
    service = _service(s, events)
    job_id = submission_id(request["event_id"])

    def stop_when_training() -> None:
        _wait_for_training(service, job_id)
        service.jobs.stop_job(job_id)

    killer = threading.Thread(target=stop_when_training, daemon=True)
    killer.start()
    outcome = service.handle(request)
    killer.join(timeout=10)
    assert outcome is not None and outcome.kind == "TRAINING_FAILED", outcome
    assert _kinds(events) == ["TRAINING_STARTED", "TRAINING_FAILED"]
    assert "stopped" in (events[-1]["detail"] or "").lower()
    with pytest.raises(UnknownModelError):
        ModelRegistry.from_settings(s).get(outcome.version)
    # the next request (the trigger sends one once the failure freed the lineage)
    quick = s.with_overrides(train_config=json.dumps({**CONFIG, "max_steps": 1}))
    retry = _service(quick, events).handle(retrain_request("base", ranges, 32))
    assert retry is not None and retry.kind in ("GATES_PASSED", "GATES_FAILED")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown base", "is not in the registry"),
        ("empty text", "empty prompt, chosen or rejected"),
        ("offsets gone", "no longer exist"),
        ("bad config", "learning_rate=-1"),
    ],
)
def test_a_bad_request_fails_with_its_reason_and_registers_nothing(
    trainer_settings: Settings, case: str, reason: str
) -> None:
    s = trainer_settings
    base = "nobody" if case == "unknown base" else "base"
    pairs = preference_pairs("base", 12, **({"chosen": " "} if case == "empty text" else {}))
    ranges = write_pairs(s, pairs)
    if case == "offsets gone":
        from confluent_kafka import TopicPartition

        from prefloop.kafka import admin_client

        tp = TopicPartition(ranges[0]["topic"], 0, ranges[0]["last_offset"] + 1)
        admin = admin_client(s)  # kept: a collected client never completes its futures
        for future in admin.delete_records([tp]).values():
            future.result(timeout=30)
    if case == "bad config":
        s = s.with_overrides(train_config=json.dumps({"learning_rate": -1}))
    events: list[dict[str, Any]] = []
    outcome = _service(s, events).handle(retrain_request(base, ranges, 12))
    assert outcome is not None and outcome.kind == "TRAINING_FAILED"
    assert reason in outcome.detail, outcome.detail
    assert events[-1]["kind"] == "TRAINING_FAILED" and events[-1]["parent_version"] == base
    with pytest.raises(UnknownModelError):
        ModelRegistry.from_settings(s).get(outcome.version)
