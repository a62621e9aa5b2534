"""Fixtures of the PagerDuty tests: the HTTPS emulator, Slack emulator, and a worker wired to both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import workers.celery_app
import workers.pagerduty_tasks
import workers.slack_tasks
from bot import wiring
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.wiring import CeleryTaskSender, build_runtime
from tests.support.fixtures import ALICE, SECRET_NEW, SECRET_OLD  # noqa: F401 - re-exported for the tests
from tests.support.slack import RecordingSender


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
    workers.pagerduty_tasks.use_sync(wiring.build_sync(pd_settings, store))
    workers.celery_app.use_fanout_settings(pd_settings)
    yield
    workers.celery_app.use_fanout_settings(None)
    workers.pagerduty_tasks.use_sync(None)
    workers.slack_tasks.use_runtime(None)
