"""POST /slack/events through the ASGI app with really signed requests: verify, de-duplicate, queue, ack."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from bot import tasknames
from bot.sandbox.slack_emulator import SlackEmulator
from bot.settings import Settings
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender
from tests.support.slack import RESPONDER, TEAM, RecordingSender, action_body, command_body, event_body, sign

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def client(
    slack_settings: Settings, redis_client: redis.Redis, sender: RecordingSender
) -> Iterator[TestClient]:
    with TestClient(create_app(slack_settings, slack_sender=sender)) as c:
        yield c


def post(client: TestClient, body: bytes, *, headers: dict[str, str] | None = None, **sign_kw: int) -> object:
    """POST a signed body to /slack/events."""
    h = {**FORM, **sign(body, **sign_kw), **(headers or {})}  # type: ignore[arg-type]
    return client.post("/slack/events", content=body, headers=h)


@pytest.mark.parametrize(
    "text",
    [
        "list",
        "show INC-0001",
        "status",
        "ack INC-0001",
        "resolve INC-0001 fixed by rollback",
        "sev INC-0001 P0 all regions",
        "commander INC-0001 <@U0ABC123|rita>",
        "runbook INC-0001 scale-decode --dry-run",
        "rollback llm-d/vllm-decode --to-revision 3 --incident INC-0001",
        "automation off",
        "automation status",
        "maintenance start llm-d 2h upgrade",
        "maintenance list",
    ],
)
def test_each_subcommand_is_acked_and_queued_without_calling_slack(
    client: TestClient, sender: RecordingSender, emulator: SlackEmulator, text: str
) -> None:
    started = time.perf_counter()
    r = post(client, command_body(text, user=RESPONDER))
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    assert "Working on" in r.text  # type: ignore[attr-defined]
    queued = sender.named(tasknames.SLACK_COMMAND)
    assert len(queued) == 1
    form = queued[0][0][0]
    assert form["text"] == text and form["user_id"] == RESPONDER and form["team_id"] == TEAM
    assert form["response_url"] and form["trigger_id"]
    # The 3-second rule holds by construction: no Web API call happens inside the request at all.
    assert emulator.calls == []
    print(f"ack of {text!r} took {elapsed * 1000:.1f} ms")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", "`/incident` commands"),
        ("frobnicate now", "unknown subcommand"),
        ("sev INC-1 P7", "not a severity"),
    ],
)
def test_help_and_mistakes_are_answered_in_the_ack(
    client: TestClient, sender: RecordingSender, emulator: SlackEmulator, text: str, expected: str
) -> None:
    r = post(client, command_body(text))
    assert r.status_code == 200  # type: ignore[attr-defined]
    assert expected in r.text and "Traceback" not in r.text  # type: ignore[attr-defined]
    assert sender.sent == [] and emulator.calls == []


def test_bad_signature_is_401_and_nothing_happens(client: TestClient, sender: RecordingSender) -> None:
    body = command_body("ack INC-0001")
    r = post(client, body, headers={"X-Slack-Signature": "v0=" + "0" * 64})
    assert r.status_code == 401  # type: ignore[attr-defined]
    r = post(client, body + b"&text=resolve", headers=sign(body))  # body changed after signing
    assert r.status_code == 401  # type: ignore[attr-defined]
    assert sender.sent == []


def test_stale_timestamp_is_401(client: TestClient, sender: RecordingSender) -> None:
    r = post(client, command_body("ack INC-0001"), timestamp=int(time.time()) - 301)
    assert r.status_code == 401  # type: ignore[attr-defined]
    assert sender.sent == []


def test_replay_inside_the_window_is_rejected(client: TestClient, sender: RecordingSender) -> None:
    body = command_body("ack INC-0001")
    headers = {**FORM, **sign(body)}
    first = client.post("/slack/events", content=body, headers=headers)
    replays = [client.post("/slack/events", content=body, headers=headers) for _ in range(5)]
    assert first.status_code == 200
    assert [r.status_code for r in replays] == [401] * 5
    assert len(sender.named(tasknames.SLACK_COMMAND)) == 1


def test_buttons_are_queued_and_link_buttons_only_acked(
    client: TestClient, sender: RecordingSender, emulator: SlackEmulator
) -> None:
    value = json.dumps({"incident_id": "INC-0001", "step_key": "scale/1"})
    for action_id, v in [("incident_ack", "INC-0001"), ("runbook_approve", value), ("link_grafana", "")]:
        r = post(client, action_body(action_id, v))
        assert r.status_code == 200  # type: ignore[attr-defined]
    queued = [a[0] for a, _ in sender.named(tasknames.SLACK_ACTION)]
    assert [q["action_id"] for q in queued] == ["incident_ack", "runbook_approve"]
    assert queued[1]["value"] == value and queued[1]["user_id"] == RESPONDER and queued[1]["team_id"] == TEAM
    assert queued[1]["channel_id"] == "C0HIGH0001" and queued[1]["message_ts"] and queued[1]["request_id"]
    assert emulator.calls == []


def test_event_retries_are_not_processed_twice(client: TestClient, sender: RecordingSender) -> None:
    body = event_body("list", event_id="Ev0RETRY1")
    json_headers = {"Content-Type": "application/json"}
    assert post(client, body, headers=json_headers).status_code == 200  # type: ignore[attr-defined]
    retry = {**json_headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    # A retry is re-signed (a later timestamp, so a new signature) and carries the same event_id.
    r = post(client, body, headers=retry, timestamp=int(time.time()) + 1)
    assert r.status_code == 200 and r.headers.get("x-slack-no-retry") == "1"  # type: ignore[attr-defined]
    queued = sender.named(tasknames.SLACK_COMMAND)
    assert len(queued) == 1 and queued[0][0][0]["text"] == "list" and queued[0][0][0]["thread_ts"]


def test_other_workspaces_are_refused_when_team_is_pinned(
    slack_settings: Settings, redis_client: redis.Redis, sender: RecordingSender
) -> None:
    app = create_app(slack_settings.model_copy(update={"slack_team_id": "T0OTHER"}), slack_sender=sender)
    with TestClient(app) as c:
        assert post(c, command_body("list")).status_code == 403  # type: ignore[attr-defined]
    assert sender.sent == []


def test_oversized_body_is_413(client: TestClient, slack_settings: Settings) -> None:
    body = command_body("x" * (slack_settings.max_body_bytes + 10))
    assert post(client, body).status_code == 413  # type: ignore[attr-defined]


def test_without_slack_settings_the_route_is_absent_and_logged(
    settings: Settings, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="incident_bot.web"):
        app = create_app(settings)
    assert any("Slack not configured" in r.getMessage() for r in caplog.records)
    with TestClient(app) as c:
        assert c.post("/slack/events", content=b"x").status_code == 404
        assert c.get("/healthz").status_code == 200


def test_half_a_slack_configuration_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be set together"):
        Settings(slack_bot_token=SecretStr("xoxb-1"))  # type: ignore[call-arg]


def test_celery_sender_puts_the_task_on_the_notifications_queue(settings: Settings) -> None:
    broker_settings = settings.model_copy(update={"broker_url": "redis://127.0.0.1:6379/14"})
    broker = redis.Redis.from_url(broker_settings.effective_broker_url)
    broker.delete("notifications", "runbooks")
    try:
        CeleryTaskSender(broker_settings).send(tasknames.SLACK_COMMAND, args=({"text": "list"},))
        CeleryTaskSender(broker_settings).send(tasknames.ROLLBACK_REQUEST, kwargs={"namespace": "llm-d"})
        (raw,) = broker.lrange("notifications", 0, -1)
        message = json.loads(raw)
        assert message["headers"]["task"] == tasknames.SLACK_COMMAND
        assert json.loads(base64.b64decode(message["body"]))[0] == [{"text": "list"}]
        (raw,) = broker.lrange("runbooks", 0, -1)
        assert json.loads(raw)["headers"]["task"] == tasknames.ROLLBACK_REQUEST
    finally:
        broker.delete("notifications", "runbooks")
