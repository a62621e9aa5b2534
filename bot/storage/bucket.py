"""A token bucket in Redis, shared by every worker process (Celery's rate_limit is per worker only).

`try_take()` never waits: it takes a token or says how long until one is due. `take_in_turn(waiter)` does
the same with a first-come queue in front of the bucket, so a caller that was told to come back later keeps
its place: while earlier waiters are queued, later callers get no token even if one is free, and each is
told when its own turn is due (its rank times the refill interval, after the next token). A waiter that
does not come back within its lease (its due time + LEASE_GRACE_SECONDS) loses its place, so a lost task
cannot stall the bucket. Keys: `<key>` (tokens, ts), `<key>:queue` (zset waiter -> ticket),
`<key>:lease` (zset waiter -> deadline), `<key>:seq` (ticket counter).
"""

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

#: Seconds past its due time that a queued waiter keeps its place.
LEASE_GRACE_SECONDS = 30

# KEYS: bucket, queue, lease, seq. ARGV: rate, burst, waiter, grace. Returns the wait (0 = token taken).
_TURN_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local waiter = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('ZREM', KEYS[3], gone)
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
local wait = 0
if (head == nil or head == waiter) and tokens >= 1 then
  tokens = tokens - 1
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
else
  local rank = redis.call('ZRANK', KEYS[2], waiter)
  if not rank then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), waiter)
    rank = redis.call('ZCARD', KEYS[2]) - 1
  end
  wait = math.max(0, 1 - tokens) / rate + rank / rate
  if wait <= 0 then wait = 0.01 end
  redis.call('ZADD', KEYS[3], now + wait + tonumber(ARGV[4]), waiter)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
local ttl = math.ceil(burst / rate) + 60
redis.call('EXPIRE', KEYS[1], ttl)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ttl + 3600) end
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
        self._turn = client.register_script(_TURN_SCRIPT)

    def _keys(self) -> list[str]:
        return [self._key, self._key + ":queue", self._key + ":lease", self._key + ":seq"]

    def try_take(self) -> float:
        """Take a token if one is free (returns 0.0), else return the seconds until one will be."""
        try:
            return float(self._script(keys=[self._key], args=[self._rate, self._burst]))
        except RedisError as exc:
            raise TransientError(f"rate limiter unavailable: {exc}") from exc

    def take_in_turn(self, waiter: str) -> float:
        """Take a token if `waiter` is first in line and one is free (0.0), else queue it: its wait (s)."""
        try:
            args: list[str | float] = [self._rate, self._burst, waiter, LEASE_GRACE_SECONDS]
            return float(self._turn(keys=self._keys(), args=args))
        except RedisError as exc:
            raise TransientError(f"rate limiter unavailable: {exc}") from exc

    def leave(self, waiter: str) -> None:
        """Give up `waiter`'s place in line (it no longer needs a token)."""
        try:
            pipe = self._r.pipeline(transaction=False)
            pipe.zrem(self._key + ":queue", waiter)
            pipe.zrem(self._key + ":lease", waiter)
            pipe.execute()
        except RedisError as exc:
            raise TransientError(f"rate limiter unavailable: {exc}") from exc

    def waiting(self) -> list[str]:
        """The queued waiters, first in line first."""
        queued = self._r.zrange(self._key + ":queue", 0, -1)
        return [w.decode() if isinstance(w, bytes) else str(w) for w in queued]

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
