"""Schema-compiled encoders: the codec's encoding, about 2.5x faster, for the client's hot path.

fastavro walks the schema for every record (about 10 us for an Interaction); the
client has about 7 us per event in all. ``compile_writer`` turns one schema version
into a Python function specialised to it, once, and that function writes exactly the
bytes ``Codec.encode`` writes (``tests/test_sdk_writers.py`` checks every record type
and every test vector against the codec).

The compiled function only takes the plain shapes (``str`` for strings, ``int`` in
range for ints, ms ``int`` for timestamps, ``None`` or a value for nullable fields);
for anything else it raises ``Fallback`` and ``FastEncoder.encode`` hands the record to
the codec, which either encodes it (an aware ``datetime``, a ``float`` the codec
accepts) or raises its ``InvalidRecordError``. So the accepted records and the bytes
are the codec's own; only the speed differs. A schema using something the compiler
does not handle (other logical types, unions of several non-null types, recursive
records) is simply not compiled: those types always go through the codec.
"""

from __future__ import annotations

import contextlib
import functools
import struct
from collections.abc import Callable, Mapping
from typing import Any

from .codec import EventCodec

__all__ = ["Fallback", "FastEncoder", "compile_writer"]

Writer = Callable[[Mapping[str, Any]], bytes]

_TABLE = 4096


class Fallback(Exception):
    """A value outside the compiled fast path: let the codec encode (or reject) it."""


def _varint(n: int) -> bytes:
    """Avro's zig-zag varint of a long."""
    if not -(1 << 63) <= n < (1 << 63):
        raise Fallback
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(n) for n in range(-_TABLE, _TABLE)]  # varints of -4096..4095


# Large longs are mostly timestamps, and events of one millisecond share theirs.
_cached_varint = functools.lru_cache(maxsize=256)(_varint)


def _long(n: int) -> bytes:
    if type(n) is not int:
        raise Fallback
    if -_TABLE <= n < _TABLE:
        return _SMALL[n + _TABLE]
    return _cached_varint(n)


def _int(n: int) -> bytes:
    if type(n) is not int or not -(1 << 31) <= n < (1 << 31):
        raise Fallback
    if -_TABLE <= n < _TABLE:
        return _SMALL[n + _TABLE]
    return _varint(n)


def _fail(*_: object) -> bytes:
    raise Fallback


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


class _Compiler:
    """Writes the source of one function that encodes one record schema."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, object] = {}
        self.named: dict[str, dict[str, Any]] = {}
        self.active: set[str] = set()  # records being compiled: recursion is not supported
        self.count = 0

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def const(self, value: object) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def value(self, schema: Any, expr: str, indent: int) -> list[str]:
        """Emit code writing ``expr`` as ``schema``; return the names of the bytes parts."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self.primitive(schema, expr, indent)
            if schema in self.named:
                return self.value(self.named[schema], expr, indent)
            raise NotImplementedError(f"unknown named type {schema}")
        if isinstance(schema, list):
            return self.union(schema, expr, indent)
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            if logical == "timestamp-millis" and kind == "long":
                return self.primitive("long", expr, indent)  # an int only; datetimes fall back
            raise NotImplementedError(f"logical type {logical}")
        if kind in _PRIMITIVES:
            return self.primitive(kind, expr, indent)
        name = schema.get("name")
        if kind == "record":
            if name in self.active:
                raise NotImplementedError(f"recursive record {name}")
            self.named.setdefault(name, schema)
            self.active.add(name)
            parts = self.record(schema, expr, indent)
            self.active.discard(name)
            return parts
        if kind == "enum":
            self.named.setdefault(name, schema)
            table = {s: _long(i) for i, s in enumerate(schema["symbols"])}
            out = self.var()
            self.emit(indent, f"{out} = {self.const(table)}[{expr}]")
            return [out]
        if kind == "fixed":
            self.named.setdefault(name, schema)
            out = self.var()
            self.emit(indent, f"{out} = {expr}")
            self.emit(indent, f"if type({out}) is not bytes or len({out}) != {schema['size']}:")
            self.emit(indent + 1, "raise Fallback")
            return [out]
        if kind == "array":
            return self.block(schema["items"], expr, indent, is_map=False)
        if kind == "map":
            return self.block(schema["values"], expr, indent, is_map=True)
        raise NotImplementedError(f"schema type {kind}")

    def primitive(self, kind: str, expr: str, indent: int) -> list[str]:
        if kind == "null":
            self.emit(indent, f"if {expr} is not None:")
            self.emit(indent + 1, "raise Fallback")
            return []
        out = self.var()
        if kind in ("string", "bytes"):
            data, size = self.var(), self.var()
            if kind == "string":  # among built-in types only str has .encode()
                self.emit(indent, f"{data} = {expr}.encode()")
            else:
                self.emit(indent, f"{data} = {expr}")
                self.emit(indent, f"if type({data}) is not bytes:")
                self.emit(indent + 1, "raise Fallback")
            self.emit(indent, f"{size} = len({data})")
            self.emit(indent, f"{out} = LEN[{size}] if {size} < {_TABLE} else varint({size})")
            return [out, data]
        if kind == "int":
            self.emit(indent, f"{out} = int_({expr})")
        elif kind == "long":
            self.emit(indent, f"{out} = long_({expr})")
        elif kind == "boolean":
            val = self.var()
            self.emit(indent, f"{val} = {expr}")
            self.emit(
                indent,
                f'{out} = b"\\x01" if {val} is True else b"\\x00" if {val} is False else fail()',
            )
        elif kind == "double":
            self.emit(indent, f"{out} = pack_d({expr})")
        elif kind == "float":
            self.emit(indent, f"{out} = pack_f({expr})")
        return [out]

    def union(self, branches: list[Any], expr: str, indent: int) -> list[str]:
        non_null = [b for b in branches if b != "null"]
        if len(branches) != 2 or len(non_null) != 1:
            raise NotImplementedError("unions other than null and one type")
        index_null = branches.index("null")
        tag_null, tag_value = _long(index_null), _long(1 - index_null)
        val, tag = self.var(), self.var()
        self.emit(indent, f"{val} = {expr}")
        self.emit(indent, f"if {val} is None:")
        self.emit(indent + 1, f"{tag} = {tag_null!r}")
        mark = len(self.lines)
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{tag} = {tag_value!r}")
        parts = self.value(non_null[0], val, indent + 1)
        # the None branch gives every part of the value branch an empty value
        self.lines[mark:mark] = ["    " * (indent + 1) + f"{p} = b''" for p in parts]
        return [tag, *parts]

    def block(self, inner: Any, expr: str, indent: int, *, is_map: bool) -> list[str]:
        seq, size, acc, out = self.var(), self.var(), self.var(), self.var()
        self.emit(indent, f"{seq} = {expr}")
        self.emit(indent, f"{size} = len({seq})")
        self.emit(indent, f"if {size}:")
        self.emit(indent + 1, f"{acc} = [long_({size})]")
        if is_map:
            key, item = self.var(), self.var()
            self.emit(indent + 1, f"for {key}, {item} in {seq}.items():")
            parts = self.primitive("string", key, indent + 2)
            parts += self.value(inner, item, indent + 2)
        else:
            item = self.var()
            self.emit(indent + 1, f"for {item} in {seq}:")
            parts = self.value(inner, item, indent + 2)
        self.emit(indent + 2, f"{acc} += ({', '.join(parts)},)")
        self.emit(indent + 1, f"{acc}.append(b'\\x00')")
        self.emit(indent + 1, f"{out} = b''.join({acc})")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{out} = b'\\x00'")
        return [out]

    def record(self, schema: dict[str, Any], expr: str, indent: int) -> list[str]:
        rec = self.var()
        self.emit(indent, f"{rec} = {expr}")
        parts: list[str] = []
        for field in schema["fields"]:
            name = field["name"]
            ftype = field["type"]
            nullable = isinstance(ftype, list) and "null" in ftype
            if "default" in field:
                default = field["default"]
                access = f"{rec}.get({name!r}, {self.const(default)})"
                if default is None:
                    access = f"{rec}.get({name!r})"
            elif nullable:  # fastavro writes a missing nullable field as null
                access = f"{rec}.get({name!r})"
            else:
                access = f"{rec}[{name!r}]"
            parts += self.value(ftype, access, indent)
        return parts


