"""Human-initiated incident changes (ack, resolve, severity, commander) behind one Protocol.

`IncidentCommands` is what the Slack side (and later PagerDuty webhooks, the CLI) call.
`StoreIncidentCommands` implements it on `IncidentStore`: each command is a pure decision
(`decide_*`) applied atomically with `IncidentStore.mutate`, writing the new incident and one timeline
entry (kinds ``acknowledged``, ``resolved``, ``severity_changed``, ``commander_set``; data always carries
``actor``).

Lifecycle rules come from the one transition table in bot/incidents/lifecycle.py (`check_transition`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from bot.errors import InvalidTransition, PermanentError
from bot.incidents import lifecycle
from bot.incidents.store import IncidentStore
from bot.models import Incident, IncidentStatus, Severity

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")


def check_transition(incident: Incident, command: str) -> IncidentStatus:
    """The status `command` moves `incident` to; raises InvalidTransition with a readable reason."""
    return IncidentStatus(lifecycle.transition(incident.status.value, command, incident_id=incident.id).value)


def _require_open(incident: Incident, what: str) -> None:
    if incident.status is IncidentStatus.RESOLVED:
        raise InvalidTransition(f"{incident.id} is resolved: cannot {what}")


class IncidentCommands(Protocol):
    """State changes people make to incidents; each returns the updated incident."""

    def ack(self, incident_id: str, actor: str) -> Incident:
        """Acknowledge; raises InvalidTransition when the incident is not waiting for an ack."""

    def resolve(self, incident_id: str, actor: str, note: str = "") -> Incident:
        """Resolve by hand; raises InvalidTransition when already resolved."""

    def set_severity(self, incident_id: str, severity: Severity, actor: str, reason: str = "") -> Incident:
        """Change the severity; raises PermanentError when it is unchanged or the incident resolved."""

    def set_commander(self, incident_id: str, commander: str, actor: str) -> Incident:
        """Name the incident commander (a Slack user ID)."""


# --- pure decisions -------------------------------------------------------------------------------
Change = tuple[Incident, str, str, dict[str, object]]


def decide_ack(incident: Incident, actor: str) -> Change:
    """Incident acknowledged by `actor`."""
    status = check_transition(incident, "ack")
    return (
        incident.model_copy(update={"status": status}),
        "acknowledged",
        f"Acknowledged by {actor}.",
        {"actor": actor},
    )


def decide_resolve(incident: Incident, actor: str, note: str, now: datetime) -> Change:
    """Incident resolved by `actor`, with an optional note."""
    status = check_transition(incident, "resolve")
    message = f"Resolved by {actor}." + (f" Note: {note}" if note else "")
    return (
        incident.model_copy(update={"status": status, "resolved_at": now}),
        "resolved",
        message,
        {"actor": actor, "note": note, "manual": True},
    )


def decide_severity(incident: Incident, severity: Severity, actor: str, reason: str) -> Change:
    """Severity changed by `actor`, the reason recorded on the incident."""
    _require_open(incident, "change its severity")
    if incident.severity is severity:
        raise PermanentError(f"{incident.id} is already {severity.value}")
    why = reason or "no reason given"
    return (
        incident.model_copy(
            update={"severity": severity, "severity_reason": f"{severity.value} set by {actor}: {why}"}
        ),
        "severity_changed",
        f"Severity {incident.severity.value} → {severity.value} by {actor}: {why}",
        {"actor": actor, "previous": incident.severity.value, "severity": severity.value, "reason": reason},
    )


def decide_commander(incident: Incident, commander: str, actor: str) -> Change:
    """Incident commander set to the Slack user `commander`."""
    _require_open(incident, "change its commander")
    if not _USER_ID.match(commander):
        raise PermanentError(f"{commander!r} is not a Slack user ID (U… or W…)")
    if incident.commander == commander:
        raise PermanentError(f"<@{commander}> is already the commander of {incident.id}")
    return (
        incident.model_copy(update={"commander": commander}),
        "commander_set",
        f"Incident commander: slack:{commander} (set by {actor}).",
        {"actor": actor, "commander": commander, "previous": incident.commander},
    )


class StoreIncidentCommands:
    """IncidentCommands on the Redis IncidentStore (atomic under the incident's group lock)."""

    def __init__(
        self, store: IncidentStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._clock = clock

    def ack(self, incident_id: str, actor: str) -> Incident:
        """Acknowledge the incident."""
        return self._store.mutate(incident_id, lambda inc: decide_ack(inc, actor))

    def resolve(self, incident_id: str, actor: str, note: str = "") -> Incident:
        """Resolve the incident."""
        return self._store.mutate(incident_id, lambda inc: decide_resolve(inc, actor, note, self._clock()))

    def set_severity(self, incident_id: str, severity: Severity, actor: str, reason: str = "") -> Incident:
        """Change the incident's severity."""
        return self._store.mutate(incident_id, lambda inc: decide_severity(inc, severity, actor, reason))

    def set_commander(self, incident_id: str, commander: str, actor: str) -> Incident:
        """Set the incident commander."""
        return self._store.mutate(incident_id, lambda inc: decide_commander(inc, commander, actor))
