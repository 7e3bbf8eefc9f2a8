"""Typed rows decoded by ClickHouse from the events' own Avro bytes: no Python per record.

An event is Avro single-object encoded: a 10-byte header naming its writer schema, then
the body. The bodies of one writer schema, each followed by a 20-byte tail, are joined
into one Avro object container (header: ``Obj\\x01``, the schema, a sync marker; one
block: count, size, the records, the marker), and ClickHouse's own Avro input format
reads it, with a SELECT per table and writer schema that makes the table's columns.
Python only moves bytes: a record is the concatenation of its fields, so a body and
its tail are a record of the *wrapped* schema ``{<the writer's fields>, _pf_offset:
fixed(8), _pf_partition: fixed(4), _pf_check: fixed(8)}``. The tail holds the record's
Kafka position (little-endian, read back with ``reinterpretAsUInt64``) and a check word.

The SELECT follows :mod:`prefloop.analytics.tables`' layout, column by column, as Python
fills it from the record decoded with the latest schema version: a field the writer
lacks takes that version's default, a nested record's field is read with
``tupleElement``, an array or map into a text column becomes the JSON text that
``json.dumps(v, ensure_ascii=False, separators=(",", ":"))`` writes (ClickHouse's
``toJSONString``, with the few escapes it writes otherwise put back), a null into a
column that is not Nullable takes the type's zero. Columns that hold one value for the
whole writer (a field it lacks) are added in Arrow, and the result is cast to the
layout's Arrow schema with Arrow's range checks (a negative count into UInt32 fails,
as it does in Python).

A record Python would not decode fails the group: a body that does not end where its
message does misplaces the check word after it (``throwIf``), and a bad union or enum
index fails ClickHouse's reader, in a first query that reads little (:meth:`RowPlan.
check`); a string that is not UTF-8 fails ``isValidUTF8`` (the SELECT's last column).
The caller then decodes that group in Python, which sets the record apart. Where the
layout needs what this module does not express (a type promotion between versions, a
nullable record, floats in JSON text), :func:`plan_rows` returns None and the group is
decoded in Python. The schema side of it is :mod:`prefloop.analytics.avro_schema`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
import struct
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.external import ExternalData

from prefloop.analytics.avro_schema import (
    Names,
    avro_kind,
    clean,
    clickhouse_type,
    identifier,
    json_safe,
    json_text,
    literal,
    reads_as_written,
    validity,
)
from prefloop.analytics.tables import UNFIT, TableLayout, typed_array
from prefloop_sdk import SchemaError
from prefloop_sdk.catalog import MAGIC, SchemaCatalog, SchemaVersion, bundled_catalog
from prefloop_sdk.compatibility import check_pair

__all__ = ["RowPlan", "RowPlans", "plan_rows", "select_rows"]

log = logging.getLogger("prefloop.sink")

HEADER_SIZE = 10  # C3 01 + the 8-byte fingerprint
TAIL = struct.Struct("<QI8s")  # offset, partition, check word
# drawn per process, so no body can know it; ASCII, as it appears in error messages
# (chDB answers the next query with a stale result after one it cannot decode)
CHECK = "".join(secrets.choice(string.ascii_letters) for _ in range(8)).encode()
SYNC = os.urandom(16)
EXTERNAL = "prefloop_events"  # the external table a server reads the container from
_FILE_PREFIX = "prefloop-sink-"  # the files the embedded store reads it from
_UNREADABLE = "a record cannot be read as its writer schema"
SETTINGS = (
    # toJSONString as json.dumps(separators=(",", ":")) writes it; Arrow as cast below
    "output_format_json_quote_64bit_integers = 0, "
    "output_format_json_escape_forward_slashes = 0, "
    "output_format_json_named_tuples_as_objects = 1, "
    "output_format_arrow_string_as_string = 0, "
    "output_format_arrow_low_cardinality_as_dictionary = 0, "
    "output_format_arrow_compression_method = 'none'"
)
_TEXT = ("string", "bytes", "enum", "fixed")
_INTEGERS = ("int", "long")


def _varint(n: int) -> bytes:
    """Avro's zigzag varint of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_bytes(data: bytes) -> bytes:
    return _varint(len(data)) + data


def ocf(schema_json: bytes, count: int, block: bytes) -> bytes:
    """An uncompressed Avro object container of one block: ``count`` records whose Avro
    binary, joined, is ``block``."""
    meta = (
        _varint(2)  # a map block of two entries, then the empty block that ends it
        + _avro_bytes(b"avro.schema")
        + _avro_bytes(schema_json)
        + _avro_bytes(b"avro.codec")
        + _avro_bytes(b"null")
        + b"\x00"
    )
    head = b"Obj\x01" + meta + SYNC + _varint(count) + _varint(len(block))
    return b"".join((head, block, SYNC))


