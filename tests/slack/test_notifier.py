"""The notifier against the Slack emulator through the real slack_sdk client, on real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from bot import tasknames
from bot.errors import PermanentError, TransientError
from bot.models import Severity
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.slack.runtime import SlackRuntime
from bot.storage.incidents import IncidentStore
from bot.wiring import build_runtime
from tests.support.slack import RESPONDER, RecordingSender, open_incident

HIGH = "C0HIGH0001"  # #incidents-high, the P1 channel


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def rt(slack_settings: Settings, redis_client: redis.Redis, sender: RecordingSender) -> SlackRuntime:
    return build_runtime(slack_settings, client=redis_client, sender=sender)


def test_root_once_then_updates_and_one_reply_per_event(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator
) -> None:
    incident = open_incident(store)
    assert rt.notifier.sync(incident.id).root == "posted"
    roots = emulator.channel_messages(HIGH, top_level_only=True)
    assert len(roots) == 1 and incident.id in roots[0].text
    assert roots[0].metadata == {
        "event_type": "incident_bot_event",
        "event_payload": {"event_id": f"{incident.id}/root"},
    }
    assert emulator.thread(HIGH, roots[0].ts) == []  # "opened" is the root itself, no reply

    rt.service.commands.ack(incident.id, f"slack:{RESPONDER}")
    result = rt.notifier.sync(incident.id)
    assert result.root == "updated" and len(result.replies) == 1
    replies = emulator.thread(HIGH, roots[0].ts)
    assert len(replies) == 1 and "Acknowledged" in replies[0].text
    shown = to_console({"blocks": emulator.messages[(HIGH, roots[0].ts)].blocks})
    assert "Acknowledged by @" in shown and "[Acknowledge]" not in shown

    before = len(emulator.calls)
    again = rt.notifier.sync(incident.id)  # a redelivered task: nothing new to say
    assert again.root == "unchanged" and again.replies == []
    assert len(emulator.calls) == before


def test_redelivery_after_a_crash_between_post_and_record_does_not_post_twice(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator, redis_client: redis.Redis
) -> None:
    incident = open_incident(store)
    rt.notifier.sync(incident.id)
    rt.service.commands.set_severity(incident.id, Severity.P0, "slack:U0X", "")
    rt.notifier.sync(incident.id)
    entry_id = store.timeline(incident.id)[-1].id
    posted_key = rt.notifier.key("posted", incident.id)
    root_key = rt.notifier.key("root", incident.id)
    # Simulate the crash: both posts reached Slack, but the records after them were lost.
    redis_client.hset(posted_key, entry_id, f"pending:{time.time()}")
    ts = redis_client.hget(root_key, "ts")
    redis_client.hdel(root_key, "ts")
    redis_client.hset(root_key, "pending", str(time.time()))
    posts = len(emulator.ok_calls_of("chat.postMessage"))

    rt.notifier.sync(incident.id)
    assert len(emulator.ok_calls_of("chat.postMessage")) == posts  # found its own messages by metadata
    assert redis_client.hget(root_key, "ts") == ts
    assert rt.notifier.reply_ts(incident.id, entry_id) is not None
    assert emulator.calls_of("conversations.history") and emulator.calls_of("conversations.replies")


def test_429_waits_for_retry_after_and_posts_exactly_once(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator
) -> None:
    incident = open_incident(store)
    emulator.fail_next("chat.postMessage", status=429, retry_after=1)
    rt.notifier.sync(incident.id)
    attempts = emulator.calls_of("chat.postMessage")
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0  # honoured Retry-After: 1
    assert len(emulator.channel_messages(HIGH)) == 1


def test_server_errors_are_transient_and_the_retry_posts_once(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator
) -> None:
    incident = open_incident(store)
    emulator.fail_next("chat.postMessage", status=503, retry_after=None)
    with pytest.raises(TransientError):
        rt.notifier.sync(incident.id)
    rt.notifier.sync(incident.id)  # what Celery's autoretry does
    assert len(emulator.channel_messages(HIGH)) == 1


def test_slack_refusals_are_permanent(
    slack_settings: Settings, store: IncidentStore, emulator: SlackEmulator, redis_client: redis.Redis
) -> None:
    rt = build_runtime(
        slack_settings.model_copy(update={"slack_channel_p1": "#no-such-channel"}),
        client=redis_client,
        sender=RecordingSender(),
    )
    incident = open_incident(store)
    with pytest.raises(PermanentError, match="channel_not_found"):
        rt.notifier.sync(incident.id)


def test_storm_turns_into_one_digest_updated_in_place(
    slack_settings: Settings,
    redis_client: redis.Redis,
    store: IncidentStore,
    emulator: SlackEmulator,
    sender: RecordingSender,
) -> None:
    # a burst that covers the storm's roots: this test is about the digest, not the rate limit (the
    # re-scheduling of syncs that find no token is tested in test_notifier_rate.py)
    threshold = slack_settings.slack_storm_threshold
    settings = slack_settings.model_copy(update={"slack_post_burst": threshold + 2})
    rt = build_runtime(settings, client=redis_client, sender=sender)
    incidents = [open_incident(store, n) for n in range(1, 41)]
    outcomes = [rt.notifier.sync(i.id).root for i in incidents]
    assert outcomes == ["posted"] * threshold + ["digest"] * (40 - threshold)
    assert len(sender.named(tasknames.FLUSH_DIGEST)) == 1  # one flush scheduled for the whole burst
    assert rt.notifier.flush_digest("#incidents-high") == "posted"
    rt.service.commands.ack(incidents[-1].id, "slack:U0X")
    rt.notifier.sync(incidents[-1].id)
    assert rt.notifier.flush_digest("#incidents-high") == "updated"
    top = emulator.channel_messages(HIGH, top_level_only=True)
    assert len(top) == threshold + 1
    digest = to_console({"blocks": top[-1].blocks})
    assert f"{40 - threshold} incidents" in digest and "INVESTIGATING" in digest
