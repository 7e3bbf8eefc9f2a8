"""The HTTP event collector: JSON batches from browsers onto Kafka as Avro.

``POST /v1/events`` with ``{"events": [{"type": "feedback", "data": {...}}, ...]}``
(the JSON form of ``prefloop_sdk.jsonform``). Every event is checked against its
schema; valid ones are produced through the SDK, invalid ones are rejected with
a reason each. Replies:

- 202 ``{"accepted": n, "rejected": m, "errors": [{"index": i, "reason": ...}]}``
- 400 malformed JSON, a body that is not a batch, or a batch with no valid event
  (same body: nothing of it reached Kafka)
- 401 a token is configured and the request has none or a wrong one
  (``Authorization: Bearer <token>``, or ``?token=`` for ``navigator.sendBeacon``)
- 413 a body or a batch over the limits; 429 a key over its rate (``Retry-After``)

The body is read as JSON whatever its Content-Type (``sendBeacon`` sends
text/plain); CORS preflights are answered for the configured origins.

Runnable alone: ``prefloop collector`` (uvicorn); the serving app mounts it.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prefloop.settings import Settings
from prefloop_sdk.errors import InvalidRecordError
from prefloop_sdk.jsonform import from_json

from .exceptions import BodyTooLarge
from .http import read_body

# what clients may send; the platform's own records (scores, pairs, ...) are not theirs
CLIENT_TYPES = ("interaction", "feedback", "exposure", "annotation_result")


class Emitter(Protocol):
    """Where accepted events go: the SDK's FeedbackClient in production."""

    def emit(self, record_type: str, record: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Limits:
    token: str | None = None
    max_body_bytes: int = 1 << 20
    max_events: int = 1000
    rate_per_s: float = 1000.0
    burst: int = 5000
    cors_origins: tuple[str, ...] = ("*",)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        token = settings.collector_token.get_secret_value() if settings.collector_token else None
        return cls(
            token=token or None,
            max_body_bytes=settings.collector_max_body_kb * 1024,
            max_events=settings.collector_max_events,
            rate_per_s=settings.collector_rate_per_s,
            burst=settings.collector_burst,
            cors_origins=tuple(o.strip() for o in settings.collector_cors_origins.split(",")),
        )


class RateLimiter:
    """A token bucket per key (the client's token or address), the oldest keys forgotten."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate_per_s, float(burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, count: int) -> float:
        """Take ``count`` events' worth; 0.0 if allowed, else the seconds to wait."""
        now = time.monotonic()
        level, then = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - then) * self.rate)
        wait = 0.0
        if count > level:
            wait = (count - level) / self.rate
        else:
            level -= count
        self._buckets[key] = (level, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def create_collector(emitter: Emitter, limits: Limits | None = None) -> Starlette:
    """The collector as an ASGI app, producing accepted events through ``emitter``."""
    limits = limits or Limits()
    limiter = RateLimiter(limits.rate_per_s, limits.burst)

    async def events(request: Request) -> JSONResponse:
        try:
            key = _authorize(request, limits.token)
            try:
                raw = await read_body(request, limits.max_body_bytes)
            except BodyTooLarge as exc:
                raise _Rejected(413, f"{exc}: send smaller batches") from None
            batch = _parse(raw, limits.max_events)
            wait = limiter.take(key, len(batch))
            if wait > 0:
                raise _Rejected(
                    429,
                    f"rate limit of {limits.rate_per_s:g} events/s exceeded: "
                    f"retry in {math.ceil(wait)} s",
                    {"Retry-After": str(math.ceil(wait))},
                )
        except _Rejected as exc:
            return JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)
        accepted: list[tuple[str, dict[str, Any]]] = []
        errors = []
        for index, item in enumerate(batch):
            try:
                accepted.append(_check(item))
            except _Rejected as exc:
                errors.append({"index": index, "reason": exc.reason})
        body = {"accepted": len(accepted), "rejected": len(errors), "errors": errors}
        if not accepted:
            return JSONResponse(body, 400)
        for record_type, record in accepted:
            emitter.emit(record_type, record)
        return JSONResponse(body, 202)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    # browsers on other origins preflight the POST (it carries Authorization); the SDK
    # reads Retry-After, which a cross-origin page sees only when it is exposed
    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(limits.cors_origins),
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    return Starlette(
        routes=[
            Route("/v1/events", events, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        middleware=[cors],
    )


def _authorize(request: Request, token: str | None) -> str:
    """The rate-limit key; raises 401 when a token is configured and not presented."""
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else None
    given = given or request.query_params.get("token")
    if token is not None:
        if not given:
            raise _Rejected(
                401,
                "missing token: send Authorization: Bearer <token> "
                "(or ?token=<token> with sendBeacon)",
            )
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _Rejected(401, "wrong token: check the collector token your client sends")
        return f"token:{given}"
    return f"addr:{request.client.host if request.client else 'unknown'}"


def _parse(body: bytes, max_events: int) -> list[Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Rejected(400, f"malformed JSON: {exc}") from None
    batch = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(batch, list):
        raise _Rejected(400, 'the body must be a JSON object {"events": [...]}')
    if len(batch) > max_events:
        raise _Rejected(
            413,
            f"batch of {len(batch)} events exceeds the limit of {max_events}: send smaller batches",
        )
    return batch


def _check(item: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str) or "data" not in item:
        raise _Rejected(400, 'an event must be an object {"type": ..., "data": {...}}')
    record_type = item["type"]
    if record_type not in CLIENT_TYPES:
        raise _Rejected(
            400, f"unknown event type {record_type!r}: expected one of {', '.join(CLIENT_TYPES)}"
        )
    try:
        return record_type, from_json(record_type, item["data"])
    except InvalidRecordError as exc:
        raise _Rejected(400, "; ".join(exc.problems)) from None
