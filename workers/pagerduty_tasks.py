"""Celery tasks of the PagerDuty sync (notifications queue)."""

from __future__ import annotations

import functools
import logging
import ssl
from typing import Any

from celery import Task

from bot.errors import TransientError
from bot.fanout import PAGERDUTY_SYNC, PAGERDUTY_WEBHOOK, change_notifications, fanout_settings
from bot.incidents.commands import StoreIncidentCommands
from bot.incidents.store import IncidentStore
from bot.integrations.pagerduty import Link, PagerDutyClient
from bot.models import Incident
from bot.paging import PagerDutySync
from bot.settings import Settings, get_settings
from bot.severity import Severity, load_policy
from workers.celery_app import app
from workers.tasks import incident_store

log = logging.getLogger("incident_bot.worker.pagerduty")


def _links(incident: Incident) -> list[Link]:
    links = [Link(incident.external_url, "Alertmanager")] if incident.external_url.startswith("http") else []
    return links


_sync: PagerDutySync | None = None


def pagerduty_sync() -> PagerDutySync:
    """The worker's PagerDutySync, built from settings on first use."""
    global _sync
    if _sync is None:
        _sync = build_sync(get_settings(), incident_store())
    return _sync


def use_sync(value: PagerDutySync | None) -> None:
    """Replace the worker's PagerDutySync (tests and embedding); None rebuilds it from settings."""
    global _sync
    _sync = value


def build_sync(settings: Settings, store: IncidentStore) -> PagerDutySync:
    """A PagerDutySync for these settings."""
    verify: Any = True
    if settings.pagerduty_ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(settings.pagerduty_ca_bundle))

    token = settings.pagerduty_api_token

    @functools.lru_cache(maxsize=8)
    def client_for(routing_key: str) -> PagerDutyClient:
        return PagerDutyClient(
            routing_key,
            api_token=token.get_secret_value() if token else None,
            service_from=settings.pagerduty_from_email,
            events_url=settings.pagerduty_events_url,
            api_url=settings.pagerduty_api_url,
            verify=verify,
        )

    def by_severity(severity: Severity) -> PagerDutyClient:
        key = settings.pagerduty_routing_key_for(severity.value)
        if key is None:
            raise TransientError("PAGERDUTY_ROUTING_KEY is not set")
        return client_for(key)

    return PagerDutySync(
        store=store,
        client=store.redis_client,
        commands=StoreIncidentCommands(store),
        policy=load_policy(settings.severity_policy),
        pagerduty=by_severity,
        templates_dir=settings.templates_dir,
        email_by_slack_user=settings.pagerduty_email_by_slack_user,
        links=_links,
    )


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
