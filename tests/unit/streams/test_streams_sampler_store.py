"""The sampler's state as small table entries: load, changes per event, restarts, sizes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from streams_events import MINUTE, SECOND, T0, scored

from prefloop.streams.config import SamplingConfig
from prefloop.streams.sampler_store import SamplerStore
from prefloop.streams.sampling import Sampler
from prefloop_sdk import encode

CONFIG = SamplingConfig(count=3, window_s=60)
SMALL_MEMORY = SamplingConfig(count=3, window_s=60, memory_size=3)
W0 = T0 - T0 % MINUTE  # the first window: [W0, W0 + 1 min)

Step = tuple[str, Any, int]
Items = Iterable[tuple[str, Any]]


def topic(n: int) -> str:
    """A prompt sharing no word with any other topic's."""
    return f"w{n}a w{n}b w{n}c w{n}d w{n}e"


def script() -> list[Step]:
    """Scored responses over three one-minute windows, with timer ticks and repeats."""
    steps: list[Step] = []
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
    for n in range(7):  # every response of window 0 again: the sampled ones are skipped, the
        # others come back (with a small memory, after their prompt was forgotten)
        record = scored(f"a{n}", conv=f"c{n}", prompt=topic(n % 5))
        steps.append(("observe", record, W0 + MINUTE + 10 * SECOND + n))
    # window 2: an observe past the end closes window 1 first
    for n in range(3):
        record = scored(f"c{n}", conv=f"e{n}", prompt=topic(20 + n), ts=W0 + 2 * MINUTE + n)
        steps.append(("observe", record, W0 + 2 * MINUTE + n))
    steps.append(("timer", None, W0 + 3 * MINUTE))
    return steps


def stored(value: Any) -> Any:
    """A value as the JSON-serialised changelogged table gives it back."""
    return json.loads(json.dumps(value))


class Agent:
    """The sample agent of streams/app.py over a dict as its table: the state loaded once,
    then after each event the store's changes applied, the writes first, then the deletes."""

    def __init__(
        self,
        config: SamplingConfig = CONFIG,
        table: dict[str, Any] | None = None,
        order: Callable[[Items], Items] = list,
    ) -> None:
        self.sampler = Sampler(config)
        self.store = SamplerStore(self.sampler._key)
        self.table: dict[str, Any] = {} if table is None else table
        self.state = self.store.load(order(self.table.items()))
        self.tasks: list[dict[str, Any]] = []
        self.saved: list[tuple[dict[str, Any], list[str]]] = []  # per saved event

    def step(self, what: str, record: Any, now: int) -> None:
        state = self.state
        if what == "observe":
            step = self.sampler.observe(state, record, now)
        elif state is None:
            return
        else:
            step = self.sampler.on_timer(state, now)
        if step.state is not state:
            writes, deletes = self.store.changes(state, step.state)
            assert not writes.keys() & set(deletes)
            assert len(deletes) == len(set(deletes))
            for key, value in writes.items():
                assert isinstance(key, str)
                assert stored(value) == value  # JSON, and back unchanged
                self.table[key] = stored(value)
            for key in deletes:
                del self.table[key]  # a key the table holds
            self.saved.append((writes, deletes))
        for task in step.tasks:
            encode("annotation_task", task)
        self.state = step.state
        self.tasks += step.tasks

    def run(self, steps: list[Step]) -> Agent:
        for what, record, now in steps:
            self.step(what, record, now)
        return self


def load(table: dict[str, Any], config: SamplingConfig = CONFIG) -> dict[str, Any] | None:
    """The state a restarted agent (a fresh sampler and store) reads from the table."""
    return SamplerStore(Sampler(config)._key).load(list(table.items()))


def seqs(table: dict[str, Any]) -> dict[str, int]:
    return {k: v["seq"] for k, v in table.items() if k.startswith("sig\x1f")}


# -- load: the table holds the live state ------------------------------------------------


