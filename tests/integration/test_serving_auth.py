"""API keys on the router's OpenAI endpoint, on a real Ray Serve (local head).

The keys are in the head's environment, and so in its workers', the replicas', as on
a real cluster; the Serve config says only that keys are required. The official
``openai`` client is the one that must get through with a key and be refused without.
(A router requiring keys its replicas lack is refused in ``test_serving.py``, whose
head has none.)
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import SecretStr

from prefloop.infra.local_stack import router_ready
from prefloop.infra.testing import local_ray_head
from prefloop.model_registry import ModelRegistry
from prefloop.serving import control
from prefloop.serving.assignment import Routing
from prefloop.settings import Settings
from prefloop.testing import free_port, fresh_topics

KEYS = ("sk-prefloop-team-a-4f1c9e2b7d", "sk-prefloop-team-b-0a8e6c3f51")
WRONG_KEY = "sk-abcdefghijklmnopqrstuvwxyz"
MESSAGES: Any = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def keyed(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = fresh_topics(
        kafka_settings,
        home=tmp_path_factory.mktemp("serving-keys-home"),
        ray_port=free_port(),
        ray_dashboard_port=free_port(),
        serve_port=free_port(),
        ray_object_store_mb=128,
        serve_api_keys=SecretStr(",".join(KEYS)),
    )
    ModelRegistry.from_settings(settings).register("v1", backend="echo")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as environment:  # the head's alone, not this process's
            environment.setenv("PREFLOOP_SERVE_API_KEYS", ",".join(KEYS))
            stack.enter_context(local_ray_head(settings))
        control.deploy(settings, Routing(version="v1"))
        yield settings


def client(settings: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{control.router_url(settings)}/v1", api_key=api_key, max_retries=0
    )


def get(settings: Settings, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """A request with no Authorization header at all."""
    request = urllib.request.Request(
        f"{control.router_url(settings)}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def test_the_openai_client_with_a_key_gets_answers(keyed: Settings) -> None:
    for key in KEYS:
        completion = client(keyed, key).chat.completions.create(
            model="prefloop", messages=MESSAGES, user="olivia"
        )
        assert completion.choices[0].message.content == "v1 heard: hello there"
    streamed = client(keyed, KEYS[1]).chat.completions.create(
        model="prefloop", messages=MESSAGES, user="olivia", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "v1 heard: hello there"
    )
    assert [m.id for m in client(keyed, KEYS[0]).models.list()] == ["prefloop", "v1"]


def test_a_wrong_key_is_refused_as_openai_refuses_one(keyed: Settings) -> None:
    wrong = client(keyed, WRONG_KEY)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="prefloop", messages=MESSAGES, user="olivia")
    error = caught.value
    assert (error.status_code, error.code, error.type) == (
        401, "invalid_api_key", "invalid_request_error",
    )  # fmt: skip
    assert "Incorrect API key provided: sk-ab***yz." in error.message
    assert WRONG_KEY not in str(error.body) and WRONG_KEY not in error.response.text
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):  # one key's start is not a key
        client(keyed, KEYS[0][:-1]).models.list()


def test_no_key_gets_a_401_with_openais_body(keyed: Settings) -> None:
    chat = {"model": "prefloop", "messages": MESSAGES, "user": "olivia"}
    for path, body in (("/v1/chat/completions", chat), ("/v1/models", None)):
        status, headers, answer = get(keyed, path, body)
        assert status == 401, path
        assert headers["www-authenticate"].startswith("Bearer")
        assert answer == {
            "error": {
                "message": "You didn't provide an API key. You need to provide your API key "
                "in an Authorization header using Bearer auth (i.e. Authorization: Bearer "
                "YOUR_KEY).",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }


def test_the_health_routes_and_the_collector_need_no_api_key(keyed: Settings) -> None:
    assert get(keyed, "/healthz")[0] == 200
    status, _, ready = get(keyed, "/readyz")
    assert (status, ready["status"]) == (200, "ready")
    assert router_ready(keyed)  # what `prefloop up` and `status` poll

    vectors = json.loads(
        (Path(__file__).parents[2] / "schemas" / "vectors" / "vectors.json").read_text()
    )["vectors"]
    thumbs = next(v["event"] for v in vectors if v["name"] == "feedback/thumbs_down")
    thumbs = {**thumbs, "event_id": f"keyed-router-{time.time_ns()}"}
    status, _, answer = get(keyed, "/v1/events", {"events": [{"type": "feedback", "data": thumbs}]})
    assert (status, answer["accepted"]) == (202, 1)  # no collector token here: none asked


def test_the_keys_are_nowhere_in_what_serve_shows(keyed: Settings) -> None:
    details = json.dumps(control._client(keyed).get_serve_details())
    assert '"api_keys_required": true' in details
    for key in KEYS:
        assert key not in details
    assert "PREFLOOP_SERVE_API_KEYS" not in details
