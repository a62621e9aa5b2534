"""Parsing of Alertmanager v4 notifications and the idempotency key."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from bot.models import ZERO_TIME, AlertmanagerWebhook, AlertStatus
from tests.support.payloads import alert, notification


def parse(body: dict[str, object]) -> AlertmanagerWebhook:
    return AlertmanagerWebhook.model_validate(body)


def test_firing_notification_parses_with_zero_end_time() -> None:
    w = parse(notification([alert(), alert("KVCacheHigh", fingerprint="ffff0000")]))
    assert w.status is AlertStatus.FIRING
    assert [a.name for a in w.alerts] == ["VLLMHighQueueDepth", "KVCacheHigh"]
    assert w.alerts[0].endsAt == ZERO_TIME
    assert w.title == "VLLMHighQueueDepth: decode queue depth above 10"


def test_resolved_notification_carries_end_times() -> None:
    w = parse(notification([alert(status="resolved")]))
    assert w.status is AlertStatus.RESOLVED
    assert w.alerts[0].endsAt is not None and w.alerts[0].endsAt.year == 2026


def test_truncated_alerts_are_counted() -> None:
    w = parse(notification([alert()], truncated=37))
    assert w.truncatedAlerts == 37


def test_unknown_fields_from_newer_alertmanagers_are_accepted() -> None:
    body = notification(notification_reason="new_alerts", routeLabels={"team": "inference"})
    body["alerts"][0]["somethingNew"] = {"nested": True}
    w = parse(body)
    assert w.groupKey.startswith("{}:")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("groupKey"), "groupKey"),
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b.update(status="exploded"), "status"),
        (lambda b: b.update(alerts=[]), "alerts"),
        (lambda b: b.update(truncatedAlerts=-1), "truncatedAlerts"),
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda b: b["alerts"][0].update(labels="not-a-map"), "alerts.0.labels"),
    ],
)
def test_invalid_payloads_name_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    body = notification()
    mutate(body)
    with pytest.raises(ValidationError) as info:
        parse(body)
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert field in locs


def test_key_is_stable_across_redelivery_and_alert_order() -> None:
    alerts = [alert(fingerprint=f"fp{i:02d}", pod=f"p{i}") for i in range(10)]
    first = parse(notification(alerts)).idempotency_key()
    shuffled = alerts[:]
    random.Random(7).shuffle(shuffled)
    assert parse(notification(shuffled)).idempotency_key() == first
    # annotations or unknown fields changing does not make a redelivery look new
    extra = notification(alerts, notification_reason="repeat")
    assert parse(extra).idempotency_key() == first


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.update(groupKey='{}:{alertname="Other"}'),
        lambda b: b.update(status="resolved"),
        lambda b: b["alerts"][0].update(status="resolved"),
        lambda b: b["alerts"][0].update(startsAt="2026-11-26T11:00:00Z"),  # re-fire: a new episode
        lambda b: b["alerts"].append(alert(fingerprint="another")),
        lambda b: b.update(truncatedAlerts=3),
    ],
)
def test_key_changes_with_every_real_change(change) -> None:  # type: ignore[no-untyped-def]
    base = notification()
    changed = notification()
    change(changed)
    assert parse(base).idempotency_key() != parse(changed).idempotency_key()
