"""The sampler's state as table entries: flatten/unflatten, minimal changes, restarts."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from streams_events import MINUTE, SECOND, T0, scored

from prefloop.streams.config import SamplingConfig
from prefloop.streams.sampler_store import changes, flatten, unflatten
from prefloop.streams.sampling import Sampler
from prefloop_sdk import encode

CONFIG = SamplingConfig(count=3, window_s=60)
W0 = T0 - T0 % MINUTE  # the first window: [W0, W0 + 1 min)


def topic(n: int) -> str:
    """A prompt sharing no word with any other topic's."""
    return f"w{n}a w{n}b w{n}c w{n}d w{n}e"


def script() -> list[tuple[str, Any, int]]:
    """Scored responses over three one-minute windows, with timer ticks and repeats."""
    steps: list[tuple[str, Any, int]] = []
    for n in range(7):  # window 0: more responses than the count, mixed priorities
        record = scored(
            f"a{n}",
            conv=f"c{n}",
            prompt=topic(n % 5),  # two repeated topics: not new
            score=1.0 if n % 2 else 0.0,
            uncertainty=0.9 if n == 3 else None,
            reported=n == 5,
            ts=W0 + n * SECOND,
        )
        steps.append(("observe", record, W0 + n * SECOND))
    steps.append(("timer", None, W0 + MINUTE - 1))  # not yet due
    steps.append(("timer", None, W0 + MINUTE))  # closes window 0
    for n in range(4):  # window 1, opened by an observe
        record = scored(f"b{n}", conv=f"d{n}", prompt=topic(10 + n), ts=W0 + MINUTE + n)
        steps.append(("observe", record, W0 + MINUTE + 5 * SECOND + n))
    steps.append(("observe", scored("a1", prompt=topic(1)), W0 + MINUTE + 10 * SECOND))  # repeat
    # window 2: an observe past the end closes window 1 first
    for n in range(3):
        record = scored(f"c{n}", conv=f"e{n}", prompt=topic(20 + n), ts=W0 + 2 * MINUTE + n)
        steps.append(("observe", record, W0 + 2 * MINUTE + n))
    steps.append(("timer", None, W0 + 3 * MINUTE))
    return steps


def run(
    sampler: Sampler, state: dict[str, Any] | None, steps: list[tuple[str, Any, int]]
) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]:
    """The state after each step (the first is the one given) and every task emitted."""
    states: list[dict[str, Any] | None] = [state]
    tasks: list[dict[str, Any]] = []
    for what, record, now in steps:
        if what == "observe":
            step = sampler.observe(state, record, now)
        else:
            assert state is not None
            step = sampler.on_timer(state, now)
        state = step.state
        states.append(state)
        tasks += step.tasks
    for task in tasks:
        encode("annotation_task", task)
    return states, tasks


def history(config: SamplingConfig = CONFIG) -> list[dict[str, Any]]:
    states, tasks = run(Sampler(config), None, script())
    assert len(tasks) == 9  # three windows closed, count=3 each
    out = [s for s in states if s is not None]
    assert any(s["window"] is None for s in out)  # a state between windows
    assert any(s["sampled"] and s["window"] is not None for s in out)
    return out


def apply(table: dict[str, Any], writes: dict[str, Any], deletes: list[str]) -> None:
    """What the agent does with ``changes``: the writes, then the deletes."""
    table.update(writes)
    for key in deletes:
        del table[key]


def table_round_trip(entries: dict[str, Any]) -> list[tuple[str, Any]]:
    """The entries as a JSON-serialised changelogged table gives them back."""
    return [(key, json.loads(json.dumps(value))) for key, value in entries.items()]


# -- flatten / unflatten --------------------------------------------------------------------


def test_unflatten_of_flatten_is_the_state_for_every_step():
    for state in history():
        entries = flatten(state)
        assert unflatten(entries.items()) == state
        assert unflatten(table_round_trip(entries)) == state


def test_unflatten_with_a_small_memory_that_evicts_prompts():
    states = history(SamplingConfig(count=3, window_s=60, memory_size=4))
    assert len(states[-1]["memory"]["order"]) == 4
    for state in states:
        assert unflatten(flatten(state).items()) == state


def test_flatten_writes_one_entry_per_signature_sampled_id_and_window_entry():
    for state in history():
        entries = flatten(state)
        window = state["window"]
        n_window = len(window["entries"]) if window is not None else 0
        expected = 2 + len(state["memory"]["signatures"]) + len(state["sampled"]) + n_window
        assert len(entries) == expected
        small = {k: v for k, v in entries.items() if k == "window"}
        if window is None:
            assert small == {"window": None}
        else:
            assert "entries" not in entries["window"]
            assert entries["window"] == {k: v for k, v in window.items() if k != "entries"}
        # every value is JSON
        assert json.loads(json.dumps(entries)) == json.loads(json.dumps(entries, sort_keys=True))


