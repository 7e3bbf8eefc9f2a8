"""The inbox: Kafka bytes into records, or into dead letters saying why not."""

from __future__ import annotations

from typing import Any

import pytest
from streams_events import T0, feedback, interaction

from prefloop.streams.inputs import Decoded, Inbox
from prefloop.streams.records import Rejected, source_offset
from prefloop_sdk import (
    Codec,
    CorruptEventError,
    NotSingleObjectError,
    UnknownFingerprintError,
    decode,
    encode,
)

TOPIC = "prefloop.interactions"
KEY = b"c1"
NOW = T0 + 5000


def inbox() -> Inbox:
    return Inbox(Codec(), consumer="scorer")


def read(value: bytes | None, expected: tuple[str, ...] = ("interaction",), key=KEY) -> Any:
    return inbox().read(TOPIC, 4, 1234, key, value, expected, NOW)


def check_letter(letter: dict[str, Any], value: bytes, key: bytes | None = KEY) -> dict[str, Any]:
    """The dead letter encodes, and keeps the original bytes and position unchanged."""
    kind, decoded = decode(encode("dead_letter", letter))
    assert kind == "dead_letter" and decoded == letter
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        TOPIC,
        4,
        1234,
    )
    assert letter["key"] == key and letter["value"] == value
    assert letter["consumer"] == "scorer" and letter["ts"] == NOW
    return letter


def raised_by_decode(value: bytes) -> Exception:
    with pytest.raises(Exception) as info:
        decode(value)
    return info.value


# -- good records -------------------------------------------------------------------------


def test_a_good_record_is_decoded_with_its_source_offset():
    record = interaction("r1")
    decoded, letter = read(encode("interaction", record))
    assert letter is None
    assert decoded == Decoded("interaction", record, source_offset(TOPIC, 4, 1234))
    assert decoded.source == {"topic": TOPIC, "partition": 4, "offset": 1234}


def test_a_topic_may_carry_several_types():
    record = feedback("COPY", "r1", "e1")
    decoded, letter = read(encode("feedback", record), expected=("interaction", "feedback"))
    assert letter is None and decoded.record_type == "feedback" and decoded.record == record


# -- dead letters ----------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"not avro at all", b"\x00\x00\x00\x00\x01junk", b"\xc3"])
def test_garbage_bytes_become_a_dead_letter(garbage: bytes):
    expected_error = raised_by_decode(garbage)
    assert type(expected_error) is NotSingleObjectError
    decoded, letter = read(garbage)
    assert decoded is None
    check_letter(letter, garbage)
    assert letter["error_type"] == "NotSingleObjectError"
    assert letter["reason"] == str(expected_error)
    assert letter["writer_fingerprint"] is None  # no header to read it from


def test_an_empty_value_becomes_a_dead_letter():
    decoded, letter = read(None, key=None)
    assert decoded is None
    check_letter(letter, b"", key=None)  # a tombstone: the schema's value is bytes
    assert letter["error_type"] == "NotSingleObjectError"


def test_an_unknown_fingerprint_becomes_a_dead_letter():
    good = encode("interaction", interaction("r1"))
    fingerprint = bytes.fromhex("0123456789abcdef")
    assert Codec().catalog.by_fingerprint(fingerprint) is None
    value = b"\xc3\x01" + fingerprint + good[10:]
    assert type(raised_by_decode(value)) is UnknownFingerprintError
    decoded, letter = read(value)
    assert decoded is None
    check_letter(letter, value)
    assert letter["error_type"] == "UnknownFingerprintError"
    assert letter["writer_fingerprint"] == "0123456789abcdef"
    assert "0123456789abcdef" in letter["reason"]


def test_a_corrupt_body_becomes_a_dead_letter_with_the_writer_fingerprint():
    good = encode("interaction", interaction("r1"))
    value = good[:-3]  # cut short
    assert type(raised_by_decode(value)) is CorruptEventError
    decoded, letter = read(value)
    assert decoded is None
    check_letter(letter, value)
    assert letter["error_type"] == "CorruptEventError"
    assert letter["writer_fingerprint"] == Codec().writer("interaction").fingerprint_hex
    assert letter["writer_fingerprint"] == good[2:10].hex()


def test_a_record_of_another_type_becomes_a_dead_letter():
    value = encode("feedback", feedback("COPY", "r1", "e1"))
    decoded, letter = read(value, expected=("interaction",))
    assert decoded is None
    check_letter(letter, value)
    assert letter["error_type"] == "UnexpectedRecordType"
    assert TOPIC in letter["reason"]
    assert "a feedback record" in letter["reason"] and "carries interaction" in letter["reason"]
    assert letter["writer_fingerprint"] == Codec().writer("feedback").fingerprint_hex


def test_dead_letter_ids_are_deterministic_and_per_position():
    first = read(b"garbage")[1]
    assert read(b"garbage")[1] == first  # a replay: the same dead letter
    elsewhere = inbox().read(TOPIC, 4, 1235, KEY, b"garbage", ("interaction",), NOW)[1]
    assert elsewhere["event_id"] != first["event_id"]


# -- events the logic rejected ---------------------------------------------------------------


def test_rejected_re_encodes_the_record():
    record = feedback("COPY", "ghost", "e1")
    where = source_offset("prefloop.feedback", 3, 41)
    rejected = Rejected("feedback", record, "no Interaction with response_id 'ghost'", where)
    letter = inbox().rejected(rejected, NOW)
    kind, decoded = decode(encode("dead_letter", letter))
    assert kind == "dead_letter" and decoded == letter
    assert letter["value"] == encode("feedback", record)
    assert decode(letter["value"]) == ("feedback", record)
    assert letter["error_type"] == "UnknownInteraction"
    assert letter["reason"] == "no Interaction with response_id 'ghost'"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "prefloop.feedback",
        3,
        41,
    )
    assert letter["writer_fingerprint"] == Codec().writer("feedback").fingerprint_hex
    assert letter["consumer"] == "scorer" and letter["ts"] == NOW


def test_rejected_without_a_source():
    record = feedback("RATING", "r1", "e9", value=7.0)
    rejected = Rejected("feedback", record, "rating 7.0 out of 1..5", None, "InvalidFeedback")
    letter = inbox().rejected(rejected, NOW)
    encode("dead_letter", letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "",
        -1,
        -1,
    )
    assert letter["error_type"] == "InvalidFeedback"
    assert decode(letter["value"]) == ("feedback", record)
