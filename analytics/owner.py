"""The embedded store's owner process: chDB behind ClickHouse's HTTP protocol, plus the sink.

chDB admits one process per data directory, so in embedded mode the sink writes from
the process that owns it (``prefloop up`` starts this module). ``--store-only`` leaves
the sink out (tests that drive a sink of their own).
"""

from __future__ import annotations

import argparse
import logging
import threading
from functools import partial

from prefloop.analytics.schema import prepare
from prefloop.analytics.sink import ClickHouseSink
from prefloop.clickhouse.client import embedded_client
from prefloop.clickhouse.http_front import serve
from prefloop.settings import Settings, load_settings

__all__ = ["run_owner"]


def run_owner(settings: Settings, sink: bool = True) -> None:
    """Own the store: apply the migrations, answer HTTP and, with ``sink``, run the sink."""
    background = []
    if sink:
        writer = ClickHouseSink(
            settings, lambda: embedded_client(settings, settings.clickhouse_database)
        )

        def run_sink(stop: threading.Event) -> None:
            writer.run(stop)

        background.append(run_sink)
    serve(settings, prepare=partial(prepare, settings=settings), background=background)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m prefloop.analytics.owner")
    parser.add_argument("--store-only", action="store_true", help="Run no sink in this process.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run_owner(load_settings(), sink=not args.store_only)
