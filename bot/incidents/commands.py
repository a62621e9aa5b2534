"""Human-initiated incident changes (ack, resolve, severity, commander) behind one Protocol.

`IncidentCommands` is what the Slack side and PagerDuty webhooks call. `StoreIncidentCommands` implements
it on `IncidentStore`: ack, resolve and severity go through the store's lifecycle methods (the one
transition table in bot/lifecycle.py); the commander is a pure decision (`decide_commander`)
applied with `IncidentStore.mutate`. Every change writes one timeline entry (kinds ``acknowledged``,
``resolved``, ``severity_changed``, ``commander_set``) whose data carries ``actor``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from bot.errors import InvalidTransition, PermanentError
from bot.models import Incident, IncidentStatus, Severity
from bot.storage.incidents import IncidentStore

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")


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
    """IncidentCommands on the Redis IncidentStore.

    Ack, resolve and severity go through the store's lifecycle methods (the one transition table, ack time
    for MTTA, escalation paused or disarmed, events); the commander is a plain atomic mutation.
    """

    def __init__(
        self, store: IncidentStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._clock = clock

    def ack(self, incident_id: str, actor: str) -> Incident:
        """Acknowledge the incident."""
        return self._store.apply_event(incident_id, "ack", actor=actor)

    def resolve(self, incident_id: str, actor: str, note: str = "") -> Incident:
        """Resolve the incident."""
        return self._store.apply_event(incident_id, "resolve", actor=actor, note=note)

    def set_severity(self, incident_id: str, severity: Severity, actor: str, reason: str = "") -> Incident:
        """Change the incident's severity (raise or lower), recording who and why."""
        return self._store.set_severity(incident_id, severity, who=actor, why=reason or "no reason given")

    def set_commander(self, incident_id: str, commander: str, actor: str) -> Incident:
        """Set the incident commander."""
        return self._store.mutate(incident_id, lambda inc: decide_commander(inc, commander, actor))
