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
    classify: Classifier,
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
