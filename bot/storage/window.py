"""One sliding-window counter on a Redis sorted set (members scored by time), for every windowed count.

Used by the runbook circuit breaker (actions per window), the Slack storm detector (new roots per channel
per window) and flapping detection (state changes per alert group per window).
"""

from __future__ import annotations

from typing import Any

import redis

_RESERVE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1] - ARGV[2])
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[1], ARGV[4])
redis.call('expire', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


class SlidingWindow:
    """Events in the last `seconds` under `key`: add, count, or reserve a place atomically under a limit."""

    def __init__(self, client: redis.Redis, key: str, seconds: float, *, ttl: float | None = None) -> None:
        self._r = client
        self.key = key
        self.seconds = seconds
        self._ttl = int(ttl if ttl is not None else max(1.0, seconds))
        self._reserve = client.register_script(_RESERVE)

    def add(self, member: str, now: float, pipe: Any = None) -> None:
        """Record `member` at `now` and drop what fell out of the window (into `pipe` when given)."""
        target = pipe if pipe is not None else self._r.pipeline(transaction=True)
        target.zadd(self.key, {member: now})
        target.zremrangebyscore(self.key, "-inf", now - self.seconds)
        target.expire(self.key, self._ttl)
        if pipe is None:
            target.execute()

    def add_and_count(self, member: str, now: float) -> int:
        """Record `member` at `now`; returns how many events the window holds with it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zremrangebyscore(self.key, "-inf", now - self.seconds)
        pipe.zadd(self.key, {member: now})
        pipe.zcard(self.key)
        pipe.expire(self.key, self._ttl)
        return int(pipe.execute()[2])

    def count(self, now: float) -> int:
        """How many events fall strictly inside (now - seconds, +inf)."""
        return int(self._r.zcount(self.key, f"({now - self.seconds}", "+inf"))

    def reserve(self, member: str, now: float, limit: int) -> bool:
        """Atomically add `member` unless the window already holds `limit` events; True when added."""
        return bool(self._reserve(keys=[self.key], args=[now, self.seconds, limit, member]))
