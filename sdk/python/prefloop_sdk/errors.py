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
    ├── RegistryError                the Confluent schema registry path failed
    ├── InvalidEventError            a FeedbackClient call got a bad argument (API misuse)
    │   ├── MissingFieldError        a required id or field is missing or empty
    │   ├── WrongTypeError           an argument has the wrong type
    │   ├── OutOfRangeError          a number outside its range (rating 1..5, thumbs +1/-1)
    │   └── UnknownFeedbackKindError a feedback kind the schema does not have
    └── ClientError                  the FeedbackClient itself cannot be used
        ├── ClientClosedError        an event was emitted after close()
        ├── ClientConfigError        librdkafka refused the producer settings
        └── SpoolError               the spool directory cannot be used

Delivery problems (broker down, timeouts) are never raised from the emit path: the
client logs a warning once, keeps events in its spool and counts what it drops.

``PrefloopError`` lives here, in the lowest layer, so that the ``prefloop``
package and the SDK share one root.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "ClientConfigError",
    "ClientError",
    "CorruptEventError",
    "DecodeError",
    "EncodeError",
    "InvalidEventError",
    "InvalidRecordError",
    "MissingFieldError",
    "NotSingleObjectError",
    "OutOfRangeError",
    "PrefloopError",
    "RegistryError",
    "SchemaCompatibilityError",
    "SchemaError",
    "SpoolError",
    "UnknownFeedbackKindError",
    "UnknownFingerprintError",
    "UnknownRecordTypeError",
    "WrongTypeError",
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


class InvalidEventError(PrefloopError, ValueError):
    """A ``FeedbackClient`` call got an argument it cannot turn into an event.

    ``field`` names the argument, ``value`` is what was given. These are explicit API
    misuse, so they raise at the call, unlike delivery problems, which never do.
    """

    def __init__(self, field: str, value: object, problem: str, fix: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} {problem}: {fix}")


class MissingFieldError(InvalidEventError):
    """A required id or field is missing, None or empty."""

    def __init__(self, field: str, value: object = None) -> None:
        shown = "is missing" if value is None else f"is empty ({value!r})"
        super().__init__(
            field, value, shown, f"pass a non-empty {field} (events are joined and keyed by it)"
        )


class WrongTypeError(InvalidEventError, TypeError):
    """An argument has the wrong type (``expected`` says which)."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.expected = expected
        text = repr(value)
        if len(text) > 40:
            text = text[:37] + "..."
        super().__init__(
            field, value, f"is {text} ({type(value).__name__})", f"expected {expected}"
        )


class OutOfRangeError(InvalidEventError):
    """A number outside its allowed range (a rating outside 1..5, a thumb that is not +-1)."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.allowed = allowed
        super().__init__(field, value, f"is {value!r}", f"expected {allowed}")


class UnknownFeedbackKindError(InvalidEventError):
    """A feedback kind the Feedback schema does not have."""

    def __init__(self, value: object, known: list[str]) -> None:
        self.known = list(known)
        super().__init__(
            "kind",
            value,
            f"{value!r} is not a feedback kind",
            f"use one of {', '.join(known)} (or the matching FeedbackClient method)",
        )


class ClientError(PrefloopError):
    """The ``FeedbackClient`` itself cannot be used as configured or in its current state."""


class ClientClosedError(ClientError, RuntimeError):
    """An event was emitted through a client after ``close()``."""

    def __init__(self) -> None:
        super().__init__(
            "the FeedbackClient is closed: emit before close(), or create a new client "
            "(a new client over the same spool_dir re-sends whatever was left undelivered)"
        )


class ClientConfigError(ClientError, ValueError):
    """librdkafka refused the producer settings (``producer_config``)."""


class SpoolError(ClientError, OSError):
    """The spool directory cannot be created, locked, read or written at start."""
