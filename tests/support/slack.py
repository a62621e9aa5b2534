"""Slack test helpers: signing requests with the real v0 scheme, payloads, a recording task sender."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any
from urllib.parse import urlencode

from bot.models import AlertmanagerWebhook, Incident
from bot.storage.incidents import IncidentStore
from tests.support.payloads import alert, notification

SIGNING_SECRET = "test-signing-secret-8f1c2a"
TEAM = "T0EMULATOR"
RESPONDER = "URESP0001"
GROUP_RESPONDER = "UGRPMEM01"  # a responder only through the user group S0RESPOND
APPROVER = "UAPPR0001"
STRANGER = "USTRANGE1"


def sign(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with a request body: v0 HMAC-SHA256 over `v0:{ts}:{body}`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{ts}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def command_body(
    text: str, *, user: str = RESPONDER, response_url: str = "", trigger: str | None = None
) -> bytes:
    """The form body of a `/incident` slash command."""
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": TEAM,
            "team_domain": "emulator",
            "channel_id": "C0GENERAL1",
            "channel_name": "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/incident",
            "text": text,
            "api_app_id": "A0INCIDENT",
            "response_url": response_url or "http://127.0.0.1:9/unrouted/commands/T0/1/x",
            "trigger_id": trigger or f"trig.{time.monotonic_ns()}",
        }
    ).encode()


def action_body(
    action_id: str,
    value: str,
    *,
    user: str = RESPONDER,
    channel: str = "C0HIGH0001",
    message_ts: str = "1800000001.000002",
    response_url: str = "",
) -> bytes:
    """The form body of a block_actions interaction (`payload` = JSON)."""
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "emulator"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0INCIDENT",
        "trigger_id": f"trig.{time.monotonic_ns()}",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "channel": {"id": channel, "name": "incidents-high"},
        "response_url": response_url or "http://127.0.0.1:9/unrouted/actions/T0/1/x",
        "actions": [
            {
                "type": "button",
                "block_id": "b",
                "action_id": action_id,
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def event_body(text: str, *, event_id: str = "Ev0001", user: str = RESPONDER) -> bytes:
    """An Events API app_mention callback (JSON)."""
    return json.dumps(
        {
            "token": "x",
            "team_id": TEAM,
            "api_app_id": "A0INCIDENT",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": {
                "type": "app_mention",
                "user": user,
                "text": f"<@UBOTEMU01> {text}",
                "ts": "1800000009.000100",
                "channel": "C0GENERAL1",
                "event_ts": "1800000009.000100",
            },
        }
    ).encode()


class RecordingSender:
    """A TaskSender that records instead of enqueuing (for the runbook tasks other issues implement)."""

    def __init__(self, forward: Any = None, forward_prefix: str = "workers.tasks.notify.") -> None:
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any], float | None]] = []
        self._forward = forward
        self._prefix = forward_prefix
        self._lock = threading.Lock()

    def send(
        self,
        name: str,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
    ) -> str:
        """Record the task; forward the Slack tasks to a real sender when one is given."""
        with self._lock:
            self.sent.append((name, tuple(args), dict(kwargs or {}), countdown))
        if self._forward is not None and name.startswith(self._prefix):
            return str(self._forward.send(name, args=args, kwargs=kwargs, countdown=countdown))
        return f"task-{len(self.sent)}"

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """(args, kwargs) of every recorded task with this name."""
        with self._lock:
            return [(a, k) for n, a, k, _ in self.sent if n == name]


def open_incident(
    store: IncidentStore, n: int = 1, *, severity: str = "critical", **annotations: str
) -> Incident:
    """Open an incident through the real intake path (P1 for severity=critical)."""
    a = alert(f"VLLMDown{n}", fingerprint=f"fp{n:06d}", severity=severity)
    a["annotations"].update(annotations)
    body = notification([a], group_key=f'{{}}:{{alertname="VLLMDown{n}"}}')
    body["commonAnnotations"].update(annotations)
    webhook = AlertmanagerWebhook.model_validate(body)
    result = store.apply_notification(webhook, webhook.idempotency_key())
    assert result.incident_id is not None
    return store.get(result.incident_id)
