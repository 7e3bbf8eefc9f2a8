"""The Avro container and the SQL the sink hands ClickHouse, checked without ClickHouse
(tests/integration/test_sink.py runs them against the embedded store)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastavro import reader as container_reader
from streams_events import interaction

from prefloop.analytics import avro_rows
from prefloop.analytics.avro_rows import (
    CHECK,
    TAIL,
    RowPlans,
    plan_rows,
    select_rows,
)
from prefloop.analytics.avro_schema import JSON_FIXES
from prefloop.analytics.tables import TableLayout
from prefloop_sdk import bundled_catalog, decode, encode
from prefloop_sdk.catalog import SchemaVersion

STRING = pa.binary()
SCORES = TableLayout(
    "scores",
    (
        ("response_id", STRING, False),
        ("arm", STRING, False),
        ("revision", pa.uint32(), False),
        ("signals_copied", pa.bool_(), False),
        ("signals_session_seconds", pa.float64(), True),
        ("rating", pa.float64(), True),
        ("settled_reason", STRING, False),
        ("ts", pa.timestamp("ms", tz="UTC"), False),
        ("not_in_any_version", STRING, False),
        ("_partition", pa.uint32(), False),
        ("_offset", pa.uint64(), False),
    ),
)
INTERACTIONS = TableLayout(
    "interactions",
    (
        ("interaction_id", STRING, False),
        ("messages", STRING, False),
        ("metadata", pa.map_(pa.string(), STRING), False),
        ("_partition", pa.uint32(), False),
        ("_offset", pa.uint64(), False),
    ),
)


def latest(record_type: str) -> SchemaVersion:
    return bundled_catalog().latest(record_type)


def version(record_type: str, fields: list[dict[str, Any]], v: int = 1) -> SchemaVersion:
    raw = {"type": "record", "name": "T", "namespace": "test", "fields": fields}
    return SchemaVersion.from_json(record_type, v, raw)


def test_the_container_holds_each_body_then_its_kafka_position_and_the_check_word() -> None:
    plan = plan_rows(INTERACTIONS, latest("interaction"), latest("interaction"))
    assert plan is not None
    values = [encode("interaction", interaction(f"r{i}", turn=i)) for i in range(3)]
    sources = [(0, 7), (5, 2**40), (1, 0)]
    records = list(container_reader(io.BytesIO(plan.container(values, sources))))
    assert len(records) == 3
    for record, value, (partition, offset) in zip(records, values, sources, strict=True):
        tail = {name: record.pop(name) for name in ("_pf_offset", "_pf_partition", "_pf_check")}
        assert record == decode(value)[1]  # the writer's fields, as they were
        packed = TAIL.pack(offset, partition, CHECK)
        assert tail == {"_pf_offset": packed[:8], "_pf_partition": packed[8:12], "_pf_check": CHECK}
    assert plan.container([], []).startswith(b"Obj\x01")


def test_the_select_reads_each_column_as_the_layout_rules_say() -> None:
    plan = plan_rows(SCORES, latest("scored_interaction"), latest("scored_interaction"))
    assert plan is not None
    sql = plan.select("src")
    assert "tupleElement(`signals`, 'copied')" in sql  # a nested record's field
    assert "tupleElement(`signals`, 'session_seconds') AS" in sql  # Nullable: NULL stays
    assert "ifNull(`arm`, '') AS" in sql  # a null into a String column: ''
    assert "`rating` AS" in sql
    assert "toInt64(`ts`) AS" in sql  # milliseconds, cast to the timestamp in Arrow
    assert "reinterpretAsUInt64(_pf_offset)" in sql
    assert "not_in_any_version" not in sql  # a constant, added in Arrow
    # a record that cannot be read fails the query: its check word, its enum symbols
    checks = re.search(r"WHERE throwIf\(NOT \((.*?)\), ", sql)
    assert checks is not None
    assert f"_pf_check = '{CHECK.decode()}'" in checks.group(1)
    assert "notEmpty(`settled_reason`)" in checks.group(1)
    assert "isValidUTF8(`response_id`)" in sql  # a string that is not UTF-8: not valid
    assert sql.endswith("FORMAT ArrowStream")
    # the same checks alone, answering nothing but a number; then the select without them
    assert checks.group(1) in plan.check("src") and plan.check("src").endswith("FORMAT TSV")
    assert "throwIf" not in plan.select("src", checked=True)

    interactions = plan_rows(INTERACTIONS, latest("interaction"), latest("interaction"))
    assert interactions is not None
    columns = interactions.select("src")
    assert "toJSONString(`messages`)" in columns  # an array of records into a String column
    assert "`metadata` AS" in columns  # a map into a Map column, as it is
    assert "Array(Tuple(`role` String, `content` String))" in interactions.structure


def test_rows_add_the_constants_and_cast_with_range_checks() -> None:
    plan = plan_rows(SCORES, latest("scored_interaction"), latest("scored_interaction"))
    assert plan is not None
    sql_columns = [c for c in plan.columns if isinstance(c, str)]
    n = len(sql_columns)

    def selected(revision: int) -> pa.Table:
        values: list[pa.Array] = []
        for expr in sql_columns:
            if "revision" in expr:
                values.append(pa.array([revision], pa.int32()))
            elif "copied" in expr:
                values.append(pa.array([True]))
            elif "session_seconds" in expr or "rating" in expr:
                values.append(pa.array([None], pa.float64()))
            elif "ts" in expr:
                values.append(pa.array([1_700_000_000_000], pa.int64()))
            elif "_partition" in expr:
                values.append(pa.array([3], pa.uint32()))
            elif "_offset" in expr:
                values.append(pa.array([9], pa.uint64()))
            else:
                values.append(pa.array([b"x"]))
        values.append(pa.array([True]))  # every record valid
        return pa.Table.from_arrays(values, names=[f"c{i}" for i in range(n)] + ["valid"])

    rows = plan.rows(selected(2), 1).to_pylist()
    assert rows[0]["revision"] == 2 and rows[0]["not_in_any_version"] == b""
    assert rows[0]["_partition"] == 3 and rows[0]["_offset"] == 9
    with pytest.raises(pa.ArrowInvalid):  # -1 into UInt32, as Python's path refuses it
        plan.rows(selected(-1), 1)
    with pytest.raises(ValueError, match="read 1 records of 2"):
        plan.rows(selected(2), 2)
    invalid = selected(2)
    invalid = invalid.set_column(n, "valid", pa.array([False]))
    with pytest.raises(ValueError, match="UTF-8"):
        plan.rows(invalid, 1)


def test_a_field_the_writer_lacks_takes_the_readers_default() -> None:
    layout = TableLayout("t", (("a", STRING, False), ("added", pa.uint32(), False)))
    old = version("x", [{"name": "a", "type": "string"}])
    new = version(
        "x",
        [{"name": "a", "type": "string"}, {"name": "added", "type": "int", "default": 7}],
        2,
    )
    plan = plan_rows(layout, old, new)
    assert plan is not None
    assert next(c for c in plan.columns if not isinstance(c, str)).value.to_pylist() == [7]
    assert "added" not in plan.select("src")


@pytest.mark.parametrize(
    ("layout", "writer", "reader"),
    [
        # a promotion between versions: Python reads a float where an int was written
        (
            (("n", pa.float64(), False),),
            [{"name": "n", "type": "int"}],
            [{"name": "n", "type": "double"}],
        ),
        # floats in JSON text (ClickHouse writes 1.0 as 1)
        (
            (("xs", STRING, False),),
            [{"name": "xs", "type": {"type": "array", "items": "double"}}],
            None,
        ),
        # a nullable record (ClickHouse has no Nullable(Tuple))
        (
            (("r_a", STRING, False),),
            [
                {
                    "name": "r",
                    "type": [
                        "null",
                        {
                            "type": "record",
                            "name": "R",
                            "fields": [{"name": "a", "type": "string"}],
                        },
                    ],
                }
            ],
            None,
        ),
        # a map whose name prefixes the column: Python picks by the first record's keys
        (
            (("tags_client", STRING, False),),
            [{"name": "tags", "type": {"type": "map", "values": "string"}}],
            None,
        ),
        # a field the reader needs and the writer lacks, with no default: Python fails
        (
            (("a", STRING, False),),
            [{"name": "a", "type": "string"}],
            [{"name": "a", "type": "string"}, {"name": "b", "type": "string"}],
        ),
    ],
)
def test_what_the_sql_does_not_express_is_left_to_python(
    layout: tuple[Any, ...], writer: list[dict[str, Any]], reader: list[dict[str, Any]] | None
) -> None:
    w = version("x", writer)
    r = version("x", reader, 2) if reader is not None else w
    assert plan_rows(TableLayout("t", layout), w, r) is None


def clickhouse_json(value: Any) -> str:
    """JSON text as ClickHouse's toJSONString writes it (output_format_json_escape_
    forward_slashes off): short escapes as json.dumps, other control characters as
    uppercase \\u00XX, U+2028 and U+2029 escaped."""
    if isinstance(value, list):
        return "[" + ",".join(clickhouse_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{clickhouse_json(k)}:{clickhouse_json(v)}" for k, v in value.items())
            + "}"
        )
    short = {
        '"': '\\"',
        "\\": "\\\\",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }
    out = []
    for char in value:
        if char in short:
            out.append(short[char])
        elif ord(char) < 0x20 or char in "\u2028\u2029":
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def test_the_json_fixes_give_back_what_json_dumps_writes() -> None:
    odd = "".join(chr(c) for c in range(0x20)) + '\u2028\u2029 \\u2028 \\\\u001B \\ " / é 🚀'
    value = [{"role": odd, "content": [odd, "\\u001f\u2028"]}, {"k": "\\\\\u2029"}]
    text = clickhouse_json(value)
    assert text != json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for escaped, wanted in JSON_FIXES:
        text = text.replace(escaped, wanted)
    assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_plans_are_made_once_per_table_and_writer_and_none_for_unknown_headers() -> None:
    plans = RowPlans({"scores": SCORES}, server=False)
    header = latest("scored_interaction").header
    first = plans.get("scores", header)
    assert first is not None and plans.get("scores", header) is first
    assert plans.get("scores", b"\xc3\x01" + bytes(8)) is None
    assert plans.get("feedback", latest("feedback").header) is None  # no such layout


class Answering:
    """A client that notes the query and answers with the Arrow stream of ``table``."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.calls: list[tuple[str, Any]] = []

    def raw_query(self, query: str, external_data: Any = None) -> bytes:
        self.calls.append((query, external_data))
        if query.endswith("FORMAT TSV"):  # the check: nothing failed
            return b"0\n"
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.table.schema) as writer:
            writer.write_table(self.table)
        return bytes(sink.getvalue())


