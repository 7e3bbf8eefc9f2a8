"""The Confluent wire format through confluent-kafka's mock schema registry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from sdk_helpers import WIDGET_V1, catalog, widget_v2

from prefloop_sdk import Codec, RegistryError, encode, open_codec
from prefloop_sdk.registry import RegistryCodec

EXPOSURE: dict[str, Any] = {
    "exposure_id": "x-1",
    "ts": 1767225599000,
    "experiment_id": "exp",
    "user_id": "u",
    "arm": "control",
    "model_version": "m1",
    "bucket": 42,
    "conversation_id": "c-1",
}


def _client(name: str) -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{name}"})


def test_encode_frames_the_same_body_with_the_registered_id() -> None:
    client = _client("frame")
    codec = RegistryCodec(client)
    data = codec.encode("exposure", EXPOSURE)
    schema_id = codec.schema_id("exposure")
    assert data[:5] == b"\x00" + schema_id.to_bytes(4, "big")
    assert data[5:] == encode("exposure", EXPOSURE)[10:]
    registered = client.get_latest_version("prefloop.events.Exposure")
    assert registered.schema_id == schema_id
    assert codec.schema_id("interaction") != schema_id


def test_a_consumer_decodes_by_fetching_the_schema_by_id() -> None:
    client = _client("consume")
    data = RegistryCodec(client).encode("exposure", EXPOSURE)
    consumer = RegistryCodec(client)
    assert consumer.decode(data) == ("exposure", EXPOSURE)
    assert consumer.decode(encode("exposure", EXPOSURE)) == ("exposure", EXPOSURE)


def test_lookup_without_registration_fails_then_works_once_registered() -> None:
    client = _client("lookup")
    strict = RegistryCodec(client, auto_register=False)
    with pytest.raises(RegistryError, match="could not find exposure v1 under subject"):
        strict.encode("exposure", EXPOSURE)
    registered = RegistryCodec(client).schema_id("exposure")
    assert strict.schema_id("exposure") == registered


def test_unknown_schema_id_and_short_header_raise_registry_errors() -> None:
    codec = RegistryCodec(_client("unknown"))
    with pytest.raises(RegistryError, match="schema id 4242 could not be fetched"):
        codec.decode(b"\x00\x00\x00\x10\x92\x02")
    with pytest.raises(RegistryError, match="cut short: 3 of 5 bytes"):
        codec.decode(b"\x00\x00\x00")


def test_a_version_only_the_registry_knows_is_read_with_the_bundled_reader() -> None:
    client = _client("evolved")
    v2 = widget_v2()
    schema_id = client.register_schema("prefloop.events.Widget", Schema(json.dumps(v2), "AVRO"))
    body = Codec(catalog(WIDGET_V1, v2)).encode(
        "widget", {"widget_id": "w", "kind": "HUGE", "note": None, "size": 5}
    )[10:]
    old_reader = RegistryCodec(client, catalog(WIDGET_V1))
    record_type, record = old_reader.decode(b"\x00" + schema_id.to_bytes(4, "big") + body)
    assert (record_type, record) == ("widget", {"widget_id": "w", "kind": "UNKNOWN", "note": None})


def test_open_codec_picks_the_wire_format_from_the_configuration() -> None:
    assert type(open_codec()) is Codec
    codec = open_codec("mock://open", validate=True)
    assert isinstance(codec, RegistryCodec)
    assert codec.encode("exposure", EXPOSURE)[:1] == b"\x00"
