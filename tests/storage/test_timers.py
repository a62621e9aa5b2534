"""Escalation and reminder timers on real Redis with a hand-moved clock."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import redis

from bot.lifecycle import TimerRef
from bot.models import IncidentStatus
from bot.settings import get_settings
from bot.storage.controls import MaintenanceWindows
from bot.storage.incidents import IncidentStore
from tests.support.lifecycle import T0, Clock, firing, make_store, resolved, send

PREFIX = get_settings().key_prefix


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lstore(redis_client: redis.Redis, clock: Clock) -> IncidentStore:
    return make_store(redis_client, clock)


def escalations(store: IncidentStore) -> list[dict[str, object]]:
    return [e.data for e in store.events.read(type_="escalated")]


def fire_at(store: IncidentStore, clock: Clock, **delta: float) -> list[str]:
    clock.now = T0 + timedelta(**delta)
    return [outcome for _t, outcome in store.fire_due()]


def test_escalation_fires_once_at_the_deadline_and_repeats_per_level(
    lstore: IncidentStore, clock: Clock
) -> None:
    send(lstore, firing(severity="critical"))  # P1: escalate after 30 min, reminders every 30 min
    assert fire_at(lstore, clock, minutes=29, seconds=59) == []
    assert sorted(fire_at(lstore, clock, minutes=30)) == ["escalated", "reminded"]
    assert fire_at(lstore, clock, minutes=30) == []  # nothing left to claim
    (event,) = escalations(lstore)
    assert event["incident_id"] == "INC-0001" and event["level"] == 1 and event["severity"] == "P1"
    assert event["page"] is True and event["notify"] == ["oncall-sre", "service-owner"]
    entry = [t for t in lstore.timeline("INC-0001") if t.kind == "escalated"]
    assert len(entry) == 1 and "level 1" in entry[0].message
    inc = lstore.get("INC-0001")
    assert inc.escalation_level == 1 and inc.escalation_due == T0 + timedelta(minutes=60)
    fire_at(lstore, clock, minutes=60)
    fire_at(lstore, clock, minutes=90)
    fire_at(lstore, clock, minutes=120)  # max 3 levels
    assert [e["level"] for e in escalations(lstore)] == [1, 2, 3]
    assert lstore.get("INC-0001").escalation_due is None
    assert [t.kind for t, _ in lstore.timers.pending()] == ["remind"]


def test_ack_before_the_deadline_means_no_escalation(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, firing(severity="critical"))
    clock.advance(minutes=10)
    lstore.apply_event("INC-0001", "ack", actor="alice")
    assert fire_at(lstore, clock, minutes=31) == ["reminded"]  # the reminder only: escalation was removed
    assert fire_at(lstore, clock, hours=3) == ["reminded"]
    assert escalations(lstore) == []
    # unack starts the escalation clock again from the unack
    clock.now = T0 + timedelta(hours=3, minutes=1)
    lstore.apply_event("INC-0001", "unack", actor="pagerduty")
    assert fire_at(lstore, clock, hours=3, minutes=29) == []
    assert sorted(fire_at(lstore, clock, hours=3, minutes=31)) == ["escalated", "reminded"]
    assert len(escalations(lstore)) == 1


def test_fire_time_recheck_ignores_an_incident_acked_behind_the_timers_back(
    lstore: IncidentStore, redis_client: redis.Redis, clock: Clock
) -> None:
    """Another writer (e.g. an older code path) acks without touching the timers: still no escalation."""
    send(lstore, firing(severity="critical"))
    key = f"{PREFIX}inc:INC-0001"
    acked = lstore.get("INC-0001").model_copy(update={"status": IncidentStatus.ACKNOWLEDGED})
    redis_client.set(key, acked.model_dump_json())
    assert sorted(fire_at(lstore, clock, minutes=30)) == ["reminded", "stale"]
    assert escalations(lstore) == []
    assert redis_client.zcard(f"{PREFIX}timers:claimed") == 0  # the stale claim was cleaned up


def test_resolve_cancels_timers(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, firing(severity="critical"))
    clock.advance(minutes=5)
    send(lstore, resolved())
    assert lstore.timers.pending() == []
    assert fire_at(lstore, clock, hours=5) == []


def test_reminders_for_p0_and_p1_only(lstore: IncidentStore, redis_client: redis.Redis, clock: Clock) -> None:
    groups = {"P0": "VLLMServiceDown", "P1": "GPUFault", "P2": "VLLMHighQueueDepth", "P3": "SomethingOdd"}
    for level, name in groups.items():
        body = firing(name, severity="critical" if level == "P1" else "info")
        body["groupKey"] = f'{{}}:{{alertname="{name}"}}'
        send(lstore, body)
    assert [i.severity.value for i in sorted(lstore.recent(), key=lambda i: i.id)] == ["P0", "P1", "P2", "P3"]
    for incident in lstore.recent():
        lstore.apply_event(incident.id, "ack", actor="alice")  # reminders do not need escalation
    for minutes in (30, 60, 90):
        fire_at(lstore, clock, minutes=minutes)
    reminders = [e.data for e in lstore.events.read(type_="reminder")]
    by_incident: dict[object, list[object]] = {}
    for r in reminders:
        by_incident.setdefault(r["severity"], []).append(r["reminder"])
    assert by_incident == {"P0": [1, 2, 3], "P1": [1, 2, 3]}
    assert all(r["every_seconds"] == 1800 for r in reminders)


def test_two_concurrent_tickers_escalate_each_incident_exactly_once(
    redis_client: redis.Redis, clock: Clock
) -> None:
    store = make_store(redis_client, clock)
    for n in range(40):
        body = firing(severity="critical", fingerprint=f"fp{n}")
        body["groupKey"] = f'{{}}:{{alertname="X", n="{n}"}}'
        send(store, body)
    clock.now = T0 + timedelta(minutes=30)
    clients = [redis.Redis.from_url(get_settings().redis_url) for _ in range(2)]
    tickers = [make_store(c, clock) for c in clients]
    barrier = threading.Barrier(2)
    results: list[list[str]] = [[], []]

    def run(i: int) -> None:
        barrier.wait()
        while batch := tickers[i].fire_due(limit=7):
            results[i].extend(outcome for _t, outcome in batch)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in clients:
        c.close()
    fired = results[0] + results[1]
    assert fired.count("escalated") == 40 and fired.count("reminded") == 40
    assert len(results[0]) > 0 and len(results[1]) > 0  # both tickers really took part
    ids = [e["incident_id"] for e in escalations(store)]
    assert len(ids) == 40 and len(set(ids)) == 40


def test_a_claim_whose_worker_died_fires_after_the_lease(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, firing(severity="critical"))
    clock.now = T0 + timedelta(minutes=30)
    taken = lstore.timers.claim(clock.now, lease_seconds=60)  # a worker claims both timers, then dies
    assert {t.kind for t in taken} == {"escalate", "remind"}
    assert lstore.fire_due() == []  # claimed: nobody else fires them during the lease
    assert fire_at(lstore, clock, minutes=30, seconds=59) == []
    assert sorted(fire_at(lstore, clock, minutes=31)) == ["escalated", "reminded"]
    assert len(escalations(lstore)) == 1
    # the dead worker "comes back" and fires its old claim: the incident no longer wants it
    assert lstore.fire_timer(next(t for t in taken if t.kind == "escalate"), clock.now) == "stale"
    assert len(escalations(lstore)) == 1


def test_window_added_after_opening_suppresses_escalation(
    lstore: IncidentStore, redis_client: redis.Redis, clock: Clock
) -> None:
    send(lstore, firing(severity="critical"))
    clock.advance(minutes=20)
    MaintenanceWindows(redis_client, PREFIX, clock=clock).add(
        ["namespace=llm-d"], timedelta(hours=1), "planned GPU driver upgrade", "ops"
    )
    assert sorted(fire_at(lstore, clock, minutes=30)) == ["maintenance", "stale"]
    assert escalations(lstore) == []
    inc = lstore.get("INC-0001")
    assert inc.in_maintenance and inc.maintenance_reason == "planned GPU driver upgrade"
    assert lstore.timers.pending() == []


def test_timer_member_round_trip() -> None:
    ref = TimerRef.of("escalate", "INC-0042", T0)
    assert TimerRef.parse(ref.member) == ref
    with pytest.raises(ValueError):
        TimerRef.parse("nap|INC-1|5")
