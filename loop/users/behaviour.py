"""What a simulated user does with one answer, drawn from a seeded generator.

A user first decides whether they like the answer: with probability ``noise`` by a
coin toss (a share of random behaviour, whatever the answer), otherwise with the
hidden preference's probability (:func:`.preference.liking`). Then, as real users
of a chat app do:

- an answer they dislike is regenerated most of the time, rated low now and then,
  reported rarely; one they do not regenerate ends a short session;
- an answer they like is copied or rated high now and then, and the conversation
  goes on with a next turn or ends a longer session.

The same generator state gives the same reactions, so a seed gives the same users.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from prefloop.loop.users.preference import liking

__all__ = ["Behaviour", "Reaction"]


@dataclass(frozen=True)
class Reaction:
    """The signals one answer gets; ``session_s`` set when the session ends with it."""

    liked: bool
    regenerate: bool = False
    copy: bool = False
    next_turn: bool = False
    rating: int | None = None
    report: str | None = None
    session_s: float | None = None


@dataclass(frozen=True)
class Behaviour:
    """How likely each signal is; every field a probability."""

    noise: float = 0.1  # share of answers liked or disliked by a coin toss
    regenerate: float = 0.7  # of a disliked answer
    report: float = 0.03  # of a disliked answer
    copy: float = 0.5  # of a liked answer
    next_turn: float = 0.5  # of a liked answer, while turns are left
    rate: float = 0.3  # of any answer: 4-5 when liked, 1-2 when not

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"Behaviour({f.name}={value!r}): use a probability in [0, 1]")

    def react(self, response: str, rng: random.Random, *, turns_left: int = 0) -> Reaction:
        """The user's reaction to ``response``; ``turns_left`` turns may still follow."""
        chance = 0.5 if rng.random() < self.noise else liking(response)  # noise: a coin toss
        liked = rng.random() < chance
        rating = None
        if rng.random() < self.rate:
            rating = rng.choice((4, 5)) if liked else rng.choice((1, 2))
        if liked:
            copy = rng.random() < self.copy
            if turns_left > 0 and rng.random() < self.next_turn:
                return Reaction(True, copy=copy, next_turn=True, rating=rating)
            return Reaction(True, copy=copy, rating=rating, session_s=rng.uniform(120, 600))
        report = "unhelpful" if rng.random() < self.report else None
        if report is None and rng.random() < self.regenerate:
            return Reaction(False, regenerate=True, rating=rating)
        return Reaction(False, rating=rating, report=report, session_s=rng.uniform(5, 60))
