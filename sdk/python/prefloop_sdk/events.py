"""Building and validating the records a ``FeedbackClient`` emits.

Every check here is API misuse caught at the call, so each raises a typed
``InvalidEventError`` naming the argument; the fast path of each check is one type
test. Records come out as plain dicts in the shape of the latest schema version.

Topics and keys: ``TOPIC_SUFFIXES`` maps each record type to the suffix of its topic
(``<prefix>.interactions``, ``<prefix>.feedback``, ``<prefix>.exposures``, ...);
``key_of`` picks the Kafka key: the conversation id, so one conversation's turns and
signals meet in one partition, in order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from .errors import (
    MissingFieldError,
    OutOfRangeError,
    UnknownFeedbackKindError,
    WrongTypeError,
)
from .ids import stamp, stamp2

__all__ = [
    "ID_FIELDS",
    "KEY_FIELDS",
    "TOPIC_SUFFIXES",
    "FeedbackKind",
    "InteractionIds",
    "feedback_kind",
    "key_of",
]

INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1

TOPIC_SUFFIXES: dict[str, str] = {
    "interaction": "interactions",
    "feedback": "feedback",
    "exposure": "exposures",
    "scored_interaction": "scores",
    "annotation_task": "annotation-tasks",
    "annotation_result": "annotation-results",
    "preference_pair": "preferences",
    "model_event": "model-events",
    "dead_letter": "dlq",
}
"""The topic of each record type is ``<topic_prefix>.<suffix>``."""

ID_FIELDS: dict[str, str] = {
    "interaction": "interaction_id",
    "feedback": "event_id",
    "exposure": "exposure_id",
    "annotation_task": "task_id",
    "annotation_result": "result_id",
    "preference_pair": "pair_id",
    "model_event": "event_id",
    "dead_letter": "event_id",
}
"""The field holding each record type's own event id (``emit`` fills it when missing)."""

KEY_FIELDS: dict[str, tuple[str, ...]] = {"model_event": ("model_version",)}
"""Key fields of the types not keyed by conversation (then user) id."""
_DEFAULT_KEY_FIELDS = ("conversation_id", "user_id")


class FeedbackKind(StrEnum):
    """What the user did (the Feedback schema's ``kind``, without its reader-side UNKNOWN)."""

    RATING = "RATING"
    THUMBS = "THUMBS"
    REGENERATE = "REGENERATE"
    COPY = "COPY"
    CONTINUE = "CONTINUE"
    EDIT = "EDIT"
    SESSION_END = "SESSION_END"
    REPORT = "REPORT"
    COMMENT = "COMMENT"


_KINDS = {k.value: k.value for k in FeedbackKind} | {k.value.lower(): k.value for k in FeedbackKind}


class InteractionIds(NamedTuple):
    """The ids feedback refers to; ``FeedbackClient.interaction`` returns them.

    Build one yourself when the feedback arrives elsewhere (an HTTP collector):
    ``InteractionIds(interaction_id, response_id, conversation_id, user_id)``.
    """

    interaction_id: str
    response_id: str
    conversation_id: str
    user_id: str
    session_id: str | None = None


def feedback_kind(kind: object) -> str:
    """The schema symbol of a kind given as ``FeedbackKind`` or its name in any case."""
    try:
        return _KINDS[kind]  # type: ignore[index]
    except (KeyError, TypeError):
        raise UnknownFeedbackKindError(kind, list(FeedbackKind)) from None


# -- checks: the fast path is one type test, the slow path names the problem ------------


def bad_str(field: str, value: object) -> Exception:
    if value is None or value == "":
        return MissingFieldError(field, value)
    return WrongTypeError(field, value, "a non-empty str")


def check_opt_str(field: str, value: object) -> str | None:
    if value is None or type(value) is str:
        return value
    return _raise(WrongTypeError(field, value, "a str or None"))


def check_int(field: str, value: object, low: int = 0, high: int = INT_MAX) -> int:
    if type(value) is int and low <= value <= high:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if low <= value <= high:
            return int(value)
        raise OutOfRangeError(field, value, f"an int from {low} to {high}")
    raise WrongTypeError(field, value, f"an int from {low} to {high}")


