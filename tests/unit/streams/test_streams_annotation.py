"""Rule (d) with overlap: a task given to k annotators waits for all k, then makes one
pair when they agree enough, or one dead letter saying why it makes none."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from streams_events import T0

from prefloop.settings import load_settings
from prefloop.streams.annotation_miner import AnnotationPairMiner
from prefloop.streams.app import StreamsApp
from prefloop.streams.config import PairConfig
from prefloop.streams.exceptions import StreamsConfigError
from prefloop.streams.preference_pair import PairStep
from prefloop.streams.records import Record, source_offset
from prefloop.streams.topology import pair_config
from prefloop_sdk import Codec, decode, encode

TOPIC = "prefloop.annotation-results"


def result(annotator: str, choice: str, overlap: int | None = 2, **overrides: Any) -> Record:
    record: Record = {
        "result_id": f"res-{annotator}",
        "task_id": "t-1",
        "annotator_id": annotator,
        "prompt": [{"role": "user", "content": "Explain quantum computing"}],
        "response_a": "Quantum computing uses qubits...",
        "response_b": "I don't know.",
        "response_a_id": "r-a",
        "response_b_id": "r-b",
        "choice": choice,
        "interaction_id": None,
        "conversation_id": "c9",
        "model_version": "v3",
        "ts": T0,
        "comment": None,
    }
    if overlap is not None:
        record["overlap"] = overlap
    record.update(overrides)
    encode("annotation_result", record)
    return record


class Run:
    """The miner over one key's state, each result at the next offset of partition 0."""

    def __init__(self, miner: AnnotationPairMiner | None = None) -> None:
        self.miner = miner or AnnotationPairMiner()
        self.state: dict[str, Any] | None = None
        self.pairs: list[Record] = []
        self.rejected: list[Any] = []
        self.offset = 0

    def send(self, record: Record, offset: int | None = None) -> PairStep:
        if offset is None:
            offset, self.offset = self.offset, self.offset + 1
        step = self.miner.on_result(self.state, record, T0, source_offset(TOPIC, 0, offset))
        self.state = step.state
        self.pairs += step.pairs
        self.rejected += step.rejected
        return step


def chosen(pairs: list[Record]) -> list[tuple[str | None, str | None]]:
    return [(p["chosen_response_id"], p["rejected_response_id"]) for p in pairs]


def test_two_agreeing_annotators_make_one_pair_once_both_answered() -> None:
    run = Run()
    first = run.send(result("ann-1", "A"))
    assert first.pairs == [] and first.rejected == []
    assert list(first.state["pending"]) == ["t-1"]
    run.send(result("ann-2", "A"))
    assert chosen(run.pairs) == [("r-a", "r-b")] and run.rejected == []
    pair = run.pairs[0]
    encode("preference_pair", pair)
    assert (pair["source"], pair["weight"], pair["conversation_id"]) == ("ANNOTATION", 1.0, "c9")
    assert pair["source_offsets"] == [source_offset(TOPIC, 0, 0), source_offset(TOPIC, 0, 1)]
    assert run.state is not None
    assert run.state["pending"] == {} and list(run.state["decided"]) == ["t-1"]


def test_two_disagreeing_annotators_make_no_pair_and_one_rejected_task() -> None:
    run = Run()
    run.send(result("ann-1", "A"))
    run.send(result("ann-2", "B"))
    assert run.pairs == []
    [rejected] = run.rejected
    assert rejected.reason == (
        "annotators disagree on task t-1: A by ann-1, B by ann-2 (agreement 0.50 < 0.66): no pair"
    )
    assert rejected.error_type == "AnnotatorsDisagree"
    assert rejected.record_type == "annotation_result"
    assert rejected.record["annotator_id"] == "ann-2"
    assert rejected.source == source_offset(TOPIC, 0, 1)
    assert run.state is not None and run.state["pending"] == {}