# -- the plan of one table and one writer schema --------------------------------------


@dataclass(frozen=True)
class _Constant:
    value: pa.Array  # the column's one value


@dataclass(frozen=True)
class RowPlan:
    """How ClickHouse makes one table's rows from the records of one writer schema."""

    layout: TableLayout
    schema_json: bytes  # the wrapped writer schema, for the container's header
    structure: str  # the ClickHouse structure of the wrapped record, as far as it is read
    columns: tuple[str | _Constant, ...]  # per layout field: its SQL, or its value
    readable: tuple[str, ...]  # each record can be read: its check word is in place...
    valid: tuple[str, ...]  # ...and its values are what Python decodes (UTF-8 text)

    def container(self, values: Sequence[bytes], sources: Sequence[tuple[int, int]]) -> bytes:
        """The Avro container of the single-object encoded ``values``, each with its
        (partition, offset)."""
        tail = TAIL.pack
        block = b"".join(
            [
                value[HEADER_SIZE:] + tail(offset, partition, CHECK)
                for value, (partition, offset) in zip(values, sources, strict=True)
            ]
        )
        return ocf(self.schema_json, len(values), block)

    def check(self, source: str) -> str:
        """A query that fails if a record of ``source`` cannot be read as its writer
        schema, and else writes nothing but its answer. It reads little: ClickHouse
        skips every field on the way to the check word at the end of each record."""
        failing = f"throwIf(NOT ({' AND '.join(self.readable)}), {literal(_UNREADABLE)})"
        return f"SELECT max({failing}) FROM {source} FORMAT TSV"

    def select(self, source: str, checked: bool = False) -> str:
        """The SELECT of the layout's SQL columns from ``source`` (a table function or
        an external table) as Arrow, and last whether each record is valid. Unless
        :meth:`check` passed already (``checked``), it fails on a record that cannot be
        read."""
        listed = [
            f"{expr} AS c{i}"
            for i, expr in enumerate(c for c in self.columns if isinstance(c, str))
        ]
        listed.append(f"toBool({' AND '.join(self.valid) or 'true'}) AS valid")
        failing = f"throwIf(NOT ({' AND '.join(self.readable)}), {literal(_UNREADABLE)})"
        where = "" if checked else f"WHERE {failing} = 0 "
        return (
            f"SELECT {', '.join(listed)} FROM {source} {where}"
            f"SETTINGS {SETTINGS} FORMAT ArrowStream"
        )

    def rows(self, selected: pa.Table, count: int) -> pa.Table:
        """The layout's rows from what :meth:`select` gave for ``count`` records: the
        constant columns added, each column cast to the layout's type (range checked).
        Raises ValueError if a record is not valid."""
        if selected.num_rows != count:
            raise ValueError(f"ClickHouse read {selected.num_rows} records of {count}")
        valid = selected.column(selected.num_columns - 1)
        if valid.null_count or not pc.all(valid).as_py():
            raise ValueError("a record does not decode: a string of it is not UTF-8")
        columns = []
        at = 0
        for column, (_, kind, _) in zip(self.columns, self.layout.fields, strict=True):
            if isinstance(column, _Constant):
                columns.append(pa.repeat(column.value[0], count))
            else:
                columns.append(selected.column(at).cast(kind))
                at += 1
        return pa.Table.from_arrays(columns, schema=self.layout.schema)


def _writer_field(record: Mapping[str, Any], reader: Mapping[str, Any]) -> Any:
    """The writer's field a reader field reads: by name, else by one of its aliases."""
    names = {reader["name"], *reader.get("aliases", ())}
    return next((f for f in record["fields"] if f["name"] in names), None)


_NO_DEFAULT = object()
_TAIL_FIELDS = [
    {"name": "_pf_offset", "type": {"type": "fixed", "name": "prefloop.sink.U64", "size": 8}},
    {"name": "_pf_partition", "type": {"type": "fixed", "name": "prefloop.sink.U32", "size": 4}},
    {"name": "_pf_check", "type": {"type": "fixed", "name": "prefloop.sink.Check", "size": 8}},
]
_TAIL_STRUCTURE = [
    "_pf_offset FixedString(8)",
    "_pf_partition FixedString(4)",
    "_pf_check FixedString(8)",
]


