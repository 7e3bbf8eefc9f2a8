"""Typed rows of decoded events: columns located once, values converted, unfit ones left out."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from prefloop.analytics.sink import ClickHouseSink, _BatchWriter
from prefloop.analytics.tables import TableLayout
from prefloop.settings import load_settings

LAYOUT = TableLayout(
    "scores",
    (
        ("response_id", pa.binary(), False),
        ("arm", pa.binary(), False),
        ("revision", pa.uint32(), False),
        ("signals_copied", pa.bool_(), False),
        ("signals_session_seconds", pa.float64(), True),
        ("rating", pa.float64(), True),
        ("_partition", pa.uint32(), False),
        ("_offset", pa.uint64(), False),
    ),
)


def score(response_id: str, revision: int = 0, rating: float | None = None) -> dict[str, Any]:
    signals = {"copied": True, "session_seconds": None}
    return {"response_id": response_id, "arm": None, "revision": revision, "signals": signals,
            "rating": rating}  # fmt: skip


def test_nested_fields_are_flattened_and_nulls_take_the_column_default() -> None:
    rows = LAYOUT.rows([score("r1", rating=4.0), score("r2")], [(0, 10), (3, 11)]).to_pylist()
    assert rows == [
        {"response_id": b"r1", "arm": b"", "revision": 0, "signals_copied": True,
         "signals_session_seconds": None, "rating": 4.0, "_partition": 0, "_offset": 10},
        {"response_id": b"r2", "arm": b"", "revision": 0, "signals_copied": True,
         "signals_session_seconds": None, "rating": None, "_partition": 3, "_offset": 11},
    ]  # fmt: skip


def test_a_record_its_table_cannot_hold_is_left_out_and_counted_not_retried_forever() -> None:
    sink = ClickHouseSink(load_settings(environ={}), client_factory=lambda: None)  # type: ignore[arg-type,return-value]
    writer = _BatchWriter(None, [], {"scores": LAYOUT}, None, sink)  # type: ignore[arg-type]
    records = [score("r1"), score("r2", revision=-1), score("r3")]  # -1 does not fit UInt32
    rows = writer._rows("scores", records, [(0, 1), (0, 2), (0, 3)])
    assert rows.column("response_id").to_pylist() == [b"r1", b"r3"]
    assert rows.column("_offset").to_pylist() == [1, 3]
    assert sink.unfit == 1
