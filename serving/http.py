"""HTTP helpers the router and the collector share."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["BodyTooLarge", "read_body"]


class BodyTooLarge(Exception):
    """A request body over the limit; ``size`` is the declared length, if one was."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit, self.size = limit, size
        given = f"of {size} bytes " if size is not None else ""
        super().__init__(f"body {given}exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
