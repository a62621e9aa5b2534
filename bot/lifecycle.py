"""Incident lifecycle: one table of allowed transitions, and the severity-change rules.

Sans-I/O, in the manner of h11: the caller loads the incident, asks :func:`transition` for the next
state, and saves it. Nothing here reads a clock, Redis or the settings; times and the reopen window
are arguments.

States and events (``TRANSITIONS`` is the whole truth; this drawing is a reading aid)::

                 ack                start_mitigation
    TRIGGERED ─────────▶ ACKNOWLEDGED ─────────────▶ MITIGATING
        ▲   ◀─────────       │   ◀──────────────────     │
        │     unack          │      stop_mitigation      │
        │                    │ resolve                   │ resolve
        │ reopen             ▼                           │
        └──────────────── RESOLVED ◀─────────────────────┘
          (within the      ▲
          reopen window)   └── resolve (from TRIGGERED too)

Decisions:

* **Reopened is a transition, not a state.** ``reopen`` takes a RESOLVED incident back to
  TRIGGERED. A reopened incident needs exactly what a new one needs (acknowledgement, escalation
  timers, runbooks), so a separate REOPENED state would duplicate every edge of TRIGGERED. That it
  was reopened is history: the store keeps it in the timeline (and a reopen count).
* ``reopen`` is allowed only while ``now - resolved_at <= reopen_window`` (REOPEN_WINDOW_SECONDS,
  default 1800 s). Later, the caller opens a new incident instead.
* ``start_mitigation`` needs an owner, so it is allowed from ACKNOWLEDGED only. Automated runbook
  steps on an unacknowledged incident are timeline entries and leave it TRIGGERED, so escalation
  still fires if automation does not fix it.
* ``unack`` (a PagerDuty acknowledgement timeout, a responder handing back) returns ACKNOWLEDGED to
  TRIGGERED; ``stop_mitigation`` returns MITIGATING to ACKNOWLEDGED (still owned).
* There are no self-loops: a duplicate ``ack`` or ``resolve`` raises
  :class:`~bot.errors.InvalidTransition`. Redelivered webhooks are deduplicated before they get
  here; a caller that wants "already done" to be a no-op checks :func:`is_allowed` first.

Severity changes: a person may raise or lower the level, and must say who and why
(:func:`manual_severity_change`); automation may only raise it, and only while the incident is open
and its alert still firing (:func:`automatic_severity_change`).

Timers: when an incident's next escalation and status reminder are due (:func:`arm`, :func:`disarm`,
:func:`pause_escalation`, :func:`resume_escalation`, :func:`replan_for_level`); bot.storage.timers mirrors
them (:func:`wanted`) into the sorted set that beat polls.

What the incident store applies under its lock is decided here too, as values: a lifecycle event
(:func:`event_change`), a severity change (:func:`severity_update`), a due timer (:func:`timer_applies`,
:func:`fire`: escalate, remind, or stand down in a maintenance window) and a group's flapping
(:func:`flap_state`, :meth:`FlapState.action`, :func:`flapping_entry`). Each returns the new incident and its
:class:`Effects` (timeline entries and events); the store only reads and writes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from bot.errors import InvalidTransition, PermanentError
from bot.models import AlertStatus, Incident, IncidentStatus
from bot.severity import LevelSpec, Severity

DEFAULT_REOPEN_WINDOW = timedelta(seconds=1800)

#: Who automatic changes are attributed to in timelines and events.
AUTOMATION_ACTOR = "incident-bot"


#: The incident states: the enum Incident.status holds (bot.models.IncidentStatus), by its lifecycle name.
State = IncidentStatus


class Event(enum.StrEnum):
    """Something that happened to an incident and may move it to another state."""

    ACK = "ack"
    UNACK = "unack"
    START_MITIGATION = "start_mitigation"
    STOP_MITIGATION = "stop_mitigation"
    RESOLVE = "resolve"
    REOPEN = "reopen"


TRANSITIONS: Mapping[tuple[State, Event], State] = MappingProxyType(
    {
        (State.TRIGGERED, Event.ACK): State.ACKNOWLEDGED,
        (State.TRIGGERED, Event.RESOLVE): State.RESOLVED,
        (State.ACKNOWLEDGED, Event.UNACK): State.TRIGGERED,
        (State.ACKNOWLEDGED, Event.START_MITIGATION): State.MITIGATING,
        (State.ACKNOWLEDGED, Event.RESOLVE): State.RESOLVED,
        (State.MITIGATING, Event.STOP_MITIGATION): State.ACKNOWLEDGED,
        (State.MITIGATING, Event.RESOLVE): State.RESOLVED,
        (State.RESOLVED, Event.REOPEN): State.TRIGGERED,
    }
)
"""Every allowed (state, event) pair and the state it leads to. Anything absent is forbidden."""

OPEN_STATES: frozenset[State] = frozenset({State.TRIGGERED, State.ACKNOWLEDGED, State.MITIGATING})


class SeverityChangeRefused(PermanentError):
    """A severity change that the rules do not allow (missing who/why, or no change)."""


def _coerce_state(state: State | str) -> State:
    try:
        return State(state)
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise InvalidTransition(f"unknown incident state {state!r}: states are {names}") from None


def _coerce_event(event: Event | str) -> Event:
    try:
        return Event(event)
    except ValueError:
        names = ", ".join(e.value for e in Event)
        raise InvalidTransition(f"unknown incident event {event!r}: events are {names}") from None


def allowed_events(state: State | str) -> tuple[Event, ...]:
    """The events allowed in *state*, in the order Event declares them."""
    current = _coerce_state(state)
    return tuple(e for e in Event if (current, e) in TRANSITIONS)


def is_allowed(state: State | str, event: Event | str) -> bool:
    """Whether the table allows *event* in *state* (the reopen window is not checked)."""
    return (_coerce_state(state), _coerce_event(event)) in TRANSITIONS


def is_open(state: State | str) -> bool:
    """Whether an incident in *state* is still open (not resolved)."""
    return _coerce_state(state) in OPEN_STATES


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


def _fmt_minutes(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def transition(
    state: State | str,
    event: Event | str,
    *,
    now: datetime | None = None,
    resolved_at: datetime | None = None,
    reopen_window: timedelta = DEFAULT_REOPEN_WINDOW,
    incident_id: str | None = None,
) -> State:
    """The state after *event* in *state*; raises InvalidTransition when the table forbids it."""
    current = _coerce_state(state)
    happened = _coerce_event(event)
    subject = incident_id or "incident"
    target = TRANSITIONS.get((current, happened))
    if target is None:
        allowed = ", ".join(e.value for e in allowed_events(current)) or "none"
        raise InvalidTransition(
            f"cannot {happened.value} {subject} in state {current.value}: allowed events are {allowed}"
        )
    if happened is Event.REOPEN:
        if now is None or resolved_at is None:
            raise ValueError("reopen needs both now and resolved_at to check the reopen window")
        _require_aware("now", now)
        _require_aware("resolved_at", resolved_at)
        elapsed = max(now - resolved_at, timedelta(0))
        if elapsed > reopen_window:
            raise InvalidTransition(
                f"cannot reopen {subject}: it was resolved {_fmt_minutes(elapsed)} ago, beyond the "
                f"{_fmt_minutes(reopen_window)} reopen window; open a new incident instead"
            )
    return target


@dataclass(frozen=True)
class SeverityChange:
    """An accepted change of an incident's severity, ready for the timeline and audit stream."""

    old: Severity
    new: Severity
    by: str
    reason: str
    automatic: bool

    @property
    def raised(self) -> bool:
        """Whether the change makes the incident more severe."""
        return self.new.outranks(self.old)

    def describe(self) -> str:
        """One line for the timeline, e.g. "P2 -> P1 by alice: error rate doubled"."""
        return f"{self.old.value} -> {self.new.value} by {self.by}: {self.reason}"


