"""The one Avro codec: Avro single-object encoding of prefloop events.

An encoded event is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint of the writer
schema's Parsing Canonical Form + the Avro binary body (Avro specification,
"Single object encoding"). ``encode`` writes with the latest version of a record
type; ``decode`` finds the writer schema by fingerprint among every bundled version
and reads with the latest version of that type, so old and new events both come out
in today's shape. Timestamps are ints (ms since the epoch, UTC) on the way out;
``encode`` also takes an aware ``datetime`` for them.

Everything costly (parsing, fingerprints, lookups by every name) happens once, when
a ``Codec`` is built; a call is a dict lookup plus fastavro's own work.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from .catalog import MAGIC, SchemaCatalog, SchemaVersion, bundled_catalog
from .errors import (
    CorruptEventError,
    InvalidRecordError,
    NotSingleObjectError,
    UnknownFingerprintError,
    UnknownRecordTypeError,
)

__all__ = ["Codec", "EventCodec", "decode", "default_codec", "encode"]

_HEADER_SIZE = len(MAGIC) + 8

# (record type, version, parsed writer schema, header) for encoding, looked up by any name.
_Writer = tuple[str, SchemaVersion, dict[str, Any], bytes]
# (record type, writer version, writer read-schema, reader read-schema or None when equal).
_Reader = tuple[str, SchemaVersion, dict[str, Any], dict[str, Any] | None]


class EventCodec(Protocol):
    """What stream agents and producers need from a codec (``Codec``, ``RegistryCodec``)."""

    def encode(self, record_type: str, record: Mapping[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]: ...


class Codec:
    """Encodes and decodes events as Avro single-object encoded bytes.

    ``catalog``: the schemas (default: the ones bundled with the SDK).
    ``write_versions``: pin the version written per record type (default: the latest);
    pin the old one while readers are being upgraded, since a reader must know a
    writer's schema to decode it.
    ``read_versions``: pin the version records are decoded into (default: the latest).
    ``validate``: check every record against the schema before writing (about 3x the
    cost of encoding). Without it, fastavro still rejects wrong types but lets through a
    float for an int (truncated), a bool for an int and an int beyond 32 bits; turn it on
    wherever records come from outside (the HTTP collector). Unknown keys are rejected
    too when it is on.

    A ``Codec`` holds no per-call state: one instance may be used from many threads.
    """

    def __init__(
        self,
        catalog: SchemaCatalog | None = None,
        *,
        write_versions: Mapping[str, int] | None = None,
        read_versions: Mapping[str, int] | None = None,
        validate: bool = False,
    ) -> None:
        self.catalog = catalog if catalog is not None else bundled_catalog()
        self.validate = validate
        write_versions = dict(write_versions or {})
        read_versions = dict(read_versions or {})
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[bytes, _Reader] = {}  # by the whole 10-byte header
        for record_type in self.catalog.record_types:
            sv = self.catalog.get(record_type, write_versions.pop(record_type, None))
            entry = (sv.record_type, sv, sv.write_schema, sv.header)
            # StrEnum members hash like their value; the plain strings cover the rest.
            for key in (record_type, sv.name, sv.name.rsplit(".", 1)[-1]):
                self._writers.setdefault(str(key), entry)
            reader = self.catalog.get(record_type, read_versions.pop(record_type, None))
            for writer in self.catalog.versions(record_type):
                self._readers[writer.header] = (
                    writer.record_type,
                    writer,
                    writer.read_schema,
                    None if writer is reader else reader.read_schema,
                )
        for pins in (write_versions, read_versions):
            if pins:
                raise UnknownRecordTypeError(next(iter(pins)), self.catalog.record_types)

    def writer(self, record_type: str) -> SchemaVersion:
        """The schema version ``encode`` writes for a record type (or its Avro name)."""
        return self._lookup(record_type)[1]

    def encode(self, record_type: str, record: Mapping[str, Any]) -> bytes:
        """Encode one event; ``record_type`` is a ``RecordType``, a folder or Avro name.

        Raises ``UnknownRecordTypeError`` or ``InvalidRecordError`` (naming the field).
        """
        try:
            _, sv, schema, header = self._writers[record_type]
        except (KeyError, TypeError):
            _, sv, schema, header = self._lookup(record_type)
        buf = BytesIO()
        buf.write(header)
        if self.validate:
            write_body(buf, sv, schema, record, True)
        else:  # inlined: the per-call overhead over raw fastavro is the budget
            try:
                schemaless_writer(buf, schema, record)
            except Exception as exc:  # fastavro raises TypeError, ValueError, ...
                raise _invalid_record(sv, schema, record, exc) from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode one event into ``(record_type, record)``, read as the latest version.

        Raises ``NotSingleObjectError``, ``UnknownFingerprintError`` or
        ``CorruptEventError``.
        """
        if type(data) is not bytes:
            data = bytes(data)
        try:  # one lookup checks the magic and finds the writer schema
            reader = self._readers[data[:_HEADER_SIZE]]
        except KeyError:
            raise _bad_header(data) from None
        # read_body, inlined: the per-call overhead over raw fastavro is the budget (slicing
        # the small body out costs less than seeking past the header)
        buf = BytesIO(data[_HEADER_SIZE:])
        try:
            record = schemaless_reader(buf, reader[2], reader[3])
        except Exception as exc:  # garbage bytes surface as many kinds of errors
            raise _corrupt(reader, _body_problem(reader, len(data), exc)) from exc
        if buf.tell() != len(data) - _HEADER_SIZE:
            extra = len(data) - _HEADER_SIZE - buf.tell()
            raise _corrupt(reader, f"{extra} unexpected byte(s) after the body")
        return reader[0], record  # type: ignore[return-value]

    def _lookup(self, record_type: object) -> _Writer:
        try:
            return self._writers[str(record_type)]
        except KeyError:
            raise UnknownRecordTypeError(record_type, self.catalog.record_types) from None


