"""A PagerDuty emulator on loopback HTTPS: Events API v2, change events, REST `PUT /incidents`.

The official client refuses non-https base URLs, so the emulator serves TLS with a throw-away CA made
with `cryptography` (bot/sandbox/tls.py); pass `emulator.ca_path` as the client's `verify`. It records
every call, can be told to answer 429 or 5xx, keeps the alert state per dedup_key (a trigger after a
resolve opens a new incident, as PagerDuty does), and signs v3 webhook deliveries about those incidents
for the bot's receiver.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bot.integrations.pagerduty import sign_webhook
from bot.sandbox.loopback import serve, shutdown
from bot.sandbox.tls import issue_loopback_certificate

EVENT_SEVERITIES = {"critical", "error", "warning", "info"}
Reply = tuple[int, Any, dict[str, str]]


def _invalid(*errors: str) -> Reply:
    """The Events API's 400 answer."""
    return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}, {}


def _rest_error(status: int, message: str, *errors: str) -> Reply:
    """A REST API error answer."""
    return status, {"error": {"message": message, "errors": list(errors)}}, {}


@dataclass
class Call:
    """One request the emulator received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float


@dataclass
class PDIncident:
    """An incident the emulated PagerDuty opened for a dedup key."""

    id: str
    dedup_key: str
    title: str
    status: str = "triggered"
    history: list[str] = field(default_factory=list)


class PagerDutyEmulator:
    """Loopback HTTPS server speaking the PagerDuty Events v2 and REST v2 wire formats used by the bot."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        if not host.startswith("127."):
            raise ValueError("the PagerDuty emulator listens on loopback only")
        self.host = host
        self.calls: list[Call] = []
        self.incidents: dict[str, PDIncident] = {}  # dedup_key -> current incident
        self._ids = itertools.count(1)
        self._failures: list[tuple[re.Pattern[str], int, int | None]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="pd-emulator-"))
        self.ca_path = self._dir / "ca.pem"

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> PagerDutyEmulator:
        """Start serving HTTPS on a free port."""
        certificate = issue_loopback_certificate(self.host)
        certificate.write_ca(self.ca_path)
        self._server = serve(
            self._handle,
            host=self.host,
            name="pd-emulator",
            methods=("POST", "PUT"),
            tls=certificate.server_context(),
        )
        return self

    def stop(self) -> None:
        """Stop serving."""
        shutdown(self._server)
        self._server = None

    def __enter__(self) -> PagerDutyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, for both the Events and the REST client."""
        assert self._server is not None, "not started"
        return f"https://{self.host}:{self._server.server_address[1]}"

    # --- scripting -----------------------------------------------------------------------------
    def fail_next(
        self, status: int, *, path: str = r".*", times: int = 1, retry_after: int | None = None
    ) -> None:
        """Answer the next `times` requests whose path matches with `status` (e.g. 429, 503)."""
        with self._lock:
            for _ in range(times):
                self._failures.append((re.compile(path), status, retry_after))

    def calls_to(self, path: str, *, method: str | None = None, ok: bool | None = None) -> list[Call]:
        """Recorded calls to a path (exact match), optionally only successful (2xx) or failed ones."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.path == path
                and (method is None or c.method == method)
                and (ok is None or (200 <= c.status < 300) == ok)
            ]

    def events(self, action: str | None = None) -> list[dict[str, Any]]:
        """Accepted Events API v2 bodies, optionally of one event_action."""
        return [
            c.body
            for c in self.calls_to("/v2/enqueue", ok=True)
            if action is None or c.body.get("event_action") == action
        ]

    # --- webhooks ------------------------------------------------------------------------------
    def webhook(
        self,
        event_type: str,
        dedup_key: str,
        *,
        agent_email: str = "oncall@example.com",
        agent_name: str = "On-call Engineer",
        secrets: tuple[str, ...] = (),
    ) -> tuple[bytes, dict[str, str]]:
        """A v3 webhook delivery (body, headers) about the incident for `dedup_key`, signed with `secrets`."""
        incident = self.incidents.get(dedup_key)
        incident_id = incident.id if incident else f"PUNKNOWN{next(self._ids)}"
        status = {"incident.acknowledged": "acknowledged", "incident.resolved": "resolved"}.get(
            event_type, incident.status if incident else "triggered"
        )
        body = {
            "event": {
                "id": f"01{uuid.uuid4().hex[:24].upper()}",
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "agent": {
                    "html_url": "https://example.pagerduty.com/users/PUSER01",
                    "id": "PUSER01",
                    "self": "https://api.pagerduty.com/users/PUSER01",
                    "summary": agent_name,
                    "type": "user_reference",
                    "email": agent_email,
                },
                "client": None,
                "data": {
                    "id": incident_id,
                    "type": "incident",
                    "self": f"https://api.pagerduty.com/incidents/{incident_id}",
                    "html_url": f"https://example.pagerduty.com/incidents/{incident_id}",
                    "number": int(re.sub(r"\D", "", incident_id) or 0),
                    "status": status,
                    "incident_key": dedup_key,
                    "title": incident.title if incident else "unknown",
                    "urgency": "high",
                },
            }
        }
        raw = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "PagerDuty-Webhook/V3.0",
            "X-Webhook-Id": str(uuid.uuid4()),
            "X-Webhook-Subscription": "PSUB001",
            "X-PagerDuty-Signature": sign_webhook(raw, secrets),
        }
        return raw, headers

    # --- request handling ----------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        path = req.path.split("?", 1)[0]
        status, payload, extra = self._respond(req.command, path, dict(req.headers), body)
        with self._lock:
            self.calls.append(Call(req.command, path, dict(req.headers), body, status, time.monotonic()))
        data = json.dumps(payload).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            req.send_header(key, value)
        req.end_headers()
        req.wfile.write(data)

    def _respond(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        with self._lock:
            for index, (pattern, status, retry_after) in enumerate(self._failures):
                if pattern.fullmatch(path):
                    del self._failures[index]
                    extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                    return status, {"status": "error", "message": f"emulated {status}"}, extra
        if method == "POST" and path == "/v2/enqueue":
            return self._enqueue(body)
        if method == "POST" and path == "/v2/change/enqueue":
            if not isinstance(body, dict) or not body.get("routing_key") or "payload" not in body:
                return 400, {"status": "invalid event", "message": "Event object is invalid"}, {}
            summary = body["payload"].get("summary")
            if not summary or not body["payload"].get("source"):
                return (
                    400,
                    {"status": "invalid event", "errors": ["payload.summary and source are required"]},
                    {},
                )
            return 202, {"status": "success", "message": "Change event processed"}, {}
        if method == "PUT" and path == "/incidents":
            return self._put_incidents(headers, body)
        return _rest_error(404, "Not Found")

    def _enqueue(self, body: Any) -> Reply:
        errors = []
        if not isinstance(body, dict):
            return (
                400,
                {"status": "invalid event", "message": "Event object is invalid", "errors": ["not JSON"]},
                {},
            )
        action = body.get("event_action")
        if not body.get("routing_key"):
            errors.append("'routing_key' is missing or blank")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        key = body.get("dedup_key")
        if key is not None and (not isinstance(key, str) or len(key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            payload = body.get("payload") or {}
            for name in ("summary", "source", "severity"):
                if not payload.get(name):
                    errors.append(f"'payload.{name}' is missing or blank")
            if payload.get("severity") not in EVENT_SEVERITIES:
                errors.append("'payload.severity' is invalid")
            if len(payload.get("summary") or "") > 1024:
                errors.append("'payload.summary' is longer than 1024")
        elif not key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if errors:
            return (
                400,
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                {},
            )
        key = key or uuid.uuid4().hex
        with self._lock:
            current = self.incidents.get(key)
            if action == "trigger" and (current is None or current.status == "resolved"):
                title = body["payload"]["summary"]
                current = PDIncident(id=f"PINC{next(self._ids):04d}", dedup_key=key, title=title)
                self.incidents[key] = current
            if current is not None:
                if action == "acknowledge" and current.status == "triggered":
                    current.status = "acknowledged"
                elif action == "resolve":
                    current.status = "resolved"
                current.history.append(str(action))
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}, {}

    def _put_incidents(self, headers: dict[str, str], body: Any) -> Reply:
        lower = {k.lower(): v for k, v in headers.items()}
        if not lower.get("authorization", "").startswith("Token token="):
            return _rest_error(401, "Unauthorized")
        sender = lower.get("from")
        if not sender:
            return _rest_error(400, "Invalid Input Provided", "From header is required")
        items = body.get("incidents") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > 250:
            return _rest_error(400, "Invalid Input Provided", "incidents: 1-250 items")
        out = []
        with self._lock:
            by_id = {i.id: i for i in self.incidents.values()}
            for item in items:
                incident = by_id.get(item.get("id", ""))
                if incident is None:
                    return _rest_error(404, "Incident Not Found")
                if item.get("status") in ("acknowledged", "resolved"):
                    incident.status = item["status"]
                    incident.history.append(f"rest:{item['status']}:{sender}")
                out.append({"id": incident.id, "type": "incident", "status": incident.status})
        return 200, {"incidents": out}, {}
