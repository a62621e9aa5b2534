"""Incidents in Redis: one open incident per Alertmanager group, with an append-only timeline.

Key layout (all under the configured prefix, ``ib:`` by default):

    seq                         INCR counter behind INC-0001, INC-0002, …
    inc:<id>                    the incident as JSON
    inc:<id>:timeline           Redis Stream, one entry per event (append-only)
    group:<gid>                 id of the group's latest incident (gid = sha256(groupKey)[:32])
    incidents                   sorted set of ids by creation time
    open                        hash id -> severity of the incidents not yet resolved
    delivery:<idempotency key>  set once a notification has been applied (expires after DEDUP_TTL)
    lock:group:<gid>            short lock so two workers never change one group's incidents at once
    stats:tasks                 hash "<task>:<outcome>" -> count, read by /metrics
    timers, timers:claimed      escalation and reminder timers (see bot.storage.timers)
    events                      notification events stream (see bot.storage.events)
    gstate:<gid>                the group's last notified status (firing/resolved), for flap counting
    flap:<gid>                  sorted set of the group's recent state changes (score = time)
    flapping:<gid>              set while the group flaps; expires after FLAP_WINDOW without changes
    flapping                    sorted set gid -> when the group last started flapping (for the report)
    flapping:groups             hash gid -> group key

Exactly-once effects: the state change, its timeline entries, its events, its timers and the ``delivery``
marker are written in one MULTI/EXEC under the group lock, so a task redelivered after a crash either finds
the marker (and does nothing) or finds no trace of the first attempt (and does it all). Lifecycle events
(ack, resolve, …), severity changes and timers take the same group lock and also WATCH the incident key, so
a lock that expired mid-change makes the write fail (and the caller retry) rather than overwrite.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from redis.exceptions import LockError, RedisError, WatchError

from bot.errors import PermanentError, TransientError
from bot.intake import (
    Classifier,
    Decision,
    MaintenanceMark,
    Outcome,
    decide,
    notification_events,
    policy_classifier,
)
from bot.lifecycle import (
    AUTOMATION_ACTOR,
    DEFAULT_REOPEN_WINDOW,
    Effects,
    Event,
    FlapAction,
    FlapState,
    TimerRef,
    automatic_severity_change,
    event_change,
    fire,
    flap_state,
    flapping_entry,
    manual_severity_change,
    severity_update,
    timer_applies,
    timers_after_notification,
)
from bot.models import (
    AlertmanagerWebhook,
    AlertStatus,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
    group_id,
)
from bot.settings import Settings
from bot.severity import LevelSpec, SeverityPolicy, load_policy
from bot.storage.controls import MaintenanceWindows
from bot.storage.events import EventLog, incident_fields
from bot.storage.timers import TimerQueue
from bot.storage.window import SlidingWindow

log = logging.getLogger(__name__)

#: How long a group's last status is remembered without news (for flap counting).
GROUP_STATE_TTL = int(timedelta(days=7).total_seconds())

#: The policy of a store built without one: the shipped file (bot.wiring passes the configured policy).
SHIPPED_POLICY = Path(Settings.model_fields["severity_policy"].default)


class IncidentNotFound(PermanentError):
    """No incident has that id."""


@dataclass(frozen=True)
class ApplyResult:
    """What applying one notification did."""

    outcome: Outcome | str
    incident_id: str | None


@dataclass(frozen=True)
class LifecycleConfig:
    """The lifecycle settings the store applies (reopen window, flapping, escalation, events)."""

    reopen_window: timedelta = DEFAULT_REOPEN_WINDOW
    flap_threshold: int = 4
    flap_window: timedelta = timedelta(hours=1)
    escalation_max_levels: int = 3
    timer_lease_seconds: float = 60.0
    events_maxlen: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecycleConfig:
        """The configuration the settings describe."""
        return cls(
            reopen_window=settings.reopen_window,
            flap_threshold=settings.flap_threshold,
            flap_window=settings.flap_window,
            escalation_max_levels=settings.escalation_max_levels,
            timer_lease_seconds=settings.timer_lease_seconds,
            events_maxlen=settings.events_maxlen,
        )


@dataclass(frozen=True)
class FlappingGroup:
    """A group that started flapping at some time."""

    gid: str
    group_key: str
    since: datetime
    flapping_now: bool


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
        policy: SeverityPolicy | None = None,
        config: LifecycleConfig | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._r = client
        self._p = prefix
        self._dedup_ttl = dedup_ttl
        # no settings are read here: bot.wiring.incident_store passes the configured policy and config
        self.policy = policy or load_policy(SHIPPED_POLICY)
        self._classify = classify or policy_classifier(self.policy)
        self.config = config or LifecycleConfig()
        self._clock = clock
        self.timers = TimerQueue(client, prefix)
        self.events = EventLog(client, prefix, maxlen=self.config.events_maxlen)
        self.maintenance = MaintenanceWindows(client, prefix, clock=clock)

    @property
    def redis_client(self) -> redis.Redis:
        """The Redis client this store uses (for modules keeping state beside incidents)."""
        return self._r

    # --- keys ----------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A Redis key under this store's prefix."""
        return self._p + ":".join(parts)

    def now(self) -> datetime:
        """The store's clock."""
        return self._clock()

    def _level(self, severity: Severity) -> LevelSpec:
        return self.policy.level(severity)

    @contextlib.contextmanager
    def _group_lock(self, gid: str, what: str) -> Iterator[None]:
        lock = self._r.lock(self.key("lock", "group", gid), timeout=30, blocking_timeout=10)
        if not lock.acquire():
            raise TransientError(f"{what} is busy in another worker; will retry")
        try:
            yield
        finally:
            with contextlib.suppress(LockError):  # expired: the MULTI/EXEC was still atomic
                lock.release()

    # --- notifications -------------------------------------------------------------------------
    def apply_notification(self, webhook: AlertmanagerWebhook, delivery_key: str) -> ApplyResult:
        """Apply one Alertmanager notification exactly once; redeliveries return outcome 'duplicate'."""
        gid = group_id(webhook.groupKey)
        try:
            already = self._r.get(self.key("delivery", delivery_key))
            if already is not None:
                return ApplyResult("duplicate", _t(already) or None)
            # Classify before taking the group lock: with live signals this queries Prometheus, and a slow
            # Prometheus must not hold up the group's other deliveries.
            classified = self._classify(webhook) if webhook.status is AlertStatus.FIRING else None
            with self._group_lock(gid, f"group {gid}"):
                return self._apply_locked(webhook, delivery_key, gid, classified)
        except RedisError as exc:
            raise TransientError(f"redis error while applying notification: {exc}") from exc

    def _apply_locked(
        self,
        webhook: AlertmanagerWebhook,
        delivery_key: str,
        gid: str,
        classified: tuple[Severity, str] | None,
    ) -> ApplyResult:
        done_key = self.key("delivery", delivery_key)
        already = self._r.get(done_key)
        if already is not None:
            return ApplyResult("duplicate", _t(already) or None)

        current_id = self._r.get(self.key("group", gid))
        current = self.get(_t(current_id)) if current_id else None
        now = self._clock()
        flap = self._flap_state(gid, webhook.status, now)
        flapping = flap.flapping(self.config.flap_threshold)
        mark = None
        if current is None or not current.is_open:
            mark = self._maintenance_mark(
                [a.labels for a in webhook.alerts if a.status is AlertStatus.FIRING]
            )
        decision = decide(
            current,
            webhook,
            now=now,
            new_id=self._next_id,
            classify=(lambda _webhook: classified) if classified is not None else self._classify,
            reopen_window=self.config.reopen_window,
            flapping=flapping,
            maintenance=mark,
        )
        incident = self._plan_timers(decision, now)

        pipe = self._r.pipeline(transaction=True)
        if incident is not None:
            before = current if current is not None and current.id == incident.id else None
            pipe.set(self.key("inc", incident.id), incident.model_dump_json())
            pipe.set(self.key("group", gid), incident.id)
            if decision.outcome is Outcome.CREATED:
                pipe.zadd(self.key("incidents"), {incident.id: incident.created_at.timestamp()})
            self._index_open(pipe, incident)
            for entry in decision.entries:
                self._xadd(pipe, incident.id, entry.kind, entry.message, entry.data, now)
            self.timers.sync(pipe, before, incident)
            for type_, extra in notification_events(decision, incident):
                self.events.add(
                    pipe, type_, now, incident_fields(incident, page=self._pages(incident)) | extra
                )
        target = incident or current
        self._record_flap(pipe, gid, webhook, delivery_key, flap, target, now)
        result_id = incident.id if incident else (current.id if current else "")
        if decision.outcome is not Outcome.FLAPPING:
            # A suppressed firing leaves no marker: Alertmanager's next repeat of it is looked at again,
            # and opens the incident once the group has settled.
            pipe.set(done_key, result_id, ex=self._dedup_ttl)
        pipe.execute()
        return ApplyResult(decision.outcome, result_id or None)

    def _plan_timers(self, decision: Decision, now: datetime) -> Incident | None:
        incident = decision.incident
        if incident is None:
            return None
        return timers_after_notification(
            incident,
            self._level(incident.severity),
            now,
            max_levels=self.config.escalation_max_levels,
            opened=decision.outcome in (Outcome.CREATED, Outcome.REOPENED),
            resolved=decision.outcome is Outcome.RESOLVED,
            severity_changed=decision.severity_change is not None,
        )

    def _pages(self, incident: Incident) -> bool:
        return self._level(incident.severity).page

    def _maintenance_mark(self, label_sets: Sequence[dict[str, str]]) -> MaintenanceMark | None:
        window = self.maintenance.covering(label_sets)
        if window is None:
            return None
        return MaintenanceMark(window.id, window.reason, window.created_by)

    # --- flapping ------------------------------------------------------------------------------
    def _flap_window(self, gid: str) -> SlidingWindow:
        """The group's recent state changes (expiring a window after the last one)."""
        window = self.config.flap_window
        return SlidingWindow(
            self._r, self.key("flap", gid), window.total_seconds(), ttl=int(window.total_seconds())
        )

    def _flap_state(self, gid: str, status: AlertStatus, now: datetime) -> FlapState:
        last = self._r.get(self.key("gstate", gid))
        recent = self._flap_window(gid).count(now.timestamp())
        was = bool(self._r.exists(self.key("flapping", gid)))
        return flap_state(status, _t(last) if last is not None else None, recent, was_flapping=was)

    def _record_flap(
        self,
        pipe: redis.client.Pipeline,
        gid: str,
        webhook: AlertmanagerWebhook,
        delivery_key: str,
        flap: FlapState,
        target: Incident | None,
        now: datetime,
    ) -> None:
        pipe.set(self.key("gstate", gid), webhook.status.value, ex=GROUP_STATE_TTL)
        action = flap.action(self.config.flap_threshold)
        if action is FlapAction.NONE:
            return
        self._flap_window(gid).add(f"{now.isoformat()}:{delivery_key[:16]}", now.timestamp(), pipe)
        if action is FlapAction.EXTEND:
            window = int(self.config.flap_window.total_seconds())
            pipe.expire(self.key("flapping", gid), window)  # settles only after a quiet window
        elif action is FlapAction.START:
            self._start_flapping(pipe, gid, webhook.groupKey, flap.changes, target, now)

    def _start_flapping(
        self,
        pipe: redis.client.Pipeline,
        gid: str,
        group_key: str,
        changes: int,
        target: Incident | None,
        now: datetime,
    ) -> None:
        window = int(self.config.flap_window.total_seconds())
        info = {"group_key": group_key, "since": now.isoformat(), "changes": changes}
        pipe.set(self.key("flapping", gid), json.dumps(info), ex=window)
        pipe.zadd(self.key("flapping"), {gid: now.timestamp()})
        pipe.hset(self.key("flapping", "groups"), gid, group_key)
        entry = flapping_entry(changes, threshold=self.config.flap_threshold, window=self.config.flap_window)
        fields: dict[str, object] = {"group_key": group_key, "incident_id": None} | entry.data
        if target is not None:
            self._xadd(pipe, target.id, entry.kind, entry.message, entry.data, now)
            fields = incident_fields(target, page=False) | entry.data
        self.events.add(pipe, "flapping", now, fields)

    def is_flapping(self, group_key: str) -> bool:
        """Whether the group is flapping now (no new incidents or actions for it)."""
        return bool(self._r.exists(self.key("flapping", group_id(group_key))))

    def flapping_groups(self, since: datetime | None = None) -> list[FlappingGroup]:
        """Groups that started flapping at or after *since* (all remembered ones without it)."""
        low = since.timestamp() if since else "-inf"
        rows = self._r.zrangebyscore(self.key("flapping"), low, "+inf", withscores=True)
        out = []
        for row in rows:
            gid, score = _t(row[0]), float(row[1])
            key = self._r.hget(self.key("flapping", "groups"), gid)
            out.append(
                FlappingGroup(
                    gid=gid,
                    group_key=_t(key) if key is not None else "",
                    since=datetime.fromtimestamp(score, UTC),
                    flapping_now=bool(self._r.exists(self.key("flapping", gid))),
                )
            )
        return out

    # --- lifecycle events and severity changes ------------------------------------------------
    def apply_event(self, incident_id: str, event: Event | str, *, actor: str, note: str = "") -> Incident:
        """Apply a lifecycle event (ack, resolve, …) by *actor*; InvalidTransition leaves it unchanged."""
        who = actor.strip()
        if not who:
            raise PermanentError("a lifecycle change must say who made it")

        def change(current: Incident, now: datetime) -> tuple[Incident, Effects]:
            return event_change(
                current,
                event,
                who=who,
                note=note,
                now=now,
                level=self._level(current.severity),
                reopen_window=self.config.reopen_window,
                max_levels=self.config.escalation_max_levels,
            )

        return self._mutate(incident_id, change)

    def set_severity(self, incident_id: str, severity: Severity | str, *, who: str, why: str) -> Incident:
        """A person's severity change (raise or lower), with who and why on the timeline."""
        new = Severity(severity)

        def change(current: Incident, now: datetime) -> tuple[Incident, Effects]:
            accepted = manual_severity_change(current.severity, new, who=who, why=why)
            return severity_update(current, accepted, self._level(accepted.new), now)

        return self._mutate(incident_id, change)

    def raise_severity(
        self, incident_id: str, proposed: Severity | str, *, reason: str, by: str = AUTOMATION_ACTOR
    ) -> Incident | None:
        """An automatic raise when signals worsen; None (and no write) unless it is higher, open, firing."""
        new = Severity(proposed)
        current = self.get(incident_id)
        if not new.outranks(current.severity):
            return None
        raised: list[Incident] = []

        def change(current: Incident, now: datetime) -> tuple[Incident, Effects]:
            accepted = automatic_severity_change(
                current.severity,
                new,
                state=current.status.value,
                firing=current.firing_count > 0,
                reason=reason,
                by=by,
            )
            if accepted is None:
                return current, Effects()
            updated, out = severity_update(current, accepted, self._level(accepted.new), now)
            raised.append(updated)
            return updated, out

        self._mutate(incident_id, change)
        return raised[0] if raised else None

    def _mutate(
        self,
        incident_id: str,
        change: Callable[[Incident, datetime], tuple[Incident, Effects]],
        *,
        finish: TimerRef | None = None,
    ) -> Incident:
        """Apply *change* under the group lock with the incident key WATCHed, in one MULTI/EXEC."""
        # with *finish*, that timer's claim goes in the same transaction, even when nothing changed
        try:
            gid = group_id(self.get(incident_id).group_key)
            with self._group_lock(gid, incident_id), self._r.pipeline(transaction=True) as pipe:
                inc_key = self.key("inc", incident_id)
                pipe.watch(inc_key)  # type: ignore[no-untyped-call]
                raw = pipe.get(inc_key)
                if raw is None:
                    raise IncidentNotFound(f"no incident {incident_id!r}")
                current = Incident.model_validate_json(raw)
                now = self._clock()
                updated, out = change(current, now)
                changed = updated != current or bool(out.entries) or bool(out.events)
                if not changed and finish is None:
                    return current
                pipe.multi()
                if changed:
                    self._write(pipe, current, updated, out, now)
                if finish is not None:
                    self.timers.finish(pipe, finish)
                pipe.execute()
                return updated
        except WatchError as exc:
            raise TransientError(f"{incident_id} changed while being updated; will retry") from exc
        except RedisError as exc:
            raise TransientError(f"redis error while updating {incident_id}: {exc}") from exc

    def _write(
        self, pipe: redis.client.Pipeline, before: Incident, after: Incident, out: Effects, now: datetime
    ) -> None:
        pipe.set(self.key("inc", after.id), after.model_dump_json())
        self._index_open(pipe, after)
        for entry in out.entries:
            self._xadd(pipe, after.id, entry.kind, entry.message, entry.data, now)
        self.timers.sync(pipe, before, after)
        for type_, extra in out.events:
            self.events.add(pipe, type_, now, incident_fields(after, page=self._pages(after)) | extra)

    def _index_open(self, pipe: redis.client.Pipeline, incident: Incident) -> None:
        if incident.status is IncidentStatus.RESOLVED:
            pipe.hdel(self.key("open"), incident.id)
        else:
            pipe.hset(self.key("open"), incident.id, incident.severity.value)

    # --- timers --------------------------------------------------------------------------------
    def fire_due(self, now: datetime | None = None, *, limit: int = 100) -> list[tuple[TimerRef, str]]:
        """Claim the timers due now and fire each; returns (timer, outcome) pairs."""
        at = now or self._clock()
        claimed = self.timers.claim(at, lease_seconds=self.config.timer_lease_seconds, limit=limit)
        results = []
        for timer in claimed:
            try:
                results.append((timer, self.fire_timer(timer, at)))
            except TransientError as exc:  # the claim lapses and another tick retries it
                log.warning("timer %s not fired yet: %s", timer.member, exc)
                results.append((timer, "retry"))
        return results

    def fire_timer(self, timer: TimerRef, now: datetime) -> str:
        """Fire one claimed timer if its incident still wants it: 'escalated', 'reminded' or 'stale'."""
        try:
            self.get(timer.incident_id)
        except IncidentNotFound:
            self.timers.finish(self._r, timer)
            return "stale"
        outcome = ["stale"]

        def change(current: Incident, _now: datetime) -> tuple[Incident, Effects]:
            if not timer_applies(timer, current):
                return current, Effects()
            firing = [a.labels for a in current.alerts.values() if a.status is AlertStatus.FIRING]
            mark = self._maintenance_mark(firing) if firing else None
            level = self._level(current.severity)
            outcome[0], updated, out = fire(
                timer, current, mark, level, now, max_levels=self.config.escalation_max_levels
            )
            return updated, out

        self._mutate(timer.incident_id, change, finish=timer)
        return outcome[0]

    # --- low level -----------------------------------------------------------------------------
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

    def mutate(
        self,
        incident_id: str,
        change: Callable[[Incident], tuple[Incident, str, str, dict[str, object]]],
    ) -> Incident:
        """Apply `change` (incident -> new incident + timeline kind, message, data) atomically.

        Runs under the incident's group lock (the one intake uses), so a human command and an
        Alertmanager update never overwrite each other; the incident, the open index and the timeline
        entry are written in one MULTI/EXEC. Exceptions raised by `change` leave everything untouched.
        """
        try:
            current = self.get(incident_id)
            gid = group_id(current.group_key)
            lock = self._r.lock(self.key("lock", "group", gid), timeout=30, blocking_timeout=10)
            if not lock.acquire():
                raise TransientError(f"{incident_id} is busy in another worker; will retry")
            try:
                current = self.get(incident_id)
                now = self._clock()
                updated, kind, message, data = change(current)
                updated = updated.model_copy(update={"updated_at": now})
                pipe = self._r.pipeline(transaction=True)
                pipe.set(self.key("inc", incident_id), updated.model_dump_json())
                if updated.status is IncidentStatus.RESOLVED:
                    pipe.hdel(self.key("open"), incident_id)
                else:
                    pipe.hset(self.key("open"), incident_id, updated.severity.value)
                self._xadd(pipe, incident_id, kind, message, data, now)
                pipe.execute()
                return updated
            finally:
                with contextlib.suppress(LockError):
                    lock.release()
        except RedisError as exc:
            raise TransientError(f"redis error while updating {incident_id}: {exc}") from exc

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
        return self._load(ids)

    def created_since(self, since: datetime | None) -> list[Incident]:
        """Every incident created at or after *since* (all without it), oldest first."""
        low = since.timestamp() if since else "-inf"
        return self._load([_t(i) for i in self._r.zrangebyscore(self.key("incidents"), low, "+inf")])

    def _load(self, ids: list[str]) -> list[Incident]:
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
