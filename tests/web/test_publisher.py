"""The web's direct Redis publisher writes the same messages Celery itself would."""

from __future__ import annotations

import base64
import json

import redis

from bot.settings import Settings
from bot.tasknames import PROCESS_ALERT_GROUP as TASK_PROCESS_ALERT_GROUP
from bot.tasknames import QUEUE_ALERTS
from bot.web.publisher import RedisPublisher
from bot.wiring import make_celery
from tests.conftest import REDIS_BASE

BROKER = f"{REDIS_BASE}/13"


def pop(client: redis.Redis) -> dict[str, object]:
    raw = client.rpop(QUEUE_ALERTS)
    assert raw is not None
    return json.loads(raw)  # type: ignore[no-any-return]


async def test_message_has_the_shape_of_celerys_own(settings: Settings) -> None:
    s = settings.model_copy(update={"redis_url": BROKER, "broker_url": None})
    client = redis.Redis.from_url(BROKER)
    client.delete(QUEUE_ALERTS, f"{s.key_prefix}delivery:k1")
    payload = {"groupKey": "g", "alerts": [{"fingerprint": "f"}]}

    celery = make_celery(s, with_tasks=False)
    celery.send_task(
        TASK_PROCESS_ALERT_GROUP, args=(payload, "k1"), queue=QUEUE_ALERTS, routing_key=QUEUE_ALERTS
    )
    theirs = pop(client)
    publisher = RedisPublisher(s)
    try:
        assert await publisher.publish_alert_group(json.dumps(payload).encode(), "k1") is True
        ours = pop(client)
        assert set(ours) == set(theirs)
        for part in ("headers", "properties"):
            assert set(ours[part]) == set(theirs[part]), part  # type: ignore[arg-type]
        assert ours["headers"]["task"] == theirs["headers"]["task"]  # type: ignore[index]
        assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]  # type: ignore[index]
        decode = lambda m: json.loads(base64.b64decode(m["body"]))  # noqa: E731
        assert decode(ours) == decode(theirs)

        client.set(f"{s.key_prefix}delivery:k1", "INC-0001")  # applied meanwhile: nothing is queued
        assert await publisher.publish_alert_group(json.dumps(payload).encode(), "k1") is False
        assert client.llen(QUEUE_ALERTS) == 0
    finally:
        await publisher.aclose()
        client.delete(QUEUE_ALERTS, f"{s.key_prefix}delivery:k1")
