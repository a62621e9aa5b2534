"""The ingest fast path (bot.web.ingest) and the publisher's group commit, on real Redis.

The guarantees themselves (auth, 413, 400/422, 503, duplicates) are tested through the app in
test_alertmanager_endpoint.py; these tests cover what the fast path adds.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bot.integrations.pagerduty import sign_webhook
from bot.models import AlertmanagerWebhook
from bot.settings import Settings
from bot.tasknames import PAGERDUTY_WEBHOOK, QUEUE_ALERTS, QUEUE_PAGING
from bot.web import publisher as publisher_module
from bot.web.app import create_app
from bot.web.publisher import RedisPublisher
from tests.conftest import REDIS_BASE
from tests.support.payloads import notification

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"broker_url": f"{REDIS_BASE}/14"})


@pytest.fixture
def broker(web_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(web_settings.effective_broker_url)
    client.delete(QUEUE_ALERTS, QUEUE_PAGING)
    yield client
    client.delete(QUEUE_ALERTS, QUEUE_PAGING)


def bodies_in(broker: redis.Redis) -> list[dict[str, object]]:
    out = []
    for raw in reversed(broker.lrange(QUEUE_ALERTS, 0, -1)):
        args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
        out.append(args[0])
    return out


async def test_concurrent_webhooks_are_all_stored_in_order_before_their_answers(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis
) -> None:
    # state and broker in one database: the delivery check is part of the batched script
    app = create_app(web_settings.model_copy(update={"redis_url": f"{REDIS_BASE}/14", "broker_url": None}))
    sent = [notification(group_key=f'{{}}:{{group="{n}"}}') for n in range(300)]
    transport = httpx.ASGITransport(app=app)
    calls = 0
    real = publisher_module.RedisPublisher._call

    async def counting(self: RedisPublisher, *args: object, **kw: object) -> list[object]:
        nonlocal calls
        calls += 1
        return await real(self, *args, **kw)  # type: ignore[arg-type]

    publisher_module.RedisPublisher._call = counting  # type: ignore[method-assign]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            answers = await asyncio.gather(
                *(client.post("/alertmanager", json=b, headers=AUTH) for b in sent)
            )
    finally:
        publisher_module.RedisPublisher._call = real  # type: ignore[method-assign]
    assert [a.status_code for a in answers] == [202] * 300
    stored = bodies_in(broker)
    assert [b["groupKey"] for b in stored] == [b["groupKey"] for b in sent]  # arrival order kept
    keys = [a.json()["idempotency_key"] for a in answers]
    assert keys == [AlertmanagerWebhook.model_validate(b).idempotency_key() for b in sent]
    assert calls < 300  # group commit: fewer script calls than webhooks
    assert stored[0] == sent[0]  # the body as posted, passed through


async def test_a_failed_batch_answers_every_request_in_it_with_503(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis
) -> None:
    app = create_app(web_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        answers = await asyncio.gather(
            *(client.post("/alertmanager", json=notification(), headers=AUTH) for _ in range(10))
        )
    assert [a.status_code for a in answers] == [503] * 10
    assert all(a.headers["retry-after"] == "1" for a in answers)


def test_other_methods_and_paths_still_go_through_fastapi(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis
) -> None:
    with TestClient(create_app(web_settings)) as client:
        assert client.get("/alertmanager").status_code == 405
        slash = client.post("/alertmanager/", json=notification(), headers=AUTH, follow_redirects=False)
        assert slash.status_code == 307 and broker.llen(QUEUE_ALERTS) == 0  # FastAPI's redirect, as before
        assert client.get("/healthz").json() == {"status": "ok"}
        assert "/alertmanager" in client.get("/openapi.json").json()["paths"]


def test_pagerduty_webhooks_go_to_the_paging_queue(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis
) -> None:
    s = web_settings.model_copy(update={"pagerduty_webhook_secrets": SecretStr("pd-secret")})
    body = json.dumps({"event": {"event_type": "incident.acknowledged", "data": {"id": "P1"}}}).encode()
    headers = {"X-PagerDuty-Signature": sign_webhook(body, ["pd-secret"]), "X-Webhook-Id": "wh-1"}
    with TestClient(create_app(s)) as client:
        assert client.post("/pagerduty", content=body, headers=headers).status_code == 202
    (raw,) = broker.lrange(QUEUE_PAGING, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == PAGERDUTY_WEBHOOK
    assert message["properties"]["delivery_info"]["routing_key"] == QUEUE_PAGING


async def test_an_unexpected_error_while_publishing_answers_503_not_a_hang(
    web_settings: Settings, redis_client: redis.Redis, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: RedisPublisher, *args: object, **kw: object) -> list[object]:
        raise ValueError("a bug in the publisher")

    monkeypatch.setattr(publisher_module.RedisPublisher, "_call", broken)
    app = create_app(web_settings.model_copy(update={"redis_url": f"{REDIS_BASE}/14", "broker_url": None}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(client.post("/alertmanager", json=notification(), headers=AUTH) for _ in range(5))
            ),
            timeout=10,
        )
    assert [a.status_code for a in answers] == [503] * 5
    assert broker.llen(QUEUE_ALERTS) == 0
