"""The offline sampler: an export of scored interactions in, annotation tasks out.

Input: JSON Lines, one scored response per line (:mod:`prefloop.streams.candidates`):
the fields of an Interaction (interaction/v1) plus optional ``implicit_score``
(number or null), ``reported`` (bool) and ``rating``. Required per line:
``interaction_id``, ``response_id``, ``conversation_id``, ``model_version`` and
``response`` (strings), ``ts`` (int ms since the epoch) and ``messages`` (a list of
``{"role", "content"}`` strings); ``uncertainty`` is a number or null when present.
Blank lines are skipped. Example line::

    {"interaction_id": "i-1", "response_id": "r-1", "conversation_id": "c-1",
     "model_version": "v1", "ts": 1700000000000, "response": "Sure: ...",
     "messages": [{"role": "user", "content": "Explain quantum computing"}],
     "implicit_score": 4.0, "reported": false, "uncertainty": 0.7}

Output: JSON Lines, one AnnotationTask (annotation_task/v1) per line, enum symbols as
strings, timestamps as int ms. The whole file is one sampling window, so the same
input, count and seed always give the same tasks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.streams.config import SamplingConfig
from prefloop.streams.exceptions import SampleFileError
from prefloop.streams.records import Record
from prefloop.streams.sampling import Sampler

__all__ = ["SampleReport", "read_scored_responses", "sample_file"]

_STRINGS = ("interaction_id", "response_id", "conversation_id", "model_version", "response")
_FORMAT = "see prefloop.streams.offline for the line format"


@dataclass(frozen=True)
class SampleReport:
    """What :func:`sample_file` did."""

    lines: int
    tasks: int
    top_priority: int
    uniform: int
    out: Path


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problem(obj: Any) -> str | None:
    """What is wrong with one decoded line, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in (*_STRINGS, "ts", "messages") if k not in obj]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    for name in _STRINGS:
        if not isinstance(obj[name], str):
            return f"field {name} must be a string, not {json.dumps(obj[name])}"
    if not isinstance(obj["ts"], int) or isinstance(obj["ts"], bool):
        return f"field ts must be an integer (ms since the epoch), not {json.dumps(obj['ts'])}"
    messages = obj["messages"]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        return 'field messages must be a list of {"role": string, "content": string}'
    for name in ("implicit_score", "uncertainty", "rating"):
        if obj.get(name) is not None and not _is_number(obj[name]):
            return f"field {name} must be a number or null, not {json.dumps(obj[name])}"
    if "reported" in obj and not isinstance(obj["reported"], bool):
        return f"field reported must be true or false, not {json.dumps(obj['reported'])}"
    return None


def read_scored_responses(path: str | os.PathLike[str]) -> Iterator[Record]:
    """The scored responses of a JSON Lines export, checked line by line.

    Raises :class:`SampleFileError` naming the file and the line number of the first
    malformed line (the file's absence is reported before anything is read).
    """
    source = Path(path)
    if not source.is_file():
        raise SampleFileError(
            str(source),
            "no such file: pass an export of scored interactions, one JSON object per line "
            f"({_FORMAT})",
        )
    return _lines(source)


def _lines(source: Path) -> Iterator[Record]:
    with source.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SampleFileError(str(source), "not UTF-8 text", number) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SampleFileError(
                    str(source),
                    f"not valid JSON ({exc.msg} at column {exc.colno}): each line must be one "
                    f"JSON object ({_FORMAT})",
                    number,
                ) from None
            problem = _problem(obj)
            if problem is not None:
                raise SampleFileError(str(source), f"{problem} ({_FORMAT})", number)
            obj.setdefault("implicit_score", None)
            obj.setdefault("reported", False)
            yield obj


def sample_file(
    input_jsonl: str | os.PathLike[str],
    count: int,
    out_jsonl: str | os.PathLike[str],
    *,
    config: SamplingConfig | None = None,
    now: int | None = None,
) -> SampleReport:
    """Sample ``count`` annotation tasks from an export and write them as JSON Lines.

    ``config`` gives the priorities, seed and thresholds (its ``count`` is replaced by
    ``count``); ``now`` stamps the tasks' ``ts`` (default: the end of the input's time
    span, so that the output depends on the input only; the CLI passes the clock).
    The output is written to a temporary file beside ``out_jsonl`` and renamed, so a
    failed run leaves no partial file.
    """
    config = dataclasses.replace(config or SamplingConfig(), count=count)
    scored = read_scored_responses(input_jsonl)
    out = Path(out_jsonl)
    if not out.parent.is_dir():
        raise SampleFileError(str(out), f"cannot write: folder {out.parent} does not exist")
    lines = 0

    def counted() -> Iterator[Record]:
        nonlocal lines
        for item in scored:
            lines += 1
            yield item

    tasks = Sampler(config).sample(counted(), now=now).tasks
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for task in tasks:
                handle.write(json.dumps(task, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SampleFileError(str(out), f"cannot write: {exc.strerror or exc}") from exc
    top = sum(1 for t in tasks if t["sampled_by"] == "TOP_PRIORITY")
    return SampleReport(lines, len(tasks), top, len(tasks) - top, out)