@pytest.mark.parametrize("config", [CONFIG, SMALL_MEMORY], ids=["memory-1000", "memory-3"])
def test_the_table_loads_as_the_live_state_after_every_step(config: SamplingConfig):
    agent = Agent(config)
    seen_between_windows = seen_sampled_and_window = False
    for what, record, now in script():
        agent.step(what, record, now)
        state = agent.state
        assert state is not None
        loaded = load(agent.table, config)
        assert loaded == state
        # the ordered parts, spelled out: the memory's order, the rankings, the bounds
        assert loaded is not None
        assert loaded["memory"]["order"] == state["memory"]["order"]
        assert loaded["memory"]["signatures"] == state["memory"]["signatures"]
        assert loaded["sampled"].keys() == state["sampled"].keys()
        if state["window"] is None:
            seen_between_windows = True
            assert loaded["window"] is None
        else:
            seen_sampled_and_window = seen_sampled_and_window or bool(state["sampled"])
            for part in ("start", "end", "entries", "top", "pool"):
                assert loaded["window"][part] == state["window"][part]
    assert len(agent.tasks) == 9  # three windows closed, count=3 each
    assert seen_between_windows and seen_sampled_and_window
    if config.memory_size == 3:
        assert len(agent.state["memory"]["order"]) == 3  # prompts were forgotten
        assert len(seqs(agent.table)) == 3  # and their signatures deleted from the table


def test_a_forgotten_prompt_seen_again_goes_last_in_the_memory():
    agent = Agent(SMALL_MEMORY)
    steps = script()
    agent.run(steps[:13])  # window 1 holds b0..b3: the memory forgot every a-prompt
    assert agent.state is not None
    assert not {"i-a0", "i-a2"} & set(agent.state["memory"]["order"])
    sampled = set(agent.state["sampled"])
    back = next(
        i
        for i, (_, record, _) in enumerate(steps)
        if i >= 13 and record["interaction_id"] not in sampled
    )
    agent.run(steps[13 : back + 1])
    iid = steps[back][1]["interaction_id"]
    assert agent.state["memory"]["order"][-1] == iid
    assert seqs(agent.table)["sig\x1f" + iid] == max(seqs(agent.table).values())
    assert load(agent.table, SMALL_MEMORY) == agent.state


@pytest.mark.parametrize("order", [reversed, sorted], ids=["reversed", "sorted"])
def test_load_does_not_depend_on_the_order_the_table_gives_its_entries(order: Any):
    agent = Agent(SMALL_MEMORY)
    for what, record, now in script():
        agent.step(what, record, now)
        items = list(agent.table.items())
        loaded = SamplerStore(agent.sampler._key).load(order(items))
        assert loaded == agent.state


def test_load_of_an_empty_table_is_none():
    store = SamplerStore(Sampler(CONFIG)._key)
    assert store.load([]) is None
    assert store.load(iter(())) is None
    assert Agent().state is None


def test_an_interaction_id_holding_the_separator_survives():
    odd = "a\x1fb"
    record = scored("x", prompt=topic(1), ts=W0)
    record["interaction_id"] = odd
    agent = Agent().run([("observe", record, W0)])
    assert agent.state is not None
    assert load(agent.table) == agent.state
    assert odd in agent.state["memory"]["signatures"]
    assert odd in agent.state["window"]["entries"]
    agent.run([("timer", None, W0 + MINUTE)])  # sampled now: its id is a sampled key
    assert agent.state["sampled"] == {odd: True}
    assert load(agent.table) == agent.state


# -- changes: what one event writes ---------------------------------------------------------


def test_every_written_value_is_json():
    agent = Agent(SMALL_MEMORY).run(script())
    assert agent.saved
    for writes, _ in agent.saved:
        json.dumps(writes)  # raises on anything the JSON serializer cannot write


def test_no_change_writes_nothing():
    state = Agent().run(script()[:5]).state
    assert state is not None
    assert SamplerStore(Sampler(CONFIG)._key).changes(state, state) == ({}, [])


def test_one_more_response_writes_its_signature_and_its_entry_only():
    agent = Agent().run(script()[:1])
    agent.step(*script()[1])
    writes, deletes = agent.saved[-1]
    assert deletes == []
    assert set(writes) == {"sig\x1fi-a1", "entry\x1fi-a1"}
    assert writes["sig\x1fi-a1"]["seq"] == 1
    assert writes["entry\x1fi-a1"]["entry"] is agent.state["window"]["entries"]["i-a1"]


