"""The main job: the whole loop, unattended, from v1 to a version its users prefer.

Simulated users (:mod:`prefloop.loop.users`) chat with ``v1`` through the A/B router
and signal through the SDK. Everything after that is the product's own path, as
``prefloop up`` runs it: the stream worker scores the answers and mines pairs, the
trigger requests a retrain at the threshold, the trainer runs the DPO job on Ray,
the evaluation (judged by the users' own preference) and the gates decide, the
hand-off starts the A/B at the starting split, the verdict loop promotes or rolls
back. After a promotion pairs accrue on the new version and the next threshold trains
the next generation from it. This module only starts the users, follows the loop
(:mod:`.progress`) and writes the report (:mod:`.report`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table

from prefloop.loop.demo.options import LoopOptions, loop_overrides
from prefloop.settings import Settings

if TYPE_CHECKING:
    from prefloop.loop.demo.progress import LoopWatcher
    from prefloop.loop.users.crowd import CrowdStats

__all__ = ["LoopResult", "run_loop"]

BASE = "v1"
PLAIN_EVERY_S = 15.0


@dataclass(frozen=True)
class LoopResult:
    """How the loop ended: each generation's outcome, and where the report is."""

    outcomes: list[tuple[str, str, str]]  # (parent, candidate, PROMOTED | ROLLED_BACK | ...)
    report: Path | None
    seconds: float

    @property
    def promoted(self) -> int:
        return sum(1 for _, _, outcome in self.outcomes if outcome == "PROMOTED")


def run_loop(settings: Settings, options: LoopOptions, console: Console) -> LoopResult:
    """Bring the stack up, run the users until ``options.generations`` promotions or the
    deadline, write the report, bring the stack down (when this run brought it up)."""
    from prefloop.infra.local_stack import LocalStack, console_url

    started_at = time.time()
    _show_settings(console, settings, options)
    stack = LocalStack(settings, say=lambda line: console.print(f"  {line}"))
    started = stack.up()
    console.print(f"  watch the A/B live in the console: {console_url(settings)}monitor")
    if not started:
        console.print(
            "  [yellow]the stack was already up: its worker, trainer and verdict loop keep the "
            "settings they were started with[/] (the demo's above reach them when it starts "
            "the stack itself)"
        )
    try:
        return _run(settings, options, console, started_at)
    finally:
        if started:
            console.print(f"  stopped {', '.join(stack.down())}")
        else:
            console.print("  the stack was up before the demo: left running")


def _run(
    settings: Settings, options: LoopOptions, console: Console, started_at: float
) -> LoopResult:
    from prefloop.event_client import feedback_client
    from prefloop.loop.demo.base_model import register_base
    from prefloop.loop.demo.chaos import Chaos
    from prefloop.loop.demo.progress import LoopWatcher
    from prefloop.loop.demo.report import write_report
    from prefloop.loop.users.crowd import Crowd
    from prefloop.serving import control
    from prefloop.serving.assignment import Routing

    since_ms = int(started_at * 1000)
    register_base(settings, BASE, options.model, console)
    t0 = time.monotonic()
    control.deploy(settings, Routing(version=BASE))
    console.print(f"  router up in {time.monotonic() - t0:.1f} s, serving {BASE} to everyone")
    deadline = started_at + options.minutes * 60
    watcher = LoopWatcher(settings, BASE, since_ms, options)
    stop = threading.Event()
    with feedback_client(settings, name="simulated-users") as feedback:
        crowd = Crowd(
            control.router_url(settings), feedback, users=options.users, seed=options.seed,
            threads=4,
        )  # fmt: skip
        users = threading.Thread(target=crowd.run, kwargs={"stop": stop}, daemon=True)
        users.start()
        chaos = Chaos(settings, options.seed) if options.chaos else None
        striking = chaos.start(stop) if chaos is not None else None
        try:
            _follow(watcher, crowd.stats, deadline, console)
        finally:
            stop.set()
            users.join(timeout=60)
            if striking is not None:
                striking.join(timeout=300)  # a restart under way finishes
            watcher.close()
    watcher.settle()
    for line in watcher.summary_lines(deadline_passed=time.time() >= deadline):
        console.print(f"  {line}")
    report = write_report(settings, watcher, crowd.stats, console, chaos)
    return LoopResult(watcher.lifecycle.outcomes(), report, time.time() - started_at)


def _follow(watcher: LoopWatcher, stats: CrowdStats, deadline: float, console: Console) -> None:
    """Follow the loop until its generations are promoted or the deadline: a live view
    on a terminal, a line every :data:`PLAIN_EVERY_S` seconds in a log."""
    from prefloop.loop.demo.progress import render, status_line

    generations = watcher.options.generations
    if console.is_terminal:
        with Live(render(watcher, stats), console=console, refresh_per_second=2) as live:
            while time.time() < deadline and watcher.lifecycle.promotions < generations:
                watcher.poll(stats)
                live.update(render(watcher, stats))
        return
    said = 0.0
    while time.time() < deadline and watcher.lifecycle.promotions < generations:
        watcher.poll(stats)
        if time.monotonic() - said >= PLAIN_EVERY_S:
            said = time.monotonic()
            console.print(f"  {status_line(watcher, stats)}")


def _show_settings(console: Console, settings: Settings, options: LoopOptions) -> None:
    console.rule("[bold]prefloop demo: the loop, unattended")
    console.print(
        f"  {options.users} simulated users (seed {options.seed}) chat with {BASE} "
        f"({options.model}); they prefer answers of one sentence. Until "
        f"{options.generations} promotion(s) or {options.minutes:g} minutes."
        + (
            " Chaos: the stream worker, a router replica and the sink are SIGKILLed once each."
            if options.chaos
            else ""
        )
    )
    table = Table("setting", "demo", "production default", box=None,
                  title="settings the demo lowers to run in minutes")  # fmt: skip
    defaults = Settings.model_fields
    for name in loop_overrides(options):
        table.add_row(
            f"PREFLOOP_{name.upper()}", str(getattr(settings, name)), str(defaults[name].default)
        )
    console.print(table)
