"""PagerDuty adapter on the official `pagerduty` client: Events API v2, change events, REST incident updates.

The client's own retry loops are cut to one quick retry (it would otherwise retry 429 forever and 503 six
times inside a worker); 429, 5xx and network failures surface as TransientError so Celery retries them with
backoff without blocking other work. Webhook signature verification (v3) lives here too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pagerduty import EventsApiV2Client, RestApiV2Client
from pagerduty.errors import Error as PagerDutyLibError
from pagerduty.errors import HttpError

from bot.errors import PermanentError, TransientError
from bot.severity import Severity

log = logging.getLogger("incident_bot.pagerduty")

#: Bot severity -> Events API v2 severity.
SEVERITY_MAP: Mapping[Severity, str] = {
    Severity.P0: "critical",
    Severity.P1: "error",
    Severity.P2: "warning",
    Severity.P3: "info",
}
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


def _limit_client_retries(client: Any) -> None:
    client.retry = {429: 1, 500: 1, 502: 1, 503: 1, 504: 1}
    client.sleep_timer = 0.2
    client.max_network_attempts = 1


def _translate(exc: Exception, action: str) -> Exception:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HttpError) and status is not None:
        if status == 429 or status >= 500:
            return TransientError(f"PagerDuty {action}: HTTP {status} (will retry)")
        return PermanentError(f"PagerDuty {action}: HTTP {status}: {str(exc)[:300]}")
    return TransientError(f"PagerDuty {action}: {exc.__class__.__name__}: {str(exc)[:300]}")


@dataclass(frozen=True)
class Link:
    """A link shown on the PagerDuty alert."""

    href: str
    text: str


class PagerDutyClient:
    """Pages, acknowledges and resolves through Events v2; updates incidents through REST v2."""

    def __init__(
        self,
        routing_key: str,
        *,
        api_token: str | None = None,
        service_from: str | None = None,
        events_url: str | None = None,
        api_url: str | None = None,
        verify: Any = True,
        timeout: int = 10,
    ) -> None:
        self._events = EventsApiV2Client(routing_key, base_url=events_url, verify=verify)
        _limit_client_retries(self._events)
        self._events.timeout = timeout
        self._rest: RestApiV2Client | None = None
        if api_token:
            self._rest = RestApiV2Client(
                api_token, default_from=service_from, base_url=api_url, verify=verify
            )
            _limit_client_retries(self._rest)
            self._rest.timeout = timeout
        self._service_from = service_from

    def trigger(
        self,
        *,
        dedup_key: str,
        summary: str,
        source: str,
        severity: Severity,
        custom_details: Mapping[str, Any] | None = None,
        links: Sequence[Link] = (),
    ) -> str:
        """Trigger (or update) the alert with this dedup key; returns the dedup key PagerDuty echoes."""
        if len(dedup_key) > MAX_DEDUP_KEY:
            raise PermanentError(f"dedup_key longer than {MAX_DEDUP_KEY} characters")
        try:
            return str(
                self._events.trigger(
                    summary[:MAX_SUMMARY],
                    source,
                    dedup_key=dedup_key,
                    severity=SEVERITY_MAP[severity],
                    custom_details=dict(custom_details or {}),
                    links=[{"href": link.href, "text": link.text} for link in links] or None,
                )
            )
        except (PagerDutyLibError, OSError) as exc:
            raise _translate(exc, "trigger") from exc

    def acknowledge(self, dedup_key: str) -> None:
        """Acknowledge the alert with this dedup key."""
        try:
            self._events.acknowledge(dedup_key)
        except (PagerDutyLibError, OSError) as exc:
            raise _translate(exc, "acknowledge") from exc

    def resolve(self, dedup_key: str) -> None:
        """Resolve the alert with this dedup key."""
        try:
            self._events.resolve(dedup_key)
        except (PagerDutyLibError, OSError) as exc:
            raise _translate(exc, "resolve") from exc

    def change_event(
        self, *, summary: str, source: str, custom_details: Mapping[str, Any], links: Sequence[Link] = ()
    ) -> None:
        """Send a change event (an action the bot or a person took)."""
        try:
            self._events.send_change_event(
                payload={
                    "summary": summary[:MAX_SUMMARY],
                    "source": source,
                    "custom_details": dict(custom_details),
                },
                links=[{"href": link.href, "text": link.text} for link in links],
            )
        except (PagerDutyLibError, OSError) as exc:
            raise _translate(exc, "change event") from exc

    def set_incident_status(self, incident_id: str, status: str, *, from_email: str | None) -> None:
        """Acknowledge or resolve a PagerDuty incident through REST, as the user `from_email`."""
        if self._rest is None:
            raise PermanentError("PAGERDUTY_API_TOKEN is not set: cannot update incidents through REST")
        sender = from_email or self._service_from
        if not sender:
            raise PermanentError("no From address: set PAGERDUTY_FROM_EMAIL or map the user to an email")
        try:
            self._rest.rput(
                "/incidents",
                json=[{"id": incident_id, "type": "incident_reference", "status": status}],
                headers={"From": sender},
            )
        except (PagerDutyLibError, OSError) as exc:
            raise _translate(exc, f"set incident {incident_id} {status}") from exc


def sign_webhook(body: bytes, secrets: Iterable[str]) -> str:
    """The X-PagerDuty-Signature value for `body`: one v1= HMAC-SHA256 per secret, comma-separated."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def verify_webhook(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """Whether any v1= signature in the header matches any configured secret (constant-time)."""
    if not header:
        return False
    offered = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        for candidate in offered:
            ok |= hmac.compare_digest(expected, candidate)
    return ok
