"""Running the stream worker: the topics it needs, then Faust's worker until stopped."""

from __future__ import annotations

import asyncio
import signal
import sys

import faust

from prefloop.settings import Settings
from prefloop.streams.app import StreamsApp
from prefloop.streams.topology import ensure_stream_topics

__all__ = ["run_worker"]


def run_worker(settings: Settings, loglevel: str = "warn") -> None:
    """Create the topics, then run the agents until SIGTERM or SIGINT (a clean stop)."""
    ensure_stream_topics(settings)
    (settings.home / "streams").mkdir(parents=True, exist_ok=True)
    streams = StreamsApp(settings)
    worker = faust.Worker(streams.app, loglevel=loglevel, quiet=True)
    signal.signal(signal.SIGUSR1, lambda *_: _dump_tasks())
    worker.execute_from_commandline()


def _dump_tasks() -> None:
    """SIGUSR1: print where every asyncio task of the worker waits (for a stuck worker)."""
    for task in asyncio.all_tasks(asyncio.get_event_loop()):
        print(f"--- {task.get_name()} {task.get_coro()!r}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()
