"""The router's HTTP API in-process (Starlette's test client, echo models, no Ray)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from prefloop.model_registry import ModelRegistry
from prefloop.serving.assignment import Routing, Split
from prefloop.serving.backends import EchoBackend
from prefloop.serving.openai_api import ApiLimits
from prefloop.serving.pool import ModelPool
from prefloop.serving.router import ChatRouter


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def emit(self, record_type: str, record: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("the broker is gone")
        self.events.append((record_type, record))

    def of(self, record_type: str) -> list[dict[str, Any]]:
        return [r for t, r in self.events if t == record_type]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    for version in ("v1", "v2", "v3"):
        registry.register(version, backend="echo")
    return registry


def make_router(registry: ModelRegistry, tmp_path: Path, **kwargs: Any) -> ChatRouter:
    router = ChatRouter(
        ModelPool(registry, cache_dir=tmp_path / "cache"),
        kwargs.pop("emitter", Recorder()),
        limits=kwargs.pop("limits", ApiLimits(max_body_bytes=4096, max_prompt_chars=200)),
        **kwargs,
    )
    router.configure(Routing(experiment=Split("exp-1", "v1", "v2", 50.0)))
    return router


@pytest.fixture
def router(registry: ModelRegistry, tmp_path: Path) -> ChatRouter:
    return make_router(registry, tmp_path)


def ask(client: TestClient, user: str = "alice", **body: Any) -> Any:
    payload = {"model": "prefloop", "messages": [{"role": "user", "content": "hi"}], "user": user}
    return client.post("/v1/chat/completions", json={**payload, **body})


def test_a_chat_is_answered_by_the_users_arm_with_its_ids_in_headers(router: ChatRouter) -> None:
    with TestClient(router.app()) as client:
        reply = ask(client, "alice")
    assert reply.status_code == 200
    body = reply.json()
    arm = router.routing.assign("alice")  # type: ignore[union-attr]
    assert reply.headers["x-prefloop-arm"] == arm.arm
    assert reply.headers["x-prefloop-model-version"] == arm.model_version == body["model"]
    assert reply.headers["x-prefloop-experiment"] == "exp-1"
    assert body["id"] == reply.headers["x-prefloop-response"]
    assert body["choices"][0]["message"]["content"] == f"{arm.model_version} heard: hi"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3


def test_each_answer_logs_an_interaction_and_each_user_one_exposure(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    events = Recorder()
    router = make_router(registry, tmp_path, emitter=events)
    with TestClient(router.app()) as client:
        for user in ("alice", "bob", "alice"):
            ask(client, user, conversation_id=f"c-{user}")
    interactions = events.of("interaction")
    assert [i["user_id"] for i in interactions] == ["alice", "bob", "alice"]
    first = interactions[0]
    assert first["experiment_id"] == "exp-1" and first["arm"] in ("A", "B")
    assert first["conversation_id"] == "c-alice" and first["turn"] == 0
    assert first["response"] == f"{first['model_version']} heard: hi"
    assert first["interaction_id"].startswith("int-") and first["response_id"].startswith(
        "chatcmpl-"
    )
    exposures = events.of("exposure")
    assert sorted(e["user_id"] for e in exposures) == ["alice", "bob"]
    assert all(e["bucket"] == router.routing.assign(e["user_id"]).bucket for e in exposures)  # type: ignore[union-attr]


def test_a_regenerate_is_served_by_the_same_arm_and_logs_the_feedback(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    events = Recorder()
    router = make_router(registry, tmp_path, emitter=events)
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "tell me more"},
    ]
    with TestClient(router.app()) as client:
        first = ask(client, "carol", messages=messages, conversation_id="c1").json()
        router.configure(
            Routing(experiment=Split("exp-1", "v1", "v2", 100.0 if first["model"] == "v1" else 0.0))
        )
        again = ask(client, "carol", messages=messages, regenerate_of=first["id"])
    assert again.status_code == 200
    assert (
        again.json()["model"] == first["model"]
    )  # the arm that answered first, split moved or not
    feedback = events.of("feedback")
    assert len(feedback) == 1 and feedback[0]["kind"] == "REGENERATE"
    assert feedback[0]["response_id"] == first["id"]
    original = events.of("interaction")[0]
    assert feedback[0]["interaction_id"] == original["interaction_id"]
    new = events.of("interaction")[1]
    assert new["regenerates"] == first["id"]
    assert (
        (new["conversation_id"], new["turn"])
        == ("c1", 1)
        == (original["conversation_id"], original["turn"])
    )


def test_streaming_sends_the_same_text_in_chunks_and_ends_with_done(router: ChatRouter) -> None:
    with TestClient(router.app()) as client:
        whole = ask(client, "dave").json()["choices"][0]["message"]["content"]
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "prefloop",
                "messages": [{"role": "user", "content": "hi"}],
                "user": "dave",
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_stream_cut_by_max_tokens_says_length_with_the_models_counts(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    events = Recorder()
    router = make_router(registry, tmp_path, emitter=events)
    request = {"model": "prefloop", "messages": [{"role": "user", "content": "a b c d"}],
               "user": "gina", "stream": True, "max_tokens": 2,
               "stream_options": {"include_usage": True}}  # fmt: skip
    with (
        TestClient(router.app()) as client,
        client.stream("POST", "/v1/chat/completions", json=request) as reply,
    ):
        lines = [line for line in reply.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line[6:]) for line in lines]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    (logged,) = events.of("interaction")
    assert logged["metadata"]["finish_reason"] == "length"
    assert (logged["prompt_tokens"], logged["completion_tokens"]) == (4, 2)


def request_body(**fields: Any) -> bytes:
    """A valid request with ``fields`` changed (None removes one)."""
    body = {"model": "prefloop", "messages": [{"role": "user", "content": "x"}], "user": "u"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


BAD_REQUESTS = {
    "malformed-json": (b"{not json", 400, None),
    "no-messages": (request_body(messages=[]), 400, "messages"),
    "unknown-model": (request_body(model="gpt-9"), 404, "model"),
    "oversized-prompt": (
        request_body(messages=[{"role": "user", "content": "x" * 500}]),
        400,
        "messages",
    ),
    "no-user": (request_body(user=None), 400, "user"),
    "unsupported-role": (
        request_body(messages=[{"role": "tool", "content": "x"}]),
        400,
        "messages",
    ),
    "bad-temperature": (request_body(temperature=-1), 400, "temperature"),
    "unknown-field": (request_body(tools=[]), 400, "tools"),
    "foreign-regenerate": (request_body(regenerate_of="abc"), 400, "regenerate_of"),
    "metadata-not-strings": (request_body(metadata={"n": 1}), 400, "metadata"),
    "metadata-too-many": (
        request_body(metadata={f"k{i}": "v" for i in range(17)}),
        400,
        "metadata",
    ),
    "oversized-body": (b"x" * 5000, 413, None),
}


@pytest.mark.parametrize(("body", "status", "param"), BAD_REQUESTS.values(), ids=BAD_REQUESTS)
def test_bad_requests_get_an_openai_error_body(
    router: ChatRouter, body: bytes, status: int, param: str | None
) -> None:
    with TestClient(router.app()) as client:
        reply = client.post("/v1/chat/completions", content=body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_the_requests_metadata_is_kept_on_its_interaction(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    events = Recorder()
    router = make_router(registry, tmp_path, emitter=events)
    with TestClient(router.app()) as client:
        assert ask(client, metadata={"prefloop_scored": "false", "team": "a"}).status_code == 200
        assert ask(client).status_code == 200
    tagged, plain = events.of("interaction")
    assert tagged["metadata"] == {"prefloop_scored": "false", "team": "a", "finish_reason": "stop"}
    assert plain["metadata"] == {"finish_reason": "stop"}


def test_a_failing_event_log_never_fails_the_chat(registry: ModelRegistry, tmp_path: Path) -> None:
    router = make_router(registry, tmp_path, emitter=Recorder(fail=True))
    with TestClient(router.app()) as client:
        assert ask(client).status_code == 200


def test_a_version_can_be_pinned_outside_the_experiment(router: ChatRouter) -> None:
    with TestClient(router.app()) as client:
        reply = ask(client, "erin", model="v2")
        models = client.get("/v1/models").json()
    assert reply.json()["model"] == "v2" and "x-prefloop-arm" not in reply.headers
    assert [m["id"] for m in models["data"]] == ["prefloop", "v1", "v2"]


class Closing(EchoBackend):
    def __init__(self, model_version: str) -> None:
        super().__init__(model_version)
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_reconfiguring_loads_the_new_versions_and_closes_the_old(router: ChatRouter) -> None:
    old = {version: Closing(version) for version in ("v1", "v2")}
    router.pool._backends.update(old)  # to see them closed
    router.configure(Routing(version="v3"))
    assert router.pool.versions == ("v3",)
    assert all(backend.closed.wait(10) for backend in old.values())
    with TestClient(router.app()) as client:
        reply = ask(client, "frank")
        ready = client.get("/readyz").json()
    assert reply.json()["model"] == "v3" and "x-prefloop-experiment" not in reply.headers
    assert ready == {"status": "ready", "routing": {"version": "v3"}}


def test_an_unconfigured_router_is_not_ready(registry: ModelRegistry, tmp_path: Path) -> None:
    router = ChatRouter(ModelPool(registry, cache_dir=tmp_path / "cache"))
    with TestClient(router.app()) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
        reply = ask(client)
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "not_ready"


class Stuck(EchoBackend):
    """A model that never finishes (until told to)."""

    def __init__(self, model_version: str) -> None:
        super().__init__(model_version)
        self.release = threading.Event()

    blocking = True

    def generate(self, requests: Any) -> Any:
        self.release.wait(30)
        return super().generate(requests)


def test_a_request_past_its_timeout_gets_504(registry: ModelRegistry, tmp_path: Path) -> None:
    router = make_router(registry, tmp_path, timeout_s=0.3)
    stuck = {version: Stuck(version) for version in ("v1", "v2")}
    router.pool._backends.update(stuck)  # the pool's models swapped for stuck ones
    with TestClient(router.app()) as client:
        try:
            reply = ask(client)
        finally:  # let the abandoned generation end before the client's loop closes
            for backend in stuck.values():
                backend.release.set()
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "timeout"


def test_a_regenerate_of_another_users_response_is_refused(router: ChatRouter) -> None:
    with TestClient(router.app()) as client:
        first = ask(client, "hank").json()
        reply = ask(client, "ivy", regenerate_of=first["id"])
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "regenerate_of"
