"""The event codec vs raw fastavro on a pre-parsed schema.

Raw baseline, per operation: ``schemaless_writer`` into a fresh BytesIO and
``schemaless_reader`` from one, with the schema parsed once, the same schema
the codec uses (decoding: its read schema, timestamps as plain ints). The
codec adds the single-object header, the writer lookup by fingerprint and the
checks. ROUNDS alternating runs of N operations each; ratios of medians.
"""

from __future__ import annotations

import json
import os
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from common import median, write_section
from fastavro import schemaless_reader, schemaless_writer

from prefloop_sdk import default_codec

N = int(os.environ.get("BENCH_CODEC_N", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
VECTORS = Path(__file__).parents[1] / "schemas" / "vectors" / "vectors.json"
CASES = ["interaction/full", "feedback/thumbs_down", "exposure/assigned"]


def per_second(fn: Any, arg: Any) -> float:
    started = time.perf_counter()
    for _ in range(N):
        fn(arg)
    return N / (time.perf_counter() - started)


def measure(codec: Any, record_type: str, event: dict[str, Any]) -> dict[str, float]:
    """Median ops/s of raw and codec encode and decode for one event."""
    sv = codec.writer(record_type)
    data = codec.encode(record_type, event)
    body = data[10:]

    def raw_encode(record: Any) -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, sv.write_schema, record)
        return buf.getvalue()

    def raw_decode(payload: bytes) -> Any:
        return schemaless_reader(BytesIO(payload), sv.read_schema, None)

    def codec_encode(record: Any) -> bytes:
        return bytes(codec.encode(record_type, record))

    assert raw_decode(body) == codec.decode(data)[1]
    samples: dict[str, list[float]] = {k: [] for k in ("re", "ce", "rd", "cd")}
    for _ in range(ROUNDS):
        samples["re"].append(per_second(raw_encode, event))
        samples["ce"].append(per_second(codec_encode, event))
        samples["rd"].append(per_second(raw_decode, body))
        samples["cd"].append(per_second(codec.decode, data))
    return {"size": len(data), **{k: median(v) for k, v in samples.items()}}


def main() -> None:
    codec = default_codec()
    vectors = {v["name"]: v for v in json.loads(VECTORS.read_text())["vectors"]}
    rows = []
    for name in CASES:
        m = measure(codec, vectors[name]["record_type"], vectors[name]["event"])
        rows.append(
            (
                name,
                int(m["size"]),
                m["re"],
                m["ce"],
                m["ce"] / m["re"],
                m["rd"],
                m["cd"],
                m["cd"] / m["rd"],
            )
        )
        print(f"  {name}: encode {m['ce'] / m['re']:.2f}x, decode {m['cd'] / m['rd']:.2f}x")
    table = "\n".join(
        f"| {n} | {size} | {re:,.0f} | {ce:,.0f} | **{er:.2f}x** | {rd:,.0f} | {cd:,.0f} | "
        f"**{dr:.2f}x** |"
        for n, size, re, ce, er, rd, cd, dr in rows
    )
    body = f"""
Codec vs raw fastavro (pre-parsed schema), one core, {N:,} operations per run, median of
{ROUNDS} alternating runs; ratio = codec ops/s / raw ops/s (target at least 0.9x).

| event | bytes | raw encode/s | codec encode/s | ratio | raw decode/s | codec decode/s | ratio |
|---|---|---|---|---|---|---|---|
{table}
"""
    write_section("Codec: encode and decode vs raw fastavro", body)
    print(body)


if __name__ == "__main__":
    main()
