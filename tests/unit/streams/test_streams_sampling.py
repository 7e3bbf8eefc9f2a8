"""Annotation sampling: priorities, the 70/30 split, novelty, windows, reproducibility."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections import Counter
from typing import Any

from streams_events import MINUTE, T0, scored

from prefloop.streams.config import SamplingConfig
from prefloop.streams.sampling import Sampler, priority
from prefloop_sdk import encode

HOUR = 60 * MINUTE


def topic(n: int) -> str:
    """A prompt sharing no word with any other topic's."""
    return f"w{n}a w{n}b w{n}c w{n}d w{n}e"


def pool(n: int = 20) -> list[dict[str, Any]]:
    """``n`` responses, all new topics (+3); the first five engaged (+2), the first three
    uncertain (+2), the first two reported (+3): priorities 10, 10, 7, 5, 5, then 3."""
    return [
        scored(
            f"r{i:02d}",
            conv=f"c{i}",
            prompt=topic(i),
            score=1.0 if i < 5 else 0.0,
            uncertainty=0.9 if i < 3 else 0.5,
            reported=i < 2,
            ts=T0 + i,
        )
        for i in range(n)
    ]


def key(seed: int, interaction_id: str) -> float:
    """The documented uniform key of a response."""
    digest = hashlib.blake2b(f"{seed}\x1f{interaction_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def tasks_of(config: SamplingConfig, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tasks = Sampler(config).sample(items).tasks
    for task in tasks:
        encode("annotation_task", task)
    return tasks


def test_priorities_follow_the_product_rules():
    config = SamplingConfig()
    item = pool()[0]
    assert priority(item, True, config) == (
        10.0,
        ["new_topic", "engaged", "uncertain", "edge_case:reported"],
    )
    assert priority(pool()[10], False, config) == (0.0, [])  # score 0, uncertainty 0.5
    long_prompt = scored("lp", prompt="x" * 4001)
    assert priority(long_prompt, False, config) == (3.0, ["edge_case:long_prompt"])
    long_both = scored("lb", prompt="x" * 4001, response="y" * 8001, reported=True)
    assert priority(long_both, False, config) == (
        3.0,  # an edge case counts once
        ["edge_case:reported", "edge_case:long_prompt", "edge_case:long_response"],
    )
    refusal = scored("rf", response="I'm sorry, but I can't help with that request.")
    assert priority(refusal, False, config) == (3.0, ["edge_case:refusal"])
    fine = scored("ok", response="Sure! I can help with that: sort() sorts in place.")
    assert priority(fine, False, config) == (0.0, [])


def test_top_seventy_percent_by_priority_and_thirty_percent_uniform():
    config = SamplingConfig(count=10, seed=0)
    tasks = tasks_of(config, pool())
    top = [t["interaction_id"] for t in tasks if t["sampled_by"] == "TOP_PRIORITY"]
    uniform = [t["interaction_id"] for t in tasks if t["sampled_by"] == "UNIFORM"]
    assert (len(top), len(uniform)) == (7, 3)
    # the five high ones by priority (ties by lowest key), then two of the 3-point ties

    def by_key(*ids: str) -> list[str]:
        return sorted(ids, key=lambda i: key(0, i))

    ties = by_key(*(f"i-r{i:02d}" for i in range(5, 20)))
    assert top == [*by_key("i-r00", "i-r01"), "i-r02", *by_key("i-r03", "i-r04"), *ties[:2]]
    assert [t["priority"] for t in tasks[:7]] == [10.0, 10.0, 7.0, 5.0, 5.0, 3.0, 3.0]
    # the uniform share: the lowest keys among the rest
    assert uniform == ties[2:5]
    assert len(set(top) | set(uniform)) == 10
    first = tasks[0]
    assert first["reasons"] == ["new_topic", "engaged", "uncertain", "edge_case:reported"]
    assert (first["window_start"], first["window_end"], first["ts"]) == (T0, T0 + 20, T0 + 20)
    assert first["prompt"] == [{"role": "user", "content": topic(0)}]


def test_fewer_responses_than_the_count_are_all_sampled():
    tasks = tasks_of(SamplingConfig(count=30), pool(10))
    assert Counter(t["sampled_by"] for t in tasks) == {"TOP_PRIORITY": 10}
    tasks = tasks_of(SamplingConfig(count=12), pool(10))  # 8 top, 2 of the remaining 2
    assert Counter(t["sampled_by"] for t in tasks) == {"TOP_PRIORITY": 8, "UNIFORM": 2}


def test_sampling_is_reproducible_and_independent_of_arrival_order():
    config = SamplingConfig(count=10, seed=7)
    items = pool()
    first = tasks_of(config, items)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    assert tasks_of(config, copy.deepcopy(items)) == first
    assert [t["task_id"] for t in tasks_of(config, shuffled)] == [t["task_id"] for t in first]
    other = tasks_of(SamplingConfig(count=10, seed=8), items)
    assert {t["interaction_id"] for t in other} != {t["interaction_id"] for t in first}


def test_the_uniform_share_is_uniform_over_the_rest():
    # one uniform pick among the 5 lowest-priority responses, over 1000 seeds
    items = pool(8)  # r00-r02 high; r03, r04 at 5; r05-r07 at 3
    hits: Counter[str] = Counter()
    for seed in range(1000):
        tasks = tasks_of(SamplingConfig(count=4, top_fraction=0.75, seed=seed), items)
        (pick,) = [t["interaction_id"] for t in tasks if t["sampled_by"] == "UNIFORM"]
        hits[pick] += 1
    assert set(hits) == {"i-r03", "i-r04", "i-r05", "i-r06", "i-r07"}
    assert all(150 <= n <= 250 for n in hits.values()), hits  # 200 expected each


def test_near_duplicate_prompts_are_not_a_new_topic():
    config = SamplingConfig(count=10)
    items = [
        scored("a", prompt="How do I reverse a list in Python?"),
        scored("b", prompt="how do I reverse a list in python, please"),
        scored("c", prompt="HOW DO I REVERSE A LIST IN PYTHON"),
        scored("d", prompt="What is the capital of Australia?"),
        scored("e", prompt="Write a haiku about autumn leaves falling"),
    ]
    reasons = {t["interaction_id"]: t["reasons"] for t in tasks_of(config, items)}
    assert reasons == {
        "i-a": ["new_topic"],
        "i-b": [],
        "i-c": [],
        "i-d": ["new_topic"],
        "i-e": ["new_topic"],
    }


def test_the_recent_prompt_memory_is_bounded():
    config = SamplingConfig(count=10, memory_size=2)
    items = [scored("a", prompt=topic(1)), scored("b", prompt=topic(2))]
    items += [scored("c", prompt=topic(3)), scored("d", prompt=topic(1))]  # topic 1 forgotten
    reasons = {t["interaction_id"]: t["reasons"] for t in tasks_of(config, items)}
    assert reasons["i-d"] == ["new_topic"]
    step = Sampler(config).sample(items)
    assert step.state["memory"]["order"] == ["i-c", "i-d"]


def test_streaming_windows_and_no_interaction_sampled_twice():
    config = SamplingConfig(count=2, top_fraction=0.5, window_s=3600)
    sampler = Sampler(config)
    start = T0 - T0 % HOUR
    state = None
    for item in pool(3):
        step = sampler.observe(state, item, start + 5 * MINUTE)
        assert step.tasks == []
        state = step.state
    again = sampler.observe(state, pool(3)[0], start + 6 * MINUTE)  # a duplicate delivery
    assert again.tasks == [] and again.state == state
    assert sampler.next_deadline(state) == start + HOUR
    assert sampler.on_timer(state, start + HOUR - 1).tasks == []
    closed = sampler.on_timer(state, start + HOUR)
    # one by priority (r00 and r01 tie at 10: the lower key), one uniform from the other two
    best = min("i-r00", "i-r01", key=lambda i: key(0, i))
    rest = {"i-r00", "i-r01", "i-r02"} - {best}
    assert [(t["interaction_id"], t["sampled_by"]) for t in closed.tasks] == [
        (best, "TOP_PRIORITY"),
        (min(rest, key=lambda i: key(0, i)), "UNIFORM"),
    ]
    assert {(t["window_start"], t["window_end"], t["ts"]) for t in closed.tasks} == {
        (start, start + HOUR, start + HOUR)
    }
    assert closed.state["window"] is None
    # the next window: the sampled ones come back (a replay) and are not sampled again
    sampled = {t["interaction_id"] for t in closed.tasks}
    step = closed
    for item in pool(3):
        if item["interaction_id"] in sampled:
            step = sampler.observe(step.state, item, start + HOUR + MINUTE)
    step = sampler.observe(step.state, scored("new", prompt=topic(50)), start + HOUR + 2 * MINUTE)
    # a response in the window after that closes this one first
    later = sampler.observe(step.state, scored("later", prompt=topic(51)), start + 2 * HOUR)
    assert [t["interaction_id"] for t in later.tasks] == ["i-new"]
    assert later.state["window"]["start"] == start + 2 * HOUR
    final = sampler.close(later.state, start + 2 * HOUR + 1)
    assert [t["interaction_id"] for t in final.tasks] == ["i-later"]


def test_sampler_state_is_json_and_untouched():
    sampler = Sampler(SamplingConfig(count=3))
    state = None
    for item in pool(6):
        before = copy.deepcopy(state)
        step = sampler.observe(state, item, T0)
        assert state == before
        state = json.loads(json.dumps(step.state))
        assert state == step.state
    assert state is not None
    assert len(state["window"]["entries"]) <= 3 + 2  # top (2) and lowest keys (3) only
    closed = sampler.close(state, T0 + 1)
    assert len(closed.tasks) == 3
    assert set(closed.state["sampled"]) == {t["interaction_id"] for t in closed.tasks}
