"""Pure decisions: what an Alertmanager notification does to a group's incident.

Rules (the store supplies the flapping state and any maintenance window; nothing here does I/O):

* No incident, or the latest one resolved longer ago than the reopen window: a firing notification opens
  a new incident (linked to the previous one).
* The latest one resolved within the reopen window: the same incident is reopened (lifecycle ``reopen``).
* An open incident: alerts are updated; when all are resolved it resolves. If the firing alerts now
  classify higher, the severity is raised (automatic changes never lower it).
* A flapping group neither opens nor reopens incidents until it settles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.errors import InvalidTransition
from bot.lifecycle import AUTOMATION_ACTOR as AUTOMATION_ACTOR
from bot.lifecycle import (
    DEFAULT_REOPEN_WINDOW,
    Event,
    SeverityChange,
    automatic_severity_change,
    severity_event,
    transition,
)
from bot.lifecycle import Entry as Entry
from bot.lifecycle import MaintenanceMark as MaintenanceMark
from bot.lifecycle import severity_entry as severity_entry
from bot.models import (
    AlertmanagerWebhook,
    AlertState,
    AlertStatus,
    Incident,
    IncidentStatus,
    Severity,
)
from bot.severity import (
    AlertView,
    SeverityPolicy,
    SignalSource,
    classify,
    fetch_signals,
    most_severe_classification,
)

#: Classifies a notification into a severity and a human reason.
Classifier = Callable[[AlertmanagerWebhook], tuple[Severity, str]]


def policy_classifier(policy: SeverityPolicy, source: SignalSource | None = None) -> Classifier:
    """A Classifier applying the severity policy to every alert of a group; the worst one wins.

    With no signal source it classifies on labels alone (and the explanation says so). Signals are
    fetched once per distinct set of query labels, not once per alert.
    """

    def classify_group(webhook: AlertmanagerWebhook) -> tuple[Severity, str]:
        cache: dict[tuple[tuple[str, str], ...], dict[str, float | None]] = {}
        results = []
        for alert in webhook.alerts:
            view = AlertView(labels=alert.labels, annotations=alert.annotations)
            signals = None
            if source is not None:
                scope = tuple((name, alert.labels.get(name, "")) for name in policy.query_labels)
                if scope not in cache:
                    cache[scope] = fetch_signals(view, policy, source)
                signals = cache[scope]
            results.append(classify(view, signals, policy))
        worst = most_severe_classification(results)
        return worst.severity, worst.explanation

    return classify_group


class Outcome(StrEnum):
    """What applying a notification did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    IGNORED = "ignored"
    FLAPPING = "flapping"


@dataclass(frozen=True)
class Decision:
    """The result of `decide`: the incident to store (if any) and the timeline entries to append."""

    outcome: Outcome
    incident: Incident | None
    entries: tuple[Entry, ...] = ()
    severity_change: SeverityChange | None = None

    @property
    def timeline_kind(self) -> str | None:
        """Kind of the first timeline entry (None when there is none)."""
        return self.entries[0].kind if self.entries else None

    @property
    def timeline_message(self) -> str:
        """Message of the first timeline entry."""
        return self.entries[0].message if self.entries else ""

    @property
    def timeline_data(self) -> dict[str, object]:
        """Data of the first timeline entry."""
        return self.entries[0].data if self.entries else {}


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


def _firing_only(webhook: AlertmanagerWebhook) -> AlertmanagerWebhook:
    """The notification restricted to its firing alerts (what severity should be judged on)."""
    firing = [a for a in webhook.alerts if a.status is AlertStatus.FIRING]
    return webhook.model_copy(update={"alerts": firing}) if firing else webhook


def _maintenance_entry(mark: MaintenanceMark) -> Entry:
    return Entry(
        "in_maintenance",
        f"In maintenance window {mark.window_id} ({mark.reason}, by {mark.created_by}): "
        "no pages, no actions.",
        {"window_id": mark.window_id, "reason": mark.reason, "created_by": mark.created_by},
    )


def _maintenance_fields(mark: MaintenanceMark | None) -> dict[str, object]:
    return {"in_maintenance": mark is not None, "maintenance_reason": mark.reason if mark else None}


def notification_events(decision: Decision, incident: Incident) -> list[tuple[str, dict[str, object]]]:
    """The events (type, extra fields) a stored decision writes beside its incident's fields."""
    out: list[tuple[str, dict[str, object]]] = []
    if decision.outcome is Outcome.REOPENED:
        out.append(("reopened", {"reopened_count": incident.reopened_count}))
    if decision.severity_change is not None:
        out.append(("severity_changed", severity_event(decision.severity_change)))
    if decision.outcome is Outcome.RESOLVED:
        out.append(("postmortem_ready", {"command": f"incident-bot incidents postmortem {incident.id}"}))
    return out