def test_a_server_gets_the_container_as_external_data_the_embedded_store_as_a_file() -> None:
    layout = TableLayout("t", (("interaction_id", STRING, False), ("_offset", pa.uint64(), False)))
    plan = plan_rows(layout, latest("interaction"), latest("interaction"))
    assert plan is not None
    values = [encode("interaction", interaction("r1"))]
    answer = pa.table({"c0": [b"i-r1"], "c1": pa.array([4], pa.uint64()), "valid": [True]})

    server = Answering(answer)
    rows = select_rows(server, plan, values, [(0, 4)], server=True)  # type: ignore[arg-type]
    assert rows.to_pylist() == [{"interaction_id": b"i-r1", "_offset": 4}]
    ((query, data),) = server.calls  # one query: the data goes once
    assert query == plan.select("prefloop_events")
    (external,) = data.files
    assert (external.name, external.fmt, external.structure) == (
        "prefloop_events",
        "Avro",
        plan.structure,
    )
    assert external.data == plan.container(values, [(0, 4)])

    embedded = Answering(answer)
    select_rows(embedded, plan, values, [(0, 4)], server=False)  # type: ignore[arg-type]
    (check, _), (query, data) = embedded.calls
    assert data is None
    path = re.search(r"file\('([^']+)', 'Avro'", query)
    assert path is not None and not Path(path.group(1)).exists()  # removed after
    source = query[query.index("file(") : query.index(" SETTINGS")]
    assert (check, query) == (plan.check(source), plan.select(source, checked=True))