def test_unflatten_of_nothing_is_none():
    assert unflatten([]) is None
    assert unflatten(iter(())) is None


def test_unflatten_drops_signatures_of_prompts_no_longer_in_the_order():
    state = history()[-1]
    entries = flatten(state)
    some = state["memory"]["order"][0]
    signature = state["memory"]["signatures"][some]
    (sig_key,) = [k for k, v in entries.items() if k.endswith(some) and v == signature]
    lingering = sig_key[: -len(some)] + "evicted-long-ago"
    entries[lingering] = entries[sig_key]
    assert unflatten(entries.items()) == state


# -- changes ----------------------------------------------------------------------------------


def test_changes_applied_to_the_table_reproduce_flatten_of_the_new_state():
    states: list[dict[str, Any] | None] = [None, *history()]
    for old, new in itertools.pairwise(states):
        assert new is not None
        table = flatten(old) if old is not None else {}
        writes, deletes = changes(old, new)
        assert not set(writes) & set(deletes)
        apply(table, writes, deletes)
        assert table == flatten(new)
        assert unflatten(table.items()) == new


def test_changes_write_only_what_changed():
    states = history()
    assert changes(states[3], states[3]) == ({}, [])
    assert changes(states[3], copy.deepcopy(states[3])) == ({}, [])
    # one more response in an open window: its signature, its entry and the window's
    # rankings, never the other signatures
    old, new = states[0], states[1]
    assert old["window"] is not None and new["window"] is not None
    writes, deletes = changes(old, new)
    added = "i-a1"
    assert deletes == []
    assert set(new["memory"]["signatures"]) - set(old["memory"]["signatures"]) == {added}
    assert len(writes) < len(flatten(new))
    assert all(not k.endswith("i-a0") for k in writes)


def test_closing_a_window_deletes_its_entries_and_writes_the_sampled_ids():
    sampler = Sampler(CONFIG)
    states, _ = run(sampler, None, script()[:7])
    before = states[-1]
    assert before is not None and before["window"] is not None
    closed = sampler.on_timer(before, W0 + MINUTE)
    assert len(closed.tasks) == 3
    writes, deletes = changes(before, closed.state)
    entry_keys = [k for k in flatten(before) if k not in flatten(closed.state)]
    assert sorted(deletes) == sorted(entry_keys)
    assert len(deletes) == len(before["window"]["entries"])
    assert writes["window"] is None
    sampled = {t["interaction_id"] for t in closed.tasks}
    assert sum(1 for k in writes if any(k.endswith(i) for i in sampled)) == len(sampled)
    assert writes.keys() - {"window"} == {
        k for k in flatten(closed.state) if k not in flatten(before)
    }


# -- restarts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [3, 7, 9, 12, 14])
def test_the_sampler_continues_identically_from_an_unflattened_state(cut: int):
    steps = script()
    sampler = Sampler(CONFIG)
    states, tasks_before = run(sampler, None, steps[:cut])
    state = states[-1]
    assert state is not None
    restored = unflatten(table_round_trip(flatten(state)))
    assert restored == state
    # the same process going on, and a restarted one (a fresh sampler: no cached index)
    kept_states, kept_tasks = run(sampler, state, steps[cut:])
    new_states, new_tasks = run(Sampler(CONFIG), restored, steps[cut:])
    assert new_tasks == kept_tasks
    assert new_states == kept_states
    # and the whole run is the run without a restart
    _, straight = run(Sampler(CONFIG), None, steps)
    assert tasks_before + new_tasks == straight


def test_a_restored_state_still_never_samples_an_interaction_twice():
    sampler = Sampler(CONFIG)
    states, tasks = run(sampler, None, script()[:9])  # window 0 closed
    sampled = {t["interaction_id"] for t in tasks}
    assert len(sampled) == 3
    state = unflatten(table_round_trip(flatten(states[-1])))  # type: ignore[arg-type]
    assert state is not None
    for iid in sampled:
        rid = iid.removeprefix("i-")
        step = Sampler(CONFIG).observe(state, scored(rid, prompt="again"), W0 + MINUTE + 1)
        assert iid not in step.state["window"]["entries"]


def test_an_interaction_id_holding_the_separator_survives_the_round_trip():
    record = scored("x", prompt=topic(1))
    record["interaction_id"] = "a\x1fb"
    state = Sampler(CONFIG).observe(None, record, T0).state
    assert unflatten(flatten(state).items()) == state
