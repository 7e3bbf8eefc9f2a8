"""The A/B router: an OpenAI-compatible chat endpoint that splits users between versions.

One :class:`ChatRouter` runs in each replica of the Serve deployment (and in tests on
its own). Per request it parses the OpenAI body, assigns the user to an arm
(:class:`~prefloop.serving.assignment.Routing`), generates with the arm's model in
this same process (:class:`~prefloop.serving.pool.ModelPool`) and answers. After the
answer it logs, through the SDK, an Interaction and, on a user's first request in an
experiment in this replica, an Exposure; a regenerate also logs the Regenerate
feedback. Logging never fails a request: the SDK spools while Kafka is away, and an
emit that raises is logged and dropped.

Exposures are deduplicated per replica (a bounded memory of users seen), so a user
served by two replicas, or after a restart, has more than one exposure record; the
analytics take the first per user and experiment.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz``,
``GET /readyz`` and, when given, the event collector at ``/v1/events``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from .assignment import ArmAssignment, Routing, SplitError
from .backends.base import Backend, Generation
from .backends.exceptions import BackendError
from .http import BodyTooLarge, read_body
from .openai_api import (
    ROUTED_MODEL,
    ApiError,
    ApiLimits,
    ChatRequest,
    chunk_body,
    completion_body,
    parse_chat_request,
)
from .pool import ModelPool

__all__ = ["ChatRouter", "Served"]

log = logging.getLogger(__name__)

_RESPONSE_PREFIX = "chatcmpl-"
_INTERACTION_PREFIX = "int-"


class Emitter(Protocol):
    def emit(self, record_type: str, record: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Served:
    """What one answer was: the ids and the route, for headers and the events."""

    response_id: str
    interaction_id: str
    conversation_id: str
    session_id: str
    turn: int
    route: ArmAssignment
    regenerates: str | None


class ChatRouter:
    def __init__(
        self,
        pool: ModelPool,
        emitter: Emitter | None = None,
        *,
        limits: ApiLimits | None = None,
        timeout_s: float = 60.0,
        collector: Starlette | None = None,
        remember: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool, self.emitter = pool, emitter
        self.limits = limits or ApiLimits()
        self.timeout_s = timeout_s
        self.collector = collector
        self.routing: Routing | None = None
        self._clock = clock
        self._remember = remember
        self._exposed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._answers: OrderedDict[str, tuple[ArmAssignment, str, int]] = OrderedDict()
        self._configure_lock = threading.Lock()

    # -- configuration ------------------------------------------------------
    def configure(self, routing: Routing) -> None:
        """Serve ``routing`` from now on: its versions are loaded before it takes effect."""
        with self._configure_lock:
            serving = self.routing.versions if self.routing is not None else ()
            self.pool.load(tuple(dict.fromkeys((*routing.versions, *serving))))
            self.routing = routing  # one assignment: a request sees the old or the new
            self.pool.load(routing.versions)  # retires the versions no longer served

    @property
    def ready(self) -> bool:
        return self.routing is not None and set(self.routing.versions) <= set(self.pool.versions)

    # -- the HTTP app --------------------------------------------------------
    def app(self) -> Starlette:
        routes: list[Route | Mount] = [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/healthz", self._health, methods=["GET"]),
            Route("/readyz", self._ready, methods=["GET"]),
        ]
        if self.collector is not None:
            routes.append(Mount("/", app=self.collector))
        return Starlette(routes=routes)

    async def _health(self, _: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _ready(self, _: Request) -> JSONResponse:
        if not self.ready:
            return JSONResponse({"status": "loading"}, 503)
        assert self.routing is not None
        return JSONResponse({"status": "ready", "routing": self.routing.to_config()})

    async def _models(self, _: Request) -> JSONResponse:
        names = [ROUTED_MODEL, *self.pool.versions]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "prefloop"}
                    for name in names
                ],
            }
        )

    async def _chat(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            try:
                body = await read_body(request, self.limits.max_body_bytes)
            except BodyTooLarge as exc:
                raise ApiError(
                    413, f"{exc}: send a shorter conversation", code="request_too_large"
                ) from None
            chat = parse_chat_request(body, request.headers, self.limits)
            served = self._route(chat)
            if chat.stream:
                return self._stream(chat, served, started)
            generation = await self._generate(chat, served)
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        latency_ms = int((time.perf_counter() - started) * 1000)
        return JSONResponse(
            completion_body(served.response_id, served.route.model_version, generation),
            headers=_headers(served),
            background=BackgroundTask(self._log_after, chat, served, generation, latency_ms),
        )

    # -- one request ---------------------------------------------------------
    def _route(self, chat: ChatRequest) -> Served:
        routing = self.routing
        if routing is None or not self.ready:
            raise ApiError(
                503, "the router is still loading its models: retry shortly",
                kind="server_error", code="not_ready",
            )  # fmt: skip
        hex_id = uuid.uuid4().hex
        turn = sum(1 for m in chat.generation.messages if m["role"] == "user") - 1
        conversation_id = chat.conversation_id or f"conv-{hex_id}"
        route: ArmAssignment | None = None
        if chat.regenerate_of is not None:
            route, conversation_id, turn = self._regenerated(chat, routing, conversation_id, turn)
        elif chat.model != ROUTED_MODEL:
            if chat.model not in self.pool.versions:
                raise ApiError(
                    404,
                    f"the model {chat.model!r} does not exist here: use {ROUTED_MODEL!r} or one "
                    f"of the served versions {list(self.pool.versions)}",
                    param="model",
                    code="model_not_found",
                )
            route = ArmAssignment(None, None, chat.model, None)
        if route is None:
            try:
                route = routing.assign(chat.user)
            except SplitError as exc:
                raise ApiError(400, str(exc), param="user") from None
        response_id = f"{_RESPONSE_PREFIX}{hex_id}"
        self._remember_answer(response_id, route, conversation_id, turn)
        return Served(
            response_id=response_id,
            interaction_id=f"{_INTERACTION_PREFIX}{hex_id}",
            conversation_id=conversation_id,
            session_id=chat.session_id or conversation_id,
            turn=turn,
            route=route,
            regenerates=chat.regenerate_of,
        )

    def _regenerated(
        self, chat: ChatRequest, routing: Routing, conversation_id: str, turn: int
    ) -> tuple[ArmAssignment, str, int]:
        """The route of a regenerate: the arm and version that gave the original answer."""
        original = chat.regenerate_of or ""
        if not original.startswith(_RESPONSE_PREFIX):
            raise ApiError(
                400,
                f"regenerate_of={original!r} is not a response id this router returned "
                f"(they start with {_RESPONSE_PREFIX!r})",
                param="regenerate_of",
            )
        known = self._answers.get(original)
        if known is not None:
            route, conversation_id, turn = known
            if route.model_version in self.pool.versions:
                return route, conversation_id, turn
        # answered by another replica, or long ago: the user's sticky arm serves it
        try:
            return routing.assign(chat.user), conversation_id, turn
        except SplitError as exc:
            raise ApiError(400, str(exc), param="user") from None

    def _remember_answer(
        self, response_id: str, route: ArmAssignment, conversation_id: str, turn: int
    ) -> None:
        self._answers[response_id] = (route, conversation_id, turn)
        while len(self._answers) > self._remember:
            self._answers.popitem(last=False)

    async def _generate(self, chat: ChatRequest, served: Served) -> Generation:
        try:
            return await asyncio.wait_for(
                self.pool.generate(served.route.model_version, chat.generation), self.timeout_s
            )
        except TimeoutError:
            raise ApiError(
                504,
                f"the model did not answer within {self.timeout_s:g} s: retry, or ask for "
                "fewer max_tokens",
                kind="server_error",
                code="timeout",
            ) from None
        except KeyError:
            raise ApiError(
                503, "the model version was just replaced: retry", kind="server_error"
            ) from None
        except BackendError as exc:
            raise ApiError(500, str(exc), kind="server_error", code="model_error") from None

    def _stream(self, chat: ChatRequest, served: Served, started: float) -> StreamingResponse:
        created = int(self._clock())
        version = served.route.model_version

        async def events() -> AsyncIterator[str]:
            pieces: list[str] = []
            yield chunk_body(served.response_id, version, created, role=True, content="")
            finish = "stop"
            try:
                with self.pool.use(version) as backend:
                    async for piece in _pieces(backend, chat, self.timeout_s):
                        pieces.append(piece)
                        yield chunk_body(served.response_id, version, created, content=piece)
            except ApiError as exc:  # the status is sent already: the error is the last event
                yield f"data: {json.dumps(exc.body())}\n\n"
                return
            if len(pieces) >= chat.generation.max_tokens:
                finish = "length"
            yield chunk_body(served.response_id, version, created, finish_reason=finish)
            prompt_tokens = sum(len(m["content"].split()) for m in chat.generation.messages)
            if chat.include_usage:
                usage = (prompt_tokens, len(pieces))
                yield chunk_body(served.response_id, version, created, usage=usage)
            yield "data: [DONE]\n\n"
            generation = Generation("".join(pieces), prompt_tokens, len(pieces), "stop")
            self._log(chat, served, generation, int((time.perf_counter() - started) * 1000))

        return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(served))

    # -- events --------------------------------------------------------------
    async def _log_after(
        self, chat: ChatRequest, served: Served, generation: Generation, latency_ms: int
    ) -> None:
        """``_log`` once the answer is sent; a coroutine, so Starlette runs it on the loop
        and not in a thread (an emit only appends to the SDK's queue)."""
        self._log(chat, served, generation, latency_ms)

    def _log(
        self, chat: ChatRequest, served: Served, generation: Generation, latency_ms: int
    ) -> None:
        if self.emitter is None:
            return
        now = int(self._clock() * 1000)
        route = served.route
        try:
            if route.experiment_id is not None and route.arm is not None:
                key = (route.experiment_id, chat.user)
                if key not in self._exposed:
                    self._exposed[key] = None
                    while len(self._exposed) > self._remember:
                        self._exposed.popitem(last=False)
                    self.emitter.emit(
                        "exposure",
                        {
                            "exposure_id": str(uuid.uuid4()),
                            "ts": now,
                            "experiment_id": route.experiment_id,
                            "user_id": chat.user,
                            "arm": route.arm,
                            "model_version": route.model_version,
                            "bucket": route.bucket,
                            "conversation_id": served.conversation_id,
                        },
                    )
            if served.regenerates is not None:
                self.emitter.emit(
                    "feedback",
                    {
                        "event_id": str(uuid.uuid4()),
                        "ts": now,
                        "kind": "REGENERATE",
                        "interaction_id": _INTERACTION_PREFIX
                        + served.regenerates.removeprefix(_RESPONSE_PREFIX),
                        "response_id": served.regenerates,
                        "conversation_id": served.conversation_id,
                        "user_id": chat.user,
                        "session_id": served.session_id,
                        "value": None,
                        "text": None,
                        "metadata": {},
                    },
                )
            self.emitter.emit(
                "interaction",
                {
                    "interaction_id": served.interaction_id,
                    "response_id": served.response_id,
                    "regenerates": served.regenerates,
                    "conversation_id": served.conversation_id,
                    "turn": served.turn,
                    "ts": now,
                    "user_id": chat.user,
                    "session_id": served.session_id,
                    "experiment_id": route.experiment_id,
                    "arm": route.arm,
                    "model_version": route.model_version,
                    "messages": [dict(m) for m in chat.generation.messages],
                    "response": generation.text,
                    "latency_ms": latency_ms,
                    "prompt_tokens": generation.prompt_tokens,
                    "completion_tokens": generation.completion_tokens,
                    "uncertainty": None,
                    "metadata": {"finish_reason": generation.finish_reason},
                },
            )
        except Exception:  # logging must never fail or slow a chat request
            log.exception("could not log the events of response %s", served.response_id)


async def _pieces(backend: Backend, chat: ChatRequest, timeout_s: float) -> AsyncIterator[str]:
    """The back end's stream, read in a thread, each piece within the request's deadline."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        pieces = backend.stream(chat.generation)
        try:
            for piece in pieces:
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

    worker = threading.Thread(target=produce, name="prefloop-stream", daemon=True)
    worker.start()
    deadline = loop.time() + timeout_s
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ApiError(
                    504, f"the model did not finish within {timeout_s:g} s",
                    kind="server_error", code="timeout",
                ) from None  # fmt: skip
            if kind == "end":
                return
            if kind == "error":
                raise ApiError(500, str(value), kind="server_error", code="model_error")
            yield value
    finally:
        stop.set()


def _headers(served: Served) -> dict[str, str]:
    route = served.route
    headers = {
        "X-Prefloop-Response": served.response_id,
        "X-Prefloop-Interaction": served.interaction_id,
        "X-Prefloop-Conversation": served.conversation_id,
        "X-Prefloop-Model-Version": route.model_version,
    }
    if route.experiment_id is not None and route.arm is not None:
        headers["X-Prefloop-Experiment"] = route.experiment_id
        headers["X-Prefloop-Arm"] = route.arm
    return headers
