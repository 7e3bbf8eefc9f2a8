"""The SDK's errors. Each message says what was wrong and what to do about it.

::

    PrefloopError                    root of every prefloop error
    ├── SchemaError                  a schema file or set of schemas is unusable
    │   ├── UnknownRecordTypeError   encode() was given a type no schema describes
    │   └── SchemaCompatibilityError two versions of a type cannot read each other
    ├── EncodeError                  a record could not be encoded
    │   └── InvalidRecordError       a value does not match the schema
    ├── DecodeError                  bytes could not be decoded
    │   ├── NotSingleObjectError     wrong magic: not Avro single-object encoded
    │   ├── UnknownFingerprintError  no bundled schema has the writer's fingerprint
    │   └── CorruptEventError        truncated body, trailing bytes, garbage
    └── RegistryError                the Confluent schema registry path failed

``PrefloopError`` lives here, in the lowest layer, so that the ``prefloop``
package and the SDK share one root.
"""

from __future__ import annotations

__all__ = [
    "CorruptEventError",
    "DecodeError",
    "EncodeError",
    "InvalidRecordError",
    "NotSingleObjectError",
    "PrefloopError",
    "RegistryError",
    "SchemaCompatibilityError",
    "SchemaError",
    "UnknownFingerprintError",
    "UnknownRecordTypeError",
]


class PrefloopError(Exception):
    """Root of every error prefloop raises."""


class SchemaError(PrefloopError):
    """A schema file, or the set of schemas, is unusable."""


class UnknownRecordTypeError(SchemaError, KeyError):
    """``encode`` was asked for a record type that no loaded schema describes."""

    def __init__(self, record_type: object, known: list[str]) -> None:
        self.record_type = record_type
        super().__init__(
            f"unknown record type {record_type!r}: use one of {', '.join(known)} "
            "(a folder name under schemas/, or the record's Avro name)"
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class SchemaCompatibilityError(SchemaError):
    """Versions of a record type cannot read each other's data, or an enum lacks a default.

    ``problems`` lists every problem found, each naming the type and the versions.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} schema compatibility problem(s):\n{lines}\n"
            "Every version must read data written by every other version: give new fields a "
            "default, never change a field's type or remove a field without a default, and "
            'give every enum a "default" symbol.'
        )


class EncodeError(PrefloopError):
    """A record could not be encoded."""


class InvalidRecordError(EncodeError, ValueError):
    """A value in the record does not match the schema.

    ``field`` is the dotted Avro name of the first offending field (``None`` when the
    record itself is not a mapping), ``problems`` every mismatch found.
    """

    def __init__(
        self,
        record_type: str,
        version: int,
        problems: list[str],
        field: str | None,
    ) -> None:
        self.record_type = record_type
        self.version = version
        self.problems = list(problems)
        self.field = field
        detail = "; ".join(self.problems)
        super().__init__(
            f"{record_type} record does not match schema {record_type} v{version}: {detail}. "
            f"Fix the value (see schemas/{record_type}/v{version}.avsc for each field's type); "
            "nullable fields may be left out."
        )


class DecodeError(PrefloopError, ValueError):
    """Bytes could not be decoded into an event."""


class NotSingleObjectError(DecodeError):
    """The bytes do not start with a complete Avro single-object header (``C3 01`` + 8 bytes)."""

    def __init__(self, head: bytes) -> None:
        self.head = bytes(head[:10])
        if self.head[:2] == b"\xc3\x01":
            problem = (
                f"the single-object header is cut short: {len(self.head)} of its 10 bytes "
                "(c3 01 + an 8-byte schema fingerprint)"
            )
        else:
            problem = (
                "not Avro single-object encoded: expected the marker c3 01, got "
                f"{self.head[:2].hex(' ') or 'no bytes'}"
            )
            if self.head[:1] == b"\x00":
                problem += (
                    " (00 opens the Confluent wire format: decode those with "
                    "prefloop_sdk.registry.RegistryCodec)"
                )
        super().__init__(
            f"{problem}. Produce events with prefloop_sdk.encode (or any Avro library's "
            "single-object encoder) and pass the whole Kafka value."
        )


class UnknownFingerprintError(DecodeError):
    """No loaded schema version has the writer schema's fingerprint."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint.hex()
        super().__init__(
            f"unknown writer schema fingerprint {self.fingerprint} (CRC-64-AVRO, as in the "
            "header): no bundled schema version has it. The writer used a schema this SDK "
            "does not ship: upgrade prefloop-sdk on the reader, or add the writer's .avsc to "
            "schemas/ as a new version."
        )


class CorruptEventError(DecodeError):
    """The header was fine but the body is truncated, too long, or not valid Avro."""

    def __init__(self, record_type: str, fingerprint: str, problem: str) -> None:
        self.record_type = record_type
        self.fingerprint = fingerprint
        super().__init__(
            f"corrupt {record_type} event (writer fingerprint {fingerprint}): {problem}. "
            "The bytes were cut or altered after encoding: check the producer and the "
            "transport, and send the record to the dead-letter topic."
        )


class RegistryError(PrefloopError):
    """The Confluent schema registry could not be used: extra missing, unreachable, id unknown."""
