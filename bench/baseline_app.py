"""Baseline for the ingest benchmark: a bare ASGI endpoint that parses the JSON and LPUSHes it to Redis."""

from __future__ import annotations

import json
import os
from typing import Any

import redis.asyncio as aioredis

_redis = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13"))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST anything: parse, LPUSH, answer 202."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    json.loads(body)
    await _redis.lpush("bench:baseline", body)
    await send(
        {"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b'{"status":"queued"}'})