def test_closing_a_window_deletes_its_entries_and_writes_the_sampled_ids():
    agent = Agent().run(script()[:8])
    before = agent.state
    assert before is not None and before["window"] is not None
    table_before = dict(agent.table)
    agent.step(*script()[8])  # the timer that closes window 0
    assert len(agent.tasks) == 3
    writes, deletes = agent.saved[-1]
    assert sorted(deletes) == sorted("entry\x1f" + i for i in before["window"]["entries"])
    sampled = [t["interaction_id"] for t in agent.tasks]
    # each sampled id holds its sampling number: the order the oldest are forgotten in
    assert writes == {"window": None, **{"sampled\x1f" + i: n for n, i in enumerate(sampled)}}
    assert not any(k.startswith("entry\x1f") for k in agent.table)
    assert {k for k in agent.table if k.startswith("sig\x1f")} == {
        k for k in table_before if k.startswith("sig\x1f")
    }


def test_an_observe_past_the_end_closes_the_window_and_opens_the_next_in_one_write():
    steps = script()
    at = next(i for i, (_, _, now) in enumerate(steps) if now >= W0 + 2 * MINUTE)
    agent = Agent().run(steps[:at])
    old = agent.state
    assert old is not None and old["window"] is not None
    agent.step(*steps[at])
    assert len(agent.tasks) == 6  # window 1 closed by the observe
    writes, deletes = agent.saved[-1]
    assert writes["window"] == {"start": W0 + 2 * MINUTE, "end": W0 + 3 * MINUTE}
    assert set(deletes) == {"entry\x1f" + i for i in old["window"]["entries"]}
    assert load(agent.table) == agent.state


def _prompt(n: int) -> str:
    """A user prompt of ordinary length, its own topic."""
    return (
        f"How should I configure the retry policy of service{n} when its upstream dep{n} "
        f"times out after {n % 50 + 10} seconds, and what backoff would you suggest for job{n}?"
    )


def test_per_event_writes_stay_small_with_the_product_sized_sampler():
    config = SamplingConfig(count=1000, memory_size=1000, window_s=3600)
    start = T0 - T0 % (3600 * SECOND)
    agent = Agent(config)
    n_events = 1500
    for n in range(n_events):  # one window: 1,500 responses, 1,000 remembered
        ts = start + n * SECOND
        record = scored(f"r{n}", conv=f"c{n}", prompt=_prompt(n), score=float(n % 3 == 0), ts=ts)
        agent.step("observe", record, ts)
    assert len(agent.saved) == n_events
    for writes, deletes in agent.saved:
        assert len(writes) <= 4
        assert len(deletes) <= 4
        for value in writes.values():
            assert len(json.dumps(value)) < 20_000
        assert len(json.dumps(writes)) < 20_000
    state = agent.state
    assert state is not None
    assert len(state["memory"]["order"]) == 1000
    assert len(state["window"]["entries"]) >= 1000
    # the whole state is what each event would have written before: megabytes
    assert len(json.dumps(state)) > 1_000_000
    assert load(agent.table, config) == state
    # a restart carries on with the same small writes
    restarted = Agent(config, table=dict(agent.table))
    assert restarted.state == state
    ts = start + n_events * SECOND
    restarted.step("observe", scored("late", prompt=_prompt(n_events), ts=ts), ts)
    writes, deletes = restarted.saved[-1]
    assert len(writes) <= 4 and len(deletes) <= 4
    # closing the window writes one small value per sampled id
    agent.step("timer", None, start + 3600 * SECOND)
    assert len(agent.tasks) == 1000
    writes, deletes = agent.saved[-1]
    assert all(len(json.dumps(v)) < 100 for v in writes.values())
    assert not any(k.startswith("entry\x1f") for k in agent.table)
    assert load(agent.table, config) == agent.state


# -- restarts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIG, SMALL_MEMORY], ids=["memory-1000", "memory-3"])
@pytest.mark.parametrize("cut", [1, 3, 7, 9, 12, 16, 20, 22])
def test_the_sampler_continues_identically_from_the_loaded_table(cut: int, config: SamplingConfig):
    steps = script()
    live = Agent(config).run(steps[:cut])
    tasks_before = list(live.tasks)
    # a restarted agent: a fresh sampler (no cached index) and a store loaded from the table
    restarted = Agent(config, table=dict(live.table))
    assert restarted.state == live.state
    live_states, restarted_states = [], []
    for what, record, now in steps[cut:]:
        live.step(what, record, now)
        restarted.step(what, record, now)
        live_states.append(live.state)
        restarted_states.append(restarted.state)
        assert restarted.table == live.table
    assert restarted_states == live_states
    assert restarted.tasks == live.tasks[len(tasks_before) :]
    # and the whole run is the run without a restart
    straight = Agent(config).run(steps)
    assert tasks_before + restarted.tasks == straight.tasks
    assert restarted.state == straight.state


