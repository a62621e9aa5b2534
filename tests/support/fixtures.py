"""Shared pytest fixtures: settings, a clean Redis namespace, an embedded Celery worker, services."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from bot.incidents.store import IncidentStore
from bot.settings import Settings, get_settings
from tests.support.services import RedisServer
from workers.celery_app import ALL_QUEUES


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


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which the test may stop and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> object:
    """Poll until predicate() is truthy; returns its value or fails the test with the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")
