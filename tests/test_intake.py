"""The pure decision of what a notification does to a group's incident."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from bot.intake import MaintenanceMark, Outcome, decide, policy_classifier
from bot.models import AlertmanagerWebhook, IncidentStatus, Severity
from bot.settings import get_settings
from bot.severity import load_policy
from tests.support.payloads import alert, notification

NOW = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
POLICY = policy_classifier(load_policy(get_settings().severity_policy))


def ids():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"INC-{next(counter):04d}"


def run(current, webhook, new_id=None, now=NOW, **kw):  # type: ignore[no-untyped-def]
    """decide() at NOW with the shipped policy and the default 30 min reopen window."""
    return decide(current, webhook, now=now, new_id=new_id or ids(), classify=POLICY, **kw)


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


def test_refire_within_the_reopen_window_reopens_the_same_incident() -> None:
    gen = ids()
    opened = run(None, w(alert()), gen).incident
    resolved = run(opened, w(alert(status="resolved")), gen).incident
    assert resolved is not None and resolved.resolved_at == NOW
    refire = run(resolved, w(alert(starts_at="2026-11-26T10:20:00Z")), gen, now=NOW + timedelta(minutes=30))
    assert refire.outcome is Outcome.REOPENED
    assert refire.incident is not None
    assert refire.incident.id == "INC-0001"  # the same incident, no new id drawn
    assert refire.incident.status is IncidentStatus.TRIGGERED and refire.incident.resolved_at is None
    assert refire.incident.reopened_count == 1 and refire.incident.firing_count == 1
    assert refire.timeline_kind == "reopened"
    assert "30 min 0 s after it was resolved" in refire.timeline_message
    assert gen() == "INC-0002"


def test_refire_after_the_reopen_window_opens_a_new_linked_incident() -> None:
    gen = ids()
    opened = run(None, w(alert()), gen).incident
    resolved = run(opened, w(alert(status="resolved")), gen).incident
    later = NOW + timedelta(minutes=30, seconds=1)
    refire = run(resolved, w(alert(starts_at="2026-11-26T12:00:00Z")), gen, now=later)
    assert refire.outcome is Outcome.CREATED
    assert refire.incident is not None
    assert refire.incident.id == "INC-0002" and refire.incident.previous_incident == "INC-0001"
    assert "Re-fire of INC-0001" in refire.timeline_message
    short = run(resolved, w(alert(starts_at="2026-11-26T12:00:00Z")), ids(), reopen_window=timedelta(0))
    assert short.outcome is Outcome.REOPENED  # resolved at NOW, re-fired at NOW: 0 s <= 0 s
    shorter = run(
        resolved,
        w(alert(starts_at="2026-11-26T12:00:00Z")),
        ids(),
        now=NOW + timedelta(seconds=1),
        reopen_window=timedelta(0),
    )
    assert shorter.outcome is Outcome.CREATED


def test_severity_is_raised_when_a_worse_alert_joins() -> None:
    opened = run(None, w(alert(fingerprint="a"))).incident
    assert opened is not None and opened.severity is Severity.P2
    worse = run(opened, w(alert(fingerprint="a"), alert("VLLMServiceDown", fingerprint="b")))
    assert worse.outcome is Outcome.UPDATED and worse.incident is not None
    assert worse.incident.severity is Severity.P0
    assert "outage-alert" in worse.incident.severity_reason
    assert [e.kind for e in worse.entries] == ["alerts_changed", "severity_changed"]
    change = worse.entries[1].data
    assert change["from"] == "P2" and change["to"] == "P0" and change["automatic"] is True
    assert change["actor"] == "incident-bot"
    assert worse.severity_change is not None and worse.severity_change.raised


def test_severity_is_never_lowered_automatically() -> None:
    opened = run(None, w(alert("VLLMServiceDown", fingerprint="b"), alert(fingerprint="a"))).incident
    assert opened is not None and opened.severity is Severity.P0
    # the outage alert resolves; what still fires classifies P2, but the incident stays P0
    calmer = run(
        opened, w(alert("VLLMServiceDown", fingerprint="b", status="resolved"), alert(fingerprint="a"))
    )
    assert calmer.outcome is Outcome.UPDATED and calmer.incident is not None
    assert calmer.incident.severity is Severity.P0
    assert [e.kind for e in calmer.entries] == ["alerts_changed"]
    assert calmer.severity_change is None


def test_worse_signals_alone_raise_severity_with_the_same_alerts() -> None:
    opened = run(None, w(alert())).incident
    hotter = decide(
        opened, w(alert()), now=NOW, new_id=ids(), classify=lambda _w: (Severity.P1, "error_rate_pct=12 > 10")
    )
    assert hotter.outcome is Outcome.UPDATED and hotter.incident is not None
    assert hotter.incident.severity is Severity.P1
    assert [e.kind for e in hotter.entries] == ["severity_changed"]
    cooler = decide(opened, w(alert()), now=NOW, new_id=ids(), classify=lambda _w: (Severity.P3, "calm"))
    assert cooler.outcome is Outcome.UNCHANGED


def test_flapping_group_neither_opens_nor_reopens_but_open_incidents_still_update() -> None:
    gen = ids()
    assert run(None, w(alert()), gen, flapping=True).outcome is Outcome.FLAPPING
    opened = run(None, w(alert()), gen).incident
    resolved = run(opened, w(alert(status="resolved")), gen, flapping=True)
    assert resolved.outcome is Outcome.RESOLVED
    again = run(resolved.incident, w(alert(starts_at="2026-11-26T10:10:00Z")), gen, flapping=True)
    assert again.outcome is Outcome.FLAPPING and again.incident is None


def test_maintenance_marks_the_new_incident_and_says_why() -> None:
    mark = MaintenanceMark("MW-3", "node drain", "alice")
    d = run(None, w(alert()), maintenance=mark)
    assert d.outcome is Outcome.CREATED and d.incident is not None
    assert d.incident.in_maintenance and d.incident.maintenance_reason == "node drain"
    assert [e.kind for e in d.entries] == ["opened", "in_maintenance"]
    assert d.entries[1].data == {"window_id": "MW-3", "reason": "node drain", "created_by": "alice"}


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