def write_body(
    buf: BytesIO,
    sv: SchemaVersion,
    schema: dict[str, Any],
    record: Mapping[str, Any],
    check: bool,
) -> None:
    """Write the Avro body of ``record``; turn any failure into ``InvalidRecordError``."""
    try:
        if check:
            validate(record, schema, raise_errors=True)
            schemaless_writer(buf, schema, record, strict_allow_default=True)
        else:
            schemaless_writer(buf, schema, record)
    except Exception as exc:  # fastavro raises TypeError, ValueError, AttributeError...
        raise _invalid_record(sv, schema, record, exc) from exc


def read_body(data: bytes, offset: int, reader: _Reader) -> dict[str, Any]:
    """Read the Avro body at ``data[offset:]``; it must end exactly at the end of ``data``."""
    buf = BytesIO(data)
    buf.seek(offset)
    try:
        record = schemaless_reader(buf, reader[2], reader[3])
    except Exception as exc:  # garbage bytes surface as many kinds of errors
        raise _corrupt(reader, _body_problem(reader, len(data), exc)) from exc
    if buf.tell() != len(data):
        raise _corrupt(reader, f"{len(data) - buf.tell()} unexpected byte(s) after the body")
    return record  # type: ignore[return-value]


def _bad_header(data: bytes) -> Exception:
    """The error for a header whose fingerprint is not among the loaded versions."""
    if data[:2] != MAGIC or len(data) < _HEADER_SIZE:
        return NotSingleObjectError(data)
    return UnknownFingerprintError(data[2:_HEADER_SIZE])


def _body_problem(reader: _Reader, size: int, exc: Exception) -> str:
    if isinstance(exc, EOFError):
        return f"the body is truncated ({size} bytes in all)"
    return f"the body is not valid v{reader[1].version} Avro ({type(exc).__name__}: {exc})"


def _corrupt(reader: _Reader, problem: str) -> CorruptEventError:
    return CorruptEventError(reader[0], reader[1].fingerprint_hex, problem)


def _invalid_record(
    sv: SchemaVersion, schema: dict[str, Any], record: object, exc: Exception
) -> InvalidRecordError:
    """Name the offending fields; fastavro's own errors often do not."""
    if not isinstance(record, Mapping):
        problem = f"the record is {_show(record)}, expected a mapping of field names to values"
        return InvalidRecordError(sv.record_type, sv.version, [problem], None)
    try:
        validate(record, schema, raise_errors=True)
    except ValidationError as verr:
        return _from_validation(sv, verr)
    except Exception:  # validation itself choked: report the writer's error below
        pass
    # Valid field values, yet the writer refused: an unknown key (validate mode) or a
    # fastavro limitation; its message is the best account there is.
    return InvalidRecordError(sv.record_type, sv.version, [f"{type(exc).__name__}: {exc}"], None)


def _from_validation(sv: SchemaVersion, verr: ValidationError) -> InvalidRecordError:
    expected: dict[str, list[str]] = {}
    datums: dict[str, object] = {}
    for err in verr.errors:
        field = _field_path(sv.name, err.field)
        expected.setdefault(field, []).append(_describe(err.schema))
        datums.setdefault(field, err.datum)
    problems = []
    for field, types in expected.items():
        datum = datums[field]
        shown = "is missing or None" if datum is None else f"is {_show(datum)}"
        what = f"field {field}" if field else "the record"
        problems.append(f"{what} {shown}, expected {' or '.join(dict.fromkeys(types))}")
    first = next(iter(expected), None) or None
    return InvalidRecordError(sv.record_type, sv.version, problems, first)


def _field_path(top: str, field: str) -> str:
    """``prefloop.events.Interaction.turn`` -> ``turn``; nested records keep their name."""
    if field.startswith(top + "."):
        return field[len(top) + 1 :]
    parts = field.rsplit(".", 2)
    return ".".join(parts[-2:]) if len(parts) > 1 else field


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        kind = schema.get("type")
        name = schema.get("name")
        if kind == "enum":
            return f"one of {', '.join(schema['symbols'])}"
        if kind == "array":
            return f"an array of {_describe(schema['items'])}"
        if kind == "map":
            return f"a map of {_describe(schema['values'])}"
        if name:
            return f"a {name.rsplit('.', 1)[-1]} record"
        return _describe(kind)
    if isinstance(schema, list):
        return " or ".join(_describe(s) for s in schema)
    return str(schema)


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


_default: Codec | None = None


def default_codec() -> Codec:
    """The process-wide codec over the bundled schemas, built on first use."""
    global _default
    if _default is None:
        _default = Codec()
    return _default


def encode(record_type: str, record: Mapping[str, Any]) -> bytes:
    """Encode one event with the latest bundled schema of its type (see ``Codec.encode``)."""
    return (_default or default_codec()).encode(record_type, record)


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode one single-object encoded event (see ``Codec.decode``)."""
    return (_default or default_codec()).decode(data)