def manual_severity_change(current: Severity, new: Severity, *, who: str, why: str) -> SeverityChange:
    """A person's change (raise or lower); raises SeverityChangeRefused without who/why or change."""
    if not who.strip():
        raise SeverityChangeRefused("a manual severity change must say who made it")
    if not why.strip():
        raise SeverityChangeRefused(
            f"{who.strip()} must give a reason to change severity {current.value} -> {new.value}"
        )
    if new is current:
        raise SeverityChangeRefused(f"severity is already {current.value}")
    return SeverityChange(old=current, new=new, by=who.strip(), reason=why.strip(), automatic=False)


def automatic_severity_change(
    current: Severity,
    proposed: Severity,
    *,
    state: State | str,
    firing: bool,
    reason: str,
    by: str = "incident-bot",
) -> SeverityChange | None:
    """An automatic change if *proposed* is higher and the incident is open and firing, else None."""
    if not firing or not is_open(state) or not proposed.outranks(current):
        return None
    return SeverityChange(old=current, new=proposed, by=by, reason=reason, automatic=True)


# --- what a change writes besides the incident: timeline entries and events ----------------------------


@dataclass(frozen=True)
class Entry:
    """A timeline entry to append."""

    kind: str
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass
class Effects:
    """What one change of an incident writes besides the incident itself: timeline entries and events."""

    entries: list[Entry] = field(default_factory=list)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)


