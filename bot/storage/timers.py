"""Escalation and status-reminder timers in a Redis sorted set that survives restarts (plans: bot.lifecycle).

Why not Celery countdowns: an escalation can be hours away (P3: 8 h), far beyond the broker's visibility
timeout, after which Redis hands an un-acked countdown task out again. So each incident records when its
next escalation and reminder are due (``Incident.escalation_due``, ``Incident.next_reminder_at``), and the
store mirrors those two fields into one sorted set that beat polls every few seconds::

    timers              member "<kind>|<incident id>|<due, epoch ms>", score = due (epoch seconds)
    timers:claimed      the same members once claimed, score = when the claim's lease runs out

Claiming (:meth:`TimerQueue.claim`) is one Lua script: it moves due members to ``timers:claimed``, so two
tickers never both get one. A worker that dies after claiming loses nothing: once the lease runs out the
member is claimable again. Firing is decided under the incident's group lock against the incident itself
(still triggered? still due at exactly this time?) and written in one MULTI/EXEC with the removal of the
claim, so a timer fires exactly once, and an acknowledged or resolved incident never escalates.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from redis.exceptions import RedisError

from bot.errors import TransientError
from bot.lifecycle import TimerRef, wanted
from bot.models import Incident

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], ARGV[3], m)
  table.insert(out, m)
end
for _, m in ipairs(lapsed) do
  redis.call('ZADD', KEYS[2], ARGV[3], m)
  table.insert(out, m)
end
return out
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TimerQueue:
    """The timers sorted set: sync an incident's timers, claim due ones, finish claimed ones."""

    def __init__(self, client: redis.Redis, prefix: str = "ib:") -> None:
        self._r = client
        self.key = prefix + "timers"
        self.claimed_key = prefix + "timers:claimed"
        self._claim = client.register_script(_CLAIM)

    def sync(self, pipe: redis.client.Pipeline, before: Incident | None, after: Incident) -> None:
        """Queue on *pipe* the changes that make the set hold exactly *after*'s timers."""
        old = wanted(before) if before is not None else set()
        new = wanted(after)
        gone = [t.member for t in old - new]
        if gone:
            pipe.zrem(self.key, *gone)
        for timer in new - old:
            pipe.zadd(self.key, {timer.member: timer.due_ms / 1000})

    def claim(self, now: datetime, *, lease_seconds: float, limit: int = 100) -> list[TimerRef]:
        """Atomically take the timers due at *now* (and lapsed claims); each goes to one caller only."""
        lease_until = now.timestamp() + lease_seconds
        try:
            raw = self._claim(keys=[self.key, self.claimed_key], args=[now.timestamp(), limit, lease_until])
        except RedisError as exc:
            raise TransientError(f"cannot claim timers: {exc}") from exc
        out = []
        for member in raw or []:
            try:
                out.append(TimerRef.parse(_text(member)))
            except ValueError:
                self._r.zrem(self.claimed_key, member)  # not ours: drop it rather than spin on it
        return out

    def finish(self, pipe: redis.client.Pipeline | redis.Redis, timer: TimerRef) -> None:
        """Forget a claimed timer (queued on *pipe* with the effect of firing it)."""
        pipe.zrem(self.claimed_key, timer.member)

    def pending(self) -> list[tuple[TimerRef, datetime]]:
        """Every scheduled timer with its due time, soonest first (for tests and the CLI)."""
        out = []
        for row in self._r.zrange(self.key, 0, -1, withscores=True):
            member, score = row[0], row[1]
            out.append((TimerRef.parse(_text(member)), datetime.fromtimestamp(float(score), UTC)))
        return out
