"""Helpers shared by the runbook and rollback tests: a fast clock, incidents opened from alerts, timelines."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from bot.models import AlertmanagerWebhook, Incident
from bot.storage.incidents import IncidentStore
from tests.support.payloads import alert, notification


class FastClock:
    """Wall time plus whatever the engine 'slept'; sleeping advances it and barely waits."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.lock = threading.Lock()

    def now(self) -> datetime:
        with self.lock:
            return datetime.now(UTC) + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.1))
        with self.lock:
            self.offset += timedelta(seconds=seconds)


_FP = iter(range(10_000))


def open_incident(store: IncidentStore, name: str, **labels: str) -> Incident:
    """Apply a firing notification for one alert and return the incident it opened."""
    labels.setdefault("deployment", "vllm-decode")
    body = notification(
        [alert(name, fingerprint=f"fp{next(_FP):04d}", **labels)],
        group_key=f'{{}}:{{alertname="{name}", n="{next(_FP)}"}}',
    )
    webhook = AlertmanagerWebhook.model_validate(body)
    result = store.apply_notification(webhook, webhook.idempotency_key())
    assert result.incident_id is not None
    return store.get(result.incident_id)


def story(store: IncidentStore, incident_id: str, run_id: str | None = None) -> list[str]:
    """The incident's timeline as 'kind: message' lines (of one run when run_id is given)."""
    return [
        f"{t.kind}: {t.message}"
        for t in store.timeline(incident_id)
        if run_id is None or t.data.get("run_id") == run_id
    ]
