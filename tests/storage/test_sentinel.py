"""Sentinel clients and replicated acknowledgement against a real Sentinel group (redis-sentinel)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from bot import wiring
from bot.settings import Settings
from bot.storage import broker
from bot.storage.replication import NotReplicated, ReplicaAck, eval_replicated
from bot.tasknames import QUEUE_ALERTS, TIMERS_TICK
from bot.web.app import create_app
from tests.support.payloads import notification
from tests.support.sentinel import MASTER_NAME, SentinelGroup

AUTH = {"Authorization": "Bearer test-token-0123456789"}


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    g = SentinelGroup(replicas=2)
    g.start()
    yield g
    g.cleanup()


def ha_settings(settings: Settings, group: SentinelGroup, **update: object) -> Settings:
    """The test settings pointed at the group's sentinels (REDIS_URL then unused)."""
    return settings.model_copy(
        update={"redis_sentinels": group.sentinels.split(","), "redis_sentinel_master": MASTER_NAME, **update}
    )


def master(group: SentinelGroup) -> redis.Redis:
    return redis.Redis(port=group.master_port())


def test_plain_redis_url_is_unchanged(settings: Settings) -> None:
    assert not settings.redis_sentinels
    assert settings.effective_broker_url == settings.redis_url
    assert "master_name" not in wiring.celery_config(settings)["broker_transport_options"]
    assert "broker_transport" not in wiring.celery_config(settings)  # kombu's own redis:// transport
    assert isinstance(wiring.redis_client(settings, "cli").connection_pool, redis.ConnectionPool)


def test_sentinel_settings_make_a_kombu_sentinel_broker(settings: Settings, group: SentinelGroup) -> None:
    s = ha_settings(settings, group, redis_db=3)
    assert s.effective_broker_url == ";".join(f"sentinel://{a}/3" for a in group.sentinels.split(","))
    options = wiring.celery_config(s)["broker_transport_options"]
    assert options["master_name"] == MASTER_NAME
    # the transport that survives a kill -9 of the master (bot.storage.broker)
    assert wiring.celery_config(s)["broker_transport"] == "bot.storage.broker:FailoverSentinelTransport"
    with pytest.raises(ValueError, match="not host:port"):
        Settings(redis_sentinels="127.0.0.1")


def test_state_clients_write_to_the_master_sentinel_names(settings: Settings, group: SentinelGroup) -> None:
    s = ha_settings(settings, group)
    wiring.redis_client(s, "worker").set("ibtest:sync", "1")

    async def write() -> None:
        client = wiring.async_redis_client(s, "web")
        await client.set("ibtest:async", "2")
        await client.aclose()

    asyncio.run(write())
    assert master(group).mget("ibtest:sync", "ibtest:async") == [b"1", b"2"]


def test_celery_sender_publishes_through_sentinel(settings: Settings, group: SentinelGroup) -> None:
    s = ha_settings(settings, group)
    master(group).delete(QUEUE_ALERTS)
    wiring.CeleryTaskSender(s).send(TIMERS_TICK)
    queued = [json.loads(m)["headers"]["task"] for m in master(group).lrange(QUEUE_ALERTS, 0, -1)]
    assert queued == [TIMERS_TICK]


def test_webhook_answers_after_the_replicas_hold_the_message(
    settings: Settings, group: SentinelGroup
) -> None:
    s = ha_settings(settings, group, redis_min_replicas_ack=2, redis_wait_timeout_ms=2000)
    master(group).delete(QUEUE_ALERTS)
    body = notification(group_key='{}:{alertname="Replicated"}')
    with TestClient(create_app(s)) as c:
        assert c.post("/alertmanager", json=body, headers=AUTH).status_code == 202
    # WAIT returned 2: both replicas hold the message the moment the 202 was sent
    for port in group.redis_ports:
        assert redis.Redis(port=port).llen(QUEUE_ALERTS) == 1


def test_wait_timeout_is_503_and_the_retry_is_not_queued_twice(
    settings: Settings, group: SentinelGroup
) -> None:
    s = ha_settings(settings, group, redis_min_replicas_ack=2, redis_wait_timeout_ms=200)
    m = master(group)
    m.delete(QUEUE_ALERTS)
    replica = next(p for p in group.redis_ports if p != group.master_port())
    body = notification(group_key='{}:{alertname="RetriedAfterWait"}')
    with TestClient(create_app(s)) as c:
        group.pause(replica)
        try:
            r = c.post("/alertmanager", json=body, headers=AUTH)
        finally:
            group.resume(replica)
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        group.wait_replicas(group.master_port(), 2)
        again = c.post("/alertmanager", json=body, headers=AUTH)
    assert again.status_code == 202
    assert m.llen(QUEUE_ALERTS) == 1  # the retry found the queued marker: one message, not two


def test_too_few_replicas_raises_not_replicated(settings: Settings, group: SentinelGroup) -> None:
    s = ha_settings(settings, group)

    async def run() -> None:
        client = wiring.async_redis_client(s, "web")
        try:
            assert await eval_replicated(client, "return 7", [], [], ReplicaAck(2, 500)) == 7
            with pytest.raises(NotReplicated, match="2 of 3 replica"):
                await eval_replicated(
                    client, "return redis.call('SET', KEYS[1], 'x')", ["ibtest:w"], [], ReplicaAck(3, 100)
                )
        finally:
            await client.aclose()

    asyncio.run(run())


def test_clients_follow_a_failover_and_log_the_move(
    settings: Settings, group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    s = ha_settings(settings, group)
    client = wiring.redis_client(s, "worker")
    client.set("ibtest:before", "1")
    old = group.master_port()
    redis.Redis(port=group.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    new = group.wait_new_master(old)
    group.wait_role(old, "slave")  # until then the old master still takes writes (and drops them on resync)
    with caplog.at_level(logging.WARNING, logger="incident_bot.redis"):
        client.set("ibtest:after", "2")  # the old connection fails; the retry asks Sentinel again
    assert redis.Redis(port=new).get("ibtest:after") == b"2"
    assert f"redis: master {MASTER_NAME} moved 127.0.0.1:{old} -> 127.0.0.1:{new}" in caplog.text
    group.wait_replicas(new, 2)


def test_the_failover_transport_rebuilds_a_detached_channel_and_puts_deferred_messages_back(
    settings: Settings, group: SentinelGroup
) -> None:
    """The two things kombu's Sentinel channel gets wrong after the master dies (bot.storage.broker)."""
    s = ha_settings(settings, group)
    app = wiring.make_celery(s, with_tasks=False)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.FailoverSentinelChannel)
        # Celery's Connection.collect() detaches the transport; kombu's own channel then fails with
        # AttributeError("'NoneType' object has no attribute 'hostname'") when it rebuilds its pool
        channel._disconnect_pools()
        transport, client_info = channel.connection, channel.connection.client
        transport.client = None
        try:
            assert channel.pool is not None
            assert channel.client.ping()  # the pool reaches the master the sentinels name
        finally:
            transport.client = client_info

        # a delivered, unacknowledged message whose restore at close failed is put back by the next channel
        qos = channel.qos
        tag = "deferred-tag-1"
        master(group).hset(qos.unacked_key, tag, json.dumps([{"body": "x", "properties": {}}, "", "parked"]))
        with broker._pending_lock:
            broker._pending_tags.add(tag)
        conn.channel()  # a new channel: connects, then restores
        assert broker.pending_restores() == set()
        assert master(group).hget(qos.unacked_key, tag) is None
        assert master(group).llen("parked") == 1
