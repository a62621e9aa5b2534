"""Incidents in Redis: one open incident per Alertmanager group, with an append-only timeline.

Key layout (all under the configured prefix, ``ib:`` by default):

    seq                         INCR counter behind INC-0001, INC-0002, …
    inc:<id>                    the incident as JSON
    inc:<id>:timeline           Redis Stream, one entry per event (append-only)
    group:<gid>                 id of the group's latest incident (gid = sha256(groupKey)[:32])
    incidents                   sorted set of ids by creation time
    open                        hash id -> severity of the incidents not yet resolved
    delivery:<idempotency key>  set once a notification has been applied (expires after DEDUP_TTL)
    lock:group:<gid>            short lock so two workers never apply one group's notifications at once
    stats:tasks                 hash "<task>:<outcome>" -> count, read by /metrics

Exactly-once effects: the state change, its timeline entry and the ``delivery`` marker are written in one
MULTI/EXEC under the group lock, so a task redelivered after a crash either finds the marker (and does
nothing) or finds no trace of the first attempt (and does it all).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from redis.exceptions import LockError, RedisError

from bot.errors import PermanentError, TransientError
from bot.incidents.intake import Classifier, Outcome, decide, policy_classifier
from bot.models import AlertmanagerWebhook, Incident, IncidentStatus, TimelineEntry, group_id
from bot.settings import get_settings
from bot.severity import load_policy


class IncidentNotFound(PermanentError):
    """No incident has that id."""


@dataclass(frozen=True)
class ApplyResult:
    """What applying one notification did."""

    outcome: Outcome | str
    incident_id: str | None


def _t(value: object) -> str:
    """Redis replies as text (the client may return bytes or str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def format_incident_id(n: int) -> str:
    """The readable id for sequence number n (INC-0042)."""
    return f"INC-{n:04d}"


class IncidentStore:
    """Reads and writes incidents and their timelines in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "ib:",
        dedup_ttl: int = 86_400,
        classify: Classifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._r = client
        self._p = prefix
        self._dedup_ttl = dedup_ttl
        self._classify = classify or policy_classifier(load_policy(get_settings().severity_policy))
        self._clock = clock

    # --- keys ----------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A Redis key under this store's prefix."""
        return self._p + ":".join(parts)

    # --- writes --------------------------------------------------------------------------------
    def apply_notification(self, webhook: AlertmanagerWebhook, delivery_key: str) -> ApplyResult:
        """Apply one Alertmanager notification exactly once; redeliveries return outcome 'duplicate'."""
        gid = group_id(webhook.groupKey)
        try:
            lock = self._r.lock(self.key("lock", "group", gid), timeout=30, blocking_timeout=10)
            if not lock.acquire():
                raise TransientError(f"group {gid} is busy in another worker; will retry")
            try:
                return self._apply_locked(webhook, delivery_key, gid)
            finally:
                with contextlib.suppress(LockError):  # expired: the MULTI/EXEC was still atomic
                    lock.release()
        except RedisError as exc:
            raise TransientError(f"redis error while applying notification: {exc}") from exc

    def _apply_locked(self, webhook: AlertmanagerWebhook, delivery_key: str, gid: str) -> ApplyResult:
        done_key = self.key("delivery", delivery_key)
        already = self._r.get(done_key)
        if already is not None:
            return ApplyResult("duplicate", _t(already) or None)

        current_id = self._r.get(self.key("group", gid))
        current = self.get(_t(current_id)) if current_id else None
        now = self._clock()
        decision = decide(current, webhook, now=now, new_id=self._next_id, classify=self._classify)
        incident = decision.incident

        pipe = self._r.pipeline(transaction=True)
        if incident is not None:
            pipe.set(self.key("inc", incident.id), incident.model_dump_json())
            pipe.set(self.key("group", gid), incident.id)
            if decision.outcome is Outcome.CREATED:
                pipe.zadd(self.key("incidents"), {incident.id: incident.created_at.timestamp()})
            if incident.status is IncidentStatus.RESOLVED:
                pipe.hdel(self.key("open"), incident.id)
            else:
                pipe.hset(self.key("open"), incident.id, incident.severity.value)
            if decision.timeline_kind:
                self._xadd(
                    pipe,
                    incident.id,
                    decision.timeline_kind,
                    decision.timeline_message,
                    decision.timeline_data,
                    now,
                )
        result_id = incident.id if incident else (current.id if current else "")
        pipe.set(done_key, result_id, ex=self._dedup_ttl)
        pipe.execute()
        return ApplyResult(decision.outcome, result_id or None)

    def _next_id(self) -> str:
        return format_incident_id(int(self._r.incr(self.key("seq"))))

    def _xadd(
        self,
        pipe: redis.client.Pipeline,
        incident_id: str,
        kind: str,
        message: str,
        data: dict[str, object],
        at: datetime,
    ) -> None:
        pipe.xadd(
            self.key("inc", incident_id, "timeline"),
            {"at": at.isoformat(), "kind": kind, "message": message, "data": json.dumps(data, default=str)},
        )

    def append_timeline(
        self,
        incident_id: str,
        kind: str,
        message: str,
        data: dict[str, object],
        *,
        pipe: redis.client.Pipeline | None = None,
    ) -> str:
        """Append one entry to an incident's timeline; returns its stream id ("" when queued on pipe)."""
        self.get(incident_id)  # raises IncidentNotFound
        if pipe is not None:
            self._xadd(pipe, incident_id, kind, message, data, self._clock())
            return ""
        entry_id = self._r.xadd(
            self.key("inc", incident_id, "timeline"),
            {
                "at": self._clock().isoformat(),
                "kind": kind,
                "message": message,
                "data": json.dumps(data, default=str),
            },
        )
        return _t(entry_id)

    def count_task(self, task: str, outcome: str) -> None:
        """Count one task outcome (exported by /metrics)."""
        self._r.hincrby(self.key("stats", "tasks"), f"{task}:{outcome}", 1)

    # --- reads ---------------------------------------------------------------------------------
    def get(self, incident_id: str) -> Incident:
        """The incident with this id; raises IncidentNotFound."""
        raw = self._r.get(self.key("inc", incident_id))
        if raw is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        return Incident.model_validate_json(raw)

    def recent(self, *, limit: int = 50, open_only: bool = False) -> list[Incident]:
        """The newest incidents first."""
        if open_only:
            ids = sorted((_t(i) for i in self._r.hkeys(self.key("open"))), reverse=True)[:limit]
        else:
            ids = [_t(i) for i in self._r.zrevrange(self.key("incidents"), 0, limit - 1)]
        if not ids:
            return []
        raws = self._r.mget([self.key("inc", i) for i in ids])
        return [Incident.model_validate_json(r) for r in raws if r is not None]

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        """The incident's timeline, oldest first."""
        entries = self._r.xrange(self.key("inc", incident_id, "timeline")) or []
        out = []
        for entry_id, fields in entries:
            f = {_t(k): _t(v) for k, v in (fields or {}).items()}
            out.append(
                TimelineEntry(
                    id=_t(entry_id),
                    at=datetime.fromisoformat(f["at"]),
                    kind=f["kind"],
                    message=f["message"],
                    data=json.loads(f.get("data", "{}")),
                )
            )
        return out

    def open_by_severity(self) -> dict[str, int]:
        """How many incidents are open at each severity."""
        counts: dict[str, int] = {}
        for sev in self._r.hvals(self.key("open")):
            counts[_t(sev)] = counts.get(_t(sev), 0) + 1
        return counts

    def task_stats(self) -> dict[str, int]:
        """Task outcome counters, "<task>:<outcome>" -> count."""
        return {_t(k): int(v) for k, v in self._r.hgetall(self.key("stats", "tasks")).items()}