# --- lifecycle events and severity changes: what they do to an incident ----------------------------------

#: Timeline kind written for each lifecycle event.
EVENT_KINDS: dict[Event, str] = {
    Event.ACK: "acknowledged",
    Event.UNACK: "unacknowledged",
    Event.START_MITIGATION: "mitigation_started",
    Event.STOP_MITIGATION: "mitigation_stopped",
    Event.RESOLVE: "resolved",
    Event.REOPEN: "reopened",
}


def event_change(
    current: Incident,
    event: Event | str,
    *,
    who: str,
    note: str,
    now: datetime,
    level: LevelSpec,
    reopen_window: timedelta,
    max_levels: int,
) -> tuple[Incident, Effects]:
    """*who*'s lifecycle *event* on *current*: the new state and timers, its timeline entry and events."""
    target = transition(
        current.status.value,
        event,
        now=now,
        resolved_at=current.resolved_at,
        reopen_window=reopen_window,
        incident_id=current.id,
    )
    happened = Event(event)
    updated = current.model_copy(update={"status": IncidentStatus(target.value), "updated_at": now})
    out = Effects()
    if happened is Event.ACK:
        updated = pause_escalation(
            updated.model_copy(
                update={
                    "acknowledged_at": current.acknowledged_at or now,
                    "acknowledged_by": current.acknowledged_by or who,
                }
            )
        )
    elif happened is Event.UNACK:
        updated = resume_escalation(updated, level, now, max_levels=max_levels)
    elif happened is Event.RESOLVE:
        updated = disarm(updated.model_copy(update={"resolved_at": now}))
        out.events.append(
            ("postmortem_ready", {"command": f"incident-bot incidents postmortem {current.id}"})
        )
    elif happened is Event.REOPEN:
        updated = updated.model_copy(
            update={
                "resolved_at": None,
                "reopened_count": current.reopened_count + 1,
                "escalation_level": 0,
            }
        )
        updated = arm(updated, level, now, max_levels=max_levels)
        out.events.append(("reopened", {"reopened_count": updated.reopened_count, "actor": who}))
    text = f"{EVENT_KINDS[happened].replace('_', ' ').capitalize()} by {who}."
    if note.strip():
        text += f" {note.strip()}"
    data: dict[str, object] = {
        "actor": who,
        "event": happened.value,
        "from": current.status.value,
        "to": target.value,
        "note": note.strip(),
    }
    out.entries.append(Entry(EVENT_KINDS[happened], text, data))
    return updated, out


