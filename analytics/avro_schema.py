"""How ClickHouse's Avro input format reads a writer schema, beside what Python reads.

The schemas are as fastavro parses them (full names, a named type defined once and
referred to by name after). :func:`clickhouse_type` is the ClickHouse type a field is
read into (an enum as its symbol, a union of null and one type as Nullable);
:func:`reads_as_written` whether Python, reading with a later version, gets the value
written; :func:`json_safe` whether ``toJSONString`` writes a value's JSON text as
``json.dumps`` does, after :data:`JSON_FIXES`; :func:`validity` what SQL tells a value
Python's decode would refuse.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "JSON_FIXES",
    "Names",
    "avro_kind",
    "clean",
    "clickhouse_type",
    "identifier",
    "json_safe",
    "json_text",
    "literal",
    "reads_as_written",
    "validity",
]

_PRIMITIVES = {
    "string": "String",
    "bytes": "String",
    "int": "Int32",
    "long": "Int64",
    "float": "Float32",
    "double": "Float64",
    "boolean": "Bool",
}
_NAMED = ("record", "error", "enum", "fixed")

# ClickHouse's JSON escapes that json.dumps(ensure_ascii=False) writes otherwise:
# uppercase hex in \u00XX, and U+2028/U+2029 escaped. JSON text holds no raw control
# character, so an escaped backslash is parked as NUL while the others are replaced:
# the text of a string (its own "\u2028", escaped as "\\u2028") is left alone.
JSON_FIXES = (
    ("\\\\", "\0"),
    *((f"\\u00{c:02X}", f"\\u00{c:02x}") for c in (0x0B, 0x0E, 0x0F, *range(0x1A, 0x20))),
    ("\\u2028", "\u2028"),
    ("\\u2029", "\u2029"),
    ("\0", "\\\\"),
)


def literal(text: str) -> str:
    """A ClickHouse string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
    return f"'{escaped}'"


def identifier(name: str) -> str:
    """A ClickHouse identifier, back-quoted."""
    return "`" + name.replace("`", "``") + "`"


def json_text(expr: str) -> str:
    """The JSON text of ``expr``, as json.dumps writes it."""
    text = f"toJSONString({expr})"
    fixed = text
    for escaped, wanted in JSON_FIXES:
        fixed = f"replaceAll({fixed}, {literal(escaped)}, {literal(wanted)})"
    return f"if(position({text}, {literal(chr(92) + 'u')}) > 0, {fixed}, {text})"


class Names:
    """The named types of one parsed schema, by full name."""

    def __init__(self, schema: Any) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self._collect(schema)

    def _collect(self, t: Any) -> None:
        if isinstance(t, list):
            for branch in t:
                self._collect(branch)
        elif isinstance(t, dict):
            if t.get("type") in _NAMED and "name" in t:
                self.types.setdefault(t["name"], t)
            for field in t.get("fields", ()):
                self._collect(field["type"])
            for key in ("items", "values"):
                if key in t:
                    self._collect(t[key])

    def resolve(self, t: Any) -> Any:
        """``t`` with a reference to a named type, or a ``{"type": "long"}``, replaced by
        the type itself."""
        while True:
            if isinstance(t, str) and t in self.types:
                t = self.types[t]
            elif isinstance(t, dict) and t.get("type") not in (*_NAMED, "array", "map"):
                t = t["type"]
            else:
                return t

    def optional(self, t: Any) -> tuple[Any, bool]:
        """(the type resolved, whether it is a union of null and that type); a union of
        anything else stays a list."""
        t = self.resolve(t)
        if isinstance(t, list) and len(t) == 2:
            others = [b for b in t if self.resolve(b) != "null"]
            if len(others) == 1:
                return self.resolve(others[0]), True
        return t, False


def avro_kind(t: Any) -> str:
    """'string', 'int', ..., 'record', 'enum', 'fixed', 'array', 'map' or 'union'."""
    if isinstance(t, list):
        return "union"
    if isinstance(t, dict):
        return "record" if t["type"] == "error" else str(t["type"])
    return str(t)


def clickhouse_type(t: Any, names: Names, seen: frozenset[str] = frozenset()) -> str | None:
    """The ClickHouse type ClickHouse's Avro reader reads ``t`` into; None if none."""
    base, optional = names.optional(t)
    kind = avro_kind(base)
    if optional:
        if kind not in (*_PRIMITIVES, "enum", "fixed"):
            return None  # there is no Nullable(Tuple), Nullable(Array), Nullable(Map)
        inner = clickhouse_type(base, names, seen)
        return None if inner is None else f"Nullable({inner})"
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "enum":
        return "String"  # the symbol, as Python reads it
    if kind == "fixed":
        return f"FixedString({int(base['size'])})"
    if kind == "record":
        if base["name"] in seen:
            return None  # recursive
        parts = []
        for field in base["fields"]:
            inner = clickhouse_type(field["type"], names, seen | {base["name"]})
            if inner is None:
                return None
            parts.append(f"{identifier(field['name'])} {inner}")
        return f"Tuple({', '.join(parts)})"
    if kind in ("array", "map"):
        inner = clickhouse_type(base["items" if kind == "array" else "values"], names, seen)
        if inner is None:
            return None
        return f"Array({inner})" if kind == "array" else f"Map(String, {inner})"
    return None


