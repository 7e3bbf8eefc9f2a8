"""Helpers of the SDK tests: throwaway schemas for evolution, the shared vectors' path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from prefloop_sdk import SchemaCatalog, SchemaVersion

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "schemas" / "vectors" / "vectors.json"

WIDGET_V1: dict[str, Any] = {
    "type": "record",
    "name": "Widget",
    "namespace": "prefloop.events",
    "doc": "A throwaway record type for evolution tests.",
    "fields": [
        {"name": "widget_id", "type": "string", "doc": "Id."},
        {
            "name": "kind",
            "type": {
                "type": "enum",
                "name": "WidgetKind",
                "symbols": ["UNKNOWN", "SMALL", "LARGE"],
                "default": "UNKNOWN",
            },
            "doc": "Kind.",
        },
        {"name": "note", "type": ["null", "string"], "default": None, "doc": "Note."},
    ],
}


def widget_v2() -> dict[str, Any]:
    """v1 plus a field with a default and a new enum symbol: compatible both ways."""
    schema = copy.deepcopy(WIDGET_V1)
    schema["fields"].append({"name": "size", "type": "int", "default": 3, "doc": "Size."})
    schema["fields"][1]["type"]["symbols"].append("HUGE")
    return schema


def catalog(*schemas: dict[str, Any], record_type: str = "widget") -> SchemaCatalog:
    """A catalog holding ``schemas`` as versions 1, 2, ... of one record type."""
    return SchemaCatalog(
        [SchemaVersion.from_json(record_type, i, s) for i, s in enumerate(schemas, start=1)]
    )


def load_vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))
