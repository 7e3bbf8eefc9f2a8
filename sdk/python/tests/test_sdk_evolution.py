"""Schema evolution both ways, with throwaway schemas: added field, new enum symbol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sdk_helpers import WIDGET_V1, catalog, widget_v2

from prefloop_sdk import Codec, SchemaCatalog, UnknownFingerprintError

OLD = {"widget_id": "w-1", "kind": "LARGE", "note": None}
NEW = {"widget_id": "w-2", "kind": "HUGE", "note": "n", "size": 9}


def test_old_writer_new_reader_fills_the_added_field_with_its_default() -> None:
    old_producer = Codec(catalog(WIDGET_V1))
    new_consumer = Codec(catalog(WIDGET_V1, widget_v2()))
    assert new_consumer.decode(old_producer.encode("widget", OLD)) == (
        "widget",
        {**OLD, "size": 3},
    )


def test_new_writer_old_reader_drops_the_field_and_reads_a_new_symbol_as_the_default() -> None:
    both = catalog(WIDGET_V1, widget_v2())
    new_producer = Codec(both)
    old_consumer = Codec(both, read_versions={"widget": 1})
    data = new_producer.encode("widget", NEW)
    assert data[2:10] == both.get("widget", 2).fingerprint
    assert old_consumer.decode(data) == (
        "widget",
        {"widget_id": "w-2", "kind": "UNKNOWN", "note": "n"},
    )
    # A symbol both versions know survives the trip unchanged.
    assert (
        old_consumer.decode(new_producer.encode("widget", {**NEW, "kind": "SMALL"}))[1]["kind"]
        == "SMALL"
    )


def test_a_reader_that_lacks_the_writer_schema_names_its_fingerprint() -> None:
    both = catalog(WIDGET_V1, widget_v2())
    data = Codec(both).encode("widget", NEW)
    with pytest.raises(UnknownFingerprintError, match=both.get("widget", 2).fingerprint_hex):
        Codec(catalog(WIDGET_V1)).decode(data)


def test_pinned_write_version_lets_producers_wait_for_readers() -> None:
    both = catalog(WIDGET_V1, widget_v2())
    pinned = Codec(both, write_versions={"widget": 1})
    data = pinned.encode("widget", OLD)
    assert data == Codec(catalog(WIDGET_V1)).encode("widget", OLD)
    assert Codec(catalog(WIDGET_V1)).decode(data) == ("widget", OLD)


def test_versions_load_from_a_schema_folder(tmp_path: Path) -> None:
    folder = tmp_path / "widget"
    folder.mkdir()
    (folder / "v1.avsc").write_text(json.dumps(WIDGET_V1))
    (folder / "v2.avsc").write_text(json.dumps(widget_v2()))
    (tmp_path / "vectors").mkdir()  # folders without v<N>.avsc files are not types
    loaded = SchemaCatalog.from_directory(tmp_path)
    assert loaded.record_types == ["widget"]
    assert [v.version for v in loaded.versions("widget")] == [1, 2]
    assert (
        loaded.latest("widget").fingerprint
        == catalog(WIDGET_V1, widget_v2()).get("widget", 2).fingerprint
    )
