"""API misuse raises typed errors at the call; nothing about delivery ever does.

These need no broker: the client points at a port where nothing listens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from prefloop_sdk import (
    ClientClosedError,
    ClientConfigError,
    FeedbackClient,
    FeedbackKind,
    InteractionIds,
    InvalidEventError,
    InvalidRecordError,
    MissingFieldError,
    OutOfRangeError,
    PrefloopError,
    UnknownFeedbackKindError,
    UnknownRecordTypeError,
    WrongTypeError,
)

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1

TURN: dict[str, Any] = {
    "user_id": "u-1",
    "conversation_id": "c-1",
    "turn": 0,
    "messages": [{"role": "user", "content": "Hi"}],
    "response": "Hello!",
    "model_version": "m-1",
    "latency_ms": 120,
    "prompt_tokens": 3,
    "completion_tokens": 2,
}
IDS = InteractionIds("i-1", "r-1", "c-1", "u-1")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FeedbackClient]:
    c = FeedbackClient(NOWHERE, spool_dir=tmp_path)
    yield c
    c.close(timeout=0)  # nothing to wait for: no broker


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"user_id": None}, MissingFieldError, "user_id"),
        ({"user_id": ""}, MissingFieldError, "user_id"),
        ({"conversation_id": None}, MissingFieldError, "conversation_id"),
        ({"user_id": 17}, WrongTypeError, "user_id"),
        ({"turn": "3"}, WrongTypeError, "turn"),
        ({"turn": True}, WrongTypeError, "turn"),
        ({"turn": -1}, OutOfRangeError, "turn"),
        ({"latency_ms": 1.5}, WrongTypeError, "latency_ms"),
        ({"prompt_tokens": 2**40}, OutOfRangeError, "prompt_tokens"),
        ({"messages": "Hi"}, WrongTypeError, "messages"),
        ({"messages": [{"role": "user"}]}, WrongTypeError, "messages[0]['content']"),
        ({"messages": [{"role": "", "content": "x"}]}, MissingFieldError, "messages[0]['role']"),
        ({"response": None}, WrongTypeError, "response"),
        ({"uncertainty": 1.5}, OutOfRangeError, "uncertainty"),
        ({"metadata": {"k": 1}}, WrongTypeError, "metadata['k']"),
        ({"arm": 3}, WrongTypeError, "arm"),
        ({"ts": datetime(2026, 1, 1)}, WrongTypeError, "ts"),
        ({"ts": -5}, OutOfRangeError, "ts"),
    ],
)
def test_bad_interaction_arguments_raise_typed_errors(
    client: FeedbackClient, changes: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as caught:
        client.interaction(**{**TURN, **changes})
    assert isinstance(caught.value, InvalidEventError)
    assert isinstance(caught.value, PrefloopError)
    assert caught.value.field == field
    assert field.split("[")[0] in str(caught.value)
    assert client.stats.emitted == 0  # nothing half-emitted


@pytest.mark.parametrize("rating", [0, 6, 3.5, -1])
def test_a_rating_outside_one_to_five_is_out_of_range(client: FeedbackClient, rating: Any) -> None:
    with pytest.raises(OutOfRangeError, match="rating"):
        client.rate(IDS, rating)


@pytest.mark.parametrize("rating", ["5", None, True])
def test_a_rating_that_is_not_a_number_is_a_type_error(client: FeedbackClient, rating: Any) -> None:
    with pytest.raises(WrongTypeError):
        client.rate(IDS, rating)
    with pytest.raises(TypeError):  # also catchable as the builtin
        client.rate(IDS, rating)


def test_thumbs_are_plus_or_minus_one(client: FeedbackClient) -> None:
    for bad in (0, 2, -2):
        with pytest.raises(OutOfRangeError):
            client.thumbs(IDS, bad)
    with pytest.raises(WrongTypeError):
        client.thumbs(IDS, True)
    client.thumbs(IDS, +1)
    client.thumbs(IDS, -1)
    assert client.stats.emitted == 2


def test_feedback_needs_the_ids_of_an_interaction(client: FeedbackClient) -> None:
    with pytest.raises(MissingFieldError, match="user_id"):
        client.copy(IDS._replace(user_id=""))
    with pytest.raises(MissingFieldError, match="conversation_id"):
        client.copy(IDS._replace(conversation_id=None))  # type: ignore[arg-type]
    with pytest.raises(WrongTypeError, match="about"):
        client.copy("i-1")  # type: ignore[arg-type]


def test_other_feedback_arguments_are_checked(client: FeedbackClient) -> None:
    with pytest.raises(OutOfRangeError):
        client.session_end(IDS, -3)
    with pytest.raises(MissingFieldError):
        client.edit(IDS, "")
    with pytest.raises(WrongTypeError):
        client.comment(IDS, 42)  # type: ignore[arg-type]
    with pytest.raises(WrongTypeError):
        client.report(IDS, reason=3)  # type: ignore[arg-type]
    client.report(IDS)  # a reason is optional


def test_an_unknown_feedback_kind_is_refused(client: FeedbackClient) -> None:
    with pytest.raises(UnknownFeedbackKindError) as caught:
        client.feedback(IDS, "LOVE")
    assert "RATING" in str(caught.value)
    client.feedback(IDS, FeedbackKind.COPY)
    client.feedback(IDS, "rating", value=4)
    with pytest.raises(OutOfRangeError):
        client.feedback(IDS, "RATING", value=9)
    with pytest.raises(WrongTypeError, match="value"):
        client.feedback(IDS, "COPY", value=1)


def test_emit_checks_the_type_and_the_record(client: FeedbackClient) -> None:
    with pytest.raises(UnknownRecordTypeError):
        client.emit("nonsense", {})
    with pytest.raises(InvalidRecordError, match="bucket"):
        client.emit(
            "exposure",
            {
                "experiment_id": "e",
                "user_id": "u",
                "arm": "a",
                "model_version": "m",
                "bucket": "seven",
            },
        )
    with pytest.raises(WrongTypeError):
        client.emit("exposure", ["not", "a", "mapping"])  # type: ignore[arg-type]
    exposure_id = client.emit(
        "exposure",
        {
            "experiment_id": "e",
            "user_id": "u",
            "arm": "a",
            "model_version": "m",
            "bucket": 7,
        },
    )
    assert isinstance(exposure_id, str) and len(exposure_id) == 36


def test_emitting_with_no_broker_is_quick_and_never_raises(tmp_path: Path) -> None:
    client = FeedbackClient(NOWHERE, spool_dir=tmp_path)
    started = time.perf_counter()
    for i in range(2000):
        ids = client.interaction(**{**TURN, "turn": i})
        client.rate(ids, 1 + i % 5)
    elapsed = time.perf_counter() - started
    # ~4000 events in well under a second on an idle box; waiting on the unreachable
    # broker even once would cost librdkafka's socket timeout (60 s): a loose bound
    # tells the two apart without timing the machine
    assert elapsed < 30.0
    assert client.flush(0.2) > 0  # flush gives up in time, and says so
    stats = client.stats
    assert stats.emitted == 4000 and stats.delivered == 0 and stats.dropped == 0
    assert stats.pending == 4000 and not stats.connected
    assert stats.spool_bytes > 0
    assert client.close(timeout=0.2) > 0
    with pytest.raises(ClientClosedError):
        client.rate(IDS, 5)


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match="durability"):
        FeedbackClient(NOWHERE, spool_dir=tmp_path, durability="paper")  # type: ignore[arg-type]
    with pytest.raises(ClientConfigError, match="librdkafka"):
        FeedbackClient(NOWHERE, spool_dir=tmp_path, producer_config={"no.such.setting": 1})
    with pytest.raises(ClientConfigError):
        FeedbackClient("", spool_dir=tmp_path)
    # the failed clients released their spool slot
    client = FeedbackClient(NOWHERE, spool_dir=tmp_path)
    assert client.spool_slot.name == "slot-0"
    client.close(timeout=0)