def decide(
    current: Incident | None,
    webhook: AlertmanagerWebhook,
    *,
    now: datetime,
    new_id: Callable[[], str],
    classify: Classifier,
    reopen_window: timedelta = DEFAULT_REOPEN_WINDOW,
    flapping: bool = False,
    maintenance: MaintenanceMark | None = None,
) -> Decision:
    """Decide what `webhook` does given the group's latest incident (open or resolved, or none)."""
    incoming = _alert_states(webhook)
    if current is not None and current.status is not IncidentStatus.RESOLVED:
        return _update_open(current, webhook, incoming, now, classify)

    firing = {fp: a for fp, a in incoming.items() if a.status is AlertStatus.FIRING}
    if webhook.status is AlertStatus.RESOLVED or not firing:
        return Decision(Outcome.IGNORED, None)
    if current is not None and all(_is_stale(current.alerts.get(fp), a) for fp, a in firing.items()):
        return Decision(Outcome.IGNORED, None)
    if flapping:
        return Decision(Outcome.FLAPPING, None)

    severity, reason = classify(_firing_only(webhook))
    if current is not None and current.resolved_at is not None:
        try:
            transition(
                current.status,
                Event.REOPEN,
                now=now,
                resolved_at=current.resolved_at,
                reopen_window=reopen_window,
                incident_id=current.id,
            )
        except InvalidTransition:
            pass  # beyond the window: a new, linked incident below
        else:
            return _reopen(current, webhook, incoming, now, severity, reason, maintenance)

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
        **_maintenance_fields(maintenance),
    )
    message = f"Opened {incident.id} ({severity.value}): {len(firing)} alert(s) firing. {reason}"
    if current is not None:
        message += f" Re-fire of {current.id}."
    entries = [
        Entry(
            "opened",
            message,
            {
                "severity": severity.value,
                "firing": sorted(a.name for a in firing.values()),
                "truncated_alerts": webhook.truncatedAlerts,
                "previous_incident": incident.previous_incident,
            },
        )
    ]
    if maintenance is not None:
        entries.append(_maintenance_entry(maintenance))
    return Decision(Outcome.CREATED, incident, tuple(entries))


def _reopen(
    current: Incident,
    webhook: AlertmanagerWebhook,
    incoming: dict[str, AlertState],
    now: datetime,
    severity: Severity,
    reason: str,
    maintenance: MaintenanceMark | None,
) -> Decision:
    assert current.resolved_at is not None
    alerts = {**current.alerts, **incoming}
    firing = sorted(a.name for a in incoming.values() if a.status is AlertStatus.FIRING)
    ago = int((now - current.resolved_at).total_seconds())
    update: dict[str, object] = {
        "status": IncidentStatus.TRIGGERED,
        "resolved_at": None,
        "alerts": alerts,
        "updated_at": now,
        "truncated_alerts": webhook.truncatedAlerts,
        "reopened_count": current.reopened_count + 1,
        "escalation_level": 0,
        **_maintenance_fields(maintenance),
    }
    entries = [
        Entry(
            "reopened",
            f"Reopened {current.id}: fired again {ago // 60} min {ago % 60} s after it was resolved; "
            f"{len(firing)} alert(s) firing.",
            {
                "actor": AUTOMATION_ACTOR,
                "firing": firing,
                "resolved_at": current.resolved_at.isoformat(),
                "reopened_count": current.reopened_count + 1,
            },
        )
    ]
    change = automatic_severity_change(
        current.severity, severity, state=IncidentStatus.TRIGGERED.value, firing=True, reason=reason
    )
    if change is not None:
        update |= {"severity": change.new, "severity_reason": reason}
        entries.append(severity_entry(change))
    if maintenance is not None:
        entries.append(_maintenance_entry(maintenance))
    return Decision(Outcome.REOPENED, current.model_copy(update=update), tuple(entries), change)


def _update_open(
    current: Incident,
    webhook: AlertmanagerWebhook,
    incoming: dict[str, AlertState],
    now: datetime,
    classify: Classifier,
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
    firing_left = sum(1 for a in alerts.values() if a.status is AlertStatus.FIRING)
    change = None
    if firing_left and not all_resolved:
        severity, reason = classify(_firing_only(webhook))
        change = automatic_severity_change(
            current.severity, severity, state=current.status.value, firing=True, reason=reason
        )
    if not newly_firing and not newly_resolved and not all_resolved and change is None:
        return Decision(Outcome.UNCHANGED, None)

    update: dict[str, object] = {
        "alerts": alerts,
        "updated_at": now,
        "truncated_alerts": webhook.truncatedAlerts,
    }
    data: dict[str, object] = {"firing": sorted(newly_firing), "resolved": sorted(newly_resolved)}
    if all_resolved:
        status = transition(current.status.value, Event.RESOLVE, incident_id=current.id)
        update |= {"status": IncidentStatus(status.value), "resolved_at": now}
        return Decision(
            Outcome.RESOLVED,
            current.model_copy(update=update),
            (
                Entry(
                    "resolved",
                    f"Resolved {current.id}: all alerts resolved.",
                    data | {"actor": AUTOMATION_ACTOR},
                ),
            ),
        )
    entries = []
    if newly_firing or newly_resolved:
        parts = []
        if newly_firing:
            parts.append(f"now firing: {', '.join(sorted(newly_firing))}")
        if newly_resolved:
            parts.append(f"resolved: {', '.join(sorted(newly_resolved))}")
        entries.append(
            Entry("alerts_changed", f"Alerts changed ({'; '.join(parts)}); {firing_left} still firing.", data)
        )
    if change is not None:
        update |= {"severity": change.new, "severity_reason": change.reason}
        entries.append(severity_entry(change))
    return Decision(Outcome.UPDATED, current.model_copy(update=update), tuple(entries), change)