def check_ts(value: object) -> int:
    """A timestamp: ms since the epoch (int) or an aware datetime, as ms."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise WrongTypeError("ts", value, "an aware datetime (naive times are ambiguous)")
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        raise OutOfRangeError("ts", value, "milliseconds since the Unix epoch (>= 0)")
    raise WrongTypeError("ts", value, "an int (ms since the Unix epoch, UTC) or a datetime")


def check_metadata(value: object) -> Mapping[str, str]:
    if type(value) is dict:  # the common case, without the ABC check
        for k, v in value.items():
            if type(k) is not str or type(v) is not str:
                break
        else:
            return value
    if not value:
        if value is None or isinstance(value, Mapping):
            return _EMPTY
        raise WrongTypeError("metadata", value, "a mapping of str to str")
    if not isinstance(value, Mapping):
        raise WrongTypeError("metadata", value, "a mapping of str to str")
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            bad = k if type(k) is not str else v
            raise WrongTypeError(f"metadata[{k!r}]", bad, "str keys and str values")
    return value


def check_messages(value: object) -> Sequence[Mapping[str, Any]]:
    if type(value) is list:  # the common case: a list of dicts of two strs
        for m in value:
            if type(m) is not dict or type(m.get("role")) is not str or not m["role"]:
                break
            if type(m.get("content")) is not str:
                break
        else:
            return value
    if not isinstance(value, (list, tuple)):
        raise WrongTypeError("messages", value, "a list of {'role': str, 'content': str}")
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise WrongTypeError(f"messages[{i}]", m, "a mapping with 'role' and 'content'")
        role = m.get("role")
        content = m.get("content")
        if type(role) is not str or not role:
            raise bad_str(f"messages[{i}]['role']", role)
        if type(content) is not str:
            raise WrongTypeError(
                f"messages[{i}]['content']", content, "a str (flatten multi-part content to text)"
            )
    return value


def check_number(field: str, value: object, low: float, high: float) -> float:
    if type(value) is float or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        number = float(value)
        if math.isfinite(number) and low <= number <= high:
            return number
        raise OutOfRangeError(field, value, f"a number from {low:g} to {high:g}")
    raise WrongTypeError(field, value, f"a number from {low:g} to {high:g}")


def check_rating(value: object) -> float:
    if type(value) is int and 1 <= value <= 5:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongTypeError("rating", value, "an int from 1 to 5")
    if not (1 <= value <= 5 and float(value).is_integer()):
        raise OutOfRangeError("rating", value, "a whole number of stars from 1 to 5")
    return float(value)


def check_thumbs(value: object) -> float:
    if type(value) is int and (value == 1 or value == -1):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongTypeError("thumbs", value, "+1 (up) or -1 (down)")
    raise OutOfRangeError("thumbs", value, "+1 (up) or -1 (down)")


def check_text(field: str, value: object, required: bool) -> str | None:
    if type(value) is str and (value or not required):
        return value
    if value is None and not required:
        return None
    raise bad_str(field, value)


def _raise(exc: Exception) -> Any:
    raise exc


_EMPTY: Mapping[str, str] = {}


# -- records ---------------------------------------------------------------------------


def interaction_record(
    user_id: object,
    conversation_id: object,
    session_id: object,
    turn: object,
    messages: object,
    response: object,
    model_version: object,
    latency_ms: object,
    prompt_tokens: object,
    completion_tokens: object,
    experiment_id: object,
    arm: object,
    regenerates: object,
    uncertainty: object,
    metadata: object,
    response_id: object,
    interaction_id: object,
    ts: object,
) -> dict[str, Any]:
    """An Interaction record from the arguments of ``FeedbackClient.interaction``."""
    if type(user_id) is not str or not user_id:
        raise bad_str("user_id", user_id)
    if type(conversation_id) is not str or not conversation_id:
        raise bad_str("conversation_id", conversation_id)
    if type(session_id) is not str:
        raise WrongTypeError("session_id", session_id, "a str ('' when there is no session)")
    if type(model_version) is not str or not model_version:
        raise bad_str("model_version", model_version)
    if type(response) is not str:
        raise WrongTypeError("response", response, "a str")
    if type(turn) is not int or not 0 <= turn <= INT_MAX:
        turn = check_int("turn", turn)
    if type(latency_ms) is not int or not 0 <= latency_ms <= INT_MAX:
        latency_ms = check_int("latency_ms", latency_ms)
    if type(prompt_tokens) is not int or not 0 <= prompt_tokens <= INT_MAX:
        prompt_tokens = check_int("prompt_tokens", prompt_tokens)
    if type(completion_tokens) is not int or not 0 <= completion_tokens <= INT_MAX:
        completion_tokens = check_int("completion_tokens", completion_tokens)
    check_messages(messages)
    if experiment_id is not None and type(experiment_id) is not str:
        check_opt_str("experiment_id", experiment_id)
    if arm is not None and type(arm) is not str:
        check_opt_str("arm", arm)
    if regenerates is not None and type(regenerates) is not str:
        check_opt_str("regenerates", regenerates)
    if uncertainty is not None:
        uncertainty = check_number("uncertainty", uncertainty, 0.0, 1.0)
    if metadata is not None:
        metadata = check_metadata(metadata)
    if response_id is not None and (type(response_id) is not str or not response_id):
        raise bad_str("response_id", response_id)
    if interaction_id is not None and (type(interaction_id) is not str or not interaction_id):
        raise bad_str("interaction_id", interaction_id)
    ms, new_id, second_id = stamp2()
    if ts is not None:
        ms = check_ts(ts)
    return {
        "interaction_id": interaction_id or new_id,
        "response_id": response_id or second_id,
        "regenerates": regenerates,
        "conversation_id": conversation_id,
        "turn": turn,
        "ts": ms,
        "user_id": user_id,
        "session_id": session_id,
        "experiment_id": experiment_id,
        "arm": arm,
        "model_version": model_version,
        "messages": messages,
        "response": response,
        "latency_ms": latency_ms,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "uncertainty": uncertainty,
        "metadata": metadata if metadata is not None else _EMPTY,
    }


def feedback_record(
    kind: str,
    about: object,
    value: float | None,
    text: str | None,
    metadata: object,
    event_id: object,
    ts: object,
) -> dict[str, Any]:
    """A Feedback record of ``kind`` (a schema symbol) about the interaction ``about``."""
    try:
        interaction_id = about.interaction_id  # type: ignore[attr-defined]
        response_id = about.response_id  # type: ignore[attr-defined]
        conversation_id = about.conversation_id  # type: ignore[attr-defined]
        user_id = about.user_id  # type: ignore[attr-defined]
        session_id = getattr(about, "session_id", None)
    except AttributeError:
        raise WrongTypeError(
            "about", about, "the InteractionIds that interaction() returned (or one you build)"
        ) from None
    if type(interaction_id) is not str or not interaction_id:
        raise bad_str("interaction_id", interaction_id)
    if type(response_id) is not str or not response_id:
        raise bad_str("response_id", response_id)
    if type(conversation_id) is not str or not conversation_id:
        raise bad_str("conversation_id", conversation_id)
    if type(user_id) is not str or not user_id:
        raise bad_str("user_id", user_id)
    if session_id is not None and type(session_id) is not str:
        check_opt_str("session_id", session_id)
    if metadata is not None:
        metadata = check_metadata(metadata)
    if event_id is not None and (type(event_id) is not str or not event_id):
        raise bad_str("event_id", event_id)
    ms, new_id = stamp()
    if ts is not None:
        ms = check_ts(ts)
    return {
        "event_id": event_id or new_id,
        "ts": ms,
        "kind": kind,
        "interaction_id": interaction_id,
        "response_id": response_id,
        "conversation_id": conversation_id,
        "user_id": user_id,
        "session_id": session_id or None,
        "value": value,
        "text": text,
        "metadata": metadata if metadata is not None else _EMPTY,
    }


def key_of(record_type: str, record: Mapping[str, Any]) -> bytes | None:
    """The Kafka key of a record: its conversation id, else its user id (model events:
    the model version); None when the record has none of them."""
    for field in KEY_FIELDS.get(record_type, _DEFAULT_KEY_FIELDS):
        value = record.get(field)
        if type(value) is str and value:
            return value.encode()
    return None
