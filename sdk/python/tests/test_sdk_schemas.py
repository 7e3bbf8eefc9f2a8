"""House rules of the event contract, and the schemas shipped inside the SDK."""

from __future__ import annotations

import json
import re
from typing import Any

from sdk_helpers import REPO

from prefloop_sdk import RecordType, bundled_catalog
from prefloop_sdk.catalog import bundled_schema_dir

SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def _walk(schema: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (path, field) of every record inside ``schema``."""
    found = []
    if isinstance(schema, list):
        for branch in schema:
            found += _walk(branch, path)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                found.append((f"{path}.{f['name']}", f))
                found += _walk(f["type"], f"{path}.{f['name']}")
        for key in ("items", "values"):
            if key in schema:
                found += _walk(schema[key], path)
    return found


def test_the_sdk_ships_exactly_the_repository_schemas() -> None:
    shipped = {
        f"{d.name}/{f.name}": f.read_text(encoding="utf-8")
        for d in bundled_schema_dir().iterdir()
        if d.is_dir()
        for f in d.iterdir()
        if f.name.endswith(".avsc")
    }
    source = {
        f"{p.parent.name}/{p.name}": p.read_text(encoding="utf-8")
        for p in (REPO / "schemas").glob("*/v*.avsc")
    }
    assert shipped == source
    assert {name.split("/")[0] for name in source} == {t.value for t in RecordType}


def test_every_field_has_a_doc_and_a_snake_case_name_and_nullables_default_to_null() -> None:
    for sv in bundled_catalog():
        raw = json.loads((REPO / "schemas" / sv.record_type / f"v{sv.version}.avsc").read_text())
        assert raw["namespace"] == "prefloop.events"
        assert raw.get("doc"), sv.source
        fields = _walk(raw, sv.record_type)
        assert fields, sv.source
        for path, field in fields:
            assert field.get("doc"), f"{sv.source}: {path} has no doc"
            assert SNAKE.fullmatch(field["name"]), f"{sv.source}: {path} is not snake_case"
            if isinstance(field["type"], list):
                assert field["type"][0] == "null", path
                assert "default" in field and field["default"] is None, path


def test_every_enum_defaults_to_unknown() -> None:
    enums = set()
    for sv in bundled_catalog():
        for _, field in _walk(sv.raw, sv.record_type):
            kind = field["type"]
            if isinstance(kind, dict) and kind.get("type") == "enum":
                enums.add(kind["name"])
                assert kind["default"] == "UNKNOWN" == kind["symbols"][0], field["name"]
    assert enums == {
        "FeedbackKind",
        "SettledReason",
        "SamplingMethod",
        "AnnotationChoice",
        "PairSource",
        "ModelEventKind",
    }


def test_fingerprints_are_distinct_and_headers_are_magic_plus_fingerprint() -> None:
    catalog = bundled_catalog()
    versions = list(catalog)
    assert len({sv.fingerprint for sv in versions}) == len(versions)
    for sv in versions:
        assert sv.header == b"\xc3\x01" + sv.fingerprint
        assert catalog.by_fingerprint(sv.fingerprint) is sv
        assert catalog.record_type_for_name(sv.name) == sv.record_type
