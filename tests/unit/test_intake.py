"""The pure decision of what a notification does to a group's incident."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from bot.incidents.intake import Outcome, classify_by_label, decide
from bot.models import AlertmanagerWebhook, IncidentStatus, Severity
from tests.support.payloads import alert, notification

NOW = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)


def ids():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"INC-{next(counter):04d}"


def w(*alerts: dict[str, object], **kw: object) -> AlertmanagerWebhook:
    return AlertmanagerWebhook.model_validate(notification(list(alerts), **kw))  # type: ignore[arg-type]


def test_first_firing_opens_an_incident_with_reason() -> None:
    d = decide(None, w(alert(severity="critical")), now=NOW, new_id=ids())
    assert d.outcome is Outcome.CREATED
    assert d.incident is not None
    assert d.incident.id == "INC-0001"
    assert d.incident.status is IncidentStatus.TRIGGERED
    assert d.incident.severity is Severity.P1
    assert "severity='critical'" in d.incident.severity_reason
    assert d.timeline_kind == "opened"


def test_same_alerts_again_change_nothing() -> None:
    opened = decide(None, w(alert()), now=NOW, new_id=ids()).incident
    again = decide(opened, w(alert()), now=NOW, new_id=ids())
    assert again.outcome is Outcome.UNCHANGED and again.incident is None


def test_new_alert_and_partial_resolution_update_the_incident() -> None:
    opened = decide(None, w(alert(fingerprint="a")), now=NOW, new_id=ids()).incident
    grown = decide(
        opened, w(alert(fingerprint="a"), alert("KVCacheHigh", fingerprint="b")), now=NOW, new_id=ids()
    )
    assert grown.outcome is Outcome.UPDATED
    assert grown.incident is not None and grown.incident.firing_count == 2
    assert grown.timeline_data["firing"] == ["KVCacheHigh"]
    shrunk = decide(
        grown.incident,
        w(alert(fingerprint="a", status="resolved"), alert("KVCacheHigh", fingerprint="b")),
        now=NOW,
        new_id=ids(),
    )
    assert shrunk.outcome is Outcome.UPDATED
    assert shrunk.incident is not None and shrunk.incident.firing_count == 1
    assert shrunk.incident.status is IncidentStatus.TRIGGERED


def test_all_resolved_resolves() -> None:
    opened = decide(None, w(alert()), now=NOW, new_id=ids()).incident
    done = decide(opened, w(alert(status="resolved")), now=NOW, new_id=ids())
    assert done.outcome is Outcome.RESOLVED
    assert done.incident is not None
    assert done.incident.status is IncidentStatus.RESOLVED and done.incident.resolved_at == NOW


def test_refire_after_resolve_opens_a_new_linked_incident() -> None:
    gen = ids()
    opened = decide(None, w(alert()), now=NOW, new_id=gen).incident
    resolved = decide(opened, w(alert(status="resolved")), now=NOW, new_id=gen).incident
    refire = decide(resolved, w(alert(starts_at="2026-11-26T12:00:00Z")), now=NOW, new_id=gen)
    assert refire.outcome is Outcome.CREATED
    assert refire.incident is not None
    assert refire.incident.id == "INC-0002" and refire.incident.previous_incident == "INC-0001"
    assert "Re-fire of INC-0001" in refire.timeline_message


def test_late_retry_of_old_firing_after_resolve_is_ignored() -> None:
    opened = decide(None, w(alert()), now=NOW, new_id=ids()).incident
    resolved = decide(opened, w(alert(status="resolved")), now=NOW, new_id=ids()).incident
    stale = decide(resolved, w(alert()), now=NOW, new_id=ids())  # same startsAt as the resolved episode
    assert stale.outcome is Outcome.IGNORED and stale.incident is None


def test_resolved_notification_for_unknown_group_is_ignored() -> None:
    d = decide(None, w(alert(status="resolved")), now=NOW, new_id=ids())
    assert d.outcome is Outcome.IGNORED


def test_label_classification_takes_the_worst_alert() -> None:
    sev, reason = classify_by_label(w(alert(severity="info"), alert(fingerprint="z", severity="critical")))
    assert sev is Severity.P1 and "critical" in reason
    sev, reason = classify_by_label(w(alert(severity="nonsense")))
    assert sev is Severity.P3 and "default" in reason