def _shape(t: Any, names: Names, seen: frozenset[str] = frozenset()) -> Any:
    """What of ``t`` decides the values Python reads: names, order, types (not docs)."""
    t = names.resolve(t)
    if isinstance(t, list):
        return ("union", *(_shape(b, names, seen) for b in t))
    kind = avro_kind(t)
    if kind == "record":
        if t["name"] in seen:
            return ("recursive", t["name"])
        inner = seen | {t["name"]}
        return ("record", *((f["name"], _shape(f["type"], names, inner)) for f in t["fields"]))
    if kind == "enum":
        return ("enum", frozenset(t["symbols"]))
    if kind == "fixed":
        return ("fixed", t["size"])
    if kind in ("array", "map"):
        return (kind, _shape(t["items" if kind == "array" else "values"], names, seen))
    return kind


def reads_as_written(writer: Any, wn: Names, reader: Any, rn: Names) -> bool:
    """Whether Python reads a value of ``writer`` type, into ``reader`` type, as the
    value written: the same shape, where an enum's reader may know more symbols and the
    reader may only add null to the type (no promotion, no field filled by default)."""
    w, r = _shape(writer, wn), _shape(reader, rn)
    optional = isinstance(r, tuple) and r[0] == "union" and len(r) == 3 and "null" in r[1:]
    if optional and w != r and not (isinstance(w, tuple) and w[0] == "union"):
        r = r[1] if r[2] == "null" else r[2]  # the reader's union takes the plain value
    return _within(w, r)


def _within(w: Any, r: Any) -> bool:
    if w == r:
        return True
    if not (isinstance(w, tuple) and isinstance(r, tuple)) or w[0] != r[0]:
        return False
    if w[0] == "enum":
        return bool(w[1] <= r[1])
    if w[0] in ("union", "array", "map") and len(w) == len(r):
        return all(_within(a, b) for a, b in zip(w[1:], r[1:], strict=True))
    if w[0] == "record" and len(w) == len(r):
        return all(a[0] == b[0] and _within(a[1], b[1]) for a, b in zip(w[1:], r[1:], strict=True))
    return False


def json_safe(t: Any, names: Names, seen: frozenset[str] = frozenset()) -> bool:
    """Whether toJSONString writes ``t``'s values as json.dumps does: no floats (1.0 is
    1 there), no bytes (json.dumps refuses them)."""
    base, _ = names.optional(t)
    kind = avro_kind(base)
    if kind in ("string", "enum", "int", "long", "boolean", "null"):
        return True
    if kind == "record":
        inner = seen | {base["name"]}
        return base["name"] not in seen and all(
            json_safe(f["type"], names, inner) for f in base["fields"]
        )
    if kind in ("array", "map"):
        return json_safe(base["items" if kind == "array" else "values"], names, seen)
    return False


def validity(
    expr: str, t: Any, names: Names, kind: str, depth: int = 0, seen: frozenset[str] = frozenset()
) -> list[str]:
    """Conditions on ``expr`` (of Avro type ``t``) that Python's decode needs of each
    value of Avro ``kind`` in it: a 'string' is UTF-8; an 'enum' index names a symbol
    (ClickHouse fails to read it otherwise; a symbol is never empty). A recursive record
    is not followed (ClickHouse does not read one)."""
    base, optional = names.optional(t)
    found = avro_kind(base)
    if found == kind == "string":
        return [f"isValidUTF8(ifNull({expr}, ''))" if optional else f"isValidUTF8({expr})"]
    if found == kind == "enum":
        return [f"notEmpty(ifNull({expr}, ''))" if optional else f"notEmpty({expr})"]
    var = f"x{depth}"
    if found == "record" and base["name"] not in seen:
        inner = seen | {base["name"]}
        return [
            check
            for f in base["fields"]
            for check in validity(
                f"tupleElement({expr}, {literal(f['name'])})", f["type"], names, kind, depth, inner
            )
        ]
    if found == "array":
        items = validity(var, base["items"], names, kind, depth + 1, seen)
        return [f"arrayAll({var} -> {' AND '.join(items)}, {expr})"] if items else []
    if found == "map":
        checks = []
        if kind == "string":
            checks.append(f"arrayAll({var} -> isValidUTF8({var}), mapKeys({expr}))")
        values = validity(var, base["values"], names, kind, depth + 1, seen)
        if values:
            checks.append(f"arrayAll({var} -> {' AND '.join(values)}, mapValues({expr}))")
        return checks
    return []


def clean(t: Any) -> Any:
    """A parsed schema as plain Avro JSON: fastavro's own keys and the docs left out."""
    if isinstance(t, dict):
        return {k: clean(v) for k, v in t.items() if not k.startswith("__") and k != "doc"}
    if isinstance(t, list):
        return [clean(v) for v in t]
    return t
