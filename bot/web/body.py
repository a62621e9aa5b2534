"""Reading request bodies with a size limit (every webhook endpoint, the Slack one included)."""

from __future__ import annotations

from fastapi import Request


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit."""


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it grows past `limit` bytes (chunked bodies too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
