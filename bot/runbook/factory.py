"""Building an Engine from settings: the one place that picks the store, adapters, runbooks and controls."""

from __future__ import annotations

import redis

from bot.controls import AutomationControls, Controls
from bot.incidents.store import IncidentStore
from bot.integrations.kube import KubeClient
from bot.runbook.engine import Engine
from bot.runbook.schema import load_runbooks
from bot.runbook.services import Services
from bot.settings import Settings


def automation_controls(client: redis.Redis, settings: Settings) -> Controls:
    """The kill switch and maintenance windows (bot.controls), read from Redis on every check."""
    return AutomationControls(client, settings.key_prefix)


def build_engine(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    store: IncidentStore | None = None,
    kube: KubeClient | None = None,
    controls: Controls | None = None,
) -> Engine:
    """An Engine over the configured Redis, cluster, vLLM servers and runbooks directory."""
    client = client or redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    store = store or IncidentStore(client, prefix=settings.key_prefix, dedup_ttl=settings.dedup_ttl_seconds)
    services = Services(settings, store, kube=kube)
    return Engine(
        client,
        store,
        services,
        settings,
        load_runbooks(settings.runbooks_dir),
        controls or automation_controls(client, settings),
    )
