"""API keys on the router's OpenAI routes: the check, OpenAI's 401 bodies, what is exempt,
and the keys kept out of the Serve config."""

from __future__ import annotations

import hmac
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from prefloop.model_registry import ModelRegistry
from prefloop.serving import control, deployment
from prefloop.serving.assignment import Routing, Split
from prefloop.serving.auth import ApiKeys, mask
from prefloop.serving.collector import Limits, create_collector
from prefloop.serving.exceptions import ApiError, ServingError
from prefloop.serving.pool import ModelPool
from prefloop.serving.router import ChatRouter
from prefloop.settings import Settings, load_settings
from prefloop.testing import isolated_settings

KEY = "sk-prefloop-alpha-0123456789"
OTHER_KEY = "sk-prefloop-beta-9876543210"
WRONG_KEY = "sk-abcdefghijklmnopqrstuvwxyz"

MISSING_BODY = {
    "error": {
        "message": "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
INCORRECT_BODY = {
    "error": {
        "message": "Incorrect API key provided: sk-ab***yz. You can get an API key from the "
        "operator of this router.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def settings(**values: Any) -> Settings:
    """Settings of ``values`` alone, whatever this process's environment holds."""
    return load_settings(environ={}, **values)


def refusal(keys: ApiKeys, headers: dict[str, str]) -> dict[str, Any]:
    with pytest.raises(ApiError) as caught:
        keys.check(headers)
    assert caught.value.status == 401
    return caught.value.body()


# -- the check ---------------------------------------------------------------------
def test_every_configured_key_is_accepted_as_a_bearer_token() -> None:
    keys = ApiKeys([KEY, OTHER_KEY])
    for key in (KEY, OTHER_KEY):
        keys.check({"authorization": f"Bearer {key}"})
    keys.check({"authorization": f"bearer  {KEY} "})  # the scheme is case-insensitive


def test_a_missing_key_gets_openais_missing_key_body() -> None:
    keys = ApiKeys([KEY])
    assert refusal(keys, {}) == MISSING_BODY
    for header in ("", "Bearer", "Bearer   ", f"Basic {KEY}", KEY):  # no Bearer credentials
        assert refusal(keys, {"authorization": header}) == MISSING_BODY


def test_a_wrong_key_gets_openais_invalid_key_body_with_the_key_masked() -> None:
    keys = ApiKeys([KEY, OTHER_KEY])
    body = refusal(keys, {"authorization": f"Bearer {WRONG_KEY}"})
    assert body == INCORRECT_BODY
    assert WRONG_KEY not in json.dumps(body)
    for near_miss in (KEY[:-1], KEY + "x", KEY.upper()):
        assert refusal(keys, {"authorization": f"Bearer {near_miss}"})["error"]["code"] == (
            "invalid_api_key"
        )


def test_masking_shows_at_most_seven_characters_and_nothing_of_a_short_key() -> None:
    assert mask(WRONG_KEY) == "sk-ab***yz"
    assert mask("short-key-12345") == "***"  # 15 characters
    assert mask("0123456789abcdef") == "01234***ef"
    shown = refusal(ApiKeys([KEY]), {"authorization": "Bearer tiny"})["error"]["message"]
    assert "tiny" not in shown and "provided: ***." in shown


def test_every_key_is_compared_in_constant_time_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = ApiKeys([KEY, OTHER_KEY, "sk-prefloop-gamma-000000"])
    keys.check({"authorization": f"Bearer {KEY}"})  # the first key matches
    assert len(compared) == 3
    # digests of one length, never the keys: a key's length does not change the time
    assert {len(a) for pair in compared for a in pair} == {32}
    assert all(KEY.encode() not in pair for pair in compared)


def test_keys_come_from_the_setting_comma_separated_and_never_show() -> None:
    assert ApiKeys.from_settings(settings()) is None  # unset: none required
    keys = ApiKeys.from_settings(settings(serve_api_keys=f" {KEY} ,{OTHER_KEY},, "))
    assert keys is not None and len(keys) == 2
    keys.check({"authorization": f"Bearer {OTHER_KEY}"})
    assert KEY not in repr(keys) and KEY not in str(vars(keys))
    with pytest.raises(ServingError, match="PREFLOOP_SERVE_API_KEYS holds no key"):
        ApiKeys.from_settings(settings(serve_api_keys=" , "))


# -- the router's routes -------------------------------------------------------------
@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    for version in ("v1", "v2"):
        registry.register(version, backend="echo")
    return registry


def make_router(registry: ModelRegistry, tmp_path: Path, **kwargs: Any) -> ChatRouter:
    router = ChatRouter(ModelPool(registry, cache_dir=tmp_path / "cache"), **kwargs)
    router.configure(Routing(experiment=Split("exp-keys", "v1", "v2", 50.0)))
    return router


CHAT = {"model": "prefloop", "messages": [{"role": "user", "content": "hi"}], "user": "ann"}


def test_the_openai_routes_need_a_key_and_the_health_routes_do_not(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    router = make_router(registry, tmp_path, api_keys=ApiKeys([KEY, OTHER_KEY]))
    with TestClient(router.app()) as client:
        for method, path, body in (
            ("POST", "/v1/chat/completions", CHAT),
            ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
            ("GET", "/v1/models", None),
        ):
            missing = client.request(method, path, json=body)
            assert (missing.status_code, missing.json()) == (401, MISSING_BODY), path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {WRONG_KEY}"}
            )
            assert (wrong.status_code, wrong.json()) == (401, INCORRECT_BODY), path
            right = client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {OTHER_KEY}"}
            )
            assert right.status_code == 200, (path, right.text)
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["status"] == "ready"


def test_without_keys_no_key_is_asked_for(registry: ModelRegistry, tmp_path: Path) -> None:
    with TestClient(make_router(registry, tmp_path).app()) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert client.get("/v1/models").status_code == 200


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record_type: str, record: dict[str, Any]) -> None:
        self.events.append((record_type, record))


def test_the_mounted_collector_keeps_its_own_token_and_not_the_api_keys(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    vectors = json.loads(
        (Path(__file__).parents[3] / "schemas" / "vectors" / "vectors.json").read_text()
    )["vectors"]
    thumbs = next(v["event"] for v in vectors if v["name"] == "feedback/thumbs_down")
    batch = {"events": [{"type": "feedback", "data": thumbs}]}
    recorder = Recorder()
    router = make_router(
        registry,
        tmp_path,
        api_keys=ApiKeys([KEY]),
        collector=create_collector(recorder, Limits(token="collector-secret")),
    )
    with TestClient(router.app()) as client:
        with_api_key = client.post(
            "/v1/events", json=batch, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert with_api_key.status_code == 401 and "wrong token" in with_api_key.json()["error"]
        with_token = client.post(
            "/v1/events", json=batch, headers={"Authorization": "Bearer collector-secret"}
        )
        assert with_token.status_code == 202
    assert len(recorder.events) == 1


# -- the replicas and the Serve config ---------------------------------------------
def test_a_replica_that_requires_keys_and_has_none_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PREFLOOP_SERVE_API_KEYS", raising=False)
    monkeypatch.setenv("PREFLOOP_HOME", str(tmp_path))
    replica_class = deployment.RouterReplica.func_or_class.__bases__[0]  # under Serve's wrapper
    with pytest.raises(ServingError, match="PREFLOOP_SERVE_API_KEYS is not set in this replica"):
        replica_class(api_keys_required=True)


def test_a_replica_enforces_the_keys_of_its_environment_required_or_not() -> None:
    keyed = settings(serve_api_keys=KEY)
    for required in (True, False):
        keys = deployment._api_keys(keyed, required)
        assert keys is not None
        keys.check({"authorization": f"Bearer {KEY}"})
    assert deployment._api_keys(settings(), required=False) is None
    with pytest.raises(ServingError, match="Ray workers' environment"):
        deployment._api_keys(settings(), required=True)


def test_build_app_passes_what_the_config_requires() -> None:
    app = deployment.build_app({"collector_token_required": False, "api_keys_required": True})
    bound = app._bound_deployment
    assert bound.init_kwargs == {"collector_token_required": False, "api_keys_required": True}


SECRETS = {
    "serve_api_keys": f"{KEY},{OTHER_KEY}",
    "collector_token": "collector-token-value",
    "console_users": "ops:operator:console-password-value",
    "kafka_sasl_password": "sasl-password-value",
    "kafka_ssl_key_password": "ssl-key-password-value",
    "clickhouse_password": "clickhouse-password-value",
}


def test_no_secret_reaches_the_serve_config_but_whether_keys_are_required_does(
    tmp_path: Path,
) -> None:
    secret = isolated_settings(tmp_path, **{k: SecretStr(v) for k, v in SECRETS.items()})
    config = control.app_config(secret, Routing(version="v1"))
    shown = json.dumps(config)
    for name, value in SECRETS.items():
        for part in value.split(","):
            assert part not in shown, name
    env = config["runtime_env"]["env_vars"]
    assert not {f"PREFLOOP_{name.upper()}" for name in SECRETS} & set(env)
    assert env["PREFLOOP_SERVE_PORT"] == str(secret.serve_port)  # the rest travels
    assert env["PREFLOOP_SERVE_MAX_TOKENS"] == str(secret.serve_max_tokens)
    assert config["args"] == {"collector_token_required": True, "api_keys_required": True}
    plain = control.app_config(isolated_settings(tmp_path), Routing(version="v1"))
    assert plain["args"] == {"collector_token_required": False, "api_keys_required": False}


def test_every_setting_named_like_a_secret_is_a_secret_the_config_leaves_out() -> None:
    # the config leaves out the SecretStr settings: a secret declared as a plain str
    # would travel in it, shown on Serve's dashboard
    for name, field in Settings.model_fields.items():
        if name.endswith(("password", "token", "keys", "secret")):
            assert SecretStr in (field.annotation, *typing.get_args(field.annotation)), name
