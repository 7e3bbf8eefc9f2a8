"""Running the stream worker: the topics it needs, then Faust's worker until stopped."""

from __future__ import annotations

import faust

from prefloop.settings import Settings
from prefloop.streams.app import StreamsApp
from prefloop.streams.topology import ensure_stream_topics

__all__ = ["run_worker"]


def run_worker(settings: Settings, loglevel: str = "warn") -> None:
    """Create the topics, then run the agents until SIGTERM or SIGINT (a clean stop).

    SIGUSR1 prints where each of the worker's tasks waits (Faust's own handler).
    """
    ensure_stream_topics(settings)
    (settings.home / "streams").mkdir(parents=True, exist_ok=True)
    streams = StreamsApp(settings)
    worker = faust.Worker(streams.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
