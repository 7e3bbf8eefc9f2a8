"""Running the stream worker: the topics it needs, then Faust's worker until stopped."""

from __future__ import annotations

import logging

import faust

from prefloop.settings import Settings
from prefloop.streams.app import StreamsApp
from prefloop.streams.topology import ensure_stream_topics

__all__ = ["run_worker"]


class _Backpressure(logging.Filter):
    """Drops Faust's "producer buffer full" warning: logged for every message sent while
    more than 100 wait to be published, it is backpressure working as designed, and it
    flooded the log of any worker catching up on a backlog."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("producer buffer full")


def run_worker(settings: Settings, loglevel: str = "warn") -> None:
    """Create the topics, then run the agents until SIGTERM or SIGINT (a clean stop).

    SIGUSR1 prints where each of the worker's tasks waits (Faust's own handler).
    """
    logging.getLogger("faust.transport.producer").addFilter(_Backpressure())
    ensure_stream_topics(settings)
    (settings.home / "streams").mkdir(parents=True, exist_ok=True)
    streams = StreamsApp(settings)
    worker = _Worker(streams.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker, its loggers at the level its handlers print.

    mode's logging setup filters by handler and leaves the root logger at DEBUG, so every
    ``log.debug`` of aiokafka and Faust (several per message sent) built a record that
    no handler printed: 8 % of a busy worker's time in a profile.
    """

    def _setup_logging(self) -> None:
        super()._setup_logging()
        name = str(self.loglevel).upper()
        level = logging.getLevelName("WARNING" if name == "WARN" else name)
        if isinstance(level, int):
            logging.getLogger().setLevel(level)
