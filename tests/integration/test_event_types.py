"""Every record type of the contract round-trips through the real broker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from prefloop import kafka
from prefloop.event_client import feedback_client
from prefloop.settings import Settings
from prefloop_sdk import decode
from prefloop_sdk.jsonform import from_json

VECTORS = json.loads(
    (Path(__file__).parents[2] / "schemas" / "vectors" / "vectors.json").read_text()
)["vectors"]
# a client writes each type at its latest version: one vector of that version per type
ONE_PER_TYPE = list(
    {v["record_type"]: v for v in sorted(VECTORS, key=lambda v: v["schema_version"])}.values()
)


def test_every_record_type_round_trips_through_its_topic(
    settings: Settings, tmp_path: Path
) -> None:
    assert len(ONE_PER_TYPE) == 9
    scoped = settings.with_overrides(home=tmp_path)
    with feedback_client(scoped, name="types") as client:
        for vector in ONE_PER_TYPE:  # vectors are JSON: bytes as latin-1 strings
            client.emit(vector["record_type"], from_json(vector["record_type"], vector["event"]))
        client.flush(30)
    wanted = {scoped.topics.for_record(v["record_type"]): v for v in ONE_PER_TYPE}
    consumer = kafka.consumer(scoped, group_id=f"test-{uuid.uuid4().hex}")
    consumer.subscribe(list(wanted))
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while len(got) < len(wanted) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                got[message.topic()] = message.value()
    finally:
        consumer.close()
    assert set(got) == set(wanted)
    for topic, vector in wanted.items():
        assert got[topic].hex() == vector["hex"], vector["name"]
        record_type, record = decode(got[topic])
        expected = from_json(vector["record_type"], vector["decoded"])  # bytes from latin-1
        assert (record_type, record) == (vector["record_type"], expected)


@pytest.mark.parametrize("record_type", ["interaction", "feedback"])
def test_records_are_keyed_by_conversation(
    settings: Settings, tmp_path: Path, record_type: str
) -> None:
    vector = next(v for v in ONE_PER_TYPE if v["record_type"] == record_type)
    scoped = settings.with_overrides(home=tmp_path)
    with feedback_client(scoped, name="keys") as client:
        client.emit(record_type, vector["event"])
        client.flush(30)
    consumer = kafka.consumer(scoped, group_id=f"test-{uuid.uuid4().hex}")
    consumer.subscribe([scoped.topics.for_record(record_type)])
    try:
        deadline = time.monotonic() + 30
        message = None
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                break
    finally:
        consumer.close()
    assert message is not None
    assert message.key() == vector["event"]["conversation_id"].encode()
