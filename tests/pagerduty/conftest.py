"""Fixtures of the PagerDuty tests: the HTTPS emulator, Slack emulator, and a worker wired to both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from pydantic import SecretStr

import workers.pagerduty_tasks
import workers.slack_tasks
from bot import fanout
from bot.incidents.store import IncidentStore
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.settings import Settings
from bot.slack.runtime import CeleryTaskSender, build_runtime
from tests.support.slack import RESPONDER, RecordingSender

SECRET_OLD, SECRET_NEW = "whsec-old-0123456789", "whsec-new-9876543210"
ALICE = "alice@example.com"


@pytest.fixture
def pd() -> Iterator[PagerDutyEmulator]:
    """A fresh PagerDuty emulator (HTTPS, loopback)."""
    with PagerDutyEmulator() as emu:
        yield emu


@pytest.fixture
def pd_settings(slack_settings: Settings, pd: PagerDutyEmulator) -> Settings:
    """Slack and PagerDuty both configured against their emulators; two webhook secrets (rotation)."""
    return slack_settings.model_copy(
        update={
            "pagerduty_routing_key": SecretStr("R0UTINGKEYDEFAULT"),
            "pagerduty_api_token": SecretStr("pd-api-token-xyz"),
            "pagerduty_from_email": "incident-bot@example.com",
            "pagerduty_user_emails": f"{RESPONDER}={ALICE}",
            "pagerduty_webhook_secrets": SecretStr(f"{SECRET_OLD},{SECRET_NEW}"),
            "pagerduty_events_url": pd.url,
            "pagerduty_api_url": pd.url,
            "pagerduty_ca_bundle": pd.ca_path,
        }
    )


@pytest.fixture
def sender(pd_settings: Settings) -> RecordingSender:
    """Notification tasks go to the real broker; runbook tasks are only recorded."""
    return RecordingSender(forward=CeleryTaskSender(pd_settings))


@pytest.fixture
def wired_worker(
    pd_settings: Settings,
    redis_client: redis.Redis,
    store: IncidentStore,
    sender: RecordingSender,
    celery_worker: object,
) -> Iterator[None]:
    """The real Celery worker, with Slack and PagerDuty built from pd_settings."""
    workers.slack_tasks.use_runtime(build_runtime(pd_settings, sender=sender))
    workers.pagerduty_tasks.use_sync(workers.pagerduty_tasks.build_sync(pd_settings, store))
    fanout.use_settings(pd_settings)
    yield
    fanout.use_settings(None)
    workers.pagerduty_tasks.use_sync(None)
    workers.slack_tasks.use_runtime(None)
