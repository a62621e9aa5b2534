"""Helpers for lifecycle tests: a settable clock, a store on it, and notifications by group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from bot.models import AlertmanagerWebhook
from bot.settings import get_settings
from bot.severity import load_policy
from bot.storage.incidents import ApplyResult, IncidentStore, LifecycleConfig
from tests.support.payloads import alert, notification

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
POLICY = load_policy(get_settings().severity_policy)
CONFIG = LifecycleConfig(
    reopen_window=timedelta(minutes=30),
    flap_threshold=4,
    flap_window=timedelta(hours=1),
    escalation_max_levels=3,
    timer_lease_seconds=60,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by timedelta(**delta); returns the new time."""
        self.now += timedelta(**delta)
        return self.now


def make_store(client: redis.Redis, clock: Clock, config: LifecycleConfig = CONFIG) -> IncidentStore:
    """A store on the test prefix with the shipped policy, *config* and *clock*."""
    return IncidentStore(client, prefix=get_settings().key_prefix, policy=POLICY, config=config, clock=clock)


def send(store: IncidentStore, body: dict[str, Any]) -> ApplyResult:
    """Apply a notification body as the worker would (delivery key = its idempotency key)."""
    webhook = AlertmanagerWebhook.model_validate(body)
    return store.apply_notification(webhook, webhook.idempotency_key())


def firing(
    name: str = "VLLMHighQueueDepth", *, starts: str = "2026-11-26T10:00:00Z", **kw: Any
) -> dict[str, Any]:
    """A one-alert firing notification of the default group."""
    return notification([alert(name, starts_at=starts, **kw)])


def resolved(
    name: str = "VLLMHighQueueDepth", *, starts: str = "2026-11-26T10:00:00Z", **kw: Any
) -> dict[str, Any]:
    """The matching resolved notification."""
    return notification([alert(name, starts_at=starts, status="resolved", **kw)])
