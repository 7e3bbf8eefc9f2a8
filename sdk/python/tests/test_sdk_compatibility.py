"""The full transitive compatibility check: passes on the bundled schemas, fails loudly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from sdk_helpers import WIDGET_V1, catalog, widget_v2

from prefloop_sdk import RecordType, SchemaCompatibilityError, SchemaError, check_compatibility
from prefloop_sdk.compatibility import sample_records


def test_bundled_schemas_are_compatible() -> None:
    report = check_compatibility()
    assert set(report.versions) == {t.value for t in RecordType}
    assert report.pairs >= len(RecordType)
    assert report.records > report.pairs
    assert "9 record types fully transitively compatible" in str(report)


def test_compatible_evolution_passes_every_pair() -> None:
    third = widget_v2()
    third["fields"].append(
        {
            "name": "tags",
            "type": {"type": "array", "items": "string"},
            "default": [],
            "doc": "Tags.",
        }
    )
    report = check_compatibility(catalog(WIDGET_V1, widget_v2(), third))
    assert report.versions == {"widget": [1, 2, 3]}
    assert report.pairs == 9


def test_added_field_without_default_fails_naming_type_and_versions() -> None:
    bad = copy.deepcopy(WIDGET_V1)
    bad["fields"].append({"name": "size", "type": "int", "doc": "Size."})
    with pytest.raises(SchemaCompatibilityError) as info:
        check_compatibility(catalog(WIDGET_V1, bad))
    assert info.value.problems == [
        "widget: v2 cannot read data written by v1: "
        "No default value for field size in prefloop.events.Widget"
    ]
    assert "give new fields a default" in str(info.value)


def test_changed_field_type_fails_both_directions() -> None:
    bad = copy.deepcopy(WIDGET_V1)
    bad["fields"][0]["type"] = "long"
    with pytest.raises(SchemaCompatibilityError) as info:
        check_compatibility(catalog(WIDGET_V1, bad))
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("widget: v2 cannot read data written by v1")
    assert problems[1].startswith("widget: v1 cannot read data written by v2")


def test_enum_without_default_fails_even_alone() -> None:
    bad = copy.deepcopy(WIDGET_V1)
    del bad["fields"][1]["type"]["default"]
    with pytest.raises(
        SchemaCompatibilityError, match="widget v1: enum prefloop.events.WidgetKind"
    ):
        check_compatibility(catalog(bad))


def test_new_symbol_without_reader_default_fails() -> None:
    old = copy.deepcopy(WIDGET_V1)
    del old["fields"][1]["type"]["default"]
    with pytest.raises(SchemaCompatibilityError) as info:
        check_compatibility(catalog(old, widget_v2()))
    assert any(
        "v1 cannot read data written by v2" in p and "HUGE" in p for p in info.value.problems
    ), info.value.problems


def test_a_gap_in_versions_fails(tmp_path: Path) -> None:
    folder = tmp_path / "widget"
    folder.mkdir()
    (folder / "v1.avsc").write_text(json.dumps(WIDGET_V1))
    (folder / "v3.avsc").write_text(json.dumps(widget_v2()))
    with pytest.raises(SchemaCompatibilityError, match="widget: version.s. v2 missing"):
        check_compatibility(tmp_path)


def test_badly_named_schema_file_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "widget"
    folder.mkdir()
    (folder / "widget.avsc").write_text(json.dumps(WIDGET_V1))
    with pytest.raises(SchemaError, match="must be named v<N>.avsc"):
        check_compatibility(tmp_path)


def test_samples_take_every_enum_symbol_and_union_branch() -> None:
    schema = catalog(WIDGET_V1, widget_v2()).latest("widget").read_schema
    samples = sample_records(schema)
    assert {s["kind"] for s in samples} == {"UNKNOWN", "SMALL", "LARGE", "HUGE"}
    assert {type(s["note"]) for s in samples} == {type(None), str}
