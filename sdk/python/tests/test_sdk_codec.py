"""Round trips of every record type and the codec's typed errors."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from typing import Any

import pytest
from sdk_helpers import load_vectors

import prefloop_sdk
from prefloop_sdk import (
    Codec,
    CorruptEventError,
    InvalidRecordError,
    NotSingleObjectError,
    RecordType,
    UnknownFingerprintError,
    UnknownRecordTypeError,
    bundled_catalog,
    decode,
    encode,
)
from prefloop_sdk.compatibility import sample_records

EXPOSURE: dict[str, Any] = {
    "exposure_id": "x-1",
    "ts": 1767225599000,
    "experiment_id": "exp",
    "user_id": "u",
    "arm": "control",
    "model_version": "m1",
    "bucket": 42,
}


@pytest.mark.parametrize("record_type", list(RecordType))
def test_every_type_round_trips_every_union_branch_and_enum_symbol(record_type: RecordType) -> None:
    codec = Codec()
    sv = bundled_catalog().latest(record_type)
    samples = sample_records(sv.read_schema)
    assert len(samples) >= 2
    for record in samples:
        data = codec.encode(record_type, record)
        assert data[:10] == b"\xc3\x01" + sv.fingerprint
        assert codec.decode(data) == (record_type, record)


def test_vector_events_round_trip_through_the_module_functions() -> None:
    for vector in load_vectors()["vectors"]:
        if vector["record_type"] == "dead_letter":
            continue  # its bytes fields are covered in test_sdk_vectors
        record_type, record = decode(encode(vector["record_type"], vector["event"]))
        assert record_type == vector["record_type"]
        assert record == vector["decoded"]


def test_record_type_may_be_given_by_enum_folder_or_avro_name() -> None:
    expected = encode(RecordType.EXPOSURE, EXPOSURE)
    for name in ("exposure", "Exposure", "prefloop.events.Exposure"):
        assert encode(name, EXPOSURE) == expected
    record_type, _ = decode(expected)
    assert record_type is RecordType.EXPOSURE


def test_timestamps_decode_as_int_milliseconds_and_encode_from_aware_datetimes() -> None:
    when = datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    data = encode("exposure", {**EXPOSURE, "ts": when})
    assert data == encode("exposure", {**EXPOSURE, "ts": 1767225600123})
    assert decode(data)[1]["ts"] == 1767225600123


def test_nullable_and_defaulted_fields_may_be_left_out() -> None:
    _, record = decode(encode("exposure", EXPOSURE))
    assert record == {**EXPOSURE, "conversation_id": None}


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode("exposure", EXPOSURE)
    assert decode(bytearray(data)) == decode(data) == decode(memoryview(data))


def test_bad_magic_raises_not_single_object() -> None:
    data = encode("exposure", EXPOSURE)
    with pytest.raises(NotSingleObjectError, match="expected the marker c3 01, got 7b 22"):
        decode(b'{"exposure_id": "x-1"}')
    with pytest.raises(NotSingleObjectError, match="Confluent wire format"):
        decode(b"\x00\x00\x00\x00\x07" + data[10:])
    with pytest.raises(NotSingleObjectError, match="got no bytes"):
        decode(b"")
    with pytest.raises(NotSingleObjectError, match="cut short: 7 of its 10 bytes"):
        decode(data[:7])


def test_unknown_fingerprint_names_the_hex() -> None:
    data = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + encode("exposure", EXPOSURE)[10:]
    with pytest.raises(UnknownFingerprintError, match="0123456789abcdef.*upgrade prefloop-sdk"):
        decode(data)
    try:
        decode(data)
    except UnknownFingerprintError as exc:
        assert exc.fingerprint == "0123456789abcdef"


def test_every_truncation_raises_a_decode_error() -> None:
    data = encode("exposure", EXPOSURE)
    for end in range(len(data)):
        expected = NotSingleObjectError if end < 10 else CorruptEventError
        with pytest.raises(expected):
            decode(data[:end])
    with pytest.raises(CorruptEventError, match="corrupt exposure event .*: the body is truncated"):
        decode(data[:-1])


def test_trailing_bytes_and_garbage_raise_corrupt_event() -> None:
    data = encode("exposure", EXPOSURE)
    with pytest.raises(CorruptEventError, match="2 unexpected byte"):
        decode(data + b"\x00\x00")
    garbage = data[:10] + b"\x04\xff\xfe" + data[13:]  # exposure_id: invalid UTF-8
    with pytest.raises(CorruptEventError, match="not valid v1 Avro.*UnicodeDecodeError"):
        decode(garbage)


def _invalid(record_type: str, record: Any, codec: Codec | None = None) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        (codec or Codec()).encode(record_type, record)
    return info.value


def test_wrong_type_names_the_field_and_the_expected_type() -> None:
    err = _invalid("exposure", {**EXPOSURE, "bucket": "seven"})
    assert err.field == "bucket"
    assert "field bucket is 'seven' (str), expected int" in str(err)
    assert "schemas/exposure/v1.avsc" in str(err)


def test_missing_field_nested_field_bad_enum_and_non_mapping_are_named() -> None:
    missing = {k: v for k, v in EXPOSURE.items() if k != "arm"}
    assert "field arm is missing or None, expected string" in str(_invalid("exposure", missing))
    vector = load_vectors()["vectors"][0]["event"]
    nested = {**vector, "messages": [{"role": "user", "content": 7}]}
    err = _invalid("interaction", nested)
    assert err.field == "Message.content"
    assert "expected string" in str(err)
    feedback = load_vectors()["vectors"][2]["event"]
    err = _invalid("feedback", {**feedback, "kind": "LIKE"})
    assert err.field == "kind"
    assert "one of UNKNOWN, RATING" in str(err)
    assert _invalid("exposure", None).field is None
    err = _invalid("feedback", {**feedback, "value": "high"})
    assert "field value is 'high' (str), expected null or double" in str(err)


def test_validate_mode_rejects_what_fastavro_would_coerce() -> None:
    strict = Codec(validate=True)
    for bad in (1.5, True, 2**31):
        err = _invalid("exposure", {**EXPOSURE, "bucket": bad}, strict)
        assert err.field == "bucket"
    err = _invalid("exposure", {**EXPOSURE, "buckett": 1}, strict)
    assert "buckett" in str(err)
    assert strict.encode("exposure", EXPOSURE) == encode("exposure", EXPOSURE)


def test_unknown_record_type_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownRecordTypeError,
        match="unknown record type 'widget': use one of annotation_result, .*interaction",
    ):
        encode("widget", {})
    with pytest.raises(UnknownRecordTypeError):
        Codec(write_versions={"widget": 1})


def test_the_package_docstring_example_runs() -> None:
    result = doctest.testmod(prefloop_sdk)
    assert result.attempted >= 3
    assert result.failed == 0


def test_exported_names_exist() -> None:
    for name in prefloop_sdk.__all__:
        assert getattr(prefloop_sdk, name) is not None, name
