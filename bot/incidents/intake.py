"""Pure decisions: what an Alertmanager notification does to a group's incident."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bot.models import (
    AlertmanagerWebhook,
    AlertState,
    AlertStatus,
    Incident,
    IncidentStatus,
    Severity,
)

#: Classifies a notification into a severity and a human reason.
Classifier = Callable[[AlertmanagerWebhook], tuple[Severity, str]]

_LABEL_SEVERITY = {
    "critical": Severity.P1,
    "page": Severity.P1,
    "error": Severity.P2,
    "warning": Severity.P2,
    "info": Severity.P3,
}


def classify_by_label(webhook: AlertmanagerWebhook) -> tuple[Severity, str]:
    """Severity from the alerts' `severity` label alone (the policy engine refines this)."""
    best: tuple[Severity, str] | None = None
    for alert in webhook.alerts:
        value = alert.labels.get("severity", "").lower()
        sev = _LABEL_SEVERITY.get(value)
        if sev is not None and (best is None or sev < best[0]):
            best = (sev, f"{sev.value} from label severity={value!r} on alert {alert.name}")
    return best or (Severity.P3, "P3 by default: no alert carries a known severity label")


class Outcome(StrEnum):
    """What applying a notification did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    RESOLVED = "resolved"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Decision:
    """The result of `decide`: the incident to store (if any) and the timeline entry to append."""

    outcome: Outcome
    incident: Incident | None
    timeline_kind: str | None = None
    timeline_message: str = ""
    timeline_data: dict[str, object] = field(default_factory=dict)


def _alert_states(webhook: AlertmanagerWebhook) -> dict[str, AlertState]:
    return {
        a.fingerprint: AlertState(
            fingerprint=a.fingerprint,
            name=a.name,
            status=a.status,
            labels=a.labels,
            annotations=a.annotations,
            starts_at=a.startsAt,
            ends_at=a.endsAt if a.status is AlertStatus.RESOLVED else None,
        )
        for a in webhook.alerts
    }


def _is_stale(known: AlertState | None, incoming: AlertState) -> bool:
    """A firing report of an episode already known to be resolved is a late retry, not news."""
    return (
        known is not None
        and known.status is AlertStatus.RESOLVED
        and incoming.status is AlertStatus.FIRING
        and known.starts_at == incoming.starts_at
    )


def decide(
    current: Incident | None,
    webhook: AlertmanagerWebhook,
    *,
    now: datetime,
    new_id: Callable[[], str],
    classify: Classifier = classify_by_label,
) -> Decision:
    """Decide what `webhook` does given the group's latest incident (open or resolved, or none)."""
    incoming = _alert_states(webhook)
    if current is not None and current.status is not IncidentStatus.RESOLVED:
        return _update_open(current, webhook, incoming, now)

    firing = {fp: a for fp, a in incoming.items() if a.status is AlertStatus.FIRING}
    if webhook.status is AlertStatus.RESOLVED or not firing:
        return Decision(Outcome.IGNORED, None)
    if current is not None and all(_is_stale(current.alerts.get(fp), a) for fp, a in firing.items()):
        return Decision(Outcome.IGNORED, None)

    severity, reason = classify(webhook)
    incident = Incident(
        id=new_id(),
        group_key=webhook.groupKey,
        title=webhook.title,
        status=IncidentStatus.TRIGGERED,
        severity=severity,
        severity_reason=reason,
        receiver=webhook.receiver,
        external_url=webhook.externalURL,
        common_labels=webhook.commonLabels,
        alerts=incoming,
        truncated_alerts=webhook.truncatedAlerts,
        created_at=now,
        updated_at=now,
        previous_incident=current.id if current is not None else None,
    )
    message = f"Opened {incident.id} ({severity.value}): {len(firing)} alert(s) firing. {reason}"
    if current is not None:
        message += f" Re-fire of {current.id}."
    return Decision(
        Outcome.CREATED,
        incident,
        "opened",
        message,
        {
            "severity": severity.value,
            "firing": sorted(a.name for a in firing.values()),
            "truncated_alerts": webhook.truncatedAlerts,
            "previous_incident": incident.previous_incident,
        },
    )


def _update_open(
    current: Incident, webhook: AlertmanagerWebhook, incoming: dict[str, AlertState], now: datetime
) -> Decision:
    alerts = dict(current.alerts)
    newly_firing: list[str] = []
    newly_resolved: list[str] = []
    for fp, new in incoming.items():
        old = alerts.get(fp)
        if _is_stale(old, new):
            continue
        if old is None or old.status is not new.status or old.starts_at != new.starts_at:
            (newly_firing if new.status is AlertStatus.FIRING else newly_resolved).append(new.name)
        alerts[fp] = new

    all_resolved = webhook.status is AlertStatus.RESOLVED and all(
        a.status is AlertStatus.RESOLVED for a in alerts.values()
    )
    if not newly_firing and not newly_resolved and not all_resolved:
        return Decision(Outcome.UNCHANGED, None)

    update: dict[str, object] = {
        "alerts": alerts,
        "updated_at": now,
        "truncated_alerts": webhook.truncatedAlerts,
    }
    data: dict[str, object] = {"firing": sorted(newly_firing), "resolved": sorted(newly_resolved)}
    if all_resolved:
        update |= {"status": IncidentStatus.RESOLVED, "resolved_at": now}
        return Decision(
            Outcome.RESOLVED,
            current.model_copy(update=update),
            "resolved",
            f"Resolved {current.id}: all alerts resolved.",
            data,
        )
    parts = []
    if newly_firing:
        parts.append(f"now firing: {', '.join(sorted(newly_firing))}")
    if newly_resolved:
        parts.append(f"resolved: {', '.join(sorted(newly_resolved))}")
    firing_left = sum(1 for a in alerts.values() if a.status is AlertStatus.FIRING)
    return Decision(
        Outcome.UPDATED,
        current.model_copy(update=update),
        "alerts_changed",
        f"Alerts changed ({'; '.join(parts)}); {firing_left} still firing.",
        data,
    )
