"""`incident-bot demo`: an in-process bot fed with Alertmanager notifications, narrated."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis
from pydantic import SecretStr
from redis.exceptions import RedisError

from bot.incidents.store import IncidentStore
from bot.models import Incident, IncidentStatus
from bot.settings import Settings


def sample_notification(run: str, status: str, resolved: set[str]) -> dict[str, Any]:
    """An Alertmanager v4 notification for the demo's decode-pool group."""
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    alerts = []
    for pod in ("vllm-decode-0", "vllm-decode-1"):
        done = pod in resolved
        alerts.append(
            {
                "status": "resolved" if done else "firing",
                "labels": {
                    "alertname": "VLLMHighQueueDepth",
                    "severity": "warning",
                    "namespace": "llm-d",
                    "deployment": "vllm-decode",
                    "pod": pod,
                },
                "annotations": {"summary": "decode queue depth above 10 for 2m"},
                "startsAt": started.isoformat().replace("+00:00", "Z"),
                "endsAt": datetime.now(UTC).isoformat() if done else "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": uuid.uuid5(uuid.NAMESPACE_URL, run + pod).hex[:16],
            }
        )
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="VLLMHighQueueDepth", demo="{run}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "incident-bot",
        "groupLabels": {"alertname": "VLLMHighQueueDepth"},
        "commonLabels": {"alertname": "VLLMHighQueueDepth", "namespace": "llm-d", "severity": "warning"},
        "commonAnnotations": {"summary": "decode queue depth above 10 for 2m"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


def _wait_for(store: IncidentStore, predicate: Any, timeout: float = 20.0) -> Incident | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for incident in store.recent(limit=20):
            if predicate(incident):
                return incident
        time.sleep(0.1)
    return None


def run_demo(settings: Settings) -> int:
    """Run the scenario; returns the process exit code."""
    from bot.runtime import embedded_worker, serve_in_thread
    from bot.web.app import create_app
    from workers.celery_app import ALL_QUEUES, app

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except RedisError as exc:
        print(f"demo: Redis is not reachable ({exc}). Start it (redis-server) or set REDIS_URL.")
        return 1
    if not settings.alertmanager_auth_configured:
        settings = settings.model_copy(update={"alertmanager_token": SecretStr(secrets.token_urlsafe(24))})
    token = settings.alertmanager_token.get_secret_value() if settings.alertmanager_token else ""
    store = IncidentStore(client, prefix=settings.key_prefix, dedup_ttl=settings.dedup_ttl_seconds)
    run = uuid.uuid4().hex[:8]
    print(f"== incident-bot demo (run {run}): in-process web + Celery worker on Redis")
    with (
        embedded_worker(app, queues=ALL_QUEUES, pool="threads", concurrency=2),
        serve_in_thread(create_app(settings)) as base,
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        auth = {"Authorization": f"Bearer {token}"}

        def post(step: str, body: dict[str, Any], headers: dict[str, str]) -> None:
            r = http.post("/alertmanager", json=body, headers=headers)
            print(f"-- {step}: HTTP {r.status_code} {r.json().get('status') or r.json().get('error')}")

        post("Alertmanager sends without credentials", sample_notification(run, "firing", set()), {})
        post("decode pool saturated, 2 alerts firing", sample_notification(run, "firing", set()), auth)
        post("HA peer delivers the same notification", sample_notification(run, "firing", set()), auth)
        opened = _wait_for(store, lambda i: run in i.group_key)
        if opened is None:
            print("demo: the worker did not open an incident within 20 s")
            return 1
        print(f"   incident {opened.id} opened at {opened.severity.value}: {opened.severity_reason}")
        post("one pod recovers", sample_notification(run, "firing", {"vllm-decode-0"}), auth)
        # Alertmanager sends a group's next notification only after group_interval; wait likewise, so
        # two workers never see these two out of order (a late one would be ignored as stale).
        if _wait_for(store, lambda i: i.id == opened.id and i.firing_count == 1) is None:
            print(f"demo: {opened.id} did not record the recovery within 20 s")
            return 1
        both = {"vllm-decode-0", "vllm-decode-1"}
        post("queue depth back to normal", sample_notification(run, "resolved", both), auth)
        done = _wait_for(store, lambda i: i.id == opened.id and i.status is IncidentStatus.RESOLVED)
        if done is None:
            print(f"demo: {opened.id} was not resolved within 20 s")
            return 1
        print(f"\n== {done.id}: {done.title} [{done.status.value}]")
        for entry in store.timeline(done.id):
            print(f"   {entry.at:%H:%M:%S}  {entry.kind:<15} {entry.message}")
    print("\nThe duplicate delivery changed nothing; `incident-bot incidents list` shows the incident.")
    return 0
