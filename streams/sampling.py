"""Annotation sampling: scored responses into AnnotationTasks, per window.

Priority (product rules, points configurable):

* ``new_topic`` +3 — the last user message's MinHash signature has a Jaccard
  estimate below ``novelty_threshold`` to every prompt in the recent-prompt memory
  (the last ``memory_size`` prompts seen, in arrival order);
* ``engaged`` +2 — implicit score > 0;
* ``uncertain`` +2 — the interaction's uncertainty > 0.5 (when it carries one);
* edge case +3, once however many apply — ``edge_case:reported``,
  ``edge_case:long_prompt`` (last user message over ``long_prompt_chars``),
  ``edge_case:long_response`` (over ``long_response_chars``), ``edge_case:refusal``
  (a ``refusal_phrases`` phrase in the start of the normalized response).

Per window, ``count`` tasks: the ``floor(count * 0.7)`` highest priorities
(``TOP_PRIORITY``) and the rest drawn uniformly from the others (``UNIFORM``). The
draw is seeded: each response gets the key ``blake2b(seed, interaction_id)`` in
[0, 1); priority ties go to the lower key and the uniform share is the lowest keys
among the rest (a uniform random subset, the same in every run and every process).
The window keeps only ``count`` top entries and the ``count`` lowest keys, which
provably contain the answer, so its size is bounded by the count, not the traffic.
An interaction is never sampled twice: the window skips one it holds, and the ids
of the last ``max_sampled_ids`` sampled are remembered across windows.

Streaming windows are tumbling, ``window_s`` long, aligned to the epoch, on the
``now`` the agent passes. State (JSON-serialisable; never modified in place)::

    {"memory": RecentPrompts state, "sampled": {interaction_id: True},
     "window": None | {"start", "end", "entries": {id: entry},
                       "top": [[-priority, key, id], ...] (best first),
                       "pool": [[key, id], ...] (lowest first)}}
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prefloop.streams.config import SamplingConfig
from prefloop.streams.ids import derived_id
from prefloop.streams.minhash import MinHasher, RecentPrompts
from prefloop.streams.normalize import last_user_message, normalize_text
from prefloop.streams.records import Record, bounded_extend

__all__ = ["SampleStep", "Sampler", "priority"]


@dataclass(frozen=True)
class SampleStep:
    """What one call did: the new state and the AnnotationTask records to emit."""

    state: dict[str, Any]
    tasks: list[Record] = field(default_factory=list)


def _novelty_text(messages: list[Record]) -> str:
    return last_user_message(messages) or " ".join(str(m.get("content", "")) for m in messages)


@functools.lru_cache(maxsize=8)
def _refusals(phrases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(normalize_text(p) for p in phrases)


def priority(scored: Record, new_topic: bool, config: SamplingConfig) -> tuple[float, list[str]]:
    """The priority of a scored response and the reasons behind it."""
    points, reasons = 0.0, []
    if new_topic:
        points += config.new_topic_points
        reasons.append("new_topic")
    score = scored.get("implicit_score")
    if score is not None and score > 0:
        points += config.engaged_points
        reasons.append("engaged")
    uncertainty = scored.get("uncertainty")
    if uncertainty is not None and uncertainty > config.uncertainty_threshold:
        points += config.uncertain_points
        reasons.append("uncertain")
    edges = []
    if scored.get("reported"):
        edges.append("edge_case:reported")
    if len(last_user_message(scored["messages"])) > config.long_prompt_chars:
        edges.append("edge_case:long_prompt")
    response = scored["response"]
    if len(response) > config.long_response_chars:
        edges.append("edge_case:long_response")
    start = normalize_text(response[: config.refusal_scan_chars])
    if any(phrase in start for phrase in _refusals(config.refusal_phrases)):
        edges.append("edge_case:refusal")
    if edges:
        points += config.edge_case_points
        reasons.extend(edges)
    return points, reasons


class Sampler:
    """Draws annotation tasks from scored responses; see the module docstring."""

    def __init__(self, config: SamplingConfig | None = None) -> None:
        self.config = config or SamplingConfig()
        c = self.config
        self.hasher = MinHasher(c.num_perm, c.minhash_seed, c.shingle_size)
        self.memory = RecentPrompts(c.num_perm, c.bands, c.memory_size)
        self._window_ms = int(c.window_s * 1000)

    def new_state(self) -> dict[str, Any]:
        return {"memory": RecentPrompts.new_state(), "sampled": {}, "window": None}

    # -- streaming --------------------------------------------------------------

    def observe(self, state: dict[str, Any] | None, scored: Record, now: int) -> SampleStep:
        """Take one scored response; a ``now`` past the open window closes it first."""
        state = self._copy(state if state is not None else self.new_state())
        tasks = []
        window = state["window"]
        if window is not None and now >= window["end"]:
            tasks = self._close_in_place(state, now)
        if state["window"] is None:
            start = now - now % self._window_ms
            state["window"] = self._new_window(start, start + self._window_ms)
        self._add_in_place(state, scored)
        return SampleStep(state, tasks)

    def on_timer(self, state: dict[str, Any], now: int) -> SampleStep:
        """Close the window when ``now`` has reached its end."""
        window = state["window"]
        if window is None or now < window["end"]:
            return SampleStep(state)
        return self.close(state, now)

    def close(self, state: dict[str, Any], now: int) -> SampleStep:
        """Close the open window now, whatever its end (e.g. when the agent stops)."""
        if state["window"] is None:
            return SampleStep(state)
        state = self._copy(state)
        return SampleStep(state, self._close_in_place(state, now))

    def next_deadline(self, state: dict[str, Any]) -> int | None:
        """When :meth:`on_timer` would close the open window (None: no window)."""
        return state["window"]["end"] if state["window"] is not None else None

    # -- batch (the offline sampler) -----------------------------------------------

    def sample(
        self,
        scored: Iterable[Record],
        now: int | None = None,
        state: dict[str, Any] | None = None,
    ) -> SampleStep:
        """Sample one window spanning every response given (offline use).

        The window runs from the earliest ``ts`` to the latest + 1; tasks are stamped
        ``now`` (default: the window's end, so the output depends on the input only).
        """
        work = self._copy(state if state is not None else self.new_state())
        work["window"] = window = self._new_window(0, 0)
        first, last = None, None
        for item in scored:
            ts = int(item["ts"])
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
            self._add_in_place(work, item)
        window["start"] = first if first is not None else 0
        window["end"] = last + 1 if last is not None else 0
        tasks = self._close_in_place(work, window["end"] if now is None else now)
        return SampleStep(work, tasks)

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _new_window(start: int, end: int) -> dict[str, Any]:
        return {"start": start, "end": end, "entries": {}, "top": [], "pool": []}

    @staticmethod
    def _copy(state: dict[str, Any]) -> dict[str, Any]:
        """Copies of the containers the in-place methods change (entries are shared)."""
        memory = state["memory"]
        window = state["window"]
        return {
            "memory": {"order": list(memory["order"]), "signatures": dict(memory["signatures"])},
            "sampled": state["sampled"],  # replaced, not changed, on close
            "window": None
            if window is None
            else {
                **window,
                "entries": dict(window["entries"]),
                "top": list(window["top"]),
                "pool": list(window["pool"]),
            },
        }

    def _key(self, interaction_id: str) -> float:
        text = f"{self.config.seed}\x1f{interaction_id}".encode()
        digest = hashlib.blake2b(text, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def _add_in_place(self, state: dict[str, Any], scored: Record) -> None:
        iid = scored["interaction_id"]
        window = state["window"]
        if iid in state["sampled"] or iid in window["entries"]:
            return
        signature = self.hasher.signature(_novelty_text(scored["messages"]))
        similarity = self.memory.most_similar(state["memory"], signature)
        self.memory.remember_in_place(state["memory"], iid, signature)
        points, reasons = priority(scored, similarity < self.config.novelty_threshold, self.config)
        key = self._key(iid)
        entries, top, pool = window["entries"], window["top"], window["pool"]
        n_top, n_pool = self.config.top_count, self.config.count
        top_rank, pool_rank = [-points, key, iid], [key, iid]
        # most responses of a busy window miss both lists: decide that before any work
        goes_top = n_top > 0 and (len(top) < n_top or top_rank < top[-1])
        goes_pool = len(pool) < n_pool or pool_rank < pool[-1]
        if not (goes_top or goes_pool):
            return
        entries[iid] = {
            "interaction_id": iid,
            "response_id": scored["response_id"],
            "conversation_id": scored["conversation_id"],
            "model_version": scored["model_version"],
            "prompt": [{"role": m["role"], "content": m["content"]} for m in scored["messages"]],
            "response": scored["response"],
            "priority": points,
            "reasons": reasons,
        }
        if goes_top:
            bisect.insort(top, top_rank)
        if goes_pool:
            bisect.insort(pool, pool_rank)
        dropped = [r[-1] for r in top[n_top:] + pool[n_pool:]]
        del top[n_top:]
        del pool[n_pool:]
        if dropped:
            kept = {r[-1] for r in top} | {r[-1] for r in pool}
            for gone in dropped:
                if gone not in kept:
                    entries.pop(gone, None)

    def _close_in_place(self, state: dict[str, Any], now: int) -> list[Record]:
        window = state["window"]
        entries = window["entries"]
        top = [rank[-1] for rank in window["top"]]
        chosen = set(top)
        rest = [r[-1] for r in window["pool"] if r[-1] not in chosen][: self.config.uniform_count]
        tasks = [self._task(entries[i], "TOP_PRIORITY", window, now) for i in top]
        tasks += [self._task(entries[i], "UNIFORM", window, now) for i in rest]
        state["sampled"] = bounded_extend(
            state["sampled"], (t["interaction_id"] for t in tasks), self.config.max_sampled_ids
        )
        state["window"] = None
        return tasks

    @staticmethod
    def _task(entry: dict[str, Any], method: str, window: dict[str, Any], now: int) -> Record:
        return {
            "task_id": derived_id("annotation-task", entry["interaction_id"]),
            "interaction_id": entry["interaction_id"],
            "response_id": entry["response_id"],
            "conversation_id": entry["conversation_id"],
            "model_version": entry["model_version"],
            "prompt": entry["prompt"],
            "response": entry["response"],
            "priority": float(entry["priority"]),
            "reasons": list(entry["reasons"]),
            "sampled_by": method,
            "window_start": int(window["start"]),
            "window_end": int(window["end"]),
            "ts": int(now),
        }
