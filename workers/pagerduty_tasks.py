"""Celery tasks of the PagerDuty sync (paging queue: a lane no Slack work shares)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from bot import wiring
from bot.errors import TransientError
from bot.paging import PagerDutySync
from bot.settings import get_settings
from bot.tasknames import PAGERDUTY_SYNC, PAGERDUTY_WEBHOOK, change_notifications
from workers.celery_app import app, fanout_settings
from workers.tasks import incident_store

log = logging.getLogger("incident_bot.worker.pagerduty")


_sync: PagerDutySync | None = None


def pagerduty_sync() -> PagerDutySync:
    """The worker's PagerDutySync, built from settings on first use."""
    global _sync
    if _sync is None:
        _sync = wiring.build_sync(get_settings(), incident_store())
    return _sync


def use_sync(value: PagerDutySync | None) -> None:
    """Replace the worker's PagerDutySync (tests and embedding); None rebuilds it from settings."""
    global _sync
    _sync = value


@app.task(  # type: ignore[untyped-decorator]
    name=PAGERDUTY_SYNC,
    bind=True,
    autoretry_for=(TransientError,),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=12,
)
def pagerduty_sync_task(self: Task, incident_id: str) -> str:
    """Bring PagerDuty in line with the incident (page, acknowledge, resolve); retried on 429/5xx."""
    sync = pagerduty_sync()
    try:
        return sync.reconcile(incident_id)
    except TransientError as exc:
        # the timeline shows that PagerDuty has not heard yet, and why; Slack and runbooks go on regardless
        sync.store.append_timeline(
            incident_id,
            "pagerduty_delivery_failed",
            f"PagerDuty delivery failed (attempt {self.request.retries + 1}, will retry): {exc}",
            {"attempt": self.request.retries + 1},
        )
        raise


@app.task(  # type: ignore[untyped-decorator]
    name=PAGERDUTY_WEBHOOK,
    bind=True,
    autoretry_for=(TransientError,),
    retry_backoff=True,
    max_retries=8,
)
def pagerduty_webhook_task(self: Task, event: dict[str, Any], webhook_id: str) -> str:
    """Apply a verified webhook v3 event; the incident's Slack messages follow through the fan-out."""
    sync = pagerduty_sync()
    outcome, incident_id = sync.handle_webhook(event, webhook_id)
    if incident_id and outcome in ("acknowledged", "resolved", "recorded"):
        for name, args in change_notifications(fanout_settings(), incident_id, f"pagerduty:{webhook_id}"):
            app.send_task(name, args=args)
    log.info("pagerduty webhook %s %s: %s (%s)", webhook_id, event.get("event_type"), outcome, incident_id)
    return outcome
