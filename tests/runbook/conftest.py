"""Fixtures for runbook tests: the sandbox cluster, an engine wired to it, incidents opened from alerts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import bot.steps  # noqa: F401  (registers the shipped step types)
from bot.integrations.kube import KubeClient
from bot.plan.schema import load_runbooks
from bot.runbook.engine import Engine
from bot.runbook.services import Services
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.settings import Settings
from bot.storage.controls import AutomationControls
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore
from bot.storage.runs import RunStore
from tests.support.runbooks import FastClock


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """One decode replica, two vLLM servers, 60 req/s offered: the decode pool is saturated."""
    with Sandbox(SandboxConfig(decode_replicas=1, vllm_servers=2, offered_rps=60.0), workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
def rb_settings(settings: Settings, sandbox: Sandbox) -> Settings:
    """Settings pointing at the sandbox's vLLM servers, with short guard windows."""
    return settings.model_copy(
        update={
            "vllm_endpoints": sandbox.vllm_endpoints,
            "prometheus_url": None,
            "runbook_cooldown_seconds": 300,
            "runbook_max_actions": 10,
        }
    )


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine(
    rb_settings: Settings, sandbox: Sandbox, redis_client: redis.Redis, store: IncidentStore
) -> Iterator[EngineFactory]:
    """Build engines with their own Redis and Kubernetes clients (like separate workers)."""
    made: list[Engine] = []

    def factory(settings: Settings | None = None, clock: FastClock | None = None, **kwargs: Any) -> Engine:
        s = settings or rb_settings
        client = redis.Redis.from_url(s.redis_url)
        own_store = IncidentStore(client, prefix=s.key_prefix, dedup_ttl=s.dedup_ttl_seconds)
        kube = kwargs.pop("kube", None) or KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
        clock = clock or FastClock()
        engine = Engine(
            RunStore(client, s.key_prefix),
            Guards.from_settings(client, s),
            own_store,
            Services(s, own_store, kube=kube),
            s,
            kwargs.pop("runbooks", None) or load_runbooks(s.runbooks_dir),
            kwargs.pop("controls", None) or AutomationControls(client, s.key_prefix),
            clock=clock.now,
            sleep=clock.sleep,
        )
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.services.close()
