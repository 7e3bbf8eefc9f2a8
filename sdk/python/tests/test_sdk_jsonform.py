"""The JSON form browsers send: checked against the schema, then encoded to the vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefloop_sdk import encode
from prefloop_sdk.errors import InvalidRecordError
from prefloop_sdk.jsonform import from_json

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
VECTORS = json.loads((SCHEMAS / "vectors" / "vectors.json").read_text())["vectors"]
# encode writes a type's latest version: the vectors written with it
LATEST = [
    v
    for v in VECTORS
    if v["schema_version"]
    == max(int(p.stem[1:]) for p in (SCHEMAS / v["record_type"]).glob("v*.avsc"))
]

FEEDBACK = {
    "event_id": "e-1",
    "ts": 1767225600000,
    "kind": "RATING",
    "interaction_id": "i-1",
    "response_id": "r-1",
    "conversation_id": "c-1",
    "user_id": "u-1",
    "value": 4,
}


@pytest.mark.parametrize("vector", LATEST, ids=[v["name"] for v in LATEST])
def test_json_events_encode_to_the_shared_vectors(vector: dict) -> None:
    record = from_json(vector["record_type"], vector["event"])
    assert encode(vector["record_type"], record).hex() == vector["hex"]


def test_absent_nullable_fields_take_their_defaults_and_iso_times_are_read() -> None:
    record = from_json("feedback", {**FEEDBACK, "ts": "2026-01-01T00:00:00.250Z"})
    assert record["ts"] == 1767225600250
    assert record["session_id"] is None and record["text"] is None
    assert record["value"] == 4.0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"kind": "LIKE"}, 'field kind is "LIKE", expected one of RATING'),
        ({"kind": "UNKNOWN"}, 'field kind is "UNKNOWN", expected one of RATING'),
        ({"value": "five"}, 'field value is "five", which matches none of null, double'),
        ({"ts": "2026-01-01T00:00:00"}, "without a zone"),
        ({"ts": True}, "field ts is true, expected an integer (long)"),
        ({"surprise": 1}, "field surprise is not a field of Feedback"),
        ({"user_id": None}, "field user_id is null, expected a string"),
        ({"metadata": {"a": 1}}, "field metadata.a is 1, expected a string"),
    ],
)
def test_each_problem_names_its_field(change: dict, problem: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        from_json("feedback", {**FEEDBACK, **change})
    assert problem in str(info.value)


def test_every_missing_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidRecordError) as info:
        from_json("feedback", {"kind": "COPY"})
    missing = [p for p in info.value.problems if "is missing" in p]
    assert len(missing) == 6
    assert info.value.field == "event_id"


def test_nested_records_and_arrays_are_checked() -> None:
    interaction = next(v for v in LATEST if v["record_type"] == "interaction")["event"]
    bad = {**interaction, "messages": [{"role": "user"}]}
    with pytest.raises(InvalidRecordError, match=r"field messages\[0\]\.content is missing"):
        from_json("interaction", bad)


def test_a_non_object_is_refused() -> None:
    with pytest.raises(InvalidRecordError, match="expected a JSON object"):
        from_json("feedback", ["not", "an", "object"])
