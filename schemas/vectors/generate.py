"""Write schemas/vectors/vectors.json: events and their expected single-object bytes.

Every prefloop codec (the Python SDK, the TypeScript SDK, the HTTP collector) must
turn each vector's ``event`` into exactly its ``hex`` and decode ``hex`` into exactly
its ``decoded``, and must reject each ``invalid`` entry with the named error. The
bytes are computed here straight from the Avro specification with fastavro, not with
any prefloop codec, so the codecs are checked against an independent encoder.

    .venv/bin/python schemas/vectors/generate.py           # rewrite vectors.json
    .venv/bin/python schemas/vectors/generate.py --check   # exit 1 if it is stale

The JSON conventions are in ``NOTES`` below and at the top of the output.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent
OUTPUT = HERE / "vectors.json"
MAGIC = b"\xc3\x01"

NOTES = [
    "hex = c3 01 + CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form "
    "(8 bytes, little-endian as the Avro spec's single-object encoding requires) + Avro binary.",
    "event is what a user passes to encode; decoded is what decode returns, read with the "
    "latest version of the type (defaults filled in).",
    "Timestamps (timestamp-millis) are integers: milliseconds since the Unix epoch, UTC.",
    "Nullable values are plain (null or the value), never wrapped as {type: value}.",
    "bytes values are strings whose code points 0-255 are the bytes (Avro's JSON encoding).",
    "Arrays and maps are written as one block with a positive count, then a 0; map entries "
    "in the order the JSON object lists them.",
    "encode must write schema_version, not necessarily the latest version.",
]

# record type -> list of (vector name, event as a user writes it[, writer version: 1])
EVENTS: dict[str, list[tuple[Any, ...]]] = {
    "interaction": [
        (
            "full",
            {
                "interaction_id": "0b7e4a52-3c1f-4f7a-9d2e-1a6b5c4d3e2f",
                "response_id": "r-0002",
                "regenerates": "r-0001",
                "conversation_id": "c-42",
                "turn": 1,
                "ts": 1767225600123,
                "user_id": "u_9f86d081",
                "session_id": "s-7",
                "experiment_id": "exp-dpo-2026-01",
                "arm": "candidate",
                "model_version": "qwen-0.5b-dpo-3",
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Résumé tips? Keep it short ✓ 🚀"},
                ],
                "response": "Lead with results, quantify them, one page.",
                "latency_ms": 843,
                "prompt_tokens": 31,
                "completion_tokens": 12,
                "uncertainty": 0.625,
                "metadata": {"client": "web", "app_version": "2.3.1"},
            },
        ),
        (
            "minimal",
            {
                "interaction_id": "i-1",
                "response_id": "r-1",
                "conversation_id": "c-1",
                "turn": 0,
                "ts": 0,
                "user_id": "u",
                "session_id": "s",
                "model_version": "base",
                "messages": [],
                "response": "",
                "latency_ms": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
            },
        ),
    ],
    "feedback": [
        (
            "thumbs_down",
            {
                "event_id": "f-1",
                "ts": 1767225601000,
                "kind": "THUMBS",
                "interaction_id": "i-1",
                "response_id": "r-1",
                "conversation_id": "c-1",
                "user_id": "u_9f86d081",
                "session_id": "s-7",
                "value": -1.0,
                "text": None,
                "metadata": {},
            },
        ),
        (
            "comment_minimal",
            {
                "event_id": "f-2",
                "ts": 1767225602500,
                "kind": "COMMENT",
                "interaction_id": "i-1",
                "response_id": "r-1",
                "conversation_id": "c-1",
                "user_id": "u_9f86d081",
                "text": "Too long — and wrong about Kafka.",
            },
        ),
    ],
    "scored_interaction": [
        (
            "late_feedback",
            {
                "interaction_id": "i-1",
                "response_id": "r-1",
                "conversation_id": "c-1",
                "user_id": "u_9f86d081",
                "model_version": "qwen-0.5b-dpo-3",
                "experiment_id": "exp-dpo-2026-01",
                "arm": "control",
                "revision": 2,
                "implicit_score": -3.0,
                "signals": {
                    "continued": True,
                    "copied": False,
                    "regenerated": True,
                    "edited": False,
                    "reported": False,
                    "session_seconds": 21.5,
                },
                "rating": 2.0,
                "thumbs": -1,
                "settled_reason": "LATE_FEEDBACK",
                "ts": 1767225700000,
            },
        ),
    ],
    "annotation_task": [
        (
            "top_priority",
            {
                "task_id": "t-1",
                "interaction_id": "i-1",
                "response_id": "r-1",
                "conversation_id": "c-1",
                "model_version": "qwen-0.5b-dpo-3",
                "prompt": [{"role": "user", "content": "Explain DPO in one sentence."}],
                "response": "DPO fits the policy to preferences without a reward model.",
                "priority": 7.0,
                "reasons": ["new_topic", "uncertain", "edge_case"],
                "sampled_by": "TOP_PRIORITY",
                "window_start": 1767139200000,
                "window_end": 1767225600000,
                "ts": 1767225600500,
            },
        ),
    ],
    "annotation_result": [
        (
            "choice_b",
            {
                "result_id": "ar-1",
                "task_id": "t-1",
                "annotator_id": "ann-3",
                "prompt": [{"role": "user", "content": "Explain DPO in one sentence."}],
                "response_a": "DPO fits the policy to preferences without a reward model.",
                "response_b": "Direct Preference Optimization trains on chosen/rejected pairs.",
                "response_a_id": "r-1",
                "response_b_id": None,
                "choice": "B",
                "interaction_id": "i-1",
                "conversation_id": "c-1",
                "model_version": "qwen-0.5b-dpo-3",
                "ts": 1767229200000,
                "comment": None,
            },
        ),
        (
            "overlap_3",
            {
                "result_id": "ar-2",
                "task_id": "t-2",
                "annotator_id": "ann-5",
                "prompt": [{"role": "user", "content": "Résumé tips? Keep it short ✓ 🚀"}],
                "response_a": "Lead with results, quantify them, one page.",
                "response_b": "A résumé is a document that...",
                "response_a_id": "r-0002",
                "response_b_id": "r-0001",
                "choice": "A",
                "interaction_id": None,
                "conversation_id": "c-42",
                "model_version": "qwen-0.5b-dpo-3",
                "ts": 1767229260000,
                "comment": "A is shorter and concrete.",
                "overlap": 3,
            },
            2,
        ),
    ],
    "preference_pair": [
        (
            "regenerate",
            {
                "pair_id": "p-1",
                "prompt": [{"role": "user", "content": "Résumé tips? Keep it short ✓ 🚀"}],
                "chosen": "Lead with results, quantify them, one page.",
                "rejected": "A résumé is a document that...",
                "source": "REGENERATE",
                "weight": 1.0,
                "chosen_interaction_id": "i-2",
                "chosen_response_id": "r-0002",
                "rejected_interaction_id": "i-1",
                "rejected_response_id": "r-0001",
                "conversation_id": "c-42",
                "user_id": "u_9f86d081",
                "model_version": "qwen-0.5b-dpo-3",
                "source_offsets": [
                    {"topic": "prefloop.interactions", "partition": 3, "offset": 1048576},
                    {"topic": "prefloop.feedback", "partition": 3, "offset": 77},
                ],
                "ts": 1767225800000,
            },
        ),
    ],
    "model_event": [
        (
            "evaluated",
            {
                "event_id": "me-1",
                "ts": 1767312000000,
                "kind": "EVALUATED",
                "model_version": "qwen-0.5b-dpo-4",
                "parent_version": "qwen-0.5b-dpo-3",
                "experiment_id": None,
                "artifact_uri": "file:///var/prefloop/models/qwen-0.5b-dpo-4",
                "pair_count": 5000000000,
                "pair_ranges": [
                    {
                        "topic": "prefloop.preferences",
                        "partition": 0,
                        "first_offset": 0,
                        "last_offset": 2499999999,
                    }
                ],
                "metrics": {"win_rate": 0.5625, "dpo_loss": 0.4375},
                "detail": None,
            },
        ),
        (
            "training_failed",
            {
                "event_id": "me-2",
                "ts": 1767312600000,
                "kind": "TRAINING_FAILED",
                "model_version": "qwen-0.5b-dpo-5",
                "parent_version": "qwen-0.5b-dpo-4",
                "experiment_id": None,
                "artifact_uri": None,
                "pair_count": 1200,
                "pair_ranges": [
                    {
                        "topic": "prefloop.retrain-queue",
                        "partition": 3,
                        "first_offset": 100,
                        "last_offset": 1299,
                    }
                ],
                "metrics": {},
                "detail": "the Ray job failed: CUDA out of memory",
            },
            2,
        ),
    ],
    "exposure": [
        (
            "assigned",
            {
                "exposure_id": "x-1",
                "ts": 1767225599000,
                "experiment_id": "exp-dpo-2026-01",
                "user_id": "u_9f86d081",
                "arm": "candidate",
                "model_version": "qwen-0.5b-dpo-4",
                "bucket": 9999,
                "conversation_id": "c-42",
            },
        ),
    ],
    "dead_letter": [
        (
            "bad_magic",
            {
                "event_id": "dl-1",
                "ts": 1767225603000,
                "reason": "not Avro single-object encoded: expected the marker c3 01, got 7b 22",
                "error_type": "NotSingleObjectError",
                "source_topic": "prefloop.feedback",
                "source_partition": 5,
                "source_offset": 123456789012,
                "key": "c-1",
                "value": '{"kind": "THUMBS"}\u0000\u00ff',
                "writer_fingerprint": None,
                "consumer": "implicit-scorer",
            },
        ),
    ],
}


def latest_schemas() -> dict[str, tuple[int, dict[str, Any]]]:
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for path in SCHEMAS.glob("*/v*.avsc"):
        version = int(path.stem[1:])
        if version > found.get(path.parent.name, (0, {}))[0]:
            found[path.parent.name] = (version, load(path.parent.name, version))
    return found


def load(record_type: str, version: int) -> dict[str, Any]:
    raw = json.loads((SCHEMAS / record_type / f"v{version}.avsc").read_text(encoding="utf-8"))
    parsed: dict[str, Any] = parse_schema(strip_logical_types(raw))  # type: ignore[assignment]
    return parsed


def strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


def convert_bytes(schema: Any, value: Any, to_bytes: bool, named: dict[str, Any]) -> Any:
    """Map bytes values between Python bytes and JSON latin-1 strings, following ``schema``."""
    if isinstance(schema, str):
        if schema == "bytes" and value is not None:
            return value.encode("latin-1") if to_bytes else value.decode("latin-1")
        if schema in named:
            return convert_bytes(named[schema], value, to_bytes, named)
        return value
    if isinstance(schema, list):  # nullable: [null, T]
        if value is None:
            return None
        other = [s for s in schema if s != "null"]
        return convert_bytes(other[0], value, to_bytes, named) if len(other) == 1 else value
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        return {
            k: convert_bytes(fields[k], v, to_bytes, named) if k in fields else v
            for k, v in value.items()
        }
    if kind == "array":
        return [convert_bytes(schema["items"], v, to_bytes, named) for v in value]
    if kind == "map":
        return {k: convert_bytes(schema["values"], v, to_bytes, named) for k, v in value.items()}
    if kind in ("enum", "fixed"):
        named[schema["name"]] = schema
        return value
    return convert_bytes(kind, value, to_bytes, named)


def build() -> dict[str, Any]:
    latest = latest_schemas()
    vectors = []
    for record_type, events in EVENTS.items():
        reader = latest[record_type][1]
        for name, event, *rest in events:
            version = rest[0] if rest else 1
            writer = load(record_type, version)
            fp = fingerprint(to_parsing_canonical_form(writer), "CRC-64-AVRO")
            buf = BytesIO()
            buf.write(MAGIC + bytes.fromhex(fp))
            schemaless_writer(buf, writer, convert_bytes(writer, copy.deepcopy(event), True, {}))
            data = buf.getvalue()
            decoded = schemaless_reader(BytesIO(data[10:]), writer, reader)
            vectors.append(
                {
                    "name": f"{record_type}/{name}",
                    "record_type": record_type,
                    "schema_version": version,
                    "fingerprint": fp,
                    "event": event,
                    "decoded": convert_bytes(reader, decoded, False, {}),
                    "hex": data.hex(),
                }
            )
    first = bytes.fromhex(vectors[0]["hex"])
    invalid = [
        ("bad_magic", b"\xc3\x02" + first[2:], "NotSingleObjectError"),
        ("confluent_framing", b"\x00\x00\x00\x00\x01" + first[10:], "NotSingleObjectError"),
        ("empty", b"", "NotSingleObjectError"),
        ("header_cut_short", first[:6], "NotSingleObjectError"),
        ("unknown_fingerprint", MAGIC + bytes(8) + first[10:], "UnknownFingerprintError"),
        ("truncated_body", first[:-5], "CorruptEventError"),
        ("trailing_bytes", first + b"\x00", "CorruptEventError"),
    ]
    return {
        "notes": NOTES,
        "vectors": vectors,
        "invalid": [
            {"name": name, "hex": data.hex(), "error": error} for name, data, error in invalid
        ],
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if vectors.json is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run {Path(__file__).name} and commit the result")
            return 1
        print(f"{OUTPUT} is up to date")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(json.loads(text)['vectors'])} vectors to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