def test_three_annotators_two_against_one_pass_the_default_agreement() -> None:
    run = Run()
    for annotator, choice in (("ann-1", "B"), ("ann-2", "A"), ("ann-3", "B")):
        run.send(result(annotator, choice, overlap=3))
    assert chosen(run.pairs) == [("r-b", "r-a")] and run.rejected == []
    assert len(run.pairs[0]["source_offsets"]) == 3
    strict = Run(AnnotationPairMiner(PairConfig(min_agreement=0.7)))
    for annotator, choice in (("ann-1", "B"), ("ann-2", "A"), ("ann-3", "B")):
        strict.send(result(annotator, choice, overlap=3))
    assert strict.pairs == []
    assert [r.reason for r in strict.rejected] == [
        "annotators disagree on task t-1: B by ann-1, A by ann-2, B by ann-3 "
        "(agreement 0.67 < 0.70): no pair"
    ]


@pytest.mark.parametrize("second", ["A", "B"])
def test_results_read_again_make_no_second_pair_nor_dead_letter(second: str) -> None:
    run = Run()
    one, two = result("ann-1", "A"), result("ann-2", second)
    run.send(one, 0)
    run.send(one, 0)  # read twice before the task is decided: still one annotator
    assert run.pairs == [] and run.rejected == []
    run.send(two, 1)
    for again in (one, two, one, two):  # the whole partition replayed
        step = run.send(again, 1)
        assert step.pairs == [] and step.rejected == [] and step.state["pending"] == {}
    assert len(run.pairs) + len(run.rejected) == 1
    assert len(run.pairs) == (1 if second == "A" else 0)


def test_a_v1_result_without_overlap_decides_alone_as_before() -> None:
    run = Run()
    step = run.send(result("ann-1", "A", overlap=None))
    assert chosen(step.pairs) == [("r-a", "r-b")]
    assert step.state == {"seen": {step.pairs[0]["pair_id"]: True}}  # nothing else kept
    v1 = Codec(write_versions={"annotation_result": 1})
    _, read = decode(v1.encode("annotation_result", result("ann-2", "B", overlap=None)))
    assert read["overlap"] == 1
    other = Run().send(read)
    assert chosen(other.pairs) == [("r-b", "r-a")]


def test_an_annotators_later_result_replaces_the_earlier_one() -> None:
    run = Run()
    run.send(result("ann-1", "A"))
    run.send(result("ann-1", "B", result_id="res-ann-1-fix"))  # a correction
    assert run.pairs == [] and run.rejected == []
    assert run.state is not None and len(run.state["pending"]["t-1"]["votes"]) == 1
    run.send(result("ann-2", "B"))
    assert chosen(run.pairs) == [("r-b", "r-a")]
    assert [o["offset"] for o in run.pairs[0]["source_offsets"]] == [1, 2]


def test_skip_is_no_opinion_and_only_skips_make_no_pair() -> None:
    run = Run()
    run.send(result("ann-1", "SKIP"))
    run.send(result("ann-2", "A"))
    assert chosen(run.pairs) == [("r-a", "r-b")]  # one opinion, agreement 1.0
    skips = Run()
    skips.send(result("ann-1", "SKIP"))
    skips.send(result("ann-2", "UNKNOWN"))
    assert skips.pairs == []
    assert [(r.error_type, r.reason) for r in skips.rejected] == [
        (
            "NoAnnotationPair",
            "no annotator gave an opinion on task t-1: SKIP by ann-1, UNKNOWN by ann-2: no pair",
        )
    ]


def test_a_tie_between_a_and_b_is_no_majority_even_at_a_low_threshold() -> None:
    run = Run(AnnotationPairMiner(PairConfig(min_agreement=0.5)))
    run.send(result("ann-1", "A"))
    run.send(result("ann-2", "B"))
    assert run.pairs == []
    assert [r.reason for r in run.rejected] == [
        "annotators disagree on task t-1: A by ann-1, B by ann-2 "
        "(A and B tie at agreement 0.50: no majority): no pair"
    ]


def test_annotators_agreeing_on_tie_make_no_pair_and_say_so() -> None:
    run = Run()
    run.send(result("ann-1", "TIE"))
    run.send(result("ann-2", "TIE"))
    assert run.pairs == []
    assert [(r.error_type, r.reason) for r in run.rejected] == [
        (
            "NoAnnotationPair",
            "annotators find neither response better on task t-1: TIE by ann-1, TIE by ann-2 "
            "(TIE at agreement 1.00 >= 0.66): no pair",
        )
    ]