def severity_entry(change: SeverityChange) -> Entry:
    """The ``severity_changed`` timeline entry of a severity change."""
    return Entry(
        "severity_changed",
        f"Severity {change.describe()}",
        {
            "actor": change.by,
            "from": change.old.value,
            "to": change.new.value,
            "reason": change.reason,
            "automatic": change.automatic,
        },
    )


def severity_event(change: SeverityChange) -> dict[str, object]:
    """The fields of a ``severity_changed`` event."""
    return {
        "from": change.old.value,
        "to": change.new.value,
        "raised": change.raised,
        "automatic": change.automatic,
        "actor": change.by,
        "reason": change.reason,
    }


def severity_update(
    current: Incident, accepted: SeverityChange, level: LevelSpec, now: datetime
) -> tuple[Incident, Effects]:
    """An accepted severity change applied: severity, reason, timers for its *level*, entry and event."""
    reason = f"{accepted.new.value} set by {accepted.by}: {accepted.reason}"
    if accepted.automatic:
        reason = accepted.reason
    updated = current.model_copy(
        update={"severity": accepted.new, "severity_reason": reason, "updated_at": now}
    )
    updated = replan_for_level(updated, level, now)
    return updated, Effects(
        entries=[severity_entry(accepted)], events=[("severity_changed", severity_event(accepted))]
    )


# --- timers: when an incident's next escalation and reminder are due (bot.storage.timers keeps them) -----

ESCALATE = "escalate"
REMIND = "remind"
KINDS = (ESCALATE, REMIND)


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


def timers_after_notification(
    incident: Incident,
    level: LevelSpec,
    now: datetime,
    *,
    max_levels: int,
    opened: bool,
    resolved: bool,
    severity_changed: bool,
) -> Incident:
    """Timers after a notification: armed if it (re)opened, none if resolved, replanned on a new severity."""
    if opened:
        return arm(incident, level, now, max_levels=max_levels)
    if resolved:
        return disarm(incident)
    if severity_changed:
        return replan_for_level(incident, level, now)
    return incident


# --- escalations and status reminders: what a due timer does ---------------------------------------------


@dataclass(frozen=True)
class MaintenanceMark:
    """The maintenance window covering a notification's (or an incident's) firing alerts."""

    window_id: str
    reason: str
    created_by: str


def timer_applies(timer: TimerRef, current: Incident) -> bool:
    """Whether a claimed timer still fires: its open incident wants exactly it (an escalation: unacked)."""
    if not timer.is_current(current) or not current.is_open:
        return False
    # an escalation of an incident acknowledged by a path that left the timer behind does not fire
    return timer.kind != ESCALATE or current.status is IncidentStatus.TRIGGERED


def fire(
    timer: TimerRef,
    current: Incident,
    mark: MaintenanceMark | None,
    level: LevelSpec,
    now: datetime,
    *,
    max_levels: int,
) -> tuple[str, Incident, Effects]:
    """A timer that applies, fired: 'maintenance' (a window covers it now), 'escalated' or 'reminded'."""
    if mark is not None:
        updated = disarm(
            current.model_copy(update={"in_maintenance": True, "maintenance_reason": mark.reason})
        )
        entry = Entry(
            "in_maintenance",
            f"Maintenance window {mark.window_id} ({mark.reason}) now covers this incident: "
            "no escalation, reminders or actions.",
            {"window_id": mark.window_id, "reason": mark.reason, "created_by": mark.created_by},
        )
        return "maintenance", updated, Effects(entries=[entry])
    if timer.kind == ESCALATE:
        return ("escalated", *escalate(current, level, now, max_levels=max_levels))
    return ("reminded", *remind(current, level, now))


