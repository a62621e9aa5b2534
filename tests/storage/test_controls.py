"""Maintenance windows, the kill switch and the Controls Protocol the runbook guards use."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta

import pytest
import redis

from bot.errors import PermanentError
from bot.settings import Settings
from bot.storage.controls import (
    AutomationControls,
    AutomationSwitch,
    Controls,
    InvalidMatcher,
    MaintenanceWindows,
    Matcher,
)
from bot.storage.events import EventLog
from tests.support.lifecycle import Clock

VLLM = {"alertname": "VLLMHighQueueDepth", "namespace": "staging", "pod": "decode-0"}
PROD = {"alertname": "VLLMHighQueueDepth", "namespace": "prod"}


def may_act(controls: Controls, labels: Mapping[str, str]) -> bool:
    """What a runbook guard does with the Protocol: act only when enabled and not in maintenance."""
    return controls.automation_enabled() and controls.in_maintenance(labels) is None


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("namespace=staging", VLLM, True),
        ("namespace=prod", VLLM, False),
        ("namespace!=prod", VLLM, True),
        ("alertname=~VLLM.*", VLLM, True),
        ("alertname=~High", VLLM, False),  # anchored, as in Alertmanager
        ("alertname!~VLLM.*", VLLM, False),
        ('namespace="staging"', VLLM, True),
        ("team=", VLLM, True),  # a missing label reads as ""
        ("team=~.+", VLLM, False),
    ],
)
def test_matchers(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["namespace", "=x", "a b=c", "alertname=~(unclosed"])
def test_bad_matchers_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(InvalidMatcher, match="bad matcher"):
        Matcher.parse(text)


def test_windows_add_list_match_remove(redis_client: redis.Redis, settings: Settings) -> None:
    clock = Clock()
    windows = MaintenanceWindows(redis_client, settings.key_prefix, clock=clock)
    w1 = windows.add(["namespace=staging"], timedelta(hours=2), "cluster upgrade", "alice")
    w2 = windows.add(["alertname=~VLLM.*", "namespace=prod"], timedelta(minutes=30), "rollout", "bob")
    assert (w1.id, w2.id) == ("MW-1", "MW-2")
    assert w1.ends - w1.starts == timedelta(hours=2) and w1.created_by == "alice"
    assert [w.id for w in windows.list()] == ["MW-1", "MW-2"]
    assert [w.id for w in windows.matching(VLLM)] == ["MW-1"]
    assert [w.id for w in windows.matching(PROD)] == ["MW-2"]
    assert windows.matching({"alertname": "Other", "namespace": "prod"}) == []
    clock.advance(minutes=31)  # MW-2 is over
    assert windows.matching(PROD) == []
    assert [w.id for w in windows.list()] == ["MW-1"]
    assert windows.remove("mw-1") is True
    assert windows.remove("MW-1") is False
    assert windows.list() == []


def test_windows_refuse_nonsense(redis_client: redis.Redis, settings: Settings) -> None:
    windows = MaintenanceWindows(redis_client, settings.key_prefix)
    with pytest.raises(InvalidMatcher):
        windows.add([], timedelta(hours=1), "r", "me")
    with pytest.raises(PermanentError, match="reason"):
        windows.add(["namespace=x"], timedelta(hours=1), " ", "me")
    with pytest.raises(PermanentError, match="at most 30 days"):
        windows.add(["namespace=x"], timedelta(days=31), "r", "me")


def test_expired_windows_disappear_by_themselves(redis_client: redis.Redis, settings: Settings) -> None:
    """Real time and real key expiry: nothing has to clean up after a window ends."""
    windows = MaintenanceWindows(redis_client, settings.key_prefix)
    w = windows.add(["namespace=staging"], timedelta(seconds=1), "short", "me")
    assert 1 <= redis_client.ttl(f"{settings.key_prefix}maint:{w.id}") <= 2
    assert windows.matching(VLLM)
    time.sleep(2.2)
    assert redis_client.exists(f"{settings.key_prefix}maint:{w.id}") == 0
    assert windows.matching(VLLM) == [] and windows.list() == []
    assert redis_client.smembers(f"{settings.key_prefix}maint:index") == set()  # pruned on read


def test_kill_switch_is_seen_by_another_client_at_once(redis_client: redis.Redis, settings: Settings) -> None:
    other_client = redis.Redis.from_url(settings.redis_url)
    try:
        here = AutomationControls(redis_client, settings.key_prefix)
        there = AutomationControls(other_client, settings.key_prefix)  # e.g. another worker
        assert may_act(there, PROD)
        here.switch.disable("alice", "bad rollout in progress")
        assert there.automation_enabled() is False and not may_act(there, PROD)
        status = there.switch.status()
        assert (status.enabled, status.by, status.reason) == (False, "alice", "bad rollout in progress")
        here.switch.enable("alice")
        assert there.automation_enabled() is True and may_act(there, PROD)
    finally:
        other_client.close()
    events = EventLog(redis_client, settings.key_prefix).read()
    assert [e.type for e in events] == ["automation_disabled", "automation_enabled"]
    assert events[0].data["actor"] == "alice" and events[0].data["reason"] == "bad rollout in progress"


def test_switch_needs_who_and_why(redis_client: redis.Redis, settings: Settings) -> None:
    switch = AutomationSwitch(redis_client, settings.key_prefix)
    with pytest.raises(PermanentError):
        switch.disable("alice", "")
    assert switch.enabled()


def test_maintenance_stops_actions_through_the_protocol(
    redis_client: redis.Redis, settings: Settings
) -> None:
    controls: Controls = AutomationControls(redis_client, settings.key_prefix)
    assert controls.in_maintenance(VLLM) is None and may_act(controls, VLLM)
    MaintenanceWindows(redis_client, settings.key_prefix).add(
        ["namespace=staging"], timedelta(hours=1), "GPU node drain", "ops"
    )
    assert controls.in_maintenance(VLLM) == "GPU node drain"
    assert not may_act(controls, VLLM)
    assert may_act(controls, PROD)


def test_controls_fail_closed_when_redis_is_unreachable(settings: Settings) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    controls = AutomationControls(dead, settings.key_prefix)
    assert controls.automation_enabled() is False
    reason = controls.in_maintenance(VLLM)
    assert reason is not None and reason.startswith("maintenance state unavailable")
