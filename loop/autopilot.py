"""The automatic loop: look at the running experiment, act on its verdict.

Every ``ab_verdict_interval_s`` it reads what the router serves; while an experiment
runs with both arms live, it computes the verdict (which records the look, so the
sequential p-values stay valid at every look) and on PROMOTE or ROLLBACK moves the
split in one change, which the router records as a PROMOTED or ROLLED_BACK
ModelEvent. CONTINUE, an experiment without enough data, or no router: it waits for
the next look. It acts only if the experiment is still the one it analysed, unchanged
(someone may have moved the split meanwhile): otherwise it leaves it to the next look.

It analyses only fresh data: before each verdict it measures how far the ClickHouse
sink is behind on the topics the verdict reads (interactions, feedback, exposures,
scores; :func:`prefloop.analytics.lag.sink_lag`), and while the oldest event the sink
has not stored is older than ``ab_max_sink_lag_s`` it neither analyses nor acts
(:func:`stale_note` says why): a stopped or slow sink leaves ClickHouse an old,
partial picture, and a verdict on it would be one on the wrong data.
``prefloop up`` runs it (``prefloop ab watch``) when ``ab_auto`` is on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefloop.analytics.lag import TopicLag, sink_lag
from prefloop.analytics.stats import StatsError
from prefloop.analytics.verdict import PROMOTE, ROLLBACK, AnalysisError, Verdict, analyze
from prefloop.clickhouse.client import connect
from prefloop.errors import PrefloopError
from prefloop.settings import Settings

if TYPE_CHECKING:
    from prefloop.serving.assignment import Routing

__all__ = ["Look", "look_at", "look_once", "stale_note", "verdict_topics", "watch"]

log = logging.getLogger("prefloop.loop.autopilot")


@dataclass(frozen=True)
class Look:
    """What one look saw and did."""

    experiment_id: str | None
    verdict: Verdict | None
    acted: str | None  # PROMOTED, ROLLED_BACK or None
    note: str


def look_once(settings: Settings) -> Look:
    """One look at the running experiment; acts on PROMOTE or ROLLBACK."""
    from prefloop.serving import control

    return look_at(settings, control.current_routing(settings))


def look_at(settings: Settings, routing: Routing | None) -> Look:
    """One look at the experiment of ``routing`` (what the router serves, None when no
    router runs); acts on PROMOTE or ROLLBACK."""
    if routing is None or routing.experiment is None:
        return Look(None, None, None, "no experiment is running")
    experiment = routing.experiment
    if experiment.split in (0.0, 100.0):
        note = f"experiment {experiment.experiment_id} is decided (split {experiment.split:g} %)"
        return Look(experiment.experiment_id, None, None, note)
    lags = sink_lag(settings, verdict_topics(settings))
    stale = stale_note(lags.values(), settings.ab_max_sink_lag_s)
    if stale is not None:
        return Look(experiment.experiment_id, None, None, stale)
    try:
        verdict = analyze(connect(settings), settings, experiment.experiment_id, record=True)
    except (AnalysisError, StatsError) as exc:
        return Look(experiment.experiment_id, None, None, str(exc))
    from prefloop.serving import control  # Ray Serve: imported where it is used

    acted = None
    if verdict.decision == PROMOTE:
        control.promote(settings, experiment.b, reason=verdict.reason, expected=experiment)
        acted = "PROMOTED"
    elif verdict.decision == ROLLBACK:
        control.rollback(settings, reason=verdict.reason, expected=experiment)
        acted = "ROLLED_BACK"
    return Look(experiment.experiment_id, verdict, acted, verdict.reason)


def verdict_topics(settings: Settings) -> list[str]:
    """The topics whose tables the verdict reads: the sink must be up to date on them."""
    topics = settings.topics
    return [topics.interactions, topics.feedback, topics.exposures, topics.scores]


def stale_note(lags: Iterable[TopicLag], max_lag_s: float) -> str | None:
    """Why the data is too old to act on: the sink is behind by more than ``max_lag_s``
    seconds on a topic (the note names the one behind the longest); None when fresh."""
    worst = max(lags, key=lambda lag: lag.oldest_s, default=None)
    if worst is None or worst.oldest_s <= max_lag_s:
        return None
    return (
        f"the sink is {worst.events:,} events ({worst.oldest_s:.0f} s) behind on {worst.topic}: "
        "not acting until it catches up"
    )


def watch(settings: Settings, stop: threading.Event | None = None) -> None:
    """Look every ``ab_verdict_interval_s`` until ``stop`` is set (or forever); meanwhile
    start the A/B of each candidate that passes its gates (``prefloop.loop.handoff``)."""
    from prefloop.loop.handoff import follow_gates

    stop = stop or threading.Event()
    threading.Thread(target=follow_gates, args=(settings, stop), daemon=True).start()
    while not stop.is_set():
        try:
            look = look_once(settings)
            level = logging.WARNING if look.acted else logging.INFO
            log.log(level, "%s: %s", look.acted or "look", look.note)
        except PrefloopError as exc:  # the router or the store is away: look again later
            log.warning("look failed: %s", exc)
        except Exception:
            log.exception("look failed")
        stop.wait(settings.ab_verdict_interval_s)
