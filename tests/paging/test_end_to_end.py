"""PagerDuty two-way sync end to end: Alertmanager/Slack/PagerDuty -> web -> real worker -> emulators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bot.models import IncidentStatus
from bot.paging import dedup_key
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from tests.paging.conftest import ALICE, SECRET_NEW, SECRET_OLD
from tests.support.fixtures import wait_until, worker_idle
from tests.support.payloads import alert, notification
from tests.support.slack import RESPONDER, RecordingSender, command_body, sign

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-token-0123456789"}
P0_GROUP = '{}:{alertname="VLLMServiceDown", namespace="llm-d"}'


def p0(*alerts: dict[str, object], status: str | None = None) -> dict[str, object]:
    return notification(
        list(alerts) or [alert("VLLMServiceDown", severity="critical")], group_key=P0_GROUP, status=status
    )


@pytest.fixture
def client(pd_settings: Settings, wired_worker: None, sender: RecordingSender) -> Iterator[TestClient]:
    with TestClient(create_app(pd_settings, slack_sender=sender)) as c:
        yield c


def kinds(store: IncidentStore, incident_id: str) -> list[str]:
    return [t.kind for t in store.timeline(incident_id)]


def open_p0(client: TestClient, store: IncidentStore, pd: PagerDutyEmulator) -> str:
    assert client.post("/alertmanager", json=p0(), headers=AUTH).status_code == 202
    incident = wait_until(lambda: store.recent())[0]  # type: ignore[index]
    wait_until(lambda: "pagerduty_triggered" in kinds(store, incident.id))
    return str(incident.id)


def deliver(
    client: TestClient,
    pd: PagerDutyEmulator,
    event: str,
    incident_id: str,
    *,
    secrets: tuple[str, ...] = (SECRET_NEW,),
    agent: str = "oncall@example.com",
) -> tuple[int, str]:
    body, headers = pd.webhook(event, dedup_key(incident_id), secrets=secrets, agent_email=agent)
    r = client.post("/pagerduty", content=body, headers=headers)
    return r.status_code, headers["X-Webhook-Id"]


def test_p0_pages_once_though_delivered_three_times(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator
) -> None:
    for _ in range(3):
        assert client.post("/alertmanager", json=p0(), headers=AUTH).status_code in (200, 202)
    incident = wait_until(lambda: store.recent())[0]  # type: ignore[index]
    assert incident.severity.value == "P0"
    wait_until(lambda: "pagerduty_triggered" in kinds(store, incident.id))
    # an update of the same group (a second pod down) is reconciled too, but pages nobody again
    client.post(
        "/alertmanager",
        json=p0(
            alert("VLLMServiceDown", severity="critical"),
            alert("VLLMServiceDown", fingerprint="second", severity="critical"),
        ),
        headers=AUTH,
    )
    wait_until(lambda: store.get(incident.id).firing_count == 2)
    triggers = pd.events("trigger")
    assert len(triggers) == 1
    assert triggers[0]["dedup_key"] == dedup_key(incident.id)
    assert triggers[0]["payload"]["severity"] == "critical"
    assert triggers[0]["payload"]["summary"].startswith(f"[P0] {incident.id} VLLMServiceDown")
    assert kinds(store, incident.id).count("pagerduty_triggered") == 1


def test_p2_does_not_page(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator, emulator: SlackEmulator
) -> None:
    client.post("/alertmanager", json=notification([alert("VLLMHighQueueDepth")]), headers=AUTH)
    incident = wait_until(lambda: store.recent())[0]  # type: ignore[index]
    assert incident.severity.value == "P2"
    wait_until(lambda: store.task_stats().get("slack_notify:posted", 0) >= 1)  # Slack heard; PagerDuty not
    assert pd.events() == []
    assert not any(k.startswith("pagerduty_") for k in kinds(store, incident.id))


def test_ack_in_slack_acks_pagerduty_via_rest_as_the_person(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator, emulator: SlackEmulator
) -> None:
    incident_id = open_p0(client, store, pd)
    # PagerDuty tells the bot its incident id (incident.triggered webhook)
    code, _ = deliver(client, pd, "incident.triggered", incident_id)
    assert code == 202
    wait_until(lambda: store.redis_client.hget(store.key("pd", incident_id), "pd_incident_id"))
    body = command_body(f"ack {incident_id}", user=RESPONDER, response_url=emulator.response_url("ack"))
    r = client.post(
        "/slack/events",
        content=body,
        headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    put = wait_until(lambda: pd.calls_to("/incidents", method="PUT", ok=True))[0]  # type: ignore[index]
    assert put.headers["From"] == ALICE
    assert put.body["incidents"][0]["status"] == "acknowledged"
    assert pd.incidents[dedup_key(incident_id)].status == "acknowledged"
    # PagerDuty then announces the ack it got from us: no call goes back (no echo loop)
    code, _ = deliver(client, pd, "incident.acknowledged", incident_id, agent=ALICE)
    wait_until(lambda: store.redis_client.exists(store.key("pd", "webhook", _)))
    assert len(pd.calls_to("/incidents")) == 1
    assert pd.events("acknowledge") == []


def test_signed_webhook_ack_acks_the_incident_and_updates_slack_without_echo(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator, emulator: SlackEmulator
) -> None:
    incident_id = open_p0(client, store, pd)
    code, _ = deliver(client, pd, "incident.acknowledged", incident_id, agent="bob@example.com")
    assert code == 202
    wait_until(lambda: store.get(incident_id).status is IncidentStatus.ACKNOWLEDGED)
    ack = next(t for t in store.timeline(incident_id) if t.kind == "acknowledged")
    assert ack.data["actor"] == "pagerduty:bob@example.com"

    def root_shows_ack() -> bool:
        roots = emulator.channel_messages("C0CRIT0001", top_level_only=True)
        return bool(roots) and "pagerduty:bob@example.com" in to_console({"blocks": roots[0].blocks})

    wait_until(root_shows_ack)
    wait_until(lambda: store.redis_client.hget(store.key("pd", incident_id), "state") == b"acknowledged")
    assert pd.calls_to("/incidents") == []
    assert pd.events("acknowledge") == []


def test_bad_signature_is_401_and_changes_nothing(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator
) -> None:
    incident_id = open_p0(client, store, pd)
    code, _ = deliver(client, pd, "incident.acknowledged", incident_id, secrets=("not-the-secret",))
    assert code == 401
    body, headers = pd.webhook("incident.acknowledged", dedup_key(incident_id), secrets=(SECRET_NEW,))
    headers.pop("X-PagerDuty-Signature")
    assert client.post("/pagerduty", content=body, headers=headers).status_code == 401
    assert store.get(incident_id).status is IncidentStatus.TRIGGERED


def test_rotated_secrets_are_accepted_and_duplicates_ignored(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator
) -> None:
    incident_id = open_p0(client, store, pd)
    body, headers = pd.webhook("incident.escalated", dedup_key(incident_id), secrets=(SECRET_OLD, "third"))
    assert client.post("/pagerduty", content=body, headers=headers).status_code == 202
    wait_until(lambda: "pagerduty_escalated" in kinds(store, incident_id))
    again = client.post("/pagerduty", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert kinds(store, incident_id).count("pagerduty_escalated") == 1


def test_webhooks_about_other_incidents_are_recorded_and_ignored(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator
) -> None:
    body, headers = pd.webhook("incident.acknowledged", "someone-elses-key", secrets=(SECRET_NEW,))
    assert client.post("/pagerduty", content=body, headers=headers).status_code == 202
    wait_until(lambda: store.redis_client.xlen(store.key("pd", "ignored")) == 1)
    assert store.recent() == []


def test_429_then_success_delivers_exactly_once_and_the_timeline_says_so(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator
) -> None:
    pd.fail_next(429, path="/v2/enqueue", times=2, retry_after=1)  # the client's one quick retry fails too
    incident_id = open_p0(client, store, pd)
    assert len(pd.events("trigger")) == 1
    assert len(pd.calls_to("/v2/enqueue", ok=False)) == 2
    k = kinds(store, incident_id)
    assert k.index("pagerduty_delivery_failed") < k.index("pagerduty_triggered")


def test_resolving_anywhere_closes_both(
    client: TestClient, store: IncidentStore, pd: PagerDutyEmulator
) -> None:
    incident_id = open_p0(client, store, pd)
    client.post(
        "/alertmanager",
        json=p0(alert("VLLMServiceDown", severity="critical", status="resolved")),
        headers=AUTH,
    )
    wait_until(lambda: "pagerduty_resolved" in kinds(store, incident_id))
    assert pd.incidents[dedup_key(incident_id)].status == "resolved"
    # the group fires again within the reopen window: the same incident reopens and pages again ...
    client.post(
        "/alertmanager",
        json=p0(alert("VLLMServiceDown", severity="critical", starts_at="2026-11-26T12:00:00Z")),
        headers=AUTH,
    )
    wait_until(lambda: kinds(store, incident_id).count("pagerduty_triggered") == 2)
    assert store.get(incident_id).status is IncidentStatus.TRIGGERED
    assert "reopened" in kinds(store, incident_id)
    assert pd.incidents[dedup_key(incident_id)].status == "triggered"  # a new PagerDuty incident
    # ... and this time PagerDuty resolves it: the bot's incident follows, nothing is sent back
    resolves_before = len(pd.events("resolve"))
    deliver(client, pd, "incident.resolved", incident_id)
    wait_until(lambda: store.get(incident_id).status is IncidentStatus.RESOLVED)
    wait_until(lambda: store.redis_client.hget(store.key("pd", incident_id), "state") == b"resolved")
    assert len(pd.events("resolve")) == resolves_before


def test_unacknowledged_p0_escalates_once_into_the_slack_thread_and_an_ack_stops_it(
    client: TestClient,
    store: IncidentStore,
    pd: PagerDutyEmulator,
    emulator: SlackEmulator,
    celery_worker: object,
) -> None:
    from datetime import UTC, datetime, timedelta

    from bot.tasknames import TIMERS_TICK as TASK_TIMERS_TICK
    from workers.celery_app import app

    incident_id = open_p0(client, store, pd)
    later = (datetime.now(UTC) + timedelta(minutes=16)).isoformat()  # P0 escalates after 15 min
    app.send_task(TASK_TIMERS_TICK, kwargs={"now": later})
    wait_until(lambda: "escalated" in kinds(store, incident_id))

    def thread_mentions_escalation() -> bool:
        roots = emulator.channel_messages("C0CRIT0001", top_level_only=True)
        replies = emulator.thread("C0CRIT0001", roots[0].ts) if roots else []
        return any("scalat" in to_console({"blocks": r.blocks, "text": r.text}) for r in replies)

    wait_until(thread_mentions_escalation)
    app.send_task(TASK_TIMERS_TICK, kwargs={"now": later})  # the same instant again: nothing more
    deliver(client, pd, "incident.acknowledged", incident_id)
    wait_until(lambda: store.get(incident_id).status is IncidentStatus.ACKNOWLEDGED)
    much_later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    app.send_task(TASK_TIMERS_TICK, kwargs={"now": much_later})
    wait_until(lambda: worker_idle(celery_worker, store.redis_client))
    assert kinds(store, incident_id).count("escalated") == 1
