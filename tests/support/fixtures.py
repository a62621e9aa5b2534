"""Shared pytest fixtures: settings, a clean Redis namespace, an embedded Celery worker, services."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from pydantic import SecretStr

from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.slack_emulator import SlackEmulator
from bot.settings import Settings, get_settings
from bot.storage.incidents import IncidentStore
from bot.tasknames import ALL_QUEUES
from tests.support.services import RedisServer
from tests.support.slack import APPROVER, GROUP_RESPONDER, RESPONDER, SIGNING_SECRET


@pytest.fixture
def settings() -> Settings:
    """The test settings (database 15, prefix ibtest:)."""
    return get_settings()


def _clean(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A client on the test database with the bot's keys removed before and after the test."""
    client = redis.Redis.from_url(settings.redis_url)
    _clean(client, settings.key_prefix)
    yield client
    _clean(client, settings.key_prefix)
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis, settings: Settings) -> IncidentStore:
    """An IncidentStore on the clean test namespace."""
    return IncidentStore(redis_client, prefix=settings.key_prefix, dedup_ttl=settings.dedup_ttl_seconds)


@pytest.fixture(scope="session")
def celery_worker() -> Iterator[object]:
    """A real Celery worker (solo pool, in a thread) consuming every queue of the test database."""
    from bot.runtime import embedded_worker
    from workers.celery_app import app

    broker = redis.Redis.from_url(get_settings().effective_broker_url)
    broker.delete(*ALL_QUEUES)  # stale messages from an aborted earlier run
    with embedded_worker(app, queues=ALL_QUEUES, pool="solo", concurrency=1) as worker:
        yield worker


def _eta_entries(worker: object) -> list[object]:
    """Timer entries holding tasks sent with a countdown (retries, re-checks), not the consumer's own."""
    return [
        e
        for e in worker.consumer.timer.queue  # type: ignore[attr-defined]
        if getattr(e.entry.fun, "__name__", "") == "apply_eta_task"
    ]


def worker_idle(worker: object, broker: redis.Redis, *, soon: float = 3.0) -> bool:
    """No message waiting in the queues, none running, and no countdown task due within `soon` seconds."""
    from celery.worker import state

    horizon = time.monotonic() + soon
    return (
        all(broker.llen(q) == 0 for q in ALL_QUEUES)
        and not state.active_requests
        and all(e.eta > horizon for e in _eta_entries(worker))  # type: ignore[attr-defined]
    )


@pytest.fixture(autouse=True)
def _quiet_worker_between_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let the session worker finish a test's work before the next test starts.

    Otherwise a retry or notification queued late by one test runs during the next one, against that
    test's emulators and freshly numbered incidents. Tasks held for a later countdown (a runbook step that
    re-checks in minutes) belong to the finished test: they are acknowledged and dropped.
    """
    yield
    if "celery_worker" not in request.fixturenames:
        return
    worker = request.getfixturevalue("celery_worker")
    broker = redis.Redis.from_url(get_settings().effective_broker_url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not worker_idle(worker, broker):
        time.sleep(0.05)
    for held in _eta_entries(worker):
        held.entry.args[0].acknowledge()  # type: ignore[attr-defined]
        held.entry.cancel()  # type: ignore[attr-defined]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which the test may stop and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


SECRET_OLD, SECRET_NEW = "whsec-old-0123456789", "whsec-new-9876543210"
ALICE = "alice@example.com"


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> object:
    """Poll until predicate() is truthy; returns its value or fails the test with the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    """A fresh Slack Web API emulator on loopback."""
    with SlackEmulator(
        users={RESPONDER: "rita", APPROVER: "abe", GROUP_RESPONDER: "gus"},
        usergroups={"S0RESPOND": [GROUP_RESPONDER]},
    ) as emu:
        yield emu


@pytest.fixture
def slack_settings(settings: Settings, emulator: SlackEmulator) -> Settings:
    """Test settings with Slack configured against the emulator (responders: a user and a group)."""
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(emulator.token),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": emulator.api_url,
            "slack_responders": f"{RESPONDER},S0RESPOND",
            "slack_approvers": APPROVER,
            "slack_response_url_prefixes": emulator.base + "/response/",
            "slack_digest_interval_seconds": 0.5,
        }
    )


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
