"""The console's demo chat: talk to the router and rate its answers with the SDK's widget.

``GET /chat`` is a small chat page. ``POST /api/chat`` forwards a turn to the router's
OpenAI endpoint from the server, so the router's API key never reaches a browser, and
answers with the ids the router logged the turn under. The page puts them on a
``data-prefloop-rating`` element under each answer, where the rating widget of the
TypeScript SDK (``/sdk/widget.js``) mounts and sends its feedback straight to the
collector, whose URL and browser token ``GET /api/chat/config`` gives.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from prefloop.serving import control
from prefloop.serving.openai_api import ROUTED_MODEL
from prefloop.settings import Settings

from . import router_client

Handler = Callable[[Request], Awaitable[Response]]

__all__ = ["ChatInputError", "ChatTurn", "chat_routes", "parse_turn"]

PAGES = Path(str(importlib.resources.files(__package__) / "pages"))
MAX_BODY = 256 * 1024
MAX_MESSAGES = 200
MAX_ID_CHARS = 256  # what the router takes for a user or conversation id
ROLES = ("system", "user", "assistant")
NOT_RUNNING = router_client.NOT_RUNNING


class ChatInputError(Exception):
    """A request the console refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ChatTurn:
    """One checked ``POST /api/chat`` body: the conversation so far and who asks."""

    messages: tuple[dict[str, str], ...]
    user: str
    conversation_id: str | None = None


def chat_routes(settings: Settings, reader: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """``/chat``, ``/api/chat`` and ``/api/chat/config``, each wrapped by ``reader`` (the
    console's check that a reader is signed in)."""

    async def page(request: Request) -> Response:
        return FileResponse(PAGES / "chat.html", headers={"Cache-Control": "no-store"})

    async def config(request: Request) -> Response:
        # the collector token is the browser-facing ingestion token: every page that
        # sends feedback holds it, so a signed-in reader may too
        token = settings.collector_token
        return JSONResponse(
            {
                "collector": f"{control.router_url(settings)}/v1/events",
                "token": token.get_secret_value() if token is not None else None,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def chat(request: Request) -> Response:
        # Only a JSON body is taken: a browser sends one cross-site only after a CORS
        # preflight, which the console does not answer, so a forged form on another
        # site cannot make a signed-in user's browser chat (basic auth rides along with
        # any request, hence no CSRF token is needed here)
        try:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise ChatInputError(
                    415, f"send the turn as JSON with Content-Type: application/json, not {kind!r}"
                )
            turn = parse_turn(await _read(request))
            answer = await asyncio.to_thread(_complete, settings, turn)
        except ChatInputError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)
        return JSONResponse(answer)

    return [
        Route("/chat", reader(page), methods=["GET"]),
        Route("/api/chat/config", reader(config), methods=["GET"]),
        Route("/api/chat", reader(chat), methods=["POST"]),
    ]


async def _read(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ChatInputError(
                413, f"the request body is over {MAX_BODY // 1024} KiB: start a new conversation"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_turn(raw: bytes) -> ChatTurn:
    """The turn in ``raw``; raises :class:`ChatInputError` (400) naming the bad field."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ChatInputError(400, f"the request body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ChatInputError(
            400, "the request body must be a JSON object with `messages` and `user`"
        )
    unknown = sorted(set(body) - {"messages", "user", "conversation_id"})
    if unknown:
        raise ChatInputError(
            400, f"unknown fields {unknown}: send `messages`, `user` and `conversation_id`"
        )
    return ChatTurn(
        messages=_messages(body.get("messages")),
        user=_id(body, "user", required=True) or "",
        conversation_id=_id(body, "conversation_id", required=False),
    )


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise ChatInputError(400, "`messages` is required: a non-empty list of {role, content}")
    if len(value) > MAX_MESSAGES:
        raise ChatInputError(
            400, f"`messages` holds {len(value)} messages, over {MAX_MESSAGES}: start a new one"
        )
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ChatInputError(400, f"`{where}` must be an object with `role` and `content`")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise ChatInputError(400, f"`{where}` has unknown fields {extra}: send role, content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ChatInputError(400, f"`{where}.role` is {role!r}: use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ChatInputError(400, f"`{where}.content` must be a string")
        messages.append({"role": role, "content": content})
    last = messages[-1]
    if last["role"] != "user" or not last["content"].strip():
        raise ChatInputError(
            400,
            f"`messages[{len(messages) - 1}]` must be the user's new message (role user, "
            "not empty): the router answers the last message",
        )
    return tuple(messages)


def _id(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        need = "is required: " if required and value is None else ""
        raise ChatInputError(
            400, f"`{name}` {need}must be a non-empty string of at most {MAX_ID_CHARS} characters"
        )
    return value.strip()


def _complete(settings: Settings, turn: ChatTurn) -> dict[str, Any]:
    """The router's answer to ``turn`` and the ids it logged it under."""
    body: dict[str, Any] = {
        "model": ROUTED_MODEL,
        "messages": list(turn.messages),
        "user": turn.user,
    }
    if turn.conversation_id is not None:
        body["conversation_id"] = turn.conversation_id
    timeout = settings.serve_request_timeout_s + 10  # the router's own 504 comes first
    try:
        answer = router_client.chat(settings, body, timeout_s=timeout)
    except router_client.RouterTimeout as exc:
        raise ChatInputError(504, str(exc)) from None
    except router_client.RouterUnavailable:
        raise ChatInputError(409, NOT_RUNNING) from None
    if answer.status != 200:
        raise _refused(answer.status, answer.body)
    ids = {
        name: answer.headers.get(f"x-prefloop-{header}")
        for name, header in (
            ("response_id", "response"),
            ("interaction_id", "interaction"),
            ("conversation_id", "conversation"),
        )
    }
    try:
        content, model = answer.body["choices"][0]["message"]["content"], answer.body["model"]
    except (KeyError, IndexError, TypeError):
        content = model = None
    if content is None or None in ids.values():
        raise ChatInputError(
            502,
            f"the router answered {answer.status} without a chat completion and the "
            f"X-Prefloop-* ids: is PREFLOOP_SERVE_PORT={settings.serve_port} the router's port?",
        )
    return {"content": content, "model": model, **ids}


def _refused(status: int, body: Any) -> ChatInputError:
    """The router's error as the console answers it."""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    said = f": {message}" if message else ""
    if status in (401, 403):
        return ChatInputError(
            502,
            f"the router refused the console's API key{said}; give the console the "
            "router's PREFLOOP_SERVE_API_KEYS",
        )
    if status in (400, 413, 422, 429, 503, 504):
        return ChatInputError(status, f"the router refused the turn ({status}){said}")
    return ChatInputError(502, f"the router answered {status}{said}")
