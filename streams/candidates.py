"""The scored response: an Interaction joined with its latest score.

This is what the cross-conversation pair miner and the annotation sampler consume,
and the line format of the offline export ``prefloop sample`` reads: every field of
an Interaction (schema interaction/v1) plus

* ``implicit_score`` (float or null): the latest ScoredInteraction's score;
* ``reported`` (bool): whether the user reported the response;
* ``rating`` (float or null): the latest explicit rating;
* ``revision`` (int or null): the score revision it was built from.

The conversation pair miner emits one for every new score revision of a response
whose Interaction it holds (``PairStep.scored``).
"""

from __future__ import annotations

from typing import Any

from prefloop.streams.records import Record

__all__ = ["scored_response"]


def scored_response(interaction: Record, score: Record | None) -> Record:
    """An Interaction with the fields of its ScoredInteraction ``score`` (None: unscored)."""
    out: dict[str, Any] = dict(interaction)
    if score is None:
        out.update(implicit_score=None, reported=False, rating=None, revision=None)
    else:
        out.update(
            implicit_score=score["implicit_score"],
            reported=bool(score["signals"].get("reported")),
            rating=score.get("rating"),
            revision=score["revision"],
        )
    return out