def test_a_nested_field_the_writer_lacks_takes_its_default_a_whole_record_is_left_to_python() -> (
    None
):
    def signals(*names: str) -> dict[str, Any]:
        fields = [{"name": n, "type": "boolean", "default": True} for n in names]
        return {"name": "s", "type": {"type": "record", "name": "S", "fields": fields}}

    layout = TableLayout("t", (("s_a", pa.bool_(), False), ("s_b", pa.bool_(), False)))
    new = version("x", [signals("a", "b")], 2)
    plan = plan_rows(layout, version("x", [signals("a")]), new)
    assert plan is not None
    assert "tupleElement(`s`, 'a')" in plan.select("src")
    assert next(c for c in plan.columns if not isinstance(c, str)).value.to_pylist() == [True]
    with_default = {**signals("a", "b"), "default": {"a": False, "b": False}}
    newer = version("x", [{"name": "n", "type": "int"}, with_default], 2)
    assert plan_rows(layout, version("x", [{"name": "n", "type": "int"}]), newer) is None


def test_a_recursive_record_is_left_to_python() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "label", "type": "string"}, {"name": "next", "type": ["null", "Node"]}],
    }
    writer = version("x", [{"name": "id", "type": "string"}, {"name": "tree", "type": node}])
    layout = TableLayout("t", (("id", STRING, False), ("tree", STRING, False)))
    assert plan_rows(layout, writer, writer) is None  # no ClickHouse type for it
    only_id = plan_rows(TableLayout("t", (("id", STRING, False),)), writer, writer)
    assert only_id is not None and "tree" not in only_id.structure  # not read, skipped


def test_containers_a_killed_process_left_are_removed_when_plans_are_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(avro_rows, "_folder", lambda: tmp_path)
    stale, fresh, other = (
        tmp_path / n for n in ("prefloop-sink-a.avro", "prefloop-sink-b.avro", "x.avro")
    )
    for path in (stale, fresh, other):
        path.write_bytes(b"Obj\x01")
    os.utime(stale, (0, 0))
    os.utime(other, (0, 0))
    RowPlans({}, server=True)  # a server gets no files
    assert stale.exists()
    RowPlans({}, server=False)
    assert not stale.exists() and fresh.exists() and other.exists()
