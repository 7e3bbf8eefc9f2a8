"""The sampler's one global state, kept in a changelogged table as small entries.

The Sampler state (:mod:`prefloop.streams.sampling`) holds up to thousands of
signatures, window entries and sampled ids: written whole after every event it would
flood the changelog (and outgrow Kafka's message limit). Here it is split into one
table entry per signature, per window entry and per sampled id, plus a few small
entries (the recent-prompt order, the window's bounds and rankings); after each
event only the entries that changed are written or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["changes", "flatten", "unflatten"]

_SEP = "\x1f"
_SPLIT = ("memory" + _SEP + "signatures", "sampled", "window" + _SEP + "entries")


def flatten(state: Mapping[str, Any]) -> dict[str, Any]:
    """``{entry key: value}`` for a Sampler state."""
    memory, window = state["memory"], state["window"]
    out: dict[str, Any] = {"memory" + _SEP + "order": memory["order"]}
    out.update(_split(_SPLIT[0], memory["signatures"]))
    out.update(_split(_SPLIT[1], state["sampled"]))
    if window is None:
        out["window"] = None
    else:
        out["window"] = {k: v for k, v in window.items() if k != "entries"}
        out.update(_split(_SPLIT[2], window["entries"]))
    return out


def _split(prefix: str, items: Mapping[str, Any]) -> dict[str, Any]:
    return {prefix + _SEP + key: value for key, value in items.items()}


def unflatten(entries: Iterable[tuple[str, Any]]) -> dict[str, Any] | None:
    """The Sampler state of a table's entries; None when the table is empty."""
    state: dict[str, Any] = {
        "memory": {"order": [], "signatures": {}},
        "sampled": {},
        "window": None,
    }
    found = False
    entries_of_window: dict[str, Any] = {}
    for key, value in entries:
        found = True
        if key == "memory" + _SEP + "order":
            state["memory"]["order"] = value
        elif key == "window":
            state["window"] = value
        else:  # split on the known prefixes: an id may hold the separator itself
            for prefix, into in zip(
                _SPLIT,
                (state["memory"]["signatures"], state["sampled"], entries_of_window),
                strict=True,
            ):
                if key.startswith(prefix + _SEP):
                    into[key[len(prefix) + 1 :]] = value
                    break
    if not found:
        return None
    if state["window"] is not None:
        state["window"] = {**state["window"], "entries": entries_of_window}
    # the memory's order is the truth; signatures of evicted prompts may linger
    signatures = state["memory"]["signatures"]
    state["memory"]["signatures"] = {k: signatures[k] for k in state["memory"]["order"]}
    return state


def changes(
    old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The entries to write and the keys to delete to turn ``old`` into ``new``."""
    before = flatten(old) if old is not None else {}
    after = flatten(new)
    writes = {k: v for k, v in after.items() if k not in before or not _same(before[k], v)}
    deletes = [k for k in before if k not in after]
    return writes, deletes


def _same(a: Any, b: Any) -> bool:
    return a is b or a == b
