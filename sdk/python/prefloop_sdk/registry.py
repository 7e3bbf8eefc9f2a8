"""The Confluent wire format, for deployments that run a Confluent-compatible schema registry.

An event is ``00`` + the registry's 4-byte big-endian schema id + the Avro binary
body. The body is written and read exactly as by ``Codec`` (same schemas, same
checks); only the header differs, and the writer schema of an event is fetched from
the registry by id (once per id). ``decode`` also accepts single-object encoded
events, so a topic may carry both during a migration.

Needs the ``registry`` extra: ``pip install 'prefloop-sdk[registry]'``. Schemas are
registered under the record's Avro full name (``prefloop.events.Interaction``,
Confluent's RecordNameStrategy) unless ``subject_for`` says otherwise.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from io import BytesIO
from typing import TYPE_CHECKING, Any

from .catalog import MAGIC, SchemaCatalog, SchemaVersion
from .codec import Codec, read_body, write_body
from .errors import NotSingleObjectError, RegistryError

try:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
except ImportError as exc:  # confluent-kafka without the schemaregistry extra
    raise RegistryError(
        f"the schema registry path needs extra packages ({exc}): install them with "
        "pip install 'prefloop-sdk[registry]'"
    ) from exc

if TYPE_CHECKING:
    from .codec import _Reader

__all__ = ["CONFLUENT_MAGIC", "RegistryCodec", "record_name_subject"]

CONFLUENT_MAGIC = b"\x00"
"""The byte that opens every Confluent wire-format value."""


def record_name_subject(sv: SchemaVersion) -> str:
    """Confluent's RecordNameStrategy: the subject is the record's Avro full name."""
    return sv.name


class RegistryCodec:
    """Encodes to and decodes from the Confluent wire format through a schema registry.

    ``client``: a ``confluent_kafka.schema_registry.SchemaRegistryClient`` (for tests,
    ``SchemaRegistryClient.new_client({"url": "mock://name"})``). ``auto_register``:
    register the writer schema on first use (else look it up; it must exist).
    ``subject_for``: the subject of a schema version. The other options are
    ``Codec``'s.
    """

    def __init__(
        self,
        client: SchemaRegistryClient,
        catalog: SchemaCatalog | None = None,
        *,
        auto_register: bool = True,
        subject_for: Callable[[SchemaVersion], str] = record_name_subject,
        write_versions: Mapping[str, int] | None = None,
        read_versions: Mapping[str, int] | None = None,
        validate: bool = False,
    ) -> None:
        self.client = client
        self.auto_register = auto_register
        self.subject_for = subject_for
        self.codec = Codec(
            catalog, write_versions=write_versions, read_versions=read_versions, validate=validate
        )
        self.catalog = self.codec.catalog
        self._read_versions = dict(read_versions or {})
        self._headers: dict[str, bytes] = {}  # record type -> 00 + schema id
        self._readers: dict[int, _Reader] = {}  # schema id -> how to read its bodies
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str, config: Mapping[str, Any] | None = None, **options: Any
    ) -> RegistryCodec:
        """A codec for the registry at ``url``; ``config`` adds client settings (auth...)."""
        return cls(SchemaRegistryClient.new_client({**(config or {}), "url": url}), **options)

    def schema_id(self, record_type: str) -> int:
        """The registry id of the schema ``encode`` writes for ``record_type``."""
        return int.from_bytes(self._header(record_type)[1:], "big")

    def encode(self, record_type: str, record: Mapping[str, Any]) -> bytes:
        """Encode one event in the Confluent wire format (see ``Codec.encode``)."""
        header = self._headers.get(record_type) or self._header(record_type)
        sv = self.codec.writer(record_type)
        buf = BytesIO()
        buf.write(header)
        write_body(buf, sv, sv.write_schema, record, self.codec.validate)
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode a Confluent wire-format or a single-object encoded event."""
        if type(data) is not bytes:
            data = bytes(data)
        if data[:1] != CONFLUENT_MAGIC:
            if data[:2] == MAGIC:
                return self.codec.decode(data)
            raise NotSingleObjectError(data)
        if len(data) < 5:
            raise RegistryError(
                f"Confluent wire-format header cut short: {len(data)} of 5 bytes "
                "(00 + a 4-byte schema id); the value was truncated"
            )
        schema_id = int.from_bytes(data[1:5], "big")
        reader = self._readers.get(schema_id) or self._reader(schema_id)
        return reader[0], read_body(data, 5, reader)

    def _header(self, record_type: str) -> bytes:
        sv = self.codec.writer(record_type)
        with self._lock:
            header = self._headers.get(sv.record_type)
            if header is not None:
                return header
            subject = self.subject_for(sv)
            schema = Schema(json.dumps(sv.raw), "AVRO")
            schema_id: int | None
            try:
                if self.auto_register:
                    schema_id = self.client.register_schema(subject, schema)
                else:
                    schema_id = self.client.lookup_schema(subject, schema).schema_id
            except Exception as exc:  # SchemaRegistryError, connection errors
                action = "register" if self.auto_register else "find"
                raise RegistryError(
                    f"could not {action} {sv.record_type} v{sv.version} under subject "
                    f"{subject!r} at {self._url()}: {exc}. Check the registry URL and "
                    "credentials, and that the subject's compatibility rules allow it."
                ) from exc
            if schema_id is None:
                raise RegistryError(f"the registry returned no id for subject {subject!r}")
            header = CONFLUENT_MAGIC + int(schema_id).to_bytes(4, "big")
            for key in (record_type, sv.record_type, sv.name):
                self._headers[str(key)] = header
            return header

    def _reader(self, schema_id: int) -> _Reader:
        try:
            schema_str = self.client.get_schema(schema_id).schema_str
        except Exception as exc:  # SchemaRegistryError (404), connection errors
            raise RegistryError(
                f"schema id {schema_id} could not be fetched from {self._url()}: {exc}. "
                "The event was written against another registry, or the schema was deleted."
            ) from exc
        try:
            raw = json.loads(schema_str or "")
            writer = SchemaVersion.from_json("?", 0, raw, f"registry schema id {schema_id}")
        except Exception as exc:
            raise RegistryError(
                f"schema id {schema_id} from {self._url()} is not an Avro record schema: {exc}"
            ) from exc
        known = self.catalog.by_fingerprint(writer.fingerprint)
        record_type = self.catalog.record_type_for_name(writer.name)
        if record_type is None:
            raise RegistryError(
                f"schema id {schema_id} describes {writer.name}, which is not a prefloop "
                f"event type ({', '.join(self.catalog.record_types)})"
            )
        reader = self.catalog.get(record_type, self._read_versions.get(record_type))
        if known is None:  # written with a version this SDK does not bundle: version 0
            known = replace(writer, record_type=record_type)
        entry: _Reader = (
            record_type,
            known,
            known.read_schema,
            None if known is reader else reader.read_schema,
        )
        self._readers[schema_id] = entry
        return entry

    def _url(self) -> str:
        conf = getattr(self.client, "config", None)
        url = conf().get("url") if callable(conf) else None
        return f"the schema registry {url}" if url else "the schema registry"
