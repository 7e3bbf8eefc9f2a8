"""The typed event tables: each topic's decoded events as rows of its own table.

The sink writes every record, as decoded with the latest schema version, to the table
of its record type, laid out by ``migrations/0003_event_tables.sql``. A table's
columns are read from ClickHouse, so a field the table lacks is left out and a column
the event lacks takes its default: a schema may grow before its table does.
ClickHouse decodes the records and applies the rules below in SQL
(:mod:`prefloop.analytics.avro_rows`); :meth:`TableLayout.rows` applies them in Python
to the records it leaves to Python.

How a field becomes a column, by the column's type:

- a nested record's fields are flattened with ``_`` (``signals`` → ``signals_copied``);
- ``Map``/``Array`` columns take maps and arrays as they are; any other column takes
  an array or map as JSON text (``messages``, ``prompt``, ``source_offsets``);
- a null lands as NULL in a ``Nullable`` column and as the type's zero ('' for text)
  otherwise;
- timestamps are milliseconds since the epoch, into ``DateTime64(3)``.

Each row also carries the Kafka partition and offset it came from (``_partition``,
``_offset``): :class:`Watermarks` keeps the highest offset written per table and
partition, so a batch delivered again after a crash is written once.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

__all__ = ["TABLES", "UNFIT", "TableLayout", "Watermarks", "load_layouts", "typed_array"]

# record type -> its table
TABLES = {
    "interaction": "interactions",
    "feedback": "feedback",
    "scored_interaction": "scores",
    "exposure": "exposures",
    "model_event": "model_events",
    "preference_pair": "preferences",
    "annotation_task": "annotation_tasks",
    "annotation_result": "annotation_results",
    "dead_letter": "dead_letters",
}
SOURCE_COLUMNS = ("_partition", "_offset")
# what Arrow raises for a value its column cannot hold (a negative count into UInt32)
UNFIT = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)

_SIMPLE = {
    "String": pa.binary(),
    "Bool": pa.bool_(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "Date": pa.date32(),
}
_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")
_DATETIME = re.compile(r"^DateTime64\(3(, '[^']*')?\)$")


def _arrow_type(ch_type: str) -> tuple[pa.DataType, bool]:
    """The Arrow type a ClickHouse column is written from, and whether it is Nullable."""
    nullable = False
    while match := _WRAPPER.match(ch_type):
        nullable = nullable or match.group(1) == "Nullable"
        ch_type = match.group(2)
    if ch_type in _SIMPLE:
        return _SIMPLE[ch_type], nullable
    if _DATETIME.match(ch_type):
        return pa.timestamp("ms", tz="UTC"), nullable
    if ch_type.startswith("Map("):
        key, value = (_arrow_type(t.strip())[0] for t in ch_type[4:-1].split(",", 1))
        return pa.map_(pa.string() if key == pa.binary() else key, value), nullable
    if ch_type.startswith("Array("):
        item = _arrow_type(ch_type[6:-1])[0]
        return pa.list_(pa.string() if item == pa.binary() else item), nullable
    raise ValueError(f"column type {ch_type} has no Arrow mapping in prefloop.analytics.tables")


def _zero(kind: pa.DataType) -> Any:
    if pa.types.is_binary(kind):
        return b""
    if pa.types.is_boolean(kind):
        return False
    if pa.types.is_map(kind) or pa.types.is_list(kind):
        return []
    return 0


def _path(record: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    """Where column ``name`` is in a decoded record: (field,), or (record, field) for
    a nested record's field flattened with '_'; None when the record lacks it."""
    if name in record:
        return (name,)
    for key, value in record.items():
        if isinstance(value, dict) and name.startswith(f"{key}_") and name[len(key) + 1 :] in value:
            return (key, name[len(key) + 1 :])
    return None


def _column(records: Sequence[Mapping[str, Any]], path: tuple[str, ...] | None) -> list[Any]:
    if path is None:
        return [None] * len(records)
    if len(path) == 1:
        (key,) = path
        return [r.get(key) for r in records]
    parent, child = path
    return [(r.get(parent) or {}).get(child) for r in records]


def _converted(values: list[Any], kind: pa.DataType, nullable: bool) -> list[Any]:
    """``values`` as ``pa.array`` takes them for a column of ``kind``: one pass each."""
    zero = None if nullable else _zero(kind)
    if pa.types.is_map(kind):
        return [zero if v is None else list(v.items()) for v in values]
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, list | dict) and not pa.types.is_list(kind):
        return [
            zero if v is None else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
            for v in values
        ]
    if zero is not None and None in values:
        return [zero if v is None else v for v in values]
    return values


