"""HTTP helpers the router and the collector share."""

from __future__ import annotations

from starlette.requests import Request

from .exceptions import BodyTooLarge

__all__ = ["BodyTooLarge", "read_body"]


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
