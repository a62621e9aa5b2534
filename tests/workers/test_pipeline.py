"""Webhook -> Redis -> real Celery worker -> incident with a timeline, on real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from bot.models import AlertmanagerWebhook, IncidentStatus
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.tasknames import PROCESS_ALERT_GROUP as TASK_PROCESS_ALERT_GROUP
from bot.tasknames import QUEUE_ALERTS
from bot.web.app import create_app
from tests.support.fixtures import wait_until
from tests.support.payloads import alert, notification
from workers.celery_app import app

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-token-0123456789"}


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis, celery_worker: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def task_count(store: IncidentStore, outcome: str) -> int:
    return store.task_stats().get(f"process_alert_group:{outcome}", 0)


def test_post_becomes_an_incident_with_a_timeline(client: TestClient, store: IncidentStore) -> None:
    assert client.post("/alertmanager", json=notification(), headers=AUTH).status_code == 202
    incident = wait_until(lambda: store.recent())[0]  # type: ignore[index]
    assert incident.id == "INC-0001"
    assert incident.status is IncidentStatus.TRIGGERED
    timeline = store.timeline(incident.id)
    assert [t.kind for t in timeline] == ["opened"]
    assert "1 alert(s) firing" in timeline[0].message


def test_same_post_twice_gives_one_incident_and_one_entry(client: TestClient, store: IncidentStore) -> None:
    body = notification()
    codes = [client.post("/alertmanager", json=body, headers=AUTH).status_code for _ in range(2)]
    assert codes[0] == 202 and codes[1] in (200, 202)
    tasks = 2 if codes[1] == 202 else 1  # 200: the web saw the delivery marker and queued nothing
    wait_until(lambda: task_count(store, "created") + task_count(store, "duplicate") == tasks)
    assert task_count(store, "created") == 1
    assert len(store.recent()) == 1
    assert len(store.timeline("INC-0001")) == 1


def test_redelivered_task_does_not_act_twice(client: TestClient, store: IncidentStore) -> None:
    """A task handed out again (worker lost before ack) finds the delivery marker and changes nothing."""
    body = AlertmanagerWebhook.model_validate(notification()).model_dump(mode="json")
    key = AlertmanagerWebhook.model_validate(body).idempotency_key()
    for _ in range(3):
        app.send_task(
            TASK_PROCESS_ALERT_GROUP, args=(body, key), queue=QUEUE_ALERTS, routing_key=QUEUE_ALERTS
        )
    wait_until(lambda: task_count(store, "created") == 1 and task_count(store, "duplicate") == 2)
    assert [i.id for i in store.recent()] == ["INC-0001"]
    assert len(store.timeline("INC-0001")) == 1


def test_resolved_resolves_and_refire_within_the_window_reopens_it(
    client: TestClient, store: IncidentStore
) -> None:
    client.post(
        "/alertmanager", json=notification([alert(), alert("KVCacheHigh", fingerprint="b")]), headers=AUTH
    )
    wait_until(lambda: store.recent())
    client.post(
        "/alertmanager",
        json=notification([alert(status="resolved"), alert("KVCacheHigh", fingerprint="b")]),
        headers=AUTH,
    )
    wait_until(lambda: len(store.timeline("INC-0001")) == 2)
    assert store.get("INC-0001").status is IncidentStatus.TRIGGERED
    client.post(
        "/alertmanager",
        json=notification(
            [alert(status="resolved"), alert("KVCacheHigh", fingerprint="b", status="resolved")]
        ),
        headers=AUTH,
    )
    wait_until(lambda: store.get("INC-0001").status is IncidentStatus.RESOLVED)
    assert [t.kind for t in store.timeline("INC-0001")] == ["opened", "alerts_changed", "resolved"]
    assert store.open_by_severity() == {}

    # fired again well within REOPEN_WINDOW_SECONDS (30 min): the same incident is reopened
    client.post("/alertmanager", json=notification([alert(starts_at="2026-11-26T13:00:00Z")]), headers=AUTH)
    wait_until(lambda: store.get("INC-0001").status is IncidentStatus.TRIGGERED)
    assert [i.id for i in store.recent()] == ["INC-0001"]
    assert [t.kind for t in store.timeline("INC-0001")][-1] == "reopened"
    assert store.get("INC-0001").reopened_count == 1
    assert store.open_by_severity() == {"P2": 1}
    metrics = client.get("/metrics").text
    assert 'incident_bot_incidents_open{severity="P2"} 1.0' in metrics
    assert 'incident_bot_tasks_total{outcome="created",task="process_alert_group"} 1.0' in metrics
    assert 'incident_bot_tasks_total{outcome="reopened",task="process_alert_group"} 1.0' in metrics
