"""The pure decision of what a notification does to a group's incident."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from bot.incidents.intake import Outcome, decide, policy_classifier
from bot.models import AlertmanagerWebhook, IncidentStatus, Severity
from bot.settings import get_settings
from bot.severity import load_policy
from tests.support.payloads import alert, notification

NOW = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
POLICY = policy_classifier(load_policy(get_settings().severity_policy))


def ids():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"INC-{next(counter):04d}"


def run(current, webhook, new_id=None):  # type: ignore[no-untyped-def]
    """decide() at NOW with the shipped policy."""
    return decide(current, webhook, now=NOW, new_id=new_id or ids(), classify=POLICY)


def w(*alerts: dict[str, object], **kw: object) -> AlertmanagerWebhook:
    return AlertmanagerWebhook.model_validate(notification(list(alerts), **kw))  # type: ignore[arg-type]


def test_first_firing_opens_an_incident_with_reason() -> None:
    d = run(None, w(alert(severity="critical")))
    assert d.outcome is Outcome.CREATED
    assert d.incident is not None
    assert d.incident.id == "INC-0001"
    assert d.incident.status is IncidentStatus.TRIGGERED
    assert d.incident.severity is Severity.P1
    assert "P1 by rule 'critical-alert'" in d.incident.severity_reason
    assert "labels alone" in d.incident.severity_reason
    assert d.timeline_kind == "opened"


def test_same_alerts_again_change_nothing() -> None:
    opened = run(None, w(alert())).incident
    again = run(opened, w(alert()))
    assert again.outcome is Outcome.UNCHANGED and again.incident is None


def test_new_alert_and_partial_resolution_update_the_incident() -> None:
    opened = run(None, w(alert(fingerprint="a"))).incident
    grown = run(opened, w(alert(fingerprint="a"), alert("KVCacheHigh", fingerprint="b")))
    assert grown.outcome is Outcome.UPDATED
    assert grown.incident is not None and grown.incident.firing_count == 2
    assert grown.timeline_data["firing"] == ["KVCacheHigh"]
    shrunk = run(
        grown.incident, w(alert(fingerprint="a", status="resolved"), alert("KVCacheHigh", fingerprint="b"))
    )
    assert shrunk.outcome is Outcome.UPDATED
    assert shrunk.incident is not None and shrunk.incident.firing_count == 1
    assert shrunk.incident.status is IncidentStatus.TRIGGERED


def test_all_resolved_resolves() -> None:
    opened = run(None, w(alert())).incident
    done = run(opened, w(alert(status="resolved")))
    assert done.outcome is Outcome.RESOLVED
    assert done.incident is not None
    assert done.incident.status is IncidentStatus.RESOLVED and done.incident.resolved_at == NOW


def test_refire_after_resolve_opens_a_new_linked_incident() -> None:
    gen = ids()
    opened = run(None, w(alert()), gen).incident
    resolved = run(opened, w(alert(status="resolved")), gen).incident
    refire = run(resolved, w(alert(starts_at="2026-11-26T12:00:00Z")), gen)
    assert refire.outcome is Outcome.CREATED
    assert refire.incident is not None
    assert refire.incident.id == "INC-0002" and refire.incident.previous_incident == "INC-0001"
    assert "Re-fire of INC-0001" in refire.timeline_message


def test_late_retry_of_old_firing_after_resolve_is_ignored() -> None:
    opened = run(None, w(alert())).incident
    resolved = run(opened, w(alert(status="resolved"))).incident
    stale = run(resolved, w(alert()))  # same startsAt as the resolved episode
    assert stale.outcome is Outcome.IGNORED and stale.incident is None


def test_resolved_notification_for_unknown_group_is_ignored() -> None:
    d = run(None, w(alert(status="resolved")))
    assert d.outcome is Outcome.IGNORED


def test_policy_classification_takes_the_worst_alert_of_the_group() -> None:
    sev, reason = POLICY(w(alert(severity="info"), alert("VLLMServiceDown", fingerprint="z")))
    assert sev is Severity.P0 and "outage-alert" in reason
    sev, reason = POLICY(w(alert("VLLMHighQueueDepth")))
    assert sev is Severity.P2 and "latency-alert" in reason
    sev, reason = POLICY(w(alert("SomethingUnheardOf", severity="nonsense")))
    assert sev is Severity.P3 and "default" in reason


class CountingSource:
    """A SignalSource that answers every query with one value and counts the queries."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.queries: list[str] = []

    def query_value(self, promql: str) -> float | None:
        self.queries.append(promql)
        return self.value


def test_signals_are_fetched_once_per_namespace_not_per_alert() -> None:
    policy = load_policy(get_settings().severity_policy)
    source = CountingSource(0.0)
    group = w(*[alert(fingerprint=f"f{i}", pod=f"p{i}") for i in range(20)])
    policy_classifier(policy, source)(group)
    per_alert = len(source.queries)
    assert 0 < per_alert <= len(policy.signals)  # 20 alerts, one namespace: one round of queries
