"""The event schemas: every published version of every record type, parsed once.

The bundled catalog reads ``prefloop_sdk/schemas/<record_type>/v<N>.avsc``, the
package-data copy of the repository's ``schemas/`` folder. Each version carries its
parsed schemas and its single-object header (``C3 01`` + CRC-64-AVRO fingerprint of
the Parsing Canonical Form), computed once because fingerprinting costs about 1 ms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from .errors import SchemaError

__all__ = [
    "MAGIC",
    "RecordType",
    "SchemaCatalog",
    "SchemaVersion",
    "bundled_catalog",
    "bundled_schema_dir",
]

MAGIC = b"\xc3\x01"
"""The two bytes that open every Avro single-object encoded event."""

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


class RecordType(StrEnum):
    """The record types of the event contract; each value is its folder under ``schemas/``."""

    INTERACTION = "interaction"
    FEEDBACK = "feedback"
    SCORED_INTERACTION = "scored_interaction"
    ANNOTATION_TASK = "annotation_task"
    ANNOTATION_RESULT = "annotation_result"
    PREFERENCE_PAIR = "preference_pair"
    MODEL_EVENT = "model_event"
    EXPOSURE = "exposure"
    DEAD_LETTER = "dead_letter"


def _strip_logical_types(schema: Any) -> Any:
    """The schema without logicalType annotations, so reads give plain ints (ms) and strings.

    The Parsing Canonical Form drops logical types too, so fingerprints are unaffected.
    """
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(v) for v in schema]
    return schema


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One published version of one record type.

    ``write_schema`` keeps logical types (so an aware ``datetime`` is accepted for a
    timestamp); ``read_schema`` drops them (so decoded timestamps are ints in ms).
    """

    record_type: str
    version: int
    name: str
    raw: dict[str, Any] = field(repr=False)
    write_schema: dict[str, Any] = field(repr=False)
    read_schema: dict[str, Any] = field(repr=False)
    canonical_form: str = field(repr=False)
    fingerprint: bytes
    source: str = field(repr=False)

    @property
    def fingerprint_hex(self) -> str:
        """The CRC-64-AVRO fingerprint as 16 hex digits, in header byte order."""
        return self.fingerprint.hex()

    @property
    def header(self) -> bytes:
        """The single-object header: ``C3 01`` + the 8 fingerprint bytes."""
        return MAGIC + self.fingerprint

    @classmethod
    def from_json(
        cls, record_type: str, version: int, raw: dict[str, Any], source: str = "<memory>"
    ) -> SchemaVersion:
        """Parse one schema, given as the JSON object of an ``.avsc`` file."""
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise SchemaError(
                f"{source}: the top-level schema must be an Avro record; "
                f"got {str(raw)[:80]!r}. Wrap the event's fields in a record."
            )
        try:
            write_schema: dict[str, Any] = parse_schema(raw)  # type: ignore[assignment]
            read_schema: dict[str, Any] = parse_schema(_strip_logical_types(raw))  # type: ignore[assignment]
            canonical = to_parsing_canonical_form(write_schema)
            fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        except Exception as exc:  # fastavro raises several kinds for a bad schema
            raise SchemaError(
                f"{source}: not a valid Avro schema: {exc}. Fix the file and run "
                "`prefloop schemas check`."
            ) from exc
        return cls(
            record_type=_as_record_type(record_type),
            version=version,
            name=write_schema["name"],
            raw=raw,
            write_schema=write_schema,
            read_schema=read_schema,
            canonical_form=canonical,
            fingerprint=fp,
            source=source,
        )


def _as_record_type(name: str) -> str:
    try:
        return RecordType(name)
    except ValueError:
        return name  # a type the SDK has no constant for yet still works by name


