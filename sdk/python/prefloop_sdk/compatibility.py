"""Full transitive compatibility of the event schemas, proven by fastavro's resolution.

For every record type, every version must read data written by every version (both
directions, all pairs, not only neighbours): producers and consumers upgrade at
different times and Kafka keeps old events. The check writes sample records with each
writer version and reads them with each reader version through fastavro's schema
resolution. The samples take every branch of every union and every symbol of every
enum, so a field added without a default, a changed type or a symbol an old reader
cannot map all fail. It also requires a ``"default"`` on every enum (so an old reader
survives a new symbol) and no gaps in the version numbers (published versions are
never deleted).

``prefloop schemas check`` runs ``check_compatibility``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from .catalog import SchemaCatalog, SchemaVersion, bundled_catalog
from .errors import SchemaCompatibilityError

__all__ = ["CompatibilityReport", "check_compatibility", "check_pair", "sample_records"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_MAX_DEPTH = 12  # recursive types: stop nesting here (nullable branch, empty arrays)


@dataclass(frozen=True)
class CompatibilityReport:
    """What ``check_compatibility`` proved."""

    versions: dict[str, list[int]]
    """Every record type and its versions."""
    pairs: int
    """(writer, reader) version pairs checked, same-version pairs included."""
    records: int
    """Sample records written and read back in all."""

    def __str__(self) -> str:
        types = ", ".join(
            f"{t} (v{', v'.join(str(v) for v in vs)})" for t, vs in self.versions.items()
        )
        return (
            f"{len(self.versions)} record types fully transitively compatible: {types}; "
            f"{self.pairs} writer/reader pairs, {self.records} sample records read back."
        )


def check_compatibility(source: SchemaCatalog | Path | str | None = None) -> CompatibilityReport:
    """Check every type's versions pairwise; raise ``SchemaCompatibilityError`` listing all.

    ``source``: a catalog, or a ``schemas/`` folder to load (default: the bundled schemas).
    """
    if source is None:
        catalog = bundled_catalog()
    elif isinstance(source, SchemaCatalog):
        catalog = source
    else:
        catalog = SchemaCatalog.from_directory(Path(source))
    problems: list[str] = []
    pairs = records = 0
    for record_type in catalog.record_types:
        versions = catalog.versions(record_type)
        numbers = [v.version for v in versions]
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        if missing:
            problems.append(
                f"{record_type}: version(s) {', '.join(f'v{n}' for n in missing)} missing; "
                "every published version must stay in schemas/"
            )
        for sv in versions:
            problems.extend(_enum_problems(sv))
        for writer in versions:
            for reader in versions:
                try:
                    records += check_pair(writer, reader)
                except SchemaCompatibilityError as exc:
                    problems.extend(exc.problems)
                pairs += 1
    if problems:
        raise SchemaCompatibilityError(problems)
    return CompatibilityReport(
        versions={t: [v.version for v in catalog.versions(t)] for t in catalog.record_types},
        pairs=pairs,
        records=records,
    )


def check_pair(writer: SchemaVersion, reader: SchemaVersion) -> int:
    """Prove ``reader`` reads what ``writer`` writes; return the number of samples read.

    Raises ``SchemaCompatibilityError`` naming the type, both versions and the problem.
    """
    where = f"{writer.record_type}: v{reader.version} cannot read data written by v{writer.version}"
    samples = sample_records(writer.read_schema)
    for i, record in enumerate(samples):
        buf = BytesIO()
        try:
            schemaless_writer(buf, writer.read_schema, record)
        except Exception as exc:  # a sample the writer refuses is a bug here, not theirs
            raise SchemaCompatibilityError(
                [f"{writer.record_type} v{writer.version}: could not write sample {i}: {exc}"]
            ) from exc
        buf.seek(0)
        try:
            schemaless_reader(buf, writer.read_schema, reader.read_schema)
        except Exception as exc:  # fastavro's SchemaResolutionError, mostly
            raise SchemaCompatibilityError([f"{where}: {exc}"]) from exc
    return len(samples)


def _enum_problems(sv: SchemaVersion) -> Iterator[str]:
    for enum in _named(sv.read_schema, "enum"):
        name = enum["name"]
        if "default" not in enum:
            yield (
                f"{sv.record_type} v{sv.version}: enum {name} has no default; add "
                '"default": "UNKNOWN" (and the UNKNOWN symbol) so old readers survive new symbols'
            )
        elif enum["default"] not in enum["symbols"]:
            yield (
                f"{sv.record_type} v{sv.version}: enum {name}'s default {enum['default']!r} "
                "is not one of its symbols"
            )


def _named(schema: Any, kind: str) -> Iterator[dict[str, Any]]:
    """Every named type of one kind defined inside ``schema`` (fastavro parsed form)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named(branch, kind)
    elif isinstance(schema, dict):
        if schema.get("type") == kind:
            yield schema
        if schema.get("type") == "record":
            for f in schema["fields"]:
                yield from _named(f["type"], kind)
        for key in ("items", "values"):
            if key in schema:
                yield from _named(schema[key], kind)


def sample_records(schema: dict[str, Any]) -> list[Any]:
    """Records for ``schema`` that together take every union branch and enum symbol.

    Sample ``k`` takes branch ``k mod n`` of each union and symbol ``k mod n`` of each
    enum, for ``k`` up to the widest union or enum, so each choice is written at least
    once; arrays and maps get one or two entries.
    """
    named = {s["name"]: s for kind in ("record", "enum", "fixed") for s in _named(schema, kind)}
    width = max(
        [2]
        + [len(e["symbols"]) for e in _named(schema, "enum")]
        + [len(u) for u in _unions(schema)]
    )
    return [_sample(schema, k, named, 0) for k in range(width)]


def _unions(schema: Any) -> Iterator[list[Any]]:
    if isinstance(schema, list):
        yield schema
        for branch in schema:
            yield from _unions(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                yield from _unions(f["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from _unions(schema[key])


def _sample(schema: Any, k: int, named: dict[str, Any], depth: int) -> Any:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _primitive(schema, k)
        return _sample(named[schema], k, named, depth)
    if isinstance(schema, list):
        if depth >= _MAX_DEPTH and "null" in schema:
            return None
        return _sample(schema[k % len(schema)], k, named, depth + 1)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _sample(f["type"], k, named, depth + 1) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][k % len(schema["symbols"])]
    if kind == "fixed":
        return bytes(schema["size"])
    count = 0 if depth >= _MAX_DEPTH else 1 + k % 2
    if kind == "array":
        return [_sample(schema["items"], k + i, named, depth + 1) for i in range(count)]
    if kind == "map":
        return {f"key{i}": _sample(schema["values"], k + i, named, depth + 1) for i in range(count)}
    return _sample(kind, k, named, depth)  # {"type": "string"} and the like


def _primitive(kind: str, k: int) -> Any:
    return {
        "null": None,
        "boolean": k % 2 == 1,
        "int": k,
        "long": k,
        "float": k + 0.5,
        "double": k + 0.25,
        "bytes": bytes([k % 256]),
        "string": f"s{k}",
    }[kind]
