"""Shared helpers of the Slack tests."""

from __future__ import annotations

from bot.incidents.store import IncidentStore
from bot.models import AlertmanagerWebhook, Incident
from tests.support.payloads import alert, notification


def open_incident(
    store: IncidentStore, n: int = 1, *, severity: str = "critical", **annotations: str
) -> Incident:
    """Open an incident through the real intake path (P1 for severity=critical)."""
    a = alert(f"VLLMDown{n}", fingerprint=f"fp{n:06d}", severity=severity)
    a["annotations"].update(annotations)
    body = notification([a], group_key=f'{{}}:{{alertname="VLLMDown{n}"}}')
    body["commonAnnotations"].update(annotations)
    webhook = AlertmanagerWebhook.model_validate(body)
    result = store.apply_notification(webhook, webhook.idempotency_key())
    assert result.incident_id is not None
    return store.get(result.incident_id)