def test_a_loaded_store_numbers_new_signatures_after_the_largest_loaded_one():
    steps = script()
    live = Agent(SMALL_MEMORY).run(steps[:12])
    loaded_seqs = seqs(live.table)
    assert len(loaded_seqs) == 3
    top = max(loaded_seqs.values())
    assert top > 2  # signatures were forgotten: the numbers do not start at 0
    restarted = Agent(SMALL_MEMORY, table=dict(live.table))
    restarted.run(steps[12:])
    new = [
        value["seq"]
        for writes, _ in restarted.saved
        for key, value in writes.items()
        if key.startswith("sig\x1f")
    ]
    assert new and new == list(range(top + 1, top + 1 + len(new)))
    # the memory's order is still right when the table is loaded again, after more events
    live.run(steps[12:])
    again = load(restarted.table, SMALL_MEMORY)
    assert again == live.state
    assert again is not None
    assert again["memory"]["order"] == live.state["memory"]["order"]


def test_a_store_reloaded_twice_keeps_numbering_from_the_table():
    steps = script()
    agent = Agent(SMALL_MEMORY).run(steps[:6])
    for cut in (6, 12, 18):
        agent = Agent(SMALL_MEMORY, table=agent.table)  # restart on the same table
        agent.run(steps[cut : cut + 6])
    straight = Agent(SMALL_MEMORY).run(steps[:24])
    assert agent.state == straight.state
    assert agent.table == straight.table


def test_a_store_forgets_the_numbers_of_a_previous_table_when_loading_an_empty_one():
    store = Agent(SMALL_MEMORY).run(script()).store
    assert store.load([]) is None
    agent = Agent(SMALL_MEMORY)
    agent.store = store
    agent.run(script()[:2])
    assert sorted(seqs(agent.table).values()) == [0, 1]


def test_a_restored_state_still_never_samples_an_interaction_twice():
    agent = Agent().run(script()[:9])  # window 0 closed
    sampled = {t["interaction_id"] for t in agent.tasks}
    assert len(sampled) == 3
    restarted = Agent(table=dict(agent.table))
    for iid in sampled:
        rid = iid.removeprefix("i-")
        restarted.step("observe", scored(rid, prompt="again"), W0 + MINUTE + 1)
        assert iid not in restarted.state["window"]["entries"]


@pytest.mark.parametrize(
    "order", [list, reversed, sorted], ids=["as-written", "reversed", "sorted"]
)
def test_the_sampled_ids_keep_their_order_so_a_restart_forgets_the_same_ones(order: Any):
    # remembered sampled ids are an ordered set: past max_sampled_ids the oldest go first
    config = SamplingConfig(count=3, window_s=60, max_sampled_ids=7)
    steps = script()
    at = next(i for i, (_, _, now) in enumerate(steps) if now >= W0 + 2 * MINUTE) + 1
    live = Agent(config).run(steps[:at])  # windows 0 and 1 closed: six sampled ids
    assert len(live.state["sampled"]) == 6
    restarted = Agent(config, table=dict(live.table), order=order)
    assert restarted.state == live.state
    live.run(steps[at:])
    restarted.run(steps[at:])  # window 2 closes: nine sampled, the two oldest forgotten
    assert len(live.state["sampled"]) == 7
    assert set(restarted.state["sampled"]) == set(live.state["sampled"])
    assert list(restarted.state["sampled"]) == list(live.state["sampled"])


def test_a_deep_copied_state_rewrites_nothing_but_its_window_entries():
    state = Agent().run(script()[:5]).state
    assert state is not None
    writes, deletes = SamplerStore(Sampler(CONFIG)._key).changes(state, copy.deepcopy(state))
    assert deletes == []
    assert set(writes) <= {"entry\x1f" + i for i in state["window"]["entries"]}
