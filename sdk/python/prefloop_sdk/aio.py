"""``AsyncFeedbackClient``: the feedback client for asyncio back ends.

Emitting never waits on the network: an emit validates, encodes, appends to the spool
journal (a ``write`` into the page cache) and hands the event to librdkafka's queue, a
few microseconds in all, so the awaitable methods run it inline rather than paying for
a thread hop. Only ``flush`` and ``close``, which wait for acknowledgements, run in a
worker thread (``asyncio.to_thread``), so the event loop keeps serving requests.
(``durability="memory"`` takes even the journal write off the emit path.)

>>> async with AsyncFeedbackClient("localhost:9092") as client:        # doctest: +SKIP
...     ids = await client.interaction(user_id="u-1", conversation_id="c-1", turn=0,
...                                    messages=[{"role": "user", "content": "Hi"}],
...                                    response="Hello!", model_version="m-1",
...                                    latency_ms=420, prompt_tokens=3, completion_tokens=2)
...     await client.thumbs(ids, +1)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from .client import FeedbackClient
from .stats import ClientStats

__all__ = ["AsyncFeedbackClient"]

P = ParamSpec("P")
R = TypeVar("R")


def _awaitable(
    method: Callable[Concatenate[FeedbackClient, P], R],
) -> Callable[Concatenate[AsyncFeedbackClient, P], Coroutine[Any, Any, R]]:
    """The async twin of an emit method: same arguments, same result, run inline."""

    async def call(self: AsyncFeedbackClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self.client, *args, **kwargs)

    functools.update_wrapper(call, method)
    return call


class AsyncFeedbackClient:
    """``FeedbackClient`` with awaitable methods; takes the same arguments.

    ``client`` is the underlying ``FeedbackClient`` (thread-safe, so synchronous code
    in the same process may share it). Typed errors for bad arguments raise from the
    awaited call, exactly as from the synchronous one; delivery problems never do.
    """

    def __init__(self, bootstrap_servers: str, **options: Any) -> None:
        self.client = FeedbackClient(bootstrap_servers, **options)

    interaction = _awaitable(FeedbackClient.interaction)
    feedback = _awaitable(FeedbackClient.feedback)
    rate = _awaitable(FeedbackClient.rate)
    thumbs = _awaitable(FeedbackClient.thumbs)
    regenerate = _awaitable(FeedbackClient.regenerate)
    copy = _awaitable(FeedbackClient.copy)
    continue_ = _awaitable(FeedbackClient.continue_)
    edit = _awaitable(FeedbackClient.edit)
    session_end = _awaitable(FeedbackClient.session_end)
    report = _awaitable(FeedbackClient.report)
    comment = _awaitable(FeedbackClient.comment)
    emit = _awaitable(FeedbackClient.emit)

    @property
    def stats(self) -> ClientStats:
        """The counters (see ``FeedbackClient.stats``)."""
        return self.client.stats

    async def flush(self, timeout: float = 10.0) -> int:
        """Wait (in a worker thread) until every event is delivered; the number left."""
        return await asyncio.to_thread(self.client.flush, timeout)

    async def close(self, timeout: float = 10.0) -> int:
        """Deliver for up to ``timeout`` s and stop (in a worker thread); the number left."""
        return await asyncio.to_thread(self.client.close, timeout)

    async def __aenter__(self) -> AsyncFeedbackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