def escalate(
    current: Incident, level: LevelSpec, now: datetime, *, max_levels: int
) -> tuple[Incident, Effects]:
    """A due escalation: the next level, the next deadline (none at *max_levels*), its entry and event."""
    n = current.escalation_level + 1
    again = now + level.escalation if n < max_levels else None
    updated = current.model_copy(update={"escalation_level": n, "escalation_due": again})
    waited = int((now - current.created_at).total_seconds())
    who = ", ".join(level.notify) or "on-call"
    message = (
        f"Escalated (level {n}): {current.severity.value} not acknowledged within "
        f"{int(level.escalation.total_seconds()) // 60} min; notifying {who}."
    )
    data: dict[str, object] = {
        "actor": AUTOMATION_ACTOR,
        "level": n,
        "escalation_seconds": int(level.escalation.total_seconds()),
        "notify": list(level.notify),
    }
    extra = data | {"open_seconds": waited, "next_escalation_at": again.isoformat() if again else None}
    return updated, Effects(entries=[Entry("escalated", message, data)], events=[("escalated", extra)])


def remind(current: Incident, level: LevelSpec, now: datetime) -> tuple[Incident, Effects]:
    """A due status reminder: the next one and its event (none when the level has no reminders)."""
    every = level.status_update_every
    if every is None:
        return current.model_copy(update={"next_reminder_at": None}), Effects()
    n = current.reminders_sent + 1
    updated = current.model_copy(update={"reminders_sent": n, "next_reminder_at": now + every})
    extra: dict[str, object] = {
        "reminder": n,
        "every_seconds": int(every.total_seconds()),
        "open_seconds": int((now - current.created_at).total_seconds()),
    }
    return updated, Effects(events=[("reminder", extra)])


# --- flapping: a group changing between firing and resolved too often ------------------------------------


class FlapAction(enum.Enum):
    """What recording one notification does to its group's flap bookkeeping (besides its last status)."""

    NONE = "none"  # the same status as last time: not a change, nothing to count
    COUNT = "count"  # a change, counted in the window; the group does not flap
    EXTEND = "extend"  # a change of a flapping group: it settles only after a quiet window
    START = "start"  # the change that makes the group flap: mark it, tell the timeline and the events


@dataclass(frozen=True)
class FlapState:
    """A group's flapping bookkeeping as seen by one notification."""

    is_change: bool
    changes: int
    was_flapping: bool

    def flapping(self, threshold: int) -> bool:
        """Whether the group flaps once this notification is counted."""
        return self.was_flapping or self.changes > threshold

    def action(self, threshold: int) -> FlapAction:
        """What recording this notification does (see FlapAction)."""
        if not self.is_change:
            return FlapAction.NONE
        if self.was_flapping:
            return FlapAction.EXTEND
        return FlapAction.START if self.flapping(threshold) else FlapAction.COUNT


def flap_state(status: AlertStatus, last: str | None, recent: int, *, was_flapping: bool) -> FlapState:
    """The state for a notification of *status* after *last* (None: never seen, read as resolved)."""
    # *recent*: the changes already in the window; this notification adds one if it is a change
    is_change = status.value != (last if last is not None else AlertStatus.RESOLVED.value)
    return FlapState(is_change=is_change, changes=recent + int(is_change), was_flapping=was_flapping)


def flapping_entry(changes: int, *, threshold: int, window: timedelta) -> Entry:
    """The timeline entry of a group that starts flapping (its data goes into the event too)."""
    seconds = int(window.total_seconds())
    message = (
        f"Group is flapping: {changes} fire/resolve changes within "
        f"{seconds // 60} min (threshold {threshold}). No new incidents or actions "
        f"until it has been quiet for {seconds // 60} min."
    )
    data: dict[str, object] = {
        "actor": AUTOMATION_ACTOR,
        "changes": changes,
        "window_seconds": seconds,
        "threshold": threshold,
    }
    return Entry("flapping", message, data)