def test_decided_tasks_are_forgotten_but_for_a_bounded_set_of_ids() -> None:
    run = Run(AnnotationPairMiner(PairConfig(max_seen_pairs=2)))
    for n in range(3):
        texts = {"response_a": f"a{n}", "response_b": f"b{n}", "task_id": f"t-{n}"}
        run.send(result("ann-1", "A", response_a_id=f"a{n}", **texts))
        run.send(result("ann-2", "A", response_a_id=f"a{n}", **texts))
    assert len(run.pairs) == 3
    assert run.state is not None
    assert run.state["pending"] == {} and list(run.state["decided"]) == ["t-1", "t-2"]


def test_a_state_written_before_overlap_existed_takes_overlapping_tasks() -> None:
    run = Run()
    run.state = {"seen": {}}
    run.send(result("ann-1", "A"))
    run.send(result("ann-2", "A"))
    assert len(run.pairs) == 1


def test_min_agreement_comes_from_the_settings_and_is_checked() -> None:
    settings = load_settings(environ={}, annotation_min_agreement=0.8)
    assert pair_config(settings).min_agreement == 0.8
    assert PairConfig().min_agreement == 0.66
    with pytest.raises(StreamsConfigError, match=r"PairConfig\.min_agreement=1\.5 .*\[0, 1\]"):
        PairConfig(min_agreement=1.5)


# -- the annotate agent's logic, with its tables and topics as plain objects --------------


class Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    def send_soon(self, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, value))


def worker(tmp_path: Path, **settings: Any) -> StreamsApp:
    streams = StreamsApp(load_settings(environ={}, home=tmp_path, topic_prefix="t", **settings))
    streams.annotations = {}
    streams.out = defaultdict(Topic)
    return streams


def feed(streams: StreamsApp, *records: Record) -> None:
    inbox = streams._inboxes["annotate"]
    topic = streams.topics.annotation_results
    for offset, record in enumerate(records):
        decoded, letter = inbox.read(
            topic, 0, offset, b"c9", encode("annotation_result", record), ("annotation_result",), T0
        )
        assert letter is None and decoded is not None
        streams._annotate_event(decoded, b"c9", T0)


def records(topic: Topic) -> list[Record]:
    return [decode(value)[1] for _, value in topic.sent]


def test_the_agent_sends_a_disagreeing_task_to_the_dead_letter_topic(tmp_path: Path) -> None:
    streams = worker(tmp_path)
    t = streams.topics
    last = result("ann-2", "B")
    feed(streams, result("ann-1", "A"), last)
    assert records(streams.out[t.preferences]) == []
    assert records(streams.out[streams.stream_topics.retrain_queue]) == []
    [letter] = records(streams.out[t.dlq])
    assert letter["reason"] == (
        "annotators disagree on task t-1: A by ann-1, B by ann-2 (agreement 0.50 < 0.66): no pair"
    )
    assert letter["error_type"] == "AnnotatorsDisagree"
    assert letter["consumer"] == "t-streams.annotate"
    where = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
    assert where == (t.annotation_results, 0, 1)
    assert decode(letter["value"])[1]["annotator_id"] == "ann-2"
    assert streams.annotations["c9"]["pending"] == {}


def test_the_agent_pairs_agreeing_annotators_at_the_settings_threshold(tmp_path: Path) -> None:
    streams = worker(tmp_path, annotation_min_agreement=1.0)
    three = [result(a, c, overlap=3) for a, c in (("ann-1", "A"), ("ann-2", "A"), ("ann-3", "B"))]
    feed(streams, *three)
    assert records(streams.out[streams.topics.preferences]) == []
    assert "(agreement 0.67 < 1.00)" in records(streams.out[streams.topics.dlq])[0]["reason"]
    streams = worker(tmp_path)
    feed(streams, *three)
    [pair] = records(streams.out[streams.topics.preferences])
    assert (pair["chosen_response_id"], len(pair["source_offsets"])) == ("r-a", 3)
    assert records(streams.out[streams.stream_topics.retrain_queue]) == [pair]
    assert records(streams.out[streams.topics.dlq]) == []
