"""A token bucket in Redis, shared by every worker process (Celery's rate_limit is per worker only)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

from bot.errors import TransientError

# Refill by elapsed Redis server time, take one token if there is one; else report the wait in seconds.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""


class TokenBucket:
    """`rate` tokens per second up to `burst`, one bucket per key, kept in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        rate: float,
        burst: int,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._r = client
        self._key = key
        self._rate = rate
        self._burst = burst
        self._max_wait = max_wait
        self._sleep = sleep
        self._script = client.register_script(_SCRIPT)

    def try_take(self) -> float:
        """Take a token if one is free (returns 0.0), else return the seconds until one will be."""
        try:
            return float(self._script(keys=[self._key], args=[self._rate, self._burst]))
        except RedisError as exc:
            raise TransientError(f"rate limiter unavailable: {exc}") from exc

    def take(self) -> float:
        """Block until a token is taken; returns the time waited. Raises TransientError past max_wait."""
        waited = 0.0
        while True:
            wait = self.try_take()
            if wait <= 0:
                return waited
            if waited + wait > self._max_wait:
                raise TransientError(f"rate limit {self._key}: no token within {self._max_wait:.0f}s")
            self._sleep(wait)
            waited += wait
