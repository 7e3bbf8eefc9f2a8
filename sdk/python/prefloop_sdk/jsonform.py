"""Events as JSON: how clients that cannot speak Avro (browsers) write them.

A JSON event holds a record's fields as JSON values: strings, numbers,
booleans, ``null`` for a nullable field, enum symbols as strings, maps as
objects, arrays as arrays, nested records as objects, ``bytes`` as strings of
code points 0-255 (Avro's JSON convention), and timestamps (``timestamp-millis``)
as integer milliseconds since the epoch or ISO-8601 strings with a zone. An
absent field takes its schema default; one without a default is an error.

:func:`from_json` checks such an object against the latest schema of its type
and returns the record ``encode`` takes, or raises ``InvalidRecordError`` naming
every offending field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .catalog import SchemaCatalog, bundled_catalog
from .errors import InvalidRecordError

__all__ = ["from_json"]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class _Walk:
    """One conversion: the named types seen so far and the problems found."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.problems: list[str] = []
        self.first: str | None = None

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"field {path} {text}" if path else text)
        if self.first is None:
            self.first = path or None

    def register(self, schema: dict[str, Any], namespace: str | None) -> str | None:
        name = schema["name"]
        space = schema.get("namespace", namespace)
        full = name if "." in name or not space else f"{space}.{name}"
        self.named[full] = schema
        self.named.setdefault(name, schema)
        return full.rpartition(".")[0] or None

    def convert(self, schema: Any, value: Any, path: str, namespace: str | None) -> Any:
        if isinstance(schema, str):
            if schema in self.named:
                return self.convert(self.named[schema], value, path, namespace)
            qualified = f"{namespace}.{schema}" if namespace else schema
            if qualified in self.named:
                return self.convert(self.named[qualified], value, path, namespace)
            return self._primitive(schema, None, value, path)
        if isinstance(schema, list):
            return self._union(schema, value, path, namespace)
        kind = schema["type"]
        if kind == "record":
            return self._record(schema, value, path, namespace)
        if kind == "enum":
            self.register(schema, namespace)
            # the default symbol (UNKNOWN) is what readers see for a newer one: never sent
            sendable = [s for s in schema["symbols"] if s != schema.get("default")]
            if isinstance(value, str) and value in sendable:
                return value
            self.problem(path, f"is {_show(value)}, expected one of {', '.join(sendable)}")
            return None
        if kind == "array":
            if not isinstance(value, list):
                return self._wrong(path, value, "an array")
            return [
                self.convert(schema["items"], item, f"{path}[{i}]", namespace)
                for i, item in enumerate(value)
            ]
        if kind == "map":
            if not isinstance(value, dict):
                return self._wrong(path, value, "an object")
            return {
                str(k): self.convert(schema["values"], v, f"{path}.{k}", namespace)
                for k, v in value.items()
            }
        return self._primitive(kind, schema.get("logicalType"), value, path)

    def _record(self, schema: dict[str, Any], value: Any, path: str, namespace: str | None) -> Any:
        inner = self.register(schema, namespace)
        if not isinstance(value, Mapping):
            return self._wrong(path, value, f"an object ({schema['name']})")
        names = {f["name"] for f in schema["fields"]}
        for key in value:
            if key not in names:
                self.problem(_join(path, str(key)), f"is not a field of {schema['name']}")
        record = {}
        for field in schema["fields"]:
            name, where = field["name"], _join(path, field["name"])
            if name in value:
                record[name] = self.convert(field["type"], value[name], where, inner)
            elif "default" in field:
                record[name] = copy.deepcopy(field["default"])
            else:
                self.problem(where, "is missing and has no default")
        return record

    def _union(self, branches: list[Any], value: Any, path: str, namespace: str | None) -> Any:
        if value is None:
            if "null" in branches:
                return None
            self.problem(path, "is null, which it may not be")
            return None
        for branch in branches:
            if branch == "null":
                continue
            trial = _Walk()
            trial.named = self.named
            converted = trial.convert(branch, value, path, namespace)
            if not trial.problems:
                return converted
        options = [b if isinstance(b, str) else b.get("name", b["type"]) for b in branches]
        self.problem(
            path, f"is {_show(value)}, which matches none of {', '.join(map(str, options))}"
        )
        return None

    def _primitive(self, kind: str, logical: str | None, value: Any, path: str) -> Any:
        if kind == "string":
            return value if isinstance(value, str) else self._wrong(path, value, "a string")
        if kind == "boolean":
            return value if isinstance(value, bool) else self._wrong(path, value, "true or false")
        if kind in ("int", "long"):
            if logical in ("timestamp-millis", "local-timestamp-millis") and isinstance(value, str):
                return self._timestamp(value, path)
            low, high = _INT32 if kind == "int" else _INT64
            if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
                return value
            return self._wrong(path, value, f"an integer ({kind})")
        if kind in ("float", "double"):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return self._wrong(path, value, "a number")
        if kind == "bytes":
            if isinstance(value, str):
                try:
                    return value.encode("latin-1")
                except UnicodeEncodeError:
                    return self._wrong(path, value, "a string of code points 0-255 (bytes)")
            return self._wrong(path, value, "a string (bytes)")
        if kind == "null":
            return None if value is None else self._wrong(path, value, "null")
        self.problem(path, f"has the unsupported type {kind}")
        return None

    def _timestamp(self, text: str, path: str) -> int | None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return self._wrong(path, text, "milliseconds since the epoch or an ISO-8601 time")
        if moment.tzinfo is None:
            self.problem(
                path, f"is {_show(text)}, an ISO-8601 time without a zone: add Z or +00:00"
            )
            return None
        return int(moment.timestamp() * 1000)

    def _wrong(self, path: str, value: Any, expected: str) -> Any:
        self.problem(path, f"is {_show(value)}, expected {expected}")
        return None


def _show(value: Any) -> str:
    """A value as the JSON its sender wrote, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def from_json(record_type: str, data: Any, catalog: SchemaCatalog | None = None) -> dict[str, Any]:
    """The record for a JSON event of ``record_type``, checked against its latest schema."""
    version = (catalog or bundled_catalog()).latest(record_type)
    walk = _Walk()
    if not isinstance(data, Mapping):
        walk.problem("", f"the event is {type(data).__name__}, expected a JSON object")
        record = None
    else:
        record = walk.convert(version.raw, data, "", None)
    if walk.problems:
        raise InvalidRecordError(version.record_type, version.version, walk.problems, walk.first)
    assert isinstance(record, dict)
    return record
