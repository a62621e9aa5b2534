"""Lifecycle in the store on real Redis: transitions, reopen, severity changes, flapping, maintenance."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import redis

from bot.errors import InvalidTransition, PermanentError
from bot.lifecycle import SeverityChangeRefused
from bot.models import IncidentStatus, Severity
from bot.settings import get_settings
from bot.storage.controls import MaintenanceWindows
from bot.storage.incidents import IncidentStore
from tests.support.lifecycle import CONFIG, Clock, firing, make_store, resolved, send

PREFIX = get_settings().key_prefix


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lstore(redis_client: redis.Redis, clock: Clock) -> IncidentStore:
    return make_store(redis_client, clock)


def snapshot(client: redis.Redis, store: IncidentStore, incident_id: str) -> tuple[object, ...]:
    """Everything an illegal transition must leave alone."""
    return (
        client.get(f"{PREFIX}inc:{incident_id}"),
        len(store.timeline(incident_id)),
        sorted(client.zrange(f"{PREFIX}timers", 0, -1, withscores=True)),
        client.xlen(f"{PREFIX}events"),
        client.hgetall(f"{PREFIX}open"),
    )


def kinds(store: IncidentStore, incident_id: str) -> list[str]:
    return [t.kind for t in store.timeline(incident_id)]


def test_ack_records_who_and_when_and_pauses_escalation(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, firing(severity="critical"))
    assert {t.kind for t, _ in lstore.timers.pending()} == {"escalate", "remind"}
    clock.advance(minutes=4)
    inc = lstore.apply_event("INC-0001", "ack", actor="alice", note="looking")
    assert inc.status is IncidentStatus.ACKNOWLEDGED
    assert inc.acknowledged_at == clock.now and inc.acknowledged_by == "alice"
    stored = lstore.get("INC-0001")
    assert stored == inc
    last = lstore.timeline("INC-0001")[-1]
    assert last.kind == "acknowledged" and last.message == "Acknowledged by alice. looking"
    assert last.data["actor"] == "alice" and last.data["from"] == "triggered"
    assert {t.kind for t, _ in lstore.timers.pending()} == {"remind"}  # escalation paused, reminders go on


def test_illegal_transitions_are_refused_and_change_nothing(
    lstore: IncidentStore, redis_client: redis.Redis, clock: Clock
) -> None:
    send(lstore, firing())
    lstore.apply_event("INC-0001", "ack", actor="alice")
    before = snapshot(redis_client, lstore, "INC-0001")
    with pytest.raises(InvalidTransition) as info:
        lstore.apply_event("INC-0001", "ack", actor="bob")
    assert str(info.value) == (
        "cannot ack INC-0001 in state acknowledged: allowed events are unack, start_mitigation, resolve"
    )
    with pytest.raises(InvalidTransition):
        lstore.apply_event("INC-0001", "stop_mitigation", actor="bob")
    with pytest.raises(InvalidTransition, match="unknown incident event 'snooze'"):
        lstore.apply_event("INC-0001", "snooze", actor="bob")
    with pytest.raises(PermanentError, match="must say who"):
        lstore.apply_event("INC-0001", "resolve", actor="  ")
    assert snapshot(redis_client, lstore, "INC-0001") == before
    assert lstore.get("INC-0001").acknowledged_by == "alice"


def test_full_path_and_reopen_window(lstore: IncidentStore, redis_client: redis.Redis, clock: Clock) -> None:
    send(lstore, firing(severity="critical"))
    for event in ("ack", "start_mitigation", "stop_mitigation", "start_mitigation", "resolve"):
        clock.advance(minutes=1)
        lstore.apply_event("INC-0001", event, actor="alice")
    inc = lstore.get("INC-0001")
    assert inc.status is IncidentStatus.RESOLVED and inc.resolved_at == clock.now
    assert kinds(lstore, "INC-0001") == [
        "opened",
        "acknowledged",
        "mitigation_started",
        "mitigation_stopped",
        "mitigation_started",
        "resolved",
    ]
    assert lstore.timers.pending() == [] and lstore.open_by_severity() == {}
    assert [e.type for e in lstore.events.read()] == ["postmortem_ready"]

    clock.advance(minutes=10)
    reopened = lstore.apply_event("INC-0001", "reopen", actor="bob", note="still broken")
    assert reopened.status is IncidentStatus.TRIGGERED and reopened.resolved_at is None
    assert reopened.reopened_count == 1
    assert reopened.escalation_due == clock.now + timedelta(minutes=30)  # escalation runs again
    assert lstore.open_by_severity() == {"P1": 1}
    assert [e.type for e in lstore.events.read()] == ["postmortem_ready", "reopened"]

    lstore.apply_event("INC-0001", "resolve", actor="bob")
    clock.advance(minutes=31)
    before = snapshot(redis_client, lstore, "INC-0001")
    with pytest.raises(InvalidTransition, match="beyond the 30 min reopen window"):
        lstore.apply_event("INC-0001", "reopen", actor="bob")
    assert snapshot(redis_client, lstore, "INC-0001") == before


def test_refire_within_window_reopens_same_incident_and_after_it_opens_a_new_one(
    lstore: IncidentStore, clock: Clock
) -> None:
    assert send(lstore, firing()).outcome == "created"
    clock.advance(minutes=5)
    send(lstore, resolved())
    clock.advance(minutes=29)
    result = send(lstore, firing(starts="2026-11-26T10:34:00Z"))
    assert (result.outcome, result.incident_id) == ("reopened", "INC-0001")
    inc = lstore.get("INC-0001")
    assert inc.status is IncidentStatus.TRIGGERED and inc.reopened_count == 1
    assert kinds(lstore, "INC-0001") == ["opened", "resolved", "reopened"]
    assert inc.escalation_due == clock.now + timedelta(hours=2)  # P2: escalate after 2 h
    assert [e.type for e in lstore.events.read()] == ["postmortem_ready", "reopened"]

    clock.advance(minutes=1)
    send(lstore, resolved(starts="2026-11-26T10:34:00Z"))
    clock.advance(minutes=31)
    result = send(lstore, firing(starts="2026-11-26T11:10:00Z"))
    assert (result.outcome, result.incident_id) == ("created", "INC-0002")
    assert lstore.get("INC-0002").previous_incident == "INC-0001"
    assert lstore.get("INC-0001").status is IncidentStatus.RESOLVED


def test_manual_severity_change_needs_who_and_why_and_may_lower(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, firing(severity="critical"))
    with pytest.raises(SeverityChangeRefused, match="must give a reason"):
        lstore.set_severity("INC-0001", "P3", who="alice", why=" ")
    with pytest.raises(SeverityChangeRefused, match="already P1"):
        lstore.set_severity("INC-0001", "P1", who="alice", why="same")
    assert kinds(lstore, "INC-0001") == ["opened"]
    clock.advance(minutes=2)
    inc = lstore.set_severity("INC-0001", Severity.P3, who="alice", why="staging only")
    assert inc.severity is Severity.P3 and inc.severity_reason == "P3 set by alice: staging only"
    entry = lstore.timeline("INC-0001")[-1]
    assert entry.kind == "severity_changed"
    assert entry.data == {
        "actor": "alice",
        "from": "P1",
        "to": "P3",
        "reason": "staging only",
        "automatic": False,
    }
    # P3 has no status reminders; its escalation deadline (8 h) is later, so the pending one stays
    assert {t.kind for t, _ in lstore.timers.pending()} == {"escalate"}
    (event,) = lstore.events.read(type_="severity_changed")
    assert event.data["from"] == "P1" and event.data["to"] == "P3" and event.data["raised"] is False


def test_automatic_raise_but_never_lower(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, firing())
    assert lstore.get("INC-0001").severity is Severity.P2
    assert lstore.raise_severity("INC-0001", "P3", reason="calmer") is None
    assert lstore.raise_severity("INC-0001", "P2", reason="same") is None
    clock.advance(minutes=3)
    raised = lstore.raise_severity("INC-0001", "P0", reason="error_rate_pct=97 > 95")
    assert raised is not None and raised.severity is Severity.P0
    # P0 escalates 15 min from the raise (sooner than P2's 2 h) and gets 30-min reminders
    assert raised.escalation_due == clock.now + timedelta(minutes=15)
    assert raised.next_reminder_at == clock.now + timedelta(minutes=30)
    assert kinds(lstore, "INC-0001") == ["opened", "severity_changed"]
    # later notifications of the same group that classify lower do not lower it
    clock.advance(minutes=1)
    send(lstore, firing(fingerprint="other"))
    assert lstore.get("INC-0001").severity is Severity.P0
    # and a notification that classifies higher raises it through intake
    send(lstore, firing())
    lstore.set_severity("INC-0001", "P2", who="alice", why="false alarm on the gateway")
    send(lstore, firing("VLLMServiceDown", fingerprint="down"))
    assert lstore.get("INC-0001").severity is Severity.P0
    assert kinds(lstore, "INC-0001")[-2:] == ["alerts_changed", "severity_changed"]
    lstore.apply_event("INC-0001", "resolve", actor="alice")
    assert lstore.raise_severity("INC-0001", "P0", reason="too late") is None  # resolved: no change


def test_maintenance_window_marks_incident_and_arms_no_timers(
    lstore: IncidentStore, redis_client: redis.Redis, clock: Clock
) -> None:
    windows = MaintenanceWindows(redis_client, PREFIX, clock=clock)
    windows.add(["namespace=llm-d", "alertname=~VLLM.*"], timedelta(hours=2), "node drain", "alice")
    send(lstore, firing(severity="critical"))
    inc = lstore.get("INC-0001")
    assert inc.in_maintenance and inc.maintenance_reason == "node drain"
    entry = lstore.timeline("INC-0001")[1]
    assert entry.kind == "in_maintenance" and "node drain" in entry.message
    assert lstore.timers.pending() == []
    # another namespace is not covered
    other = firing(namespace="prod", severity="critical")
    other["groupKey"] = '{}:{alertname="VLLMHighQueueDepth", namespace="prod"}'
    send(lstore, other)
    assert not lstore.get("INC-0002").in_maintenance
    assert len(lstore.timers.pending()) == 2


def test_flapping_group_stops_opening_incidents_until_it_settles(lstore: IncidentStore, clock: Clock) -> None:
    """4 changes in an hour are tolerated; the 5th marks the group flapping."""
    starts = ["2026-11-26T10:00:00Z", "2026-11-26T10:10:00Z", "2026-11-26T10:20:00Z", "2026-11-26T10:30:00Z"]
    outcomes = []
    for s in starts:
        outcomes.append(send(lstore, firing(starts=s)).outcome)
        clock.advance(minutes=5)
        outcomes.append(send(lstore, resolved(starts=s)).outcome)
        clock.advance(minutes=5)
    # change 1 opens, 2 resolves, 3 reopens, 4 resolves, 5 (a fire) is suppressed; so are later ones
    assert outcomes[:5] == ["created", "resolved", "reopened", "resolved", "flapping"]
    assert [i.id for i in lstore.recent()] == ["INC-0001"]
    inc = lstore.get("INC-0001")
    assert inc.status is IncidentStatus.RESOLVED and inc.reopened_count == 1
    assert kinds(lstore, "INC-0001").count("flapping") == 1
    (event,) = lstore.events.read(type_="flapping")
    assert event.data["incident_id"] == "INC-0001" and event.data["changes"] == 5
    assert lstore.is_flapping(firing()["groupKey"])
    assert len(lstore.flapping_groups()) == 1

    clock.advance(minutes=59)  # not yet quiet for a whole window since the last change
    assert lstore.is_flapping(firing()["groupKey"])
    assert send(lstore, firing(starts="2026-11-26T12:00:00Z")).outcome == "flapping"
    assert lstore.recent()[0].id == "INC-0001"
    # the suppressed notification is not marked delivered: its repeat is looked at again once settled
    lstore._r.delete(f"{PREFIX}flapping:{lstore.flapping_groups()[0].gid}")  # window over (TTL)
    clock.advance(minutes=61)
    result = send(lstore, firing(starts="2026-11-26T12:00:00Z"))
    assert (result.outcome, result.incident_id) == ("created", "INC-0002")


def test_flapping_mark_expires_one_quiet_window_after_the_last_change(
    redis_client: redis.Redis, clock: Clock
) -> None:
    store = make_store(redis_client, clock, replace(CONFIG, flap_window=timedelta(seconds=90)))
    for minute in range(3):  # six changes at the same instant: counted one by one
        s = f"2026-11-26T10:0{minute}:00Z"
        send(store, firing(starts=s))
        send(store, resolved(starts=s))
    (group,) = store.flapping_groups()
    assert group.flapping_now
    assert 85 <= redis_client.ttl(f"{PREFIX}flapping:{group.gid}") <= 90
    redis_client.expire(f"{PREFIX}flapping:{group.gid}", 5)
    send(store, firing(starts="2026-11-26T10:09:00Z"))  # another change while flapping: full window again
    assert redis_client.ttl(f"{PREFIX}flapping:{group.gid}") >= 85