def plan_rows(layout: TableLayout, writer: SchemaVersion, reader: SchemaVersion) -> RowPlan | None:
    """The plan that makes ``layout``'s rows from records ``writer`` wrote, as Python
    makes them from the records read as ``reader``; None where this module cannot."""
    w_schema, r_schema = writer.read_schema, reader.read_schema
    if any(f["name"].startswith("_pf_") for f in w_schema["fields"]):
        return None
    try:
        check_pair(writer, reader)  # else Python reads none of them: raw_events only
    except SchemaError:
        return None
    wn, rn = Names(w_schema), Names(r_schema)
    columns: list[str | _Constant] = []
    read: set[str] = set()  # the writer's top-level fields the SELECT reads
    for name, kind, nullable in layout.fields:
        if name == "_partition":
            columns.append("reinterpretAsUInt32(_pf_partition)")
            continue
        if name == "_offset":
            columns.append("reinterpretAsUInt64(_pf_offset)")
            continue
        path = _locate(r_schema, rn, name)
        if path is None:
            return None
        column = _column_of(path, w_schema, wn, rn, kind, nullable, read)
        if column is None:
            return None
        columns.append(column)
    structure = list(_TAIL_STRUCTURE)
    readable = [f"_pf_check = {literal(CHECK.decode())}"]
    valid: list[str] = []
    for field in w_schema["fields"]:
        # every string is checked, as Python's decode checks them all; a field neither
        # read nor checked is left out of the structure (ClickHouse skips it)
        ident, t = identifier(field["name"]), field["type"]
        texts, enums = validity(ident, t, wn, "string"), validity(ident, t, wn, "enum")
        if field["name"] not in read and not texts and not enums:
            continue
        ch_type = clickhouse_type(t, wn)
        if ch_type is None:
            if field["name"] in read:
                return None
            continue
        structure.append(f"{ident} {ch_type}")
        readable += enums
        valid += texts
    wrapped = {
        "type": "record",
        "name": "prefloop.sink.Row",
        "fields": [clean(f) for f in w_schema["fields"]] + _TAIL_FIELDS,
    }
    return RowPlan(
        layout=layout,
        schema_json=json.dumps(wrapped, separators=(",", ":")).encode(),
        structure=", ".join(structure),
        columns=tuple(columns),
        readable=tuple(readable),
        valid=tuple(valid),
    )


def _locate(record: Mapping[str, Any], names: Names, column: str) -> tuple[Any, ...] | None:
    """The reader fields column ``column`` is read from, as ``tables._path`` finds them
    in a decoded record: (the field,), or (a record field, its field) for a name
    flattened with '_'; () where there is neither; None where Python's choice would
    depend on the values (a map, or a union, whose name is a prefix of the column's)."""
    for field in record["fields"]:
        if field["name"] == column:
            return (field,)
    for field in record["fields"]:
        if not column.startswith(f"{field['name']}_"):
            continue
        t = names.resolve(field["type"])
        rest = column[len(field["name"]) + 1 :]
        if avro_kind(t) == "record":
            inner = next((f for f in t["fields"] if f["name"] == rest), None)
            if inner is not None:
                return (field, inner)
        elif avro_kind(t) in ("map", "union"):
            return None
    return ()


def _column_of(
    path: tuple[Any, ...],
    w_schema: Mapping[str, Any],
    wn: Names,
    rn: Names,
    kind: pa.DataType,
    nullable: bool,
    read: set[str],
) -> str | _Constant | None:
    """The column read along reader ``path``: its SQL over the writer's fields, or its
    one value where the writer lacks the field (the reader's default) or the reader
    has no such field (None). Notes in ``read`` the writer fields the SQL reads."""
    if not path:
        return _constant(None, kind, nullable)
    w_record: Any = w_schema
    expr = ""
    for depth, r_field in enumerate(path):
        w_field = _writer_field(w_record, r_field)
        if w_field is None:
            default = r_field.get("default", _NO_DEFAULT)
            if default is _NO_DEFAULT or depth + 1 < len(path):
                return None  # no default, or a whole record's: Python decides
            return _constant(default, kind, nullable)
        if depth == 0:
            expr = identifier(w_field["name"])
            read.add(w_field["name"])
        else:
            expr = f"tupleElement({expr}, {literal(w_field['name'])})"
        if depth + 1 < len(path):
            w_record = wn.resolve(w_field["type"])
            if avro_kind(w_record) != "record":
                return None
    if not reads_as_written(w_field["type"], wn, path[-1]["type"], rn):
        return None
    return _sql(expr, w_field["type"], wn, kind, nullable)


def _constant(value: Any, kind: pa.DataType, nullable: bool) -> _Constant | None:
    """The column's value in every row where Python reads ``value`` (a default)."""
    try:
        return _Constant(typed_array([value], kind, nullable))
    except UNFIT:
        return None  # Python leaves every record out: it decides


