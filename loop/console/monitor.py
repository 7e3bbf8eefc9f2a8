"""The live A/B monitor's numbers: one snapshot per experiment, refreshed in the background.

A snapshot holds what the router serves now (read back from Serve), the verdict
exactly as ``prefloop ab analyze --json`` prints it (the same
:func:`~prefloop.analytics.verdict.analyze`, never recorded: only the verdict loop
records its looks), the metrics over time from the per-minute rollups
(:mod:`prefloop.analytics.series`), the candidate's lineage from the registry and what
the loop will do next. The page asks every few seconds and gets the last snapshot at
once; a thread brings the snapshots of the experiments asked about lately up to date
every ``console_refresh_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

from prefloop.analytics.series import experiment_series
from prefloop.analytics.verdict import analyze
from prefloop.clickhouse.client import connect
from prefloop.errors import PrefloopError, first_line
from prefloop.model_registry import ModelRegistry
from prefloop.process import port_answers
from prefloop.serving import control
from prefloop.serving.assignment import Routing
from prefloop.settings import Settings

__all__ = ["Monitor", "next_step", "routing_json"]

_log = logging.getLogger(__name__)
WATCHED_S = 60.0  # an experiment nobody asked about for this long is not refreshed


def routing_json(routing: Routing | None) -> dict[str, Any] | None:
    if routing is None:
        return None
    if routing.experiment is None:
        return {"version": routing.version, "experiment": None}
    e = routing.experiment
    return {
        "version": None,
        "experiment": {"id": e.experiment_id, "a": e.a, "b": e.b, "split": e.split},
    }


def next_step(verdict: dict[str, Any], settings: Settings, running: bool) -> str:
    """What the loop does next, in one sentence."""
    decision = verdict.get("decision")
    if not running:
        return "this experiment is not running on the router: nothing will act on it"
    if not settings.ab_auto:
        return f"{decision}: the automatic loop is off (PREFLOOP_AB_AUTO=false); act by hand"
    every = f"{settings.ab_verdict_interval_s:g} s"
    if decision == "PROMOTE":
        return f"PROMOTE: the verdict loop promotes arm B at its next look (every {every})"
    if decision == "ROLLBACK":
        return f"ROLLBACK: the verdict loop rolls back to arm A at its next look (every {every})"
    return f"CONTINUE: the verdict loop looks again in at most {every}: {verdict.get('reason')}"


class Monitor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._asked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def routing(self) -> Routing | None:
        """What the router serves; None when no router answers (no Ray is touched then)."""
        if not port_answers(self.settings.serve_port):
            return None
        return control.current_routing(self.settings)

    def experiments(self) -> list[str]:
        from prefloop.analytics.metrics import known_experiments

        return known_experiments(connect(self.settings))

    def snapshot(self, experiment_id: str) -> dict[str, Any]:
        """The latest snapshot of ``experiment_id``; built now the first time it is asked."""
        with self._lock:
            self._asked[experiment_id] = time.monotonic()
            known = self._snapshots.get(experiment_id)
        if known is None:
            known = self._build(experiment_id)
        return known

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.settings.console_refresh_s):
            now = time.monotonic()
            with self._lock:
                watched = [e for e, at in self._asked.items() if now - at < WATCHED_S]
            for experiment_id in watched:
                try:
                    self._build(experiment_id)
                except Exception as exc:  # the store or Serve away: the page shows the last one
                    _log.warning("monitor: %s not refreshed: %s", experiment_id, first_line(exc))

    def _build(self, experiment_id: str) -> dict[str, Any]:
        client = connect(self.settings)
        routing = self.routing()
        running = (
            routing is not None
            and routing.experiment is not None
            and routing.experiment.experiment_id == experiment_id
        )
        try:
            verdict: dict[str, Any] | None = analyze(client, self.settings, experiment_id).to_json()
            error = None
        except PrefloopError as exc:  # e.g. too few users yet: say so on the page
            verdict, error = None, str(exc)
        snapshot = {
            "experiment_id": experiment_id,
            "updated_ms": int(time.time() * 1000),
            "routing": routing_json(routing),
            "running": running,
            "verdict": verdict,
            "verdict_error": error,
            "next": next_step(verdict, self.settings, running) if verdict else error,
            "series": experiment_series(client, experiment_id),
            "lineage": self._lineage(verdict),
        }
        with self._lock:
            self._snapshots[experiment_id] = snapshot
        return snapshot

    def _lineage(self, verdict: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The registry's record of each arm's version, oldest first."""
        versions = sorted(
            {arm.get("model_version") for arm in (verdict or {}).get("arms", {}).values()} - {None}
        )
        registry = ModelRegistry.from_settings(self.settings)
        out = []
        for version in versions:
            try:
                record = asdict(registry.get(str(version)))
            except PrefloopError:
                continue
            out.append(
                {k: record.get(k) for k in ("version", "parent", "created_ms", "lineage", "gates")}
            )
        return out
