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
``GET /readyz`` and, when given, the event collector at ``/v1/events``. With API keys
(:class:`~prefloop.serving.auth.ApiKeys`) every OpenAI route needs one; the health
routes, which the stack polls, and the collector, which has its own token, do not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from .assignment import ArmAssignment, Routing
from .auth import CHALLENGE, ApiKeys
from .backends.base import Backend, Generation, GenerationRequest
from .backends.exceptions import BackendError
from .exceptions import ApiError, BodyTooLarge
from .http import read_body
from .openai_api import (
    ROUTED_MODEL,
    ApiLimits,
    ChatRequest,
    chunk_body,
    completion_body,
    parse_chat_request,
)
from .pool import ModelPool, VersionRetired

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
        api_keys: ApiKeys | None = None,
        remember: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool, self.emitter = pool, emitter
        self.limits = limits or ApiLimits()
        self.timeout_s = timeout_s
        self.collector = collector
        self.api_keys = api_keys
        self.routing: Routing | None = None
        self._clock = clock
        self._remember = remember
        self._exposed: OrderedDict[tuple[str, str], None] = OrderedDict()
        # response id -> (route, conversation, turn, user), for regenerates
        self._answers: OrderedDict[str, tuple[ArmAssignment, str, int, str]] = OrderedDict()
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
        openai_routes = [  # OpenAI's API: behind the keys, when there are keys
            Route("/v1/chat/completions", self._guarded(self._chat), methods=["POST"]),
            Route("/v1/models", self._guarded(self._models), methods=["GET"]),
        ]
        routes: list[Route | Mount] = [
            *openai_routes,
            Route("/healthz", self._health, methods=["GET"]),
            Route("/readyz", self._ready, methods=["GET"]),
        ]
        if self.collector is not None:
            routes.append(Mount("/", app=self.collector))
        return Starlette(routes=routes)

    def _guarded(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` answered only for a request with one of the API keys, if any."""

        async def guarded(request: Request) -> Response:
            if self.api_keys is not None:
                try:
                    self.api_keys.check(request.headers)
                except ApiError as exc:
                    return JSONResponse(exc.body(), exc.status, headers=CHALLENGE)
            return await endpoint(request)

        return guarded

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
            self._expose(chat, served)  # assigned: exposed, whether or not the answer comes
            if chat.stream:
                return self._stream(chat, served, started)
            generation = await self._generate(chat, served)
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        except Exception:
            log.exception("chat request failed")
            error = ApiError(
                500, "the router failed on this request: retry, and report it if it persists",
                kind="server_error", code="internal_error",
            )  # fmt: skip
            return JSONResponse(error.body(), error.status)
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
            route = routing.assign(chat.user)  # the parser made sure there is a user
        response_id = f"{_RESPONSE_PREFIX}{hex_id}"
        _remember(
            self._answers, response_id, (route, conversation_id, turn, chat.user), self._remember
        )
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
            route, conversation_id, turn, user = known
            if user != chat.user:
                raise ApiError(
                    400,
                    f"response {original!r} was given to another user: regenerate only "
                    "your own responses",
                    param="regenerate_of",
                )
            if route.model_version in self.pool.versions:
                return route, conversation_id, turn
        # answered by another replica, or long ago: the user's sticky arm serves it
        return routing.assign(chat.user), conversation_id, turn

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
        except VersionRetired:
            raise _retired() from None
        except BackendError as exc:
            raise ApiError(500, str(exc), kind="server_error", code="model_error") from None

    def _stream(self, chat: ChatRequest, served: Served, started: float) -> StreamingResponse:
        created = int(self._clock())
        version = served.route.model_version
        try:  # held until the generation ends, whatever happens to the request
            backend = self.pool.acquire(version)
        except VersionRetired:
            raise _retired() from None

        async def events() -> AsyncIterator[str]:
            stream = _Stream(backend, chat.generation, lambda: self.pool.release(version))
            yield chunk_body(served.response_id, version, created, role=True, content="")
            try:
                async for piece in stream.pieces(self.timeout_s):
                    yield chunk_body(served.response_id, version, created, content=piece)
            except ApiError as exc:  # the status is sent already: the error is the last event
                yield f"data: {json.dumps(exc.body())}\n\n"
                return
            generation = stream.result
            assert generation is not None
            yield chunk_body(
                served.response_id, version, created, finish_reason=generation.finish_reason
            )
            if chat.include_usage:
                usage = (generation.prompt_tokens, generation.completion_tokens)
                yield chunk_body(served.response_id, version, created, usage=usage)
            yield "data: [DONE]\n\n"
            self._log(chat, served, generation, int((time.perf_counter() - started) * 1000))

        return _ClosingStream(events(), media_type="text/event-stream", headers=_headers(served))

    # -- events --------------------------------------------------------------
    async def _log_after(
        self, chat: ChatRequest, served: Served, generation: Generation, latency_ms: int
    ) -> None:
        """``_log`` once the answer is sent; a coroutine, so Starlette runs it on the loop
        and not in a thread (an emit only appends to the SDK's queue)."""
        self._log(chat, served, generation, latency_ms)

    def _expose(self, chat: ChatRequest, served: Served) -> None:
        """An Exposure on the user's first assignment in an experiment (in this replica)."""
        route = served.route
        if route.experiment_id is None or route.arm is None:
            return
        key = (route.experiment_id, chat.user)
        if key in self._exposed:
            return
        exposure = {
            "exposure_id": str(uuid.uuid4()),
            "ts": int(self._clock() * 1000),
            "experiment_id": route.experiment_id,
            "user_id": chat.user,
            "arm": route.arm,
            "model_version": route.model_version,
            "bucket": route.bucket,
            "conversation_id": served.conversation_id,
        }
        if self._emit("exposure", exposure, served):
            _remember(self._exposed, key, None, self._remember)

    def _log(
        self, chat: ChatRequest, served: Served, generation: Generation, latency_ms: int
    ) -> None:
        now = int(self._clock() * 1000)
        route = served.route
        if served.regenerates is not None:
            regenerate = {
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
            }
            self._emit("feedback", regenerate, served)
        interaction = {
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
            "metadata": {**chat.metadata, "finish_reason": generation.finish_reason},
        }
        self._emit("interaction", interaction, served)

    def _emit(self, record_type: str, record: dict[str, Any], served: Served) -> bool:
        """Emit one event; False (and a log line) when it could not be: never raises."""
        if self.emitter is None:
            return True
        try:
            self.emitter.emit(record_type, record)
        except Exception:  # logging must never fail or slow a chat request
            log.exception("could not log the %s of response %s", record_type, served.response_id)
            return False
        return True


def _remember(memory: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Put ``key`` in a bounded memory, forgetting the oldest entries past ``limit``."""
    memory[key] = value
    while len(memory) > limit:
        memory.popitem(last=False)


class _Stream:
    """A back end's stream read in a thread; ``release`` runs when the thread ends.

    The thread stops at the next piece once the reader is gone (a disconnect, a
    timeout); the model stays held until then, so a version switch cannot close it
    under a running generation.
    """

    def __init__(
        self, backend: Backend, request: GenerationRequest, release: Callable[[], None]
    ) -> None:
        self.backend, self.request, self.release = backend, request, release
        self.result: Generation | None = None

    async def pieces(self, timeout_s: float) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                pieces = self.backend.stream(self.request)
                try:
                    while not stop.is_set():
                        loop.call_soon_threadsafe(queue.put_nowait, ("piece", next(pieces)))
                except StopIteration as done:
                    loop.call_soon_threadsafe(queue.put_nowait, ("end", done.value))
                finally:
                    pieces.close()
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            finally:
                self.release()

        threading.Thread(target=produce, name="prefloop-stream", daemon=True).start()
        deadline = loop.time() + timeout_s
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(
                        queue.get(), max(0.0, deadline - loop.time())
                    )
                except TimeoutError:
                    raise ApiError(
                        504, f"the model did not finish within {timeout_s:g} s",
                        kind="server_error", code="timeout",
                    ) from None  # fmt: skip
                if kind == "end":
                    self.result = value
                    return
                if kind == "error":
                    raise ApiError(500, str(value), kind="server_error", code="model_error")
                yield value
        finally:
            stop.set()


class _ClosingStream(StreamingResponse):
    """A streaming response that closes its body iterator however the response ends.

    Starlette leaves an abandoned iterator to the garbage collector; closing it runs
    the stream's ``finally``, which stops the model's thread at its next piece.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


def _retired() -> ApiError:
    return ApiError(
        503, "the model version was just replaced: retry", kind="server_error", code="retired"
    )


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
