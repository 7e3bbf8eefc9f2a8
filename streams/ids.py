"""Deterministic ids of the records the agents derive (pairs, tasks, dead letters).

A derived record's id is a UUIDv5 of what it is derived from, so replaying the same
input after a restart yields the same ids and downstream deduplication works.
"""

from __future__ import annotations

import uuid

__all__ = ["derived_id"]

# fixed once for prefloop; changing it would change every derived id
_NAMESPACE = uuid.UUID("6f0b1d8e-4c2a-5e7b-9a3d-2f1c0b9e8d7a")


def derived_id(kind: str, *parts: str) -> str:
    """A UUIDv5 string from ``kind`` and ``parts`` (joined with a separator no id contains)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join((kind, *parts))))
