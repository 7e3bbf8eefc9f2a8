"""MinHash signatures of prompts and a bounded memory of recent ones, for novelty.

A prompt's signature is ``num_perm`` minima of universal hashes ``(a*x + b) mod p``
(p = 2**31 - 1, ``a`` and ``b`` drawn from a fixed seed) over stable hashes of its
word shingles (blake2b, never the salted ``hash()``); two signatures agree in a
position with probability equal to the Jaccard similarity of the shingle sets, so
the share of agreeing positions estimates it.

:class:`RecentPrompts` remembers the last ``capacity`` signatures and finds the most
similar one through LSH banding (``bands`` bands of ``num_perm / bands`` rows: two
prompts that agree on every row of some band are compared exactly). With the
defaults (64 permutations, 32 bands of 2) a pair at Jaccard 0.5 becomes a candidate
with probability 1 - (1 - 0.5**2)**32 > 0.999. The memory is a JSON-serialisable dict.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

from prefloop.streams.normalize import words

__all__ = ["MinHasher", "RecentPrompts", "jaccard_estimate", "shingles"]

_PRIME = (1 << 31) - 1

Signature = list[int]


def shingles(text: str, size: int = 3) -> set[str]:
    """The word ``size``-grams of ``text`` after normalization.

    A text shorter than ``size`` words is one shingle of all its words; an empty
    text has none.
    """
    tokens = words(text)
    if len(tokens) <= size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def _stable_hash(shingle: str) -> int:
    digest = hashlib.blake2b(shingle.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % _PRIME


class MinHasher:
    """Signatures of ``num_perm`` hashes drawn from ``seed``: the same in every process."""

    def __init__(self, num_perm: int = 64, seed: int = 1, shingle_size: int = 3) -> None:
        rng = random.Random(seed)
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        params = [(rng.randrange(1, _PRIME), rng.randrange(0, _PRIME)) for _ in range(num_perm)]
        # a, x < 2**31 and b < 2**31: a * x + b < 2**63 is exact in uint64
        self._a = np.array([a for a, _ in params], dtype=np.uint64)[:, None]
        self._b = np.array([b for _, b in params], dtype=np.uint64)[:, None]

    def signature(self, text: str) -> Signature:
        """The signature of ``text``'s shingles (all 2**31 - 1 for a text without words)."""
        found = shingles(text, self.shingle_size)
        if not found:
            return [_PRIME] * self.num_perm
        xs = np.fromiter((_stable_hash(s) for s in found), dtype=np.uint64, count=len(found))
        values = (self._a * xs[None, :] + self._b) % np.uint64(_PRIME)
        return [int(v) for v in values.min(axis=1)]


def jaccard_estimate(left: Signature, right: Signature) -> float:
    """The share of positions where two signatures agree: an estimate of Jaccard similarity."""
    if len(left) != len(right) or not left:
        raise ValueError("signatures of different lengths cannot be compared")
    return sum(1 for a, b in zip(left, right, strict=True) if a == b) / len(left)


class RecentPrompts:
    """A bounded memory of prompt signatures, searched through an LSH index.

    The state is ``{"order": [key, ...], "signatures": {key: signature}}`` (oldest
    first). The LSH index (band key -> keys) is not part of it: this object keeps it
    as a cache of the last state it saw and rebuilds it when given another one
    (after a restart, or an older state), so results never depend on the cache.
    ``remember`` returns a new state and leaves the one it is given unchanged.
    """

    def __init__(self, num_perm: int = 64, bands: int = 32, capacity: int = 1000) -> None:
        if num_perm % bands:
            raise ValueError(f"bands={bands} must divide num_perm={num_perm}")
        self.num_perm, self.bands, self.capacity = num_perm, bands, capacity
        self.rows = num_perm // bands
        self._index_order: list[str] = []
        self._index: dict[str, list[str]] = {}

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"order": [], "signatures": {}}

    def _band_keys(self, signature: Signature) -> list[str]:
        rows = self.rows
        return [
            f"{band}:" + ".".join(f"{v:x}" for v in signature[band * rows : (band + 1) * rows])
            for band in range(self.bands)
        ]

    def _sync(self, state: dict[str, Any]) -> None:
        """Make the cached index the index of ``state``."""
        if self._index_order is state["order"] or self._index_order == state["order"]:
            return
        index: dict[str, list[str]] = {}
        for key in state["order"]:
            for band_key in self._band_keys(state["signatures"][key]):
                index.setdefault(band_key, []).append(key)
        self._index, self._index_order = index, state["order"]

    def most_similar(self, state: dict[str, Any], signature: Signature) -> float:
        """The highest Jaccard estimate between ``signature`` and a remembered one (0.0: none)."""
        self._sync(state)
        signatures = state["signatures"]
        candidates: set[str] = set()
        for band_key in self._band_keys(signature):
            candidates.update(self._index.get(band_key, ()))
        best = 0.0
        for key in candidates:
            best = max(best, jaccard_estimate(signature, signatures[key]))
        return best

    def remember(self, state: dict[str, Any], key: str, signature: Signature) -> dict[str, Any]:
        """A new state with ``key``'s signature added (the oldest dropped beyond capacity)."""
        if key in state["signatures"]:
            return state
        order: list[str] = list(state["order"])
        copy = {"order": order, "signatures": dict(state["signatures"])}
        self._sync(state)
        self._index_order = order  # the same content: the index carries over
        self.remember_in_place(copy, key, signature)
        return copy

    def remember_in_place(self, state: dict[str, Any], key: str, signature: Signature) -> None:
        """Add ``key``'s signature to ``state`` itself (for a state nobody else holds)."""
        signatures, order = state["signatures"], state["order"]
        if key in signatures:
            return
        self._sync(state)
        order.append(key)
        signatures[key] = signature
        index = self._index
        for band_key in self._band_keys(signature):
            index.setdefault(band_key, []).append(key)
        while len(order) > self.capacity:
            old = order.pop(0)
            for band_key in self._band_keys(signatures.pop(old)):
                left = [k for k in index.get(band_key, []) if k != old]
                if left:
                    index[band_key] = left
                else:
                    index.pop(band_key, None)
        self._index_order = order
