"""The compiled writers write exactly the codec's bytes, and hand anything else to it."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest
from sdk_helpers import REPO, load_vectors

from prefloop_sdk import Codec, InvalidRecordError, RecordType, bundled_catalog
from prefloop_sdk.compatibility import sample_records
from prefloop_sdk.writers import Fallback, FastEncoder, compile_writer

FEEDBACK: dict[str, Any] = {
    "event_id": "0195f3c2-7d1e-7a3b-8c4d-000000000001",
    "ts": 1767225600000,
    "kind": "RATING",
    "interaction_id": "i-1",
    "response_id": "r-1",
    "conversation_id": "c-1",
    "user_id": "u-1",
    "value": 4.0,
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "vectors_generate", REPO / "schemas" / "vectors" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("record_type", list(RecordType))
def test_every_type_compiles_and_matches_the_codec_on_every_sample(
    record_type: RecordType,
) -> None:
    codec = Codec()
    sv = bundled_catalog().latest(record_type)
    write = compile_writer(sv.write_schema, sv.header)
    samples = sample_records(sv.read_schema)
    assert samples
    for record in samples:
        assert write(record) == codec.encode(record_type, record)


def test_compiled_writers_reproduce_the_shared_vectors() -> None:
    gen = _generator()
    catalog = bundled_catalog()
    for vector in load_vectors()["vectors"]:
        sv = catalog.get(vector["record_type"], vector["schema_version"])
        event = gen.convert_bytes(sv.read_schema, vector["event"], True, {})
        assert compile_writer(sv.write_schema, sv.header)(event).hex() == vector["hex"]


def test_large_and_negative_numbers_and_long_strings_match_the_codec() -> None:
    codec = Codec()
    encoder = FastEncoder(codec)
    record = {
        **FEEDBACK,
        "ts": 2**62,
        "value": -1e300,
        "text": "é" * 5000,  # a length beyond the precomputed varint table
        "metadata": {"k" * 300: "v" * 70000},
    }
    assert encoder.compiled("feedback") is not None
    assert encoder.encode("feedback", record) == codec.encode("feedback", record)
    interaction = sample_records(bundled_catalog().latest("interaction").read_schema)[0]
    write = encoder.compiled("interaction")
    assert write is not None
    for value in (-(2**31), 2**31 - 1, -4097, 4096, -1, 0):
        rec = {**interaction, "turn": value}
        assert write(rec) == codec.encode("interaction", rec)
    with pytest.raises(Fallback):  # beyond an Avro int: the codec decides
        write({**interaction, "turn": 2**31})


def test_values_off_the_fast_path_go_through_the_codec() -> None:
    codec = Codec()
    encoder = FastEncoder(codec)
    write = encoder.compiled("feedback")
    assert write is not None
    aware = {**FEEDBACK, "ts": datetime(2026, 1, 1, tzinfo=UTC)}
    with pytest.raises(Fallback):
        write(aware)
    assert encoder.encode("feedback", aware) == codec.encode("feedback", aware)
    assert codec.decode(encoder.encode("feedback", aware))[1]["ts"] == 1767225600000


@pytest.mark.parametrize(
    ("field", "value"),
    [("kind", "LOVE"), ("user_id", 42), ("ts", "yesterday"), ("metadata", {"a": 1})],
)
def test_bad_values_raise_the_codecs_error(field: str, value: object) -> None:
    encoder = FastEncoder(Codec())
    with pytest.raises(InvalidRecordError) as caught:
        encoder.encode("feedback", {**FEEDBACK, field: value})
    assert caught.value.record_type == "feedback"


def test_a_missing_required_field_raises_the_codecs_error() -> None:
    record = dict(FEEDBACK)
    del record["user_id"]
    with pytest.raises(InvalidRecordError):
        FastEncoder(Codec()).encode("feedback", record)


def test_a_validating_codec_gets_no_compiled_writers() -> None:
    encoder = FastEncoder(Codec(validate=True))
    assert encoder.compiled("feedback") is None
    with pytest.raises(InvalidRecordError):
        encoder.encode("feedback", {**FEEDBACK, "surprise": 1})
