"""POST /alertmanager through the ASGI app: auth, validation, limits, durable enqueue, 503."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bot.errors import ConfigError
from bot.models import AlertmanagerWebhook
from bot.settings import Settings
from bot.tasknames import PROCESS_ALERT_GROUP as TASK_PROCESS_ALERT_GROUP
from bot.tasknames import QUEUE_ALERTS
from bot.web.app import create_app
from tests.conftest import REDIS_BASE
from tests.support.payloads import alert, notification
from tests.support.services import RedisServer

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    """Broker on database 14, where no worker consumes, so tests can inspect the queue."""
    return settings.model_copy(update={"broker_url": f"{REDIS_BASE}/14"})


@pytest.fixture
def broker(web_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(web_settings.effective_broker_url)
    client.delete(QUEUE_ALERTS)
    yield client
    client.delete(QUEUE_ALERTS)


@pytest.fixture
def client(web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings)) as c:
        yield c


def queued(broker: redis.Redis) -> list[dict[str, object]]:
    """The Celery messages waiting in the alerts queue, oldest first."""
    return [json.loads(m) for m in reversed(broker.lrange(QUEUE_ALERTS, 0, -1))]


def test_valid_notification_is_in_redis_before_the_answer(client: TestClient, broker: redis.Redis) -> None:
    body = notification()
    r = client.post("/alertmanager", json=body, headers=AUTH)
    assert r.status_code == 202
    key = AlertmanagerWebhook.model_validate(body).idempotency_key()
    assert r.json() == {"status": "queued", "idempotency_key": key}
    messages = queued(broker)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == TASK_PROCESS_ALERT_GROUP  # type: ignore[index]
    args = json.loads(base64.b64decode(messages[0]["body"]))[0]  # type: ignore[arg-type]
    assert args[1] == key and args[0]["groupKey"] == body["groupKey"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"bearer {TOKEN}x"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()},
        {"Authorization": "Basic !!!notbase64"},
    ],
)
def test_missing_or_wrong_credentials_get_401_and_enqueue_nothing(
    client: TestClient, broker: redis.Redis, headers: dict[str, str]
) -> None:
    r = client.post("/alertmanager", json=notification(), headers=headers)
    assert r.status_code == 401
    assert "WWW-Authenticate" in r.headers
    assert queued(broker) == []


def test_basic_auth_when_configured(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis
) -> None:
    s = web_settings.model_copy(
        update={
            "alertmanager_token": None,
            "alertmanager_username": "am",
            "alertmanager_password": SecretStr("pw"),
        }
    )
    with TestClient(create_app(s)) as c:
        good = "Basic " + base64.b64encode(b"am:pw").decode()
        bad = "Basic " + base64.b64encode(b"am:nope").decode()
        assert c.post("/alertmanager", json=notification(), headers={"Authorization": bad}).status_code == 401
        assert (
            c.post("/alertmanager", json=notification(), headers={"Authorization": good}).status_code == 202
        )
        assert c.post("/alertmanager", json=notification(), headers=AUTH).status_code == 401
    assert len(queued(broker)) == 1


def test_no_credentials_configured_refuses_to_start(web_settings: Settings) -> None:
    s = web_settings.model_copy(update={"alertmanager_token": None})
    with pytest.raises(ConfigError, match="ALERTMANAGER_TOKEN"):
        create_app(s)


def test_malformed_json_is_400(client: TestClient, broker: redis.Redis) -> None:
    r = client.post("/alertmanager", content=b'{"version": "4", "alerts": [', headers=AUTH)
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]
    assert queued(broker) == []


def test_invalid_payload_is_422_naming_the_field(client: TestClient, broker: redis.Redis) -> None:
    body = notification()
    del body["alerts"][0]["fingerprint"]
    r = client.post("/alertmanager", json=body, headers=AUTH)
    assert r.status_code == 422
    assert "alerts.0.fingerprint" in r.json()["error"]
    assert {"field": "alerts.0.fingerprint", "message": "Field required"} in r.json()["details"]
    assert queued(broker) == []


def test_oversized_body_is_413_by_length_and_by_stream(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis
) -> None:
    s = web_settings.model_copy(update={"max_body_bytes": 4096})
    big = notification([alert(fingerprint=f"fp{i}", pod="x" * 100) for i in range(40)])
    with TestClient(create_app(s)) as c:
        assert c.post("/alertmanager", json=big, headers=AUTH).status_code == 413
        raw = json.dumps(big).encode()

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
            for i in range(0, len(raw), 1000):
                yield raw[i : i + 1000]

        r = c.post("/alertmanager", content=chunks(), headers=AUTH)
        assert r.status_code == 413
        assert "MAX_BODY_BYTES" in r.json()["error"]
    assert queued(broker) == []


def test_already_processed_delivery_is_acknowledged_without_enqueue(
    client: TestClient, broker: redis.Redis, redis_client: redis.Redis, settings: Settings
) -> None:
    body = notification()
    key = AlertmanagerWebhook.model_validate(body).idempotency_key()
    redis_client.set(f"{settings.key_prefix}delivery:{key}", "INC-0007")
    r = client.post("/alertmanager", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert queued(broker) == []


def test_redis_down_gives_503_quickly_and_leaves_no_partial_state(
    settings: Settings, private_redis: RedisServer
) -> None:
    s = settings.model_copy(
        update={"redis_url": private_redis.url, "broker_url": None, "enqueue_timeout_seconds": 0.5}
    )
    direct = redis.Redis.from_url(private_redis.url)
    with TestClient(create_app(s)) as c:
        assert c.post("/alertmanager", json=notification(), headers=AUTH).status_code == 202
        assert c.get("/readyz").status_code == 200
        private_redis.stop()
        started = time.monotonic()
        r = c.post("/alertmanager", json=notification([alert(fingerprint="second")]), headers=AUTH)
        elapsed = time.monotonic() - started
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        assert elapsed < 5, f"503 took {elapsed:.1f}s"
        assert c.get("/readyz").status_code == 503
        metrics = c.get("/metrics").text
        assert (
            'incident_bot_webhooks_received_total{result="unavailable",source="alertmanager"} 1.0' in metrics
        )
        assert "incident_bot_redis_up 0.0" in metrics
        private_redis.start()  # a fresh, empty Redis on the same port
        assert direct.keys("*") == []  # nothing half-written survived
        r = c.post("/alertmanager", json=notification([alert(fingerprint="second")]), headers=AUTH)
        assert r.status_code == 202  # Alertmanager's retry now succeeds
        assert direct.llen(QUEUE_ALERTS) == 1


def test_health_ready_and_metrics(client: TestClient, broker: redis.Redis) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/alertmanager", json=notification(), headers=AUTH)
    client.post("/alertmanager", json=notification(), headers={})
    text = client.get("/metrics").text
    assert 'incident_bot_webhooks_received_total{result="queued",source="alertmanager"} 1.0' in text
    assert 'incident_bot_webhooks_received_total{result="unauthorized",source="alertmanager"} 1.0' in text
    assert "incident_bot_enqueue_seconds_count 1.0" in text
    assert 'incident_bot_incidents_open{severity="P0"} 0.0' in text
    assert 'incident_bot_queue_length{queue="alerts"}' in text


def test_openapi_documents_the_webhook_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/alertmanager"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AlertmanagerWebhook"}
    assert "alerts" in spec["components"]["schemas"]["AlertmanagerWebhook"]["properties"]
    assert "Alert" in spec["components"]["schemas"]
