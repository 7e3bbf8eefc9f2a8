"""The console's calls to the router's OpenAI endpoint, as any OpenAI client makes them.

The annotation queue asks it for alternative responses and the demo chat page for
answers. Each call carries one of the router's API keys when it has some
(``PREFLOOP_SERVE_API_KEYS``): the console is the router's client like any other.
Blocking (``urllib``): call it from a thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from prefloop.errors import PrefloopError
from prefloop.serving import control
from prefloop.serving.openai_api import ROUTED_MODEL
from prefloop.settings import Settings

__all__ = [
    "RouterAnswer",
    "RouterTimeout",
    "RouterUnavailable",
    "api_key",
    "chat",
    "served_versions",
]

NOT_RUNNING = "the router is not running: start it with `prefloop serve` (or `prefloop up`)"


class RouterUnavailable(PrefloopError):
    """No router answers on the serve port."""


class RouterTimeout(RouterUnavailable):
    """The router took the request but did not answer in time."""


@dataclass(frozen=True)
class RouterAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any


def api_key(settings: Settings) -> str | None:
    """The key the console sends: the first of the router's keys, if it has any."""
    if settings.serve_api_keys is None:
        return None
    keys = (k.strip() for k in settings.serve_api_keys.get_secret_value().split(","))
    return next((k for k in keys if k), None)


def _headers(settings: Settings) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    key = api_key(settings)
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _call(settings: Settings, path: str, body: Any, timeout_s: float) -> RouterAnswer:
    request = urllib.request.Request(
        f"{control.router_url(settings)}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers=_headers(settings),
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            status, headers, raw = reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, exc.headers, exc.read()
    except TimeoutError:
        raise RouterTimeout(f"the router did not answer within {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise RouterTimeout(f"the router did not answer within {timeout_s:g} s") from None
        raise RouterUnavailable(f"{NOT_RUNNING} ({exc.reason})") from None
    except ConnectionError as exc:
        raise RouterUnavailable(f"{NOT_RUNNING} ({exc})") from None
    try:
        parsed = json.loads(raw or b"null")
    except json.JSONDecodeError:
        parsed = {"error": {"message": raw[:200].decode(errors="replace")}}
    return RouterAnswer(status, {k.lower(): v for k, v in headers.items()}, parsed)


def chat(settings: Settings, body: dict[str, Any], timeout_s: float = 60.0) -> RouterAnswer:
    """``POST /v1/chat/completions`` with ``body`` (not streamed)."""
    return _call(settings, "/v1/chat/completions", {**body, "stream": False}, timeout_s)


def served_versions(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """The model versions the router serves now (``GET /v1/models`` less the routed name)."""
    answer = _call(settings, "/v1/models", None, timeout_s)
    if answer.status != 200:
        raise RouterUnavailable(f"the router's /v1/models answered {answer.status}: {answer.body}")
    return [m["id"] for m in answer.body.get("data", []) if m.get("id") != ROUTED_MODEL]
