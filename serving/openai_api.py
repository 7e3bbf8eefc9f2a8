"""The OpenAI chat-completions wire format: requests in, responses and errors out.

Only the shape of the protocol lives here; routing and generation are the router's.
Existing OpenAI clients work unchanged: ``model`` is ``"prefloop"`` (the router
chooses the version, sticky per user) or a served version's name (pinned, outside
the experiment). prefloop's extensions ride in the body (``extra_body`` in the
``openai`` client) or in headers:

- ``user`` or ``X-Prefloop-User``: who asks; it decides the arm. Required.
- ``conversation_id`` or ``X-Prefloop-Conversation``: the conversation the turn
  belongs to; a new one is made and returned when absent.
- ``session_id`` or ``X-Prefloop-Session``: the client session (default: the
  conversation).
- ``regenerate_of``: the response id this request regenerates.

Errors are OpenAI's body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends.base import ROLES, Generation, GenerationRequest
from .backends.exceptions import InvalidRequestError
from .exceptions import ApiError

__all__ = [
    "ROUTED_MODEL",
    "ApiError",
    "ApiLimits",
    "ChatRequest",
    "chunk_body",
    "completion_body",
    "parse_chat_request",
]

ROUTED_MODEL = "prefloop"
"""The model name that lets the router choose the version."""

_ROLE_ALIASES = {"developer": "system"}  # newer OpenAI clients send system prompts as developer
_KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "user", "stream", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "seed", "stop", "n", "stream_options",
        "regenerate_of", "conversation_id", "session_id", "metadata",
        # accepted and ignored: they do not change what a chat model returns here
        "frequency_penalty", "presence_penalty", "logit_bias", "store",
        "parallel_tool_calls", "service_tier", "response_format",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ApiLimits:
    max_body_bytes: int = 512 * 1024
    max_prompt_chars: int = 32_000
    max_tokens: int = 1024
    default_max_tokens: int = 256


@dataclass(frozen=True)
class ChatRequest:
    """One parsed chat-completions request."""

    model: str
    user: str
    generation: GenerationRequest
    stream: bool = False
    include_usage: bool = False
    regenerate_of: str | None = None
    conversation_id: str | None = None
    session_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's limits


def _metadata(value: Any) -> dict[str, str]:
    """OpenAI's ``metadata``: up to 16 string pairs, kept on the logged Interaction."""
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > METADATA_KEYS
        or not all(
            isinstance(k, str) and isinstance(v, str)
            and len(k) <= METADATA_KEY_CHARS and len(v) <= METADATA_VALUE_CHARS
            for k, v in value.items()
        )
    ):  # fmt: skip
        raise ApiError(
            400,
            f"`metadata` must be an object of at most {METADATA_KEYS} string values, keys of "
            f"at most {METADATA_KEY_CHARS} characters, values of at most "
            f"{METADATA_VALUE_CHARS}",
            param="metadata",
        )
    return dict(value)


def parse_chat_request(body: bytes, headers: Mapping[str, str], limits: ApiLimits) -> ChatRequest:
    """The request in ``body``; raises :class:`ApiError` naming the field that is wrong."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc}): send a JSON object") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object with `model` and `messages`")
    unknown = sorted(set(payload) - _KNOWN_FIELDS)
    if unknown:
        raise ApiError(
            400,
            f"unsupported fields {unknown}: this endpoint takes the chat-completions fields "
            "model, messages, user, stream, max_tokens, temperature, top_p, seed, stop",
            param=unknown[0],
            code="unsupported_parameter",
        )
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400,
            f"`model` is required: send {ROUTED_MODEL!r} to let the router choose",
            param="model",
        )
    messages = _messages(payload.get("messages"), limits)
    user = _text_field(payload, "user") or headers.get("x-prefloop-user", "")
    if not user:
        raise ApiError(
            400,
            "no user: send the `user` field or the X-Prefloop-User header, so the user "
            "keeps one arm of the experiment",
            param="user",
        )
    if payload.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported: send one request per choice", param="n")
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if (
        isinstance(max_tokens, int)
        and not isinstance(max_tokens, bool)
        and max_tokens > limits.max_tokens
    ):
        raise ApiError(
            400,
            f"max_tokens={max_tokens} exceeds this server's limit of {limits.max_tokens}",
            param="max_tokens",
        )
    stop = payload.get("stop") or ()
    try:
        generation = GenerationRequest(
            messages=messages,
            max_tokens=max_tokens,
            temperature=_number(payload, "temperature", 1.0),
            top_p=_number(payload, "top_p", 1.0),
            seed=payload.get("seed"),
            stop=(stop,)
            if isinstance(stop, str)
            else tuple(stop)
            if isinstance(stop, list)
            else stop,
        )
    except InvalidRequestError as exc:
        raise ApiError(400, str(exc), param=exc.field) from None
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"`stream` must be true or false, got {stream!r}", param="stream")
    options = payload.get("stream_options") or {}
    return ChatRequest(
        model=model,
        user=user,
        generation=generation,
        stream=stream,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        regenerate_of=_text_field(payload, "regenerate_of"),
        conversation_id=_text_field(payload, "conversation_id")
        or headers.get("x-prefloop-conversation"),
        session_id=_text_field(payload, "session_id") or headers.get("x-prefloop-session"),
        metadata=_metadata(payload.get("metadata")),
    )


def _messages(value: Any, limits: ApiLimits) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise ApiError(
            400, "`messages` must be a non-empty list of {role, content}", param="messages"
        )
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{index}] is not an object", param="messages")
        given = message.get("role")
        role = _ROLE_ALIASES.get(given, given) if isinstance(given, str) else given
        if role not in ROLES:
            raise ApiError(
                400,
                f"messages[{index}].role {message.get('role')!r} is not supported: use "
                "system, developer, user or assistant",
                param="messages",
            )
        messages.append({"role": role, "content": _content(message.get("content"), index)})
    if not any(m["role"] == "user" for m in messages):
        raise ApiError(400, "`messages` holds no user message: add one", param="messages")
    chars = sum(len(m["content"]) for m in messages)
    if chars > limits.max_prompt_chars:
        raise ApiError(
            400,
            f"the messages hold {chars} characters, over this server's limit of "
            f"{limits.max_prompt_chars}: shorten the conversation",
            param="messages",
            code="context_length_exceeded",
        )
    return tuple(messages)


def _content(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise ApiError(
                    400,
                    f"messages[{index}].content holds a non-text part: only text is supported",
                    param="messages",
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError(
        400, f"messages[{index}].content must be a string or text parts", param="messages"
    )


def _text_field(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise ApiError(400, f"`{name}` must be a string of at most 256 characters", param=name)
    return value


def _number(payload: dict[str, Any], name: str, default: float) -> float:
    value = payload.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"`{name}` must be a number, got {value!r}", param=name)
    return float(value)


def completion_body(
    response_id: str, model: str, generation: Generation, created: int | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "finish_reason": generation.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(generation.prompt_tokens, generation.completion_tokens),
    }


def chunk_body(
    response_id: str,
    model: str,
    created: int,
    *,
    content: str | None = None,
    role: bool = False,
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = None,
) -> str:
    """One ``chat.completion.chunk`` as a server-sent event."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    chunk: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        chunk["usage"] = _usage(*usage)
    return f"data: {json.dumps(chunk)}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
