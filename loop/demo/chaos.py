"""``prefloop demo --chaos``: the stream worker, one router replica and the sink, each
SIGKILLed once at a random moment of the loop (seeded by ``--seed``).

The worker and the sink come back as a supervisor would bring them (``prefloop up``
starts what is not running); Ray Serve replaces the replica itself, while the other
replica serves. Nothing is told to the killed process: whatever it had in flight is
lost with it, and the loop must recover it from Kafka (the worker's tables from their
changelogs, the sink from its committed offsets). :mod:`.audit` then proves, from the
topics and ClickHouse, that no interaction, pair or row was lost or counted twice.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prefloop.errors import PortInUseError
from prefloop.infra.local_stack import LocalStack
from prefloop.process import ManagedProcess, pid_alive
from prefloop.settings import Settings

__all__ = ["Chaos", "Kill"]

TARGETS = ("stream worker", "router replica", "sink")
WINDOW_S = (20.0, 150.0)  # after the users start: while pairs accrue, train and the A/B runs
RESTART_WAIT_S = 150.0  # a killed server's port may stay taken for the kernel's FIN timeout


@dataclass
class Kill:
    """One planned SIGKILL and what came of it."""

    target: str
    at_s: float  # planned, seconds after the users started
    done_s: float | None = None  # when it was killed
    pid: int | None = None
    back_s: float | None = None  # seconds from the kill until it ran again
    note: str = ""


@dataclass
class Chaos:
    """The plan for one run: each target once, at seeded random moments in :data:`WINDOW_S`."""

    settings: Settings
    seed: int
    kills: list[Kill] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(f"chaos/{self.seed}")
        moments = sorted(rng.uniform(*WINDOW_S) for _ in TARGETS)
        targets = list(TARGETS)
        rng.shuffle(targets)
        self.kills = [Kill(t, round(at, 1)) for t, at in zip(targets, moments, strict=True)]

    def start(self, stop: threading.Event) -> threading.Thread:
        """Carry the plan out in a thread, from now, until done or ``stop``."""
        thread = threading.Thread(target=self._run, args=(stop, time.monotonic()), daemon=True)
        thread.start()
        return thread

    def _run(self, stop: threading.Event, t0: float) -> None:
        for kill in self.kills:
            if stop.wait(max(0.0, t0 + kill.at_s - time.monotonic())):
                kill.note = "not done: the loop ended first"
                continue
            kill.done_s = round(time.monotonic() - t0, 1)
            try:
                self._strike(kill)
            except Exception as exc:  # the chaos must not end the demo: say what failed
                kill.note = f"failed: {exc}"
            if kill.back_s is None and not kill.note:
                kill.note = "did not come back"

    def _strike(self, kill: Kill) -> None:
        stack = LocalStack(self.settings, say=lambda line: None)
        if kill.target == "router replica":
            before = _replica_pids()
            if not before:
                raise RuntimeError("no router replica is running")
            kill.pid = min(before)
            os.kill(kill.pid, signal.SIGKILL)
            kill.back_s = _until(lambda: len(_replica_pids() - {kill.pid}) >= len(before), 180)
            kill.note = "Ray Serve started a new replica; the other one served meanwhile"
            return
        process = stack.worker if kill.target == "stream worker" else _sink_process(stack)
        kill.pid = process.pid()
        started = time.monotonic()
        process.kill()
        waited = _restart(stack)
        kill.back_s = round(time.monotonic() - started, 1)
        kill.note = f"restarted as pid {process.pid()}" + (
            f" once its port was free again ({waited:.0f} s)" if waited else ""
        )


def _restart(stack: LocalStack) -> float:
    """``stack.up()`` as a supervisor runs it, again while the killed process's port is
    still taken; returns the seconds spent waiting for it.

    The clients' kept-alive connections to a killed server hold its port (their server
    side lingers in FIN_WAIT2) until they notice, up to the kernel's FIN timeout.
    """
    started, waited = time.monotonic(), 0.0
    while True:
        try:
            stack.up()
            return waited
        except PortInUseError:
            if time.monotonic() - started > RESTART_WAIT_S:
                raise
            time.sleep(2.0)
            waited = time.monotonic() - started


def _sink_process(stack: LocalStack) -> ManagedProcess:
    """The sink's process: its own with a ClickHouse server, else the embedded store's owner."""
    return stack.sink if stack.settings.clickhouse_url else stack.clickhouse


def _replica_pids() -> set[int]:
    """The pids of the router's replicas (Ray worker processes named for their actor)."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "ServeReplica:prefloop" in " ".join(proc.info["cmdline"] or []):
            found.add(int(proc.info["pid"]))
    return {pid for pid in found if pid_alive(pid)}


def _until(done: Callable[[], bool], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if done():
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None
