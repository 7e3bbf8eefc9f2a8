"""The floor of any Faust design here: the worker's Faust app with one agent that
consumes the worker's input topics and discards each event.

Run by ``bench/streams.py`` as a process of its own, under the same settings and
environment as ``prefloop worker``: the same guarantee (exactly once by default), the
same consumer and transaction fixes, the same commit interval, the same health page
(``/prefloop/health/``) to say when it holds its partitions. No table, no output:
what is left is Faust's consumer, its event dispatch and its transactions.
"""

from __future__ import annotations

from typing import Any

import faust
from aiohttp.web import Request, Response

from prefloop.settings import load_settings
from prefloop.streams.app import faust_app
from prefloop.streams.health import worker_health
from prefloop.streams.topology import StreamTopics


def main() -> None:
    settings = load_settings()
    app, gate = faust_app(settings)
    topics, ticks = settings.topics, StreamTopics.with_prefix(settings.topic_prefix).ticks
    source = app.topic(  # the score agent's inputs
        topics.interactions, topics.feedback, ticks, key_type=bytes, value_type=bytes,
        value_serializer="raw",
    )  # fmt: skip

    async def discard(stream: Any) -> None:
        async for _ in gate.gated(stream.events()):
            pass

    app.agent(source, name="discard")(discard)
    # a table never written: like the worker's, it has Faust create its changelog topic
    # at start, whose metadata refresh the first rebalance needs (without it, Faust's
    # assignor ignores a topic not in its first metadata and its transaction manager
    # fails on it: KeyError in group_for_topic)
    app.Table("floor-unused", default=None, partitions=settings.topic_partitions)

    async def health(web: Any, request: Request) -> Response:
        return web.json(worker_health(app))

    app.page("/prefloop/health/")(health)  # type: ignore[arg-type]
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