def compile_writer(schema: dict[str, Any], header: bytes) -> Writer:
    """A function that encodes a record of ``schema`` (a parsed write schema) as ``header`` + body.

    Raises ``NotImplementedError`` for a schema it cannot compile; the function it
    returns raises ``Fallback`` (or another exception) for a record off its fast path.
    """
    compiler = _Compiler()
    compiler.emit(1, "try:")
    parts = compiler.value(schema, "record", 2)
    # any failure (a missing key, a wrong type, a string that is not UTF-8 encodable...)
    # sends the record to the codec, which encodes it or names the problem
    compiler.emit(1, "except Exception:")
    compiler.emit(2, "raise Fallback from None")
    joined = ", ".join(["HEADER", *parts])
    compiler.emit(1, f"return b''.join(({joined},))")
    source = "def write(record):\n" + "\n".join(compiler.lines) + "\n"
    namespace: dict[str, Any] = {
        "HEADER": header,
        "LEN": [_varint(n) for n in range(_TABLE)],
        "varint": _varint,
        "long_": _long,
        "int_": _int,
        "fail": _fail,
        "pack_d": struct.Struct("<d").pack,
        "pack_f": struct.Struct("<f").pack,
        "Fallback": Fallback,
        **compiler.consts,
    }
    exec(compile(source, f"<prefloop_sdk writer {schema.get('name')}>", "exec"), namespace)
    write: Writer = namespace["write"]
    write.__doc__ = source  # the generated code, for the curious and for debugging
    return write


class FastEncoder:
    """Encodes with compiled writers where they apply and with ``codec`` otherwise.

    Only a plain ``Codec`` (Avro single-object encoding) has compiled writers; any
    other codec (``RegistryCodec``) is used as is.
    """

    def __init__(self, codec: EventCodec) -> None:
        from .codec import Codec

        self.codec = codec
        self._writers: dict[str, Writer] = {}
        if type(codec) is Codec and not codec.validate:
            for record_type in codec.catalog.record_types:
                sv = codec.writer(record_type)
                with contextlib.suppress(NotImplementedError):  # else: through the codec
                    self._writers[record_type] = compile_writer(sv.write_schema, sv.header)

    def encode(self, record_type: str, record: Mapping[str, Any]) -> bytes:
        """The codec's bytes for ``record``; the codec's errors for a bad one."""
        write = self._writers.get(record_type)
        if write is not None:
            try:
                return write(record)
            except Fallback:
                pass
        return self.codec.encode(record_type, record)

    def compiled(self, record_type: str) -> Writer | None:
        """The compiled writer of a record type (a folder name), if it has one."""
        return self._writers.get(record_type)
