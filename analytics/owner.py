"""The embedded store's owner process: chDB behind ClickHouse's HTTP protocol, plus the sink.

chDB admits one process per data directory, so in embedded mode the sink writes from
the process that owns it (``prefloop up`` starts this module).
"""

from __future__ import annotations

import logging
import threading

from prefloop.analytics.sink import ClickHouseSink
from prefloop.clickhouse.client import embedded_client
from prefloop.clickhouse.embedded import serve
from prefloop.settings import Settings, load_settings

__all__ = ["run_owner"]


def run_owner(settings: Settings) -> None:
    sink = ClickHouseSink(settings, lambda: embedded_client(settings, settings.clickhouse_database))

    def run_sink(stop: threading.Event) -> None:
        sink.run(stop)

    serve(settings, background=[run_sink])


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run_owner(load_settings())