class SchemaCatalog:
    """All versions of all record types, with lookups by type, name and fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        by_type: dict[str, list[SchemaVersion]] = {}
        for sv in versions:
            by_type.setdefault(sv.record_type, []).append(sv)
        self._by_type = {t: sorted(vs, key=lambda v: v.version) for t, vs in by_type.items()}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._type_by_name: dict[str, str] = {}
        for record_type, vs in self._by_type.items():
            seen = set()
            for sv in vs:
                if sv.version in seen:
                    raise SchemaError(f"{record_type}: version {sv.version} is defined twice")
                seen.add(sv.version)
                other = self._by_fingerprint.get(sv.fingerprint)
                if other is not None and other.record_type != sv.record_type:
                    raise SchemaError(
                        f"{sv.source} and {other.source} have the same canonical form "
                        f"(fingerprint {sv.fingerprint_hex}): give each record type its own name"
                    )
                # A version that changed only docs shares its predecessor's fingerprint;
                # either one reads the bytes the same way, the later one is kept.
                self._by_fingerprint[sv.fingerprint] = sv
                owner = self._type_by_name.setdefault(sv.name, record_type)
                if owner != record_type:
                    raise SchemaError(
                        f"record name {sv.name} is used by both {owner} and {record_type}: "
                        "each record type needs its own Avro name"
                    )

    @classmethod
    def from_directory(cls, root: Path | Traversable) -> SchemaCatalog:
        """Load ``root/<record_type>/v<N>.avsc``; folders without such files are skipped."""
        versions = []
        if not root.is_dir():
            raise SchemaError(f"schema folder {root} does not exist: pass the schemas/ folder")
        for folder in sorted(root.iterdir(), key=lambda p: p.name):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir(), key=lambda p: p.name):
                if not path.name.endswith(".avsc"):
                    continue
                match = _VERSION_FILE.fullmatch(path.name)
                if match is None:
                    raise SchemaError(
                        f"{folder.name}/{path.name}: schema files must be named v<N>.avsc "
                        "(v1.avsc, v2.avsc, ...): rename it"
                    )
                source = f"{folder.name}/{path.name}"
                try:
                    raw = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise SchemaError(f"{source}: not valid JSON: {exc}") from exc
                versions.append(
                    SchemaVersion.from_json(folder.name, int(match.group(1)), raw, source)
                )
        return cls(versions)

    @property
    def record_types(self) -> list[str]:
        """The record types, sorted by name."""
        return sorted(self._by_type)

    def versions(self, record_type: str) -> list[SchemaVersion]:
        """Every version of a record type, oldest first."""
        return list(self._by_type[record_type])

    def get(self, record_type: str, version: int | None = None) -> SchemaVersion:
        """One version of a record type; the latest when ``version`` is None."""
        versions = self._by_type.get(record_type)
        if versions is None:
            raise SchemaError(
                f"no schemas for record type {record_type!r}: "
                f"known types are {', '.join(self.record_types)}"
            )
        if version is None:
            return versions[-1]
        for sv in versions:
            if sv.version == version:
                return sv
        raise SchemaError(
            f"{record_type} has no version {version}: "
            f"it has {', '.join(f'v{v.version}' for v in versions)}"
        )

    def latest(self, record_type: str) -> SchemaVersion:
        """The newest version of a record type."""
        return self.get(record_type)

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The version whose fingerprint (8 bytes, header order) is ``fp``, or None."""
        return self._by_fingerprint.get(bytes(fp))

    def record_type_for_name(self, name: str) -> str | None:
        """The record type whose Avro full name is ``name``, or None."""
        return self._type_by_name.get(name)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for record_type in self.record_types:
            yield from self._by_type[record_type]

    def __len__(self) -> int:
        return sum(len(vs) for vs in self._by_type.values())


def bundled_schema_dir() -> Traversable:
    """The schemas shipped in the SDK (in a checkout: a symlink to the repository's schemas/)."""
    return files("prefloop_sdk") / "schemas"


@cache
def bundled_catalog() -> SchemaCatalog:
    """The catalog of the schemas shipped with the SDK, loaded once per process."""
    catalog = SchemaCatalog.from_directory(bundled_schema_dir())
    missing = [t.value for t in RecordType if t.value not in catalog.record_types]
    if missing:
        raise SchemaError(
            f"the SDK's bundled schemas lack {', '.join(missing)}: the installation is "
            "broken, reinstall prefloop-sdk"
        )
    return catalog
