"""The A/B router on a real Ray Serve (local head) logging to the real broker.

Echo models stand behind it (the no-op back end): these tests are about routing,
stickiness, live changes, failures and events; the model back ends have their own.
One router with two replicas serves the whole module.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import ray
from pydantic import SecretStr

from prefloop.infra.testing import local_ray_head
from prefloop.kafka import TopicReader
from prefloop.model_registry import ModelRegistry
from prefloop.serving import control
from prefloop.serving.assignment import Routing, Split
from prefloop.settings import Settings
from prefloop.testing import free_port, fresh_topics

REQUEST_TIMEOUT_S = 20.0
SERVE_NOTICES_S = 12.0  # two of the router's 5 s health checks, and the long poll


@pytest.fixture(scope="module")
def served(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("serving-home")
    settings = fresh_topics(
        kafka_settings,
        home=home,
        ray_port=free_port(),
        ray_dashboard_port=free_port(),
        serve_port=free_port(),
        ray_object_store_mb=128,
        serve_replicas=2,
        serve_request_timeout_s=REQUEST_TIMEOUT_S,
        serve_max_prompt_chars=2000,
    )
    registry = ModelRegistry.from_settings(settings)
    for version in ("v1", "v2"):
        registry.register(version, backend="echo")
    with local_ray_head(settings):
        control.deploy(settings, Routing(version="v1"))
        yield settings


def chat(settings: Settings, user: str, **extra: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {"model": "prefloop", "messages": [{"role": "user", "content": "hi"}], "user": user}
    return post(settings, json.dumps({**body, **extra}).encode())


def post(settings: Settings, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(
        f"{control.router_url(settings)}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S + 10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, json.load(reply)
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            body = json.loads(text)
        except json.JSONDecodeError:  # Serve's proxy answers a lost replica in plain text
            body = {"text": text.decode(errors="replace")}
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, body


def arms(settings: Settings, users: list[str]) -> dict[str, str]:
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda u: chat(settings, u), users))
    assert [status for status, _, _ in replies] == [200] * len(users)
    return {u: headers["x-prefloop-arm"] for u, (_, headers, _) in zip(users, replies, strict=True)}


def within_binomial_bound(count: int, n: int, share: float) -> bool:
    """|count - n p| within 4 standard deviations (a false alarm about once in 16,000)."""
    return abs(count - n * share) <= 4 * math.sqrt(n * share * (1 - share))


def test_the_openai_client_works_unchanged(served: Settings) -> None:
    control.deploy(served, Routing(experiment=Split("exp-client", "v1", "v2", 50.0)))
    client = openai.OpenAI(base_url=f"{control.router_url(served)}/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": "hello there"}]
    raw = client.chat.completions.with_raw_response.create(
        model="prefloop", messages=messages, user="olivia"
    )
    completion = raw.parse()
    version = raw.headers["x-prefloop-model-version"]
    assert completion.id.startswith("chatcmpl-") and completion.model == version
    assert completion.choices[0].message.content == f"{version} heard: hello there"
    assert raw.headers["x-prefloop-arm"] in ("A", "B")
    streamed = client.chat.completions.create(
        model="prefloop", messages=messages, user="olivia", stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == completion.choices[0].message.content
    assert [m.id for m in client.models.list()] == ["prefloop", "v1", "v2"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=messages, user="olivia")


def test_a_thousand_users_split_as_configured_and_stay_on_their_arm(served: Settings) -> None:
    control.deploy(served, Routing(experiment=Split("exp-split", "v1", "v2", 10.0)))
    users = [f"user-{i}" for i in range(1000)]
    first, second = arms(served, users), arms(served, users)
    assert first == second  # sticky across requests (and across the two replicas)
    in_b = {u for u, arm in first.items() if arm == "B"}
    assert within_binomial_bound(len(in_b), 1000, 0.10), len(in_b)

    # raise the split live while requests are in flight: none fails, B keeps its users
    failures: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            status, _, _ = chat(served, f"background-{i % 50}")
            if status != 200:
                failures.append(status)
            i += 1

    background = threading.Thread(target=traffic)
    background.start()
    try:
        control.set_split(served, 50.0)
    finally:
        stop.set()
        background.join()
    assert failures == []
    after = arms(served, users)
    assert {u for u in in_b if after[u] != "B"} == set()  # users in B stay in B
    moved = sum(1 for u in users if after[u] == "B")
    assert within_binomial_bound(moved, 1000, 0.50), moved
    assert control.current_routing(served) == Routing(
        experiment=Split("exp-split", "v1", "v2", 50.0)
    )


def test_answers_exposures_and_regenerates_are_logged_on_kafka(served: Settings) -> None:
    control.deploy(served, Routing(experiment=Split("exp-events", "v1", "v2", 50.0)))
    users = [f"logged-{i}" for i in range(20)]
    replies = {u: chat(served, u, conversation_id=f"conv-{u}") for u in users}
    _, _, first = replies["logged-0"]
    _, _, again = chat(
        served, "logged-0", conversation_id="conv-logged-0", regenerate_of=first["id"]
    )
    assert again["model"] == first["model"]

    interactions = TopicReader(served, served.topics.interactions).wait_for(
        lambda records: len(records) >= 21, 60, "21 interactions"
    )
    by_response = {record["response_id"]: record for _, record, _, _ in interactions}
    for user, (_, head, body) in replies.items():
        logged = by_response[body["id"]]
        assert (logged["user_id"], logged["conversation_id"]) == (user, f"conv-{user}")
        assert (logged["experiment_id"], logged["arm"]) == ("exp-events", head["x-prefloop-arm"])
        assert logged["model_version"] == body["model"] and logged["response"].endswith("hi")
    regenerated = by_response[again["id"]]
    assert regenerated["regenerates"] == first["id"] and regenerated["turn"] == 0

    feedback = TopicReader(served, served.topics.feedback).wait_for(
        lambda records: len(records) >= 1, 60, "the regenerate feedback"
    )
    (kind, record, _, _), *_ = feedback
    assert (kind, record["kind"], record["response_id"]) == ("feedback", "REGENERATE", first["id"])
    assert record["interaction_id"] == by_response[first["id"]]["interaction_id"]

    exposures = TopicReader(served, served.topics.exposures).wait_for(
        lambda records: {r["user_id"] for _, r, _, _ in records} >= set(users), 60, "exposures"
    )
    mine = [r for _, r, _, _ in exposures if r["experiment_id"] == "exp-events"]
    assert {r["user_id"]: r["arm"] for r in mine} == {
        u: h["x-prefloop-arm"] for u, (_, h, _) in replies.items()
    }


def test_promotion_and_rollback_move_everyone_and_are_recorded(served: Settings) -> None:
    control.start_ab(served, Split("exp-promote", "v1", "v2", 20.0))
    users = [f"p-{i}" for i in range(40)]
    control.promote(served, "v2")
    assert set(arms(served, users).values()) == {"B"}
    control.rollback(served)
    assert set(arms(served, users).values()) == {"A"}
    events = TopicReader(served, served.topics.model_events).wait_for(
        lambda records: len(records) >= 3, 60, "three model events"
    )
    kinds = [(r["kind"], r["model_version"]) for _, r, _, _ in events]
    assert kinds[-3:] == [("AB_STARTED", "v2"), ("PROMOTED", "v2"), ("ROLLED_BACK", "v2")]


def test_killing_a_replica_under_load_leaves_no_request_hanging(served: Settings) -> None:
    control.deploy(served, Routing(experiment=Split("exp-kill", "v1", "v2", 50.0)))
    outcomes: list[tuple[float, float, int]] = []  # (started, seconds taken, status or 0)
    stop = threading.Event()

    def traffic(worker: int) -> None:
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _, _ = chat(served, f"kill-{worker}-{i % 20}")
            except OSError:
                status = 0
            outcomes.append((started, time.monotonic() - started, status))
            i += 1

    threads = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        replicas = [
            a for a in ray.util.list_named_actors(all_namespaces=True)
            if "SERVE_REPLICA" in a["name"] and "router" in a["name"]
        ]  # fmt: skip
        assert len(replicas) == 2, replicas
        victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
        killed_at = time.monotonic()
        ray.kill(victim, no_restart=True)
        time.sleep(SERVE_NOTICES_S + 4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert max(seconds for _, seconds, _ in outcomes) < REQUEST_TIMEOUT_S + 5
    after = [status for started, _, status in outcomes if started >= killed_at]
    failed = [status for status in after if status != 200]
    assert len(failed) <= 8, failed  # at most the requests routed to the killed replica
    # once Serve's health check has noticed, every request started goes to the survivor;
    # a request routed to the dead replica before that may end last, so order by start
    settled = [status for started, _, status in outcomes if started >= killed_at + SERVE_NOTICES_S]
    assert len(settled) >= 20 and settled == [200] * len(settled), settled
    control.deploy(served, Routing(version="v1"))  # Serve replaces the replica


def test_bad_requests_get_openai_errors_through_serve(served: Settings) -> None:
    status, _, body = post(served, b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, _, body = chat(served, "u", messages=[])
    assert (status, body["error"]["param"]) == (400, "messages")
    status, _, body = chat(served, "u", model="nope")
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    status, _, body = chat(served, "u", messages=[{"role": "user", "content": "x" * 5000}])
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")


def test_a_kafka_outage_fails_no_chat_and_loses_no_event(served: Settings) -> None:
    unreachable = served.with_overrides(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    control.deploy(unreachable, Routing(version="v1"))  # new replicas, no broker
    replies = [chat(served, f"outage-{i}", conversation_id="outage") for i in range(10)]
    assert [status for status, _, _ in replies] == [200] * 10
    answered = {body["id"] for _, _, body in replies}

    # the replicas stop with the events in their spool; the next ones send them
    assert control.stop(served)
    control.deploy(served, Routing(version="v1"))
    TopicReader(served, served.topics.interactions).wait_for(
        lambda records: answered <= {r["response_id"] for _, r, _, _ in records},
        90,
        "the interactions answered while Kafka was away",
    )


def test_the_event_collector_is_mounted_on_the_router(served: Settings) -> None:
    vectors = json.loads(
        (Path(__file__).parents[2] / "schemas" / "vectors" / "vectors.json").read_text()
    )["vectors"]
    thumbs = next(v["event"] for v in vectors if v["name"] == "feedback/thumbs_down")
    thumbs = {**thumbs, "event_id": f"router-mounted-{time.time_ns()}"}
    request = urllib.request.Request(
        f"{control.router_url(served)}/v1/events",
        data=json.dumps({"events": [{"type": "feedback", "data": thumbs}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert (reply.status, json.load(reply)["accepted"]) == (202, 1)
    TopicReader(served, served.topics.feedback).wait_for(
        lambda records: any(r["event_id"] == thumbs["event_id"] for _, r, _, _ in records),
        60,
        "the collected feedback",
    )


def test_a_router_requiring_api_keys_its_replicas_lack_does_not_start(served: Settings) -> None:
    # the keys never travel in the Serve config and this head's workers have none: the
    # replicas refuse to start rather than serve the endpoint open
    keyed = served.with_overrides(serve_api_keys=SecretStr("sk-only-the-deployer-has-it"))
    with pytest.raises(control.ServingError, match="PREFLOOP_SERVE_API_KEYS is not set"):
        control.deploy(keyed, Routing(version="v2"), timeout_s=120)
    control.deploy(served, Routing(version="v1"))  # back to no keys
    status, _, body = chat(served, "after-the-keys")
    assert (status, body["model"]) == (200, "v1")


def test_simulated_users_chat_through_the_router_and_signal_through_the_sdk(
    served: Settings,
) -> None:
    from prefloop.event_client import feedback_client
    from prefloop.loop.users.crowd import Crowd

    control.deploy(served, Routing(experiment=Split("exp-crowd", "v1", "v2", 50.0)))
    with feedback_client(served, name="crowd") as feedback:
        crowd = Crowd(control.router_url(served), feedback, users=4, seed=3, threads=2)
        stats = crowd.run(sessions_per_user=3)
        feedback.flush(10)
    assert stats.sessions == 12 and 12 <= stats.answers <= 12 * 2 * 3  # turns, regenerates

    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [r for _, r, _, _ in records if str(r.get("user_id", "")).startswith("user-3-")]

    interactions = TopicReader(served, served.topics.interactions).wait_for(
        lambda records: len(mine(records)) >= stats.answers, 60, "the crowd's interactions"
    )
    logged = mine(interactions)
    assert len(logged) == stats.answers
    assert {r["experiment_id"] for r in logged} == {"exp-crowd"}
    assert Counter(r["model_version"] for r in logged) == stats.by_version  # as it was told
    assert {r["user_id"] for r in logged} == {crowd.user_id(n) for n in range(4)}  # all had turns
    assert sum(r["regenerates"] is not None for r in logged) == stats.signals["regenerate"]
    by_response = {r["response_id"]: r for r in logged}
    kinds = {"RATING": "rating", "COPY": "copy", "REPORT": "report",
             "SESSION_END": "session_end", "REGENERATE": "regenerate"}  # fmt: skip
    expected = sum(stats.signals[name] for name in kinds.values())
    feedback_records = TopicReader(served, served.topics.feedback).wait_for(
        lambda records: len(mine(records)) >= expected, 60, "the crowd's feedback"
    )
    signals = mine(feedback_records)
    assert {kinds[kind]: n for kind, n in Counter(r["kind"] for r in signals).items()} == {
        name: stats.signals[name] for name in kinds.values() if stats.signals[name]
    }
    for record in signals:  # each about an answer the router logged, in its conversation
        answer = by_response[record["response_id"]]
        assert record["conversation_id"] == answer["conversation_id"]
        assert record["interaction_id"] == answer["interaction_id"]
