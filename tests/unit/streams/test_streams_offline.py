"""The offline sampler: an export file in, a task file out, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streams_events import T0, scored

from prefloop.errors import PrefloopError
from prefloop.streams.config import SamplingConfig
from prefloop.streams.exceptions import SampleFileError, StreamsConfigError
from prefloop.streams.offline import read_scored_responses, sample_file
from prefloop.streams.sampling import Sampler
from prefloop_sdk import decode, encode


def export(path: Path, n: int = 20) -> list[dict]:
    items = []
    for i in range(n):
        item = scored(
            f"r{i:02d}",
            conv=f"c{i}",
            prompt=f"w{i}a w{i}b w{i}c w{i}d",
            score=1.0 if i < 5 else -1.0,
            reported=i == 7,
            ts=T0 + i,
        )
        items.append(item)
    lines = [json.dumps(item) for item in items]
    lines.insert(3, "")  # blank lines are skipped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return items


def test_sample_file_writes_the_same_tasks_as_the_stream_code(tmp_path: Path):
    source, out = tmp_path / "interactions.jsonl", tmp_path / "tasks.jsonl"
    items = export(source)
    report = sample_file(source, 10, out)
    assert (report.lines, report.tasks, report.top_priority, report.uniform) == (20, 10, 7, 3)
    tasks = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for task in tasks:
        assert decode(encode("annotation_task", task))[1] == task
    assert tasks == Sampler(SamplingConfig(count=10)).sample(items).tasks
    assert {t["interaction_id"] for t in tasks[:6]} == {f"i-r{i:02d}" for i in (0, 1, 2, 3, 4, 7)}
    assert (tasks[0]["window_start"], tasks[0]["window_end"]) == (T0, T0 + 20)
    # reproducible: the same input gives the same file, byte for byte
    again = tmp_path / "again.jsonl"
    sample_file(source, 10, again)
    assert again.read_bytes() == out.read_bytes()
    stamped = tmp_path / "stamped.jsonl"
    sample_file(source, 10, stamped, now=T0 + 99, config=SamplingConfig(seed=5))
    assert {json.loads(line)["ts"] for line in stamped.read_text().splitlines()} == {T0 + 99}


def test_optional_fields_may_be_missing(tmp_path: Path):
    source = tmp_path / "in.jsonl"
    line = {
        "interaction_id": "i-1",
        "response_id": "r-1",
        "conversation_id": "c-1",
        "model_version": "v1",
        "ts": T0,
        "response": "ok",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    source.write_text(json.dumps(line) + "\n")
    (item,) = read_scored_responses(source)
    assert (item["implicit_score"], item["reported"]) == (None, False)
    report = sample_file(source, 5, tmp_path / "out.jsonl")
    assert (report.tasks, report.top_priority) == (1, 1)


def test_a_missing_input_file_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SampleFileError, match=r"nope\.jsonl: no such file: pass an export"):
        sample_file(missing, 10, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", r"line 3: not valid JSON \(Expecting property name"),
        ("[1, 2]", r"line 3: expected a JSON object, got list"),
        ('{"interaction_id": "x"}', r"line 3: missing field\(s\) response_id, conversation_id"),
        (None, r"line 3: field ts must be an integer"),
        ("messages", r"line 3: field messages must be a list"),
        ("score", r"line 3: field implicit_score must be a number or null, not \"high\""),
    ],
)
def test_a_malformed_line_names_its_number(tmp_path: Path, bad_line: str | None, message: str):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = [json.dumps(scored(f"r{i}", ts=T0 + i)) for i in range(4)]
    broken = scored("bad")
    if bad_line is None:
        broken["ts"] = "yesterday"
        bad_line = json.dumps(broken)
    elif bad_line == "messages":
        broken["messages"] = [{"role": "user"}]
        bad_line = json.dumps(broken)
    elif bad_line == "score":
        broken["implicit_score"] = "high"
        bad_line = json.dumps(broken)
    source.write_text("\n".join([good[0], good[1], bad_line, good[2]]) + "\n")
    with pytest.raises(SampleFileError, match=message) as caught:
        sample_file(source, 10, out)
    assert caught.value.line == 3 and str(source) in str(caught.value)
    assert isinstance(caught.value, PrefloopError)
    assert not out.exists()


def test_an_unwritable_output_and_a_bad_count_are_errors(tmp_path: Path):
    source = tmp_path / "in.jsonl"
    export(source, 3)
    with pytest.raises(SampleFileError, match=r"cannot write: folder .*missing does not exist"):
        sample_file(source, 10, tmp_path / "missing" / "out.jsonl")
    with pytest.raises(StreamsConfigError, match=r"SamplingConfig\.count=0 is not valid"):
        sample_file(source, 0, tmp_path / "out.jsonl")
