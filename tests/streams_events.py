"""Event factories for the stream-logic tests: records in the shape of the Avro schemas."""

from __future__ import annotations

from typing import Any

from prefloop_sdk import encode

T0 = 1_700_000_000_000  # ms
SECOND = 1000
MINUTE = 60 * SECOND


def interaction(
    rid: str,
    *,
    conv: str = "c1",
    turn: int = 0,
    ts: int = T0,
    regenerates: str | None = None,
    session: str = "s1",
    user: str = "u1",
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
    response: str | None = None,
    model: str = "v1",
    uncertainty: float | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An Interaction whose interaction_id is ``i-<rid>``."""
    if messages is None:
        messages = [{"role": "user", "content": prompt or f"question {turn} of {conv}"}]
    record = {
        "interaction_id": f"i-{rid}",
        "response_id": rid,
        "regenerates": regenerates,
        "conversation_id": conv,
        "turn": turn,
        "ts": ts,
        "user_id": user,
        "session_id": session,
        "experiment_id": "exp-1",
        "arm": "control",
        "model_version": model,
        "messages": messages,
        "response": response if response is not None else f"answer {rid}",
        "latency_ms": 120,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "uncertainty": uncertainty,
        "metadata": metadata or {},
    }
    encode("interaction", record)  # the factory itself makes schema-valid events
    return record


def feedback(
    kind: str,
    rid: str,
    event_id: str,
    *,
    ts: int = T0,
    value: float | None = None,
    conv: str = "c1",
    session: str | None = None,
) -> dict[str, Any]:
    """A Feedback about response ``rid`` (interaction ``i-<rid>``)."""
    record = {
        "event_id": event_id,
        "ts": ts,
        "kind": kind,
        "interaction_id": f"i-{rid}",
        "response_id": rid,
        "conversation_id": conv,
        "user_id": "u1",
        "session_id": session,
        "value": value,
        "text": None,
        "metadata": {},
    }
    encode("feedback", record)
    return record


def scored(
    rid: str,
    *,
    conv: str = "c1",
    prompt: str = "q",
    score: float | None = 0.0,
    reported: bool = False,
    uncertainty: float | None = None,
    response: str | None = None,
    ts: int = T0,
    user: str = "u1",
    revision: int = 0,
    messages: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A scored response (an Interaction plus implicit_score / reported / rating / revision)."""
    record = interaction(
        rid,
        conv=conv,
        prompt=prompt,
        messages=messages,
        response=response,
        ts=ts,
        user=user,
        uncertainty=uncertainty,
    )
    record.update(implicit_score=score, reported=reported, rating=None, revision=revision)
    return record


def brief(scores: list[dict[str, Any]]) -> list[tuple[str, int, float, str]]:
    """(response_id, revision, implicit_score, settled_reason) of each ScoredInteraction,
    after checking that it encodes with the project's codec."""
    for record in scores:
        encode("scored_interaction", record)
    return [
        (r["response_id"], r["revision"], r["implicit_score"], r["settled_reason"]) for r in scores
    ]
