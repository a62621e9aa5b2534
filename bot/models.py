"""Value objects: the Alertmanager webhook (v4), incidents and their timeline entries.

`Severity` lives in bot.severity with the policy and is re-exported here.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.severity import Severity as Severity  # re-exported

#: Alertmanager sends this for the endsAt of an alert that is still firing.
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class AlertStatus(StrEnum):
    """Status of one alert or of a whole group, as Alertmanager reports it."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """One alert inside an Alertmanager notification (field names follow the wire format)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=128)

    @property
    def name(self) -> str:
        """The alertname label, or '(unnamed)'."""
        return self.labels.get("alertname", "(unnamed)")

    @property
    def instance_key(self) -> str:
        """Identity of one firing episode: the fingerprint plus when it started."""
        return f"{self.fingerprint}@{self.startsAt.isoformat()}"


class AlertmanagerWebhook(BaseModel):
    """The body Alertmanager POSTs to a webhook receiver (payload version 4).

    Unknown fields (``notification_reason``, ``routeLabels`` in newer releases) are accepted and ignored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    groupKey: str = Field(min_length=1, max_length=8192)
    truncatedAlerts: int = Field(0, ge=0)
    status: AlertStatus
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1, max_length=10_000)

    def idempotency_key(self) -> str:
        """A key equal for redeliveries of this notification and different for any real change.

        Built from the group key, the group status and each alert's fingerprint, status and start time.
        The start time matters: a group that resolves and later fires again with the same alerts is a new
        episode and must not be mistaken for a duplicate of the first one.
        """
        parts = sorted(f"{a.fingerprint}|{a.status.value}|{a.startsAt.isoformat()}" for a in self.alerts)
        material = "\n".join([self.groupKey, self.status.value, str(self.truncatedAlerts), *parts])
        return hashlib.sha256(material.encode()).hexdigest()

    @property
    def title(self) -> str:
        """A one-line title for the incident this group becomes."""
        name = self.commonLabels.get("alertname") or self.alerts[0].name
        summary = self.commonAnnotations.get("summary", "")
        return f"{name}: {summary}" if summary else name


def group_id(group_key: str) -> str:
    """A short stable identifier of an Alertmanager group key, safe inside Redis key names."""
    return hashlib.sha256(group_key.encode()).hexdigest()[:32]


class IncidentStatus(StrEnum):
    """Where an incident is in its life (bot.lifecycle calls this enum State)."""

    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"


class AlertState(BaseModel):
    """What the incident remembers of one alert."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    name: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None


class Incident(BaseModel):
    """An incident: one Alertmanager group's episode, from first firing to resolution."""

    model_config = ConfigDict(frozen=True)

    id: str
    group_key: str
    title: str
    status: IncidentStatus
    severity: Severity
    severity_reason: str
    receiver: str
    external_url: str
    common_labels: dict[str, str]
    alerts: dict[str, AlertState]
    truncated_alerts: int
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    previous_incident: str | None = None
    commander: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    reopened_count: int = 0
    in_maintenance: bool = False
    maintenance_reason: str | None = None
    escalation_level: int = 0
    escalation_due: datetime | None = None
    next_reminder_at: datetime | None = None
    reminders_sent: int = 0

    @property
    def is_open(self) -> bool:
        """Whether the incident is not resolved."""
        return self.status is not IncidentStatus.RESOLVED

    @property
    def firing_count(self) -> int:
        """How many of the known alerts are firing."""
        return sum(1 for a in self.alerts.values() if a.status is AlertStatus.FIRING)


class TimelineEntry(BaseModel):
    """One line of an incident's append-only timeline."""

    model_config = ConfigDict(frozen=True)

    id: str
    at: datetime
    kind: str
    message: str
    data: dict[str, object] = Field(default_factory=dict)
