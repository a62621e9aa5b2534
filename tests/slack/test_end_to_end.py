"""End to end on real Redis and the real Celery worker: Slack request -> queue -> worker -> emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

import workers.celery_app
import workers.slack_tasks
import workers.tasks
from bot import tasknames
from bot.models import IncidentStatus
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.slack.runtime import SlackRuntime
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender, build_runtime
from tests.support.fixtures import wait_until
from tests.support.payloads import notification
from tests.support.slack import RESPONDER, RecordingSender, action_body, command_body, open_incident, sign

pytestmark = pytest.mark.integration
HIGH = "C0HIGH0001"


@pytest.fixture
def sender(slack_settings: Settings) -> RecordingSender:
    """Slack tasks go to the real broker; runbook-engine tasks (other issues) are only recorded."""
    return RecordingSender(forward=CeleryTaskSender(slack_settings))


@pytest.fixture
def worker_runtime(
    slack_settings: Settings, redis_client: redis.Redis, sender: RecordingSender, celery_worker: object
) -> Iterator[SlackRuntime]:
    rt = build_runtime(slack_settings, sender=sender)
    workers.slack_tasks.use_runtime(rt)
    yield rt
    workers.slack_tasks.use_runtime(None)


@pytest.fixture
def client(
    slack_settings: Settings, worker_runtime: SlackRuntime, sender: RecordingSender
) -> Iterator[TestClient]:
    with TestClient(create_app(slack_settings, slack_sender=sender)) as c:
        yield c


def test_slash_command_ack_goes_through_the_worker(
    client: TestClient, store: IncidentStore, emulator: SlackEmulator
) -> None:
    inc = open_incident(store)
    body = command_body(f"ack {inc.id}", user=RESPONDER, response_url=emulator.response_url("ack"))
    r = client.post(
        "/slack/events",
        content=body,
        headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "Working on" in r.text
    reply = wait_until(lambda: [x for x in emulator.responses if x["path"] == "/response/ack"])
    assert "acknowledged" in reply[0]["text"]  # type: ignore[index]
    assert store.get(inc.id).status is IncidentStatus.ACKNOWLEDGED
    # The notify task the command queued gave the incident its root message, showing who acked.
    roots = wait_until(lambda: emulator.channel_messages(HIGH, top_level_only=True))
    root = roots[0]  # type: ignore[index]
    wait_until(lambda: emulator.thread(HIGH, root.ts))
    assert "Acknowledged by @rita" in to_console({"blocks": root.blocks}, users={RESPONDER: "rita"})


def test_button_click_updates_the_root_message(
    client: TestClient, store: IncidentStore, emulator: SlackEmulator, worker_runtime: SlackRuntime
) -> None:
    inc = open_incident(store)
    worker_runtime.notifier.sync(inc.id)
    (root,) = emulator.channel_messages(HIGH, top_level_only=True)
    assert "[Acknowledge]" in to_console({"blocks": root.blocks})
    body = action_body("incident_ack", inc.id, user=RESPONDER, message_ts=root.ts)
    r = client.post(
        "/slack/events",
        content=body,
        headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    wait_until(lambda: emulator.messages[(HIGH, root.ts)].edits >= 1)
    shown = to_console({"blocks": emulator.messages[(HIGH, root.ts)].blocks}, users={RESPONDER: "rita"})
    assert "Acknowledged by @rita" in shown and "[Acknowledge]" not in shown and "[Resolve]" in shown


def test_alertmanager_webhook_becomes_a_slack_root_message(
    client: TestClient,
    store: IncidentStore,
    emulator: SlackEmulator,
    slack_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers.celery_app, "_fanout", slack_settings)  # the worker decides the fan-out
    body = notification()
    body["alerts"][0]["labels"]["severity"] = "critical"
    body["commonAnnotations"]["summary"] = "<!channel> queue depth {{ 7*7 }}"
    r = client.post("/alertmanager", json=body, headers={"Authorization": "Bearer test-token-0123456789"})
    assert r.status_code == 202
    roots = wait_until(lambda: emulator.channel_messages(HIGH, top_level_only=True))
    text = roots[0].text  # type: ignore[index]
    assert "INC-0001" in text and "&lt;!channel&gt; queue depth {{ 7*7 }}" in text


def test_storm_of_500_incidents_stays_within_the_channel_rate(
    worker_runtime: SlackRuntime, store: IncidentStore, emulator: SlackEmulator, slack_settings: Settings
) -> None:
    n = 500
    incidents = [open_incident(store, i) for i in range(1, n + 1)]
    celery = CeleryTaskSender(slack_settings)
    for inc in incidents:
        celery.send(tasknames.NOTIFY_INCIDENT, args=(inc.id, "storm"))
    threshold = slack_settings.slack_storm_threshold

    def digest_complete() -> bool:
        top = emulator.channel_messages(HIGH, top_level_only=True)
        return len(top) > threshold and f"{n - threshold} incidents" in top[-1].text

    wait_until(digest_complete, timeout=90)
    wait_until(lambda: store.task_stats().get("slack_notify:digest", 0) == n - threshold, timeout=30)

    posts = emulator.ok_calls_of("chat.postMessage")
    assert all(c.params["channel"] == "#incidents-high" for c in posts)
    assert len(posts) == threshold + 1  # the first incidents' roots, then one digest; no thread replies
    times = sorted(c.at for c in posts)
    burst, rate = slack_settings.slack_post_burst, slack_settings.slack_posts_per_second
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= burst + rate  # measured: posts in any 1-second window of this channel
    span = times[-1] - times[0]
    assert len(times) <= burst + rate * span + 1  # and the sustained rate over the whole storm
    updates = emulator.ok_calls_of("chat.update")
    print(
        f"storm: {len(posts)} posts over {span:.1f}s (worst 1s window {worst}), {len(updates)} digest updates"
    )
