"""The sampler's one global state, kept in a changelogged table as small entries.

The Sampler state (:mod:`prefloop.streams.sampling`) holds up to thousands of
signatures, window entries and sampled ids: written whole after every event it would
flood the changelog (and outgrow Kafka's message limit). :class:`SamplerStore` splits
it into one table entry per remembered prompt signature (with its arrival number, from
which the memory's order is rebuilt), per window entry (with whether it ranks in the
top or the uniform pool, from which both rankings are rebuilt) and per sampled id, plus
the window's bounds; a sampled id holds its sampling number, which keeps their
order (the oldest are forgotten first). After each event it writes only the entries
that changed: about
one signature and one window entry, a few hundred bytes.

Entry keys: ``window``, ``sig\\x1f<id>``, ``entry\\x1f<id>``, ``sampled\\x1f<id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["SamplerStore"]

_SEP = "\x1f"
_SIG, _ENTRY, _SAMPLED = "sig" + _SEP, "entry" + _SEP, "sampled" + _SEP


class SamplerStore:
    """Turns Sampler states into table entries and back.

    ``draw_key`` is the sampler's key of an interaction id (its rank in the uniform
    draw), used to rebuild the rankings.
    """

    def __init__(self, draw_key: Callable[[str], float]) -> None:
        self.draw_key = draw_key
        self._seq: dict[str, int] = {}
        self._next = 0
        self._next_sampled = 0

    def load(self, entries: Iterable[tuple[str, Any]]) -> dict[str, Any] | None:
        """The state held in a table's entries; None when it holds none."""
        state: dict[str, Any] = {
            "memory": {"order": [], "signatures": {}},
            "sampled": {},
            "window": None,
        }
        found = False
        signatures: list[tuple[int, str, Any]] = []
        sampled: list[tuple[int, str]] = []
        window_entries: dict[str, Any] = {}
        for key, value in entries:
            found = True
            if key == "window":
                state["window"] = value
            elif key.startswith(_SIG):
                signatures.append((value["seq"], key[len(_SIG) :], value["sig"]))
            elif key.startswith(_ENTRY):
                window_entries[key[len(_ENTRY) :]] = value
            elif key.startswith(_SAMPLED):
                sampled.append((value, key[len(_SAMPLED) :]))
        sampled.sort()
        state["sampled"] = {iid: True for _, iid in sampled}
        self._next_sampled = sampled[-1][0] + 1 if sampled else 0
        self._seq = {iid: seq for seq, iid, _ in signatures}
        self._next = max(self._seq.values(), default=-1) + 1
        if not found:
            return None
        signatures.sort()
        state["memory"] = {
            "order": [iid for _, iid, _ in signatures],
            "signatures": {iid: sig for _, iid, sig in signatures},
        }
        if state["window"] is not None:
            top, pool = [], []
            for iid, held in window_entries.items():
                rank = self.draw_key(iid)
                if held["top"]:
                    top.append([-held["entry"]["priority"], rank, iid])
                if held["pool"]:
                    pool.append([rank, iid])
            state["window"] = {
                **state["window"],
                "entries": {iid: held["entry"] for iid, held in window_entries.items()},
                "top": sorted(top),
                "pool": sorted(pool),
            }
        return state

    def changes(
        self, old: Mapping[str, Any] | None, new: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """The entries to write and the keys to delete to turn ``old`` into ``new``."""
        writes: dict[str, Any] = {}
        deletes: list[str] = []
        old_sigs = old["memory"]["signatures"] if old else {}
        new_sigs = new["memory"]["signatures"]
        for iid in new["memory"]["order"]:
            if iid not in old_sigs:
                self._seq[iid] = self._next
                self._next += 1
                writes[_SIG + iid] = {"seq": self._seq[iid], "sig": new_sigs[iid]}
        for iid in old_sigs.keys() - new_sigs.keys():
            self._seq.pop(iid, None)
            deletes.append(_SIG + iid)
        old_sampled = old["sampled"] if old else {}
        if new["sampled"] is not old_sampled:  # an ordered set: the oldest go first
            for iid in new["sampled"]:
                if iid not in old_sampled:
                    writes[_SAMPLED + iid] = self._next_sampled
                    self._next_sampled += 1
            deletes += [_SAMPLED + i for i in old_sampled.keys() - new["sampled"].keys()]
        old_window, new_window = (old["window"] if old else None), new["window"]
        if _bounds(old_window) != _bounds(new_window):
            writes["window"] = _bounds(new_window)
        before, after = _held(old_window), _held(new_window)
        for iid, held in after.items():
            previous = before.get(iid)
            if (
                previous is None
                or previous["entry"] is not held["entry"]
                or ((previous["top"], previous["pool"]) != (held["top"], held["pool"]))
            ):
                writes[_ENTRY + iid] = held
        deletes += [_ENTRY + iid for iid in before.keys() - after.keys()]
        return writes, deletes


def _bounds(window: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if window is None else {"start": window["start"], "end": window["end"]}


def _held(window: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if window is None:
        return {}
    top = {rank[-1] for rank in window["top"]}
    pool = {rank[-1] for rank in window["pool"]}
    return {
        iid: {"entry": entry, "top": iid in top, "pool": iid in pool}
        for iid, entry in window["entries"].items()
    }