def typed_array(values: list[Any], kind: pa.DataType, nullable: bool) -> pa.Array:
    """One column of the values a decoded record has for it; raises one of ``UNFIT``."""
    return pa.array(_converted(values, kind, nullable), type=kind)


@dataclass(frozen=True)
class TableLayout:
    """The columns of one event table, as the sink writes them."""

    table: str
    fields: tuple[tuple[str, pa.DataType, bool], ...]  # name, Arrow type, nullable

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, t, nullable) for n, t, nullable in self.fields])

    def rows(
        self, records: Sequence[Mapping[str, Any]], sources: Sequence[tuple[int, int]]
    ) -> pa.Table:
        """The rows of decoded ``records``, each with its (partition, offset).

        The records are of one record type, decoded as its latest schema version, so
        they share their fields: the first one locates each column, and each column is
        built in one pass.
        """
        first = records[0] if records else {}
        columns = []
        for name, kind, nullable in self.fields:
            if name == "_partition":
                values: list[Any] = [s[0] for s in sources]
            elif name == "_offset":
                values = [s[1] for s in sources]
            else:
                values = _converted(_column(records, _path(first, name)), kind, nullable)
            columns.append(pa.array(values, type=kind))
        return pa.Table.from_arrays(columns, schema=self.schema)


def load_layouts(client: Client, tables: Iterable[str] = TABLES.values()) -> dict[str, TableLayout]:
    """The layout of each event table, read from ClickHouse (columns with a default
    expression, such as ``_inserted_at``, are left to it)."""
    layouts = {}
    for table in tables:
        described = client.query(
            "SELECT name, type, default_kind FROM system.columns "
            "WHERE database = currentDatabase() AND table = {table:String} ORDER BY position",
            parameters={"table": table},
        ).result_rows
        if not described:
            raise ValueError(
                f"table {table} does not exist: apply the migrations (`prefloop migrate`)"
            )
        fields = tuple(
            (name, *_arrow_type(ch_type)) for name, ch_type, default in described if not default
        )
        layouts[table] = TableLayout(table, fields)
    return layouts


class Watermarks:
    """The highest Kafka offset written to each event table, per partition.

    Read from the tables when made, raised by :meth:`advance` after each insert and by
    :meth:`refresh` from what a table holds. The sink's insert thread calls
    :meth:`fresh` and :meth:`advance` while its consumer thread may :meth:`refresh`
    (its partitions were just assigned), so a lock guards the offsets; it is taken
    once per table and batch, not per record.
    """

    def __init__(self, client: Client, tables: Iterable[str]) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._high: dict[str, dict[int, int]] = {}
        for table in tables:
            self._raise(table, self._held(table))

    def fresh(self, table: str, sources: Sequence[tuple[int, int]]) -> list[int]:
        """The indexes of the (partition, offset) ``sources`` above the watermark."""
        with self._lock:
            high = dict(self._high.get(table, {}))
        return [i for i, (p, offset) in enumerate(sources) if offset > high.get(p, -1)]

    def advance(self, table: str, sources: Iterable[tuple[int, int]]) -> None:
        """Raise the watermarks to the (partition, offset) ``sources`` just written."""
        self._raise(table, sources)

    def refresh(self, table: str, partitions: Iterable[int]) -> None:
        """Raise the watermarks of ``partitions`` to what ``table`` holds of them.

        What another writer put there (the sink that owned the partitions before a
        rebalance), or an insert that raised although its rows landed. A watermark
        never goes down: a record left out of its table (it did not fit) raised it
        without leaving a row there.
        """
        listed = ", ".join(str(int(p)) for p in sorted(set(partitions)))
        if listed:
            self._raise(table, self._held(table, f"WHERE _partition IN ({listed})"))

    def _held(self, table: str, where: str = "") -> list[tuple[int, int]]:
        """The highest offset ``table`` holds per partition (of those ``where`` keeps)."""
        sql = f"SELECT _partition, max(_offset) FROM {table} {where} GROUP BY _partition"
        return [(int(p), int(offset)) for p, offset in self._client.query(sql).result_rows]

    def _raise(self, table: str, offsets: Iterable[tuple[int, int]]) -> None:
        with self._lock:
            known = self._high.setdefault(table, {})
            for partition, offset in offsets:
                if offset > known.get(partition, -1):
                    known[partition] = offset
