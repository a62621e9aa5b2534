"""Celery tasks. Thin: load state, call into `bot`, save state."""

from __future__ import annotations

import functools
import logging

from celery import Task
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from bot import wiring
from bot.errors import TransientError
from bot.intake import Outcome
from bot.models import AlertmanagerWebhook
from bot.settings import get_settings
from bot.storage.incidents import IncidentStore
from bot.tasknames import PROCESS_ALERT_GROUP, change_notifications
from workers.celery_app import app, fanout_settings

log = logging.getLogger("incident_bot.worker")

#: Intake outcomes that change what Slack shows.
_NOTIFY_OUTCOMES = frozenset({"created", "updated", "resolved", "reopened", "duplicate"})


@functools.lru_cache(maxsize=1)
def incident_store() -> IncidentStore:
    """The worker process's incident store."""
    settings = get_settings()
    return wiring.incident_store(
        settings, wiring.redis_client(settings, "worker"), classify=wiring.classifier(settings)
    )


@app.task(  # type: ignore[untyped-decorator]
    name=PROCESS_ALERT_GROUP,
    bind=True,
    autoretry_for=(TransientError,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=10,
)
def process_alert_group(self: Task, payload: dict[str, object], delivery_key: str) -> str:
    """Apply one Alertmanager notification to its group's incident (exactly once per delivery key)."""
    webhook = AlertmanagerWebhook.model_validate(payload)
    store = incident_store()
    result = store.apply_notification(webhook, delivery_key)
    store.count_task("process_alert_group", str(result.outcome))
    if result.incident_id and str(result.outcome) in _NOTIFY_OUTCOMES:
        # Slack and PagerDuty are idempotent, so these also go out for "duplicate": a retry after a crash
        # between the apply and this line must still notify.
        try:
            event = f"alerts:{delivery_key[:16]}"
            for name, args in change_notifications(fanout_settings(), result.incident_id, event):
                app.send_task(name, args=args)
        except (KombuError, RedisError, OSError) as exc:
            raise TransientError(f"could not queue the notifications: {exc}") from exc
    if result.incident_id and result.outcome in (
        Outcome.CREATED,
        Outcome.UPDATED,
        Outcome.REOPENED,
        "duplicate",
    ):
        # A duplicate is a redelivery: the first attempt may have died before starting the runbooks;
        # runs are keyed per incident and runbook, so starting again never runs one twice.
        from workers.runbook_tasks import start_matching_runbooks

        start_matching_runbooks(result.incident_id)
    log.info(
        "alert group applied: outcome=%s incident=%s group_status=%s alerts=%d key=%s attempt=%d",
        result.outcome,
        result.incident_id,
        webhook.status.value,
        len(webhook.alerts),
        delivery_key[:12],
        self.request.retries,
    )
    return str(result.outcome)
