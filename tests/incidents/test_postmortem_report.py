"""Postmortem drafts (hostile alert text stays inert) and the report against hand-computed numbers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from bot.incidents.postmortem import md, render_postmortem
from bot.incidents.report import collect_report
from bot.models import AlertmanagerWebhook
from bot.settings import Settings, get_settings
from bot.storage.incidents import IncidentStore
from tests.support.lifecycle import T0, Clock, make_store, send
from tests.support.payloads import alert, notification

TEMPLATES = get_settings().templates_dir
SSTI = (
    "{{ 7*7 }} {% for x in range(3) %}loop{% endfor %} {{ ''.__class__.__mro__ }} "
    "<!channel> [a](http://evil) |x"
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lstore(redis_client: redis.Redis, clock: Clock) -> IncidentStore:
    return make_store(redis_client, clock)


def hostile_notification(status: str = "firing") -> dict[str, object]:
    a = alert(severity="critical", status=status)
    a["annotations"] = {"summary": SSTI}
    body = notification([a])
    body["commonAnnotations"] = {"summary": SSTI}
    return body


def test_postmortem_renders_with_hostile_alert_text_inert(lstore: IncidentStore, clock: Clock) -> None:
    send(lstore, hostile_notification())
    clock.advance(minutes=4)
    lstore.apply_event("INC-0001", "ack", actor="alice")
    clock.advance(minutes=1)
    lstore.apply_event("INC-0001", "start_mitigation", actor="alice")
    lstore.set_severity("INC-0001", "P0", who="alice", why="whole pool down {{ 7*7 }}")
    lstore.append_timeline(
        "INC-0001",
        "step_scale",
        "Scaled vllm-decode 4 -> 6",
        {"actor": "incident-bot", "approved_by": "bob"},
    )
    clock.advance(minutes=10)
    lstore.apply_event("INC-0001", "resolve", actor="alice", note="rolled back")
    incident = lstore.get("INC-0001")
    text = render_postmortem(
        incident, lstore.timeline("INC-0001"), templates_dir=TEMPLATES, policy=lstore.policy
    )

    assert "49" not in text and "looploop" not in text and r"\_\_mro\_\_" in text  # nothing was evaluated
    assert r"{{ 7\*7 }}" in text and "{% for x in range(3) %}loop{% endfor %}" in text
    assert "<!channel>" not in text and r"\<\!channel\>" in text  # no HTML, no Slack mention
    assert "[a](http://evil)" not in text and r"\[a\](http://evil) \|x" in text  # no link, no extra cell
    assert "# Postmortem (draft): INC-0001" in text
    assert "| Time to acknowledge | 4 min |" in text
    assert "| Time to resolve | 15 min |" in text
    assert "- 2026-11-26 10:05:00 UTC: P1 -> P0 by alice: whole pool down {{ 7\\*7 }}" in text
    assert "step\\_scale: Scaled vllm-decode 4 -\\> 6; automatic, approved by bob" in text
    assert (
        "**acknowledged** (alice)" in text and "**resolved** (alice): Resolved by alice. rolled back" in text
    )
    assert "- [ ] Severity changed during the incident" in text


def test_strict_undefined_fails_loudly(tmp_path: object, lstore: IncidentStore) -> None:
    from pathlib import Path

    from jinja2 import UndefinedError

    send(lstore, hostile_notification())
    folder = Path(str(tmp_path))
    (folder / "postmortem.md.j2").write_text("{{ incident.no_such_field }}")
    with pytest.raises(UndefinedError):
        render_postmortem(lstore.get("INC-0001"), [], templates_dir=folder)


def test_md_escapes_markdown_and_flattens_lines() -> None:
    assert md("a|b\n# c *d* [e](f) <g>") == r"a\|b \# c \*d\* \[e\](f) \<g\>"


def apply_group(store: IncidentStore, group: str, alertname: str, severity: str) -> str:
    body = notification(
        [alert(alertname, severity=severity, fingerprint=group)], group_key=f'{{}}:{{g="{group}"}}'
    )
    webhook = AlertmanagerWebhook.model_validate(body)
    result = store.apply_notification(webhook, webhook.idempotency_key())
    assert result.incident_id is not None
    return result.incident_id


def test_report_matches_hand_computed_mtta_and_mttr(
    redis_client: redis.Redis, clock: Clock, settings: Settings
) -> None:
    """Seeded: P1 x2 (ack 4/10 min, resolve 30/50 min), P2 x1 (ack 20 min, open), P3 x1 (untouched)."""
    store = make_store(redis_client, clock)
    a = apply_group(store, "A", "GPUFault", "critical")  # P1 at T0
    clock.advance(minutes=4)
    store.apply_event(a, "ack", actor="alice")  # TTA 4 min
    clock.now = T0 + timedelta(minutes=10)
    b = apply_group(store, "B", "GPUFault", "critical")  # P1 at T0+10
    c = apply_group(store, "C", "VLLMHighQueueDepth", "warning")  # P2 at T0+10
    clock.now = T0 + timedelta(minutes=20)
    store.apply_event(b, "ack", actor="bob")  # TTA 10 min
    store.append_timeline(b, "step_restart", "restarted decode", {"actor": "incident-bot"})
    store.append_timeline(b, "step_scale", "scaled up", {"actor": "bob", "approved_by": "carol"})
    store.append_timeline(b, "note", "not an action", {"actor": "bob"})
    clock.now = T0 + timedelta(minutes=30)
    store.apply_event(a, "resolve", actor="alice")  # TTR 30 min
    store.apply_event(c, "ack", actor="carol")  # TTA 20 min
    clock.now = T0 + timedelta(minutes=60)
    store.apply_event(b, "resolve", actor="bob")  # TTR 50 min
    d = apply_group(store, "D", "SomethingOdd", "info")  # P3 at T0+60, nothing else
    clock.now = T0 + timedelta(hours=3)
    store.fire_due()  # D (P3, 8 h) has not escalated; C is acked; nothing escalates
    clock.now = T0 + timedelta(hours=9)
    store.fire_due()  # D escalates once (due T0+1h+8h)
    report = collect_report(store, period=timedelta(days=1))

    p1, p2, p3 = report.by_severity["P1"], report.by_severity["P2"], report.by_severity["P3"]
    assert (p1.incidents, p1.acknowledged, p1.resolved) == (2, 2, 2)
    assert p1.mtta_seconds == (4 * 60 + 10 * 60) / 2  # 7 min
    assert p1.mttr_seconds == (30 * 60 + 50 * 60) / 2  # 40 min
    assert (p2.incidents, p2.acknowledged, p2.resolved, p2.mtta_seconds, p2.mttr_seconds) == (
        1,
        1,
        0,
        1200.0,
        None,
    )
    assert (p3.incidents, p3.mtta_seconds, p3.mttr_seconds) == (1, None, None)
    assert report.by_severity["P0"].incidents == 0
    assert report.incidents == 4
    assert (report.actions_automatic, report.actions_by_hand, report.actions_approved) == (1, 1, 1)
    assert (report.escalations, report.escalated_incidents) == (1, 1)
    assert d in {i.id for i in store.recent()}
    # a narrower period leaves the older incidents out
    assert collect_report(store, period=timedelta(hours=8, minutes=30)).incidents == 1