def _sql(expr: str, t: Any, names: Names, kind: pa.DataType, nullable: bool) -> str | None:
    """The SQL of a column of Arrow type ``kind`` from ``expr``, of Avro type ``t``
    (None where Python would fill it otherwise, or fail)."""
    base, optional = names.optional(t)
    avro = avro_kind(base)
    if pa.types.is_map(kind) or pa.types.is_list(kind):
        items = "values" if pa.types.is_map(kind) else "items"
        wanted = "map" if pa.types.is_map(kind) else "array"
        ok = avro == wanted and not optional and _plain(base[items], names)
        return expr if ok else None
    if optional and not nullable:  # a null takes the type's zero
        zero = "''" if pa.types.is_binary(kind) else "false" if pa.types.is_boolean(kind) else "0"
        expr = f"ifNull({expr}, {zero})"
    if pa.types.is_binary(kind):
        if avro in _TEXT:
            return expr
        if avro in ("array", "map", "record") and not optional and json_safe(base, names):
            return json_text(expr)
        return None
    if pa.types.is_boolean(kind):
        return expr if avro == "boolean" else None
    if pa.types.is_integer(kind):
        return expr if avro in _INTEGERS else None
    if pa.types.is_floating(kind):
        if avro in _INTEGERS:
            return f"toFloat64({expr})" if pa.types.is_float64(kind) else None
        return expr if avro in ("float", "double") else None
    if pa.types.is_timestamp(kind):  # milliseconds; Arrow casts int64 only
        return f"toInt64({expr})" if avro in _INTEGERS else None
    if pa.types.is_date32(kind):
        return expr if avro == "int" else None
    return None


def _plain(t: Any, names: Names) -> bool:
    """Whether ``t`` is a primitive an Array or Map column takes as it is."""
    base, optional = names.optional(t)
    return not optional and avro_kind(base) in (
        "string",
        "bytes",
        "int",
        "long",
        "double",
        "boolean",
    )


# -- running it -----------------------------------------------------------------------


class RowPlans:
    """The plan of each table and writer schema (by single-object header), made when
    first asked for; None where the records are decoded in Python.

    ``server``: the store is a ClickHouse server (it gets the containers as external
    data), else the embedded store on this machine (it reads them as files).
    """

    def __init__(
        self, layouts: Mapping[str, TableLayout], server: bool, catalog: SchemaCatalog | None = None
    ) -> None:
        self.layouts = layouts
        self.server = server
        self.catalog = catalog or bundled_catalog()
        self._plans: dict[tuple[str, bytes], RowPlan | None] = {}
        if not server:
            _remove_stale_files()

    def get(self, table: str, header: bytes) -> RowPlan | None:
        key = (table, bytes(header))
        if key not in self._plans:
            self._plans[key] = self._plan(table, key[1])
        return self._plans[key]

    def _plan(self, table: str, header: bytes) -> RowPlan | None:
        writer = self.catalog.by_fingerprint(header[2:]) if header[:2] == MAGIC else None
        layout = self.layouts.get(table)
        if writer is None or layout is None:
            return None
        plan = plan_rows(layout, writer, self.catalog.latest(writer.record_type))
        if plan is None:
            log.info(
                "%s v%d into %s: decoded in Python (its layout needs what ClickHouse's "
                "Avro reading is not told to do)",
                writer.record_type,
                writer.version,
                table,
            )
        return plan


def _folder() -> Path:
    """Where the containers the embedded store reads are written: /dev/shm, in memory,
    where there is one."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def _remove_stale_files(older_than_s: float = 3600.0) -> None:
    """Remove the containers a process killed mid-query left (no query runs for long)."""
    for path in _folder().glob(f"{_FILE_PREFIX}*.avro"):
        with suppress(OSError):
            if time.time() - path.stat().st_mtime > older_than_s:
                path.unlink()


def select_rows(
    client: Client,
    plan: RowPlan,
    values: Sequence[bytes],
    sources: Sequence[tuple[int, int]],
    server: bool,
) -> pa.Table:
    """The layout's rows of ``values`` (single-object encoded by the plan's writer
    schema), each at its (partition, offset), decoded by ClickHouse. Raises if a record
    does not decode or does not fit its column.

    A ClickHouse server (``server``) gets the container as external data with the
    query; the embedded store (chDB in this process, or its owner process on this
    machine) reads it as a file, in /dev/shm where there is one, checked first by a
    query of its own: chDB keeps what a query that failed had written (the Arrow
    schema) and hands it out with the next query's answer.
    """
    container = plan.container(values, sources)
    if server:
        data = ExternalData(
            file_name=EXTERNAL, data=container, fmt="Avro", structure=plan.structure
        )
        raw = client.raw_query(plan.select(EXTERNAL), external_data=data)
    else:
        path = _folder() / f"{_FILE_PREFIX}{uuid.uuid4().hex}.avro"
        path.write_bytes(container)
        try:
            source = f"file({literal(str(path))}, 'Avro', {literal(plan.structure)})"
            client.raw_query(plan.check(source))
            raw = client.raw_query(plan.select(source, checked=True))
        finally:
            with suppress(OSError):
                path.unlink()
    return plan.rows(pa.ipc.open_stream(raw).read_all(), len(values))
