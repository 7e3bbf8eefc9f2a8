"""The automatic loop: look at the running experiment, act on its verdict.

Every ``ab_verdict_interval_s`` it reads what the router serves; while an experiment
runs with both arms live, it computes the verdict (which records the look, so the
sequential p-values stay valid at every look) and on PROMOTE or ROLLBACK moves the
split in one change, which the router records as a PROMOTED or ROLLED_BACK
ModelEvent. CONTINUE, an experiment without enough data, or no router: it waits for
the next look. It acts only if the experiment is still the one it analysed, unchanged
(someone may have moved the split meanwhile): otherwise it leaves it to the next look.
``prefloop up`` runs it (``prefloop ab watch``) when ``ab_auto`` is on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from prefloop.analytics.stats import StatsError
from prefloop.analytics.verdict import PROMOTE, ROLLBACK, AnalysisError, Verdict, analyze
from prefloop.clickhouse.client import connect
from prefloop.errors import PrefloopError
from prefloop.settings import Settings

__all__ = ["Look", "look_once", "watch"]

log = logging.getLogger("prefloop.autopilot")


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

    routing = control.current_routing(settings)
    if routing is None or routing.experiment is None:
        return Look(None, None, None, "no experiment is running")
    experiment = routing.experiment
    if experiment.split in (0.0, 100.0):
        note = f"experiment {experiment.experiment_id} is decided (split {experiment.split:g} %)"
        return Look(experiment.experiment_id, None, None, note)
    try:
        verdict = analyze(connect(settings), settings, experiment.experiment_id, record=True)
    except (AnalysisError, StatsError) as exc:
        return Look(experiment.experiment_id, None, None, str(exc))
    acted = None
    if verdict.decision == PROMOTE:
        control.promote(settings, experiment.b, reason=verdict.reason, expected=experiment)
        acted = "PROMOTED"
    elif verdict.decision == ROLLBACK:
        control.rollback(settings, reason=verdict.reason, expected=experiment)
        acted = "ROLLED_BACK"
    return Look(experiment.experiment_id, verdict, acted, verdict.reason)


def watch(settings: Settings, stop: threading.Event | None = None) -> None:
    """Look every ``ab_verdict_interval_s`` until ``stop`` is set (or forever)."""
    stop = stop or threading.Event()
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
