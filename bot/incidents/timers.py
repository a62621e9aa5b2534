"""Escalation and status-reminder timers: pure planning, and a Redis sorted set that survives restarts.

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

from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from redis.exceptions import RedisError

from bot.errors import TransientError
from bot.models import Incident, IncidentStatus
from bot.severity import LevelSpec

ESCALATE = "escalate"
REMIND = "remind"
KINDS = (ESCALATE, REMIND)

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


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class TimerRef:
    """A parsed timer member."""

    kind: str
    incident_id: str
    due_ms: int

    @property
    def member(self) -> str:
        """The sorted-set member naming this timer."""
        return f"{self.kind}|{self.incident_id}|{self.due_ms}"

    @classmethod
    def parse(cls, member: str) -> TimerRef:
        """Parse a member; ValueError if it is not one of ours."""
        parts = str(member).split("|")
        if len(parts) != 3:
            raise ValueError(f"not a timer member: {member!r}")
        kind, incident_id, due = parts
        if kind not in KINDS:
            raise ValueError(f"unknown timer kind {kind!r}")
        return cls(kind, incident_id, int(due))

    @classmethod
    def of(cls, kind: str, incident_id: str, due: datetime) -> TimerRef:
        """The timer of *kind* for an incident due at *due*."""
        return cls(kind, incident_id, _ms(due))

    def is_current(self, incident: Incident) -> bool:
        """Whether the incident still wants exactly this timer (not acked, rescheduled or resolved)."""
        due = incident.escalation_due if self.kind == ESCALATE else incident.next_reminder_at
        return due is not None and _ms(due) == self.due_ms


# --- pure planning --------------------------------------------------------------------------------
def arm(incident: Incident, level: LevelSpec, now: datetime, *, max_levels: int) -> Incident:
    """Timers of a freshly (re)triggered incident: escalation and, if its level has them, reminders."""
    if incident.in_maintenance or incident.status is not IncidentStatus.TRIGGERED:
        return disarm(incident)
    escalation = now + level.escalation if incident.escalation_level < max_levels else None
    reminder = now + level.status_update_every if level.status_update_every else None
    return incident.model_copy(update={"escalation_due": escalation, "next_reminder_at": reminder})


def disarm(incident: Incident) -> Incident:
    """No timers (resolved, or in maintenance)."""
    return incident.model_copy(update={"escalation_due": None, "next_reminder_at": None})


def pause_escalation(incident: Incident) -> Incident:
    """An acknowledged incident does not escalate; its reminders go on."""
    return incident.model_copy(update={"escalation_due": None})


def resume_escalation(incident: Incident, level: LevelSpec, now: datetime, *, max_levels: int) -> Incident:
    """Back to triggered (unack): escalation runs again from now."""
    if incident.in_maintenance or incident.escalation_level >= max_levels:
        return incident
    return incident.model_copy(update={"escalation_due": now + level.escalation})


def replan_for_level(incident: Incident, level: LevelSpec, now: datetime) -> Incident:
    """Timers after a severity change: escalation no later than the new deadline, the new reminders."""
    if incident.in_maintenance or not incident.is_open:
        return disarm(incident)
    update: dict[str, object] = {}
    if incident.escalation_due is not None:
        update["escalation_due"] = min(incident.escalation_due, now + level.escalation)
    every = level.status_update_every
    if every is None:
        update["next_reminder_at"] = None
    elif incident.next_reminder_at is None:
        update["next_reminder_at"] = now + every
    else:
        update["next_reminder_at"] = min(incident.next_reminder_at, now + every)
    return incident.model_copy(update=update)


def wanted(incident: Incident) -> set[TimerRef]:
    """The timers the sorted set should hold for *incident*."""
    out = set()
    if incident.escalation_due is not None:
        out.add(TimerRef.of(ESCALATE, incident.id, incident.escalation_due))
    if incident.next_reminder_at is not None:
        out.add(TimerRef.of(REMIND, incident.id, incident.next_reminder_at))
    return out


# --- Redis ----------------------------------------------------------------------------------------
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
