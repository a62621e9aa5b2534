"""The web endpoints as plain functions: each reads what it needs from ``request.app.state.web``.

`create_app` (bot.web.app) builds a `WebState` once and mounts these; nothing here builds clients.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from bot.errors import BrokerUnavailable
from bot.integrations.pagerduty import verify_webhook
from bot.models import AlertmanagerWebhook
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.tasknames import PAGERDUTY_WEBHOOK, QUEUE_PAGING
from bot.web.auth import alertmanager_authorized
from bot.web.body import BodyTooLarge, read_limited_body
from bot.web.metrics import WebMetrics
from bot.web.publisher import Publisher

log = logging.getLogger("incident_bot.web")


@dataclass(frozen=True)
class WebState:
    """What the endpoints share: settings, the store, metrics, the publisher and the state Redis client."""

    settings: Settings
    store: IncidentStore
    metrics: WebMetrics
    publisher: Publisher
    redis: redis.Redis
    pagerduty_secrets: list[str]


def web_state(request: Request) -> WebState:
    """The `WebState` of the app serving `request`."""
    state: WebState = request.app.state.web
    return state


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _unauthorized(request: Request) -> JSONResponse:
    log.warning(
        "alertmanager webhook refused: bad or missing credentials from %s",
        request.client.host if request.client else "?",
    )
    return JSONResponse(
        {"error": "unauthorized: send the configured Bearer token or basic-auth credentials"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="incident-bot", Basic realm="incident-bot"'},
    )


def _parse_alertmanager(body: bytes, web: WebState) -> AlertmanagerWebhook | Response:
    """The validated payload, or the 400/422 answer (counted) when the body is not one."""
    count = web.metrics.webhooks.labels
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        count("alertmanager", "bad_request").inc()
        return _error(400, f"body is not valid JSON: {exc}")
    try:
        return AlertmanagerWebhook.model_validate(raw)
    except ValidationError as exc:
        count("alertmanager", "invalid").inc()
        details = _field_errors(exc)
        first = details[0]
        return _error(
            422, f"invalid Alertmanager payload: {first['field']}: {first['message']}", details=details
        )


async def alertmanager(request: Request) -> Response:
    """POST /alertmanager: authenticate, validate and queue one Alertmanager v4 notification."""
    web = web_state(request)
    settings, count = web.settings, web.metrics.webhooks.labels
    if not alertmanager_authorized(settings, request.headers.get("authorization")):
        count("alertmanager", "unauthorized").inc()
        return _unauthorized(request)
    try:
        body = await read_limited_body(request, settings.max_body_bytes)
    except BodyTooLarge:
        count("alertmanager", "too_large").inc()
        return _error(413, f"body larger than {settings.max_body_bytes} bytes (MAX_BODY_BYTES)")
    webhook = _parse_alertmanager(body, web)
    if isinstance(webhook, Response):
        return webhook

    key = webhook.idempotency_key()
    started = time.perf_counter()
    try:
        queued = await web.publisher.publish_alert_group(body, key)
    except BrokerUnavailable as exc:
        count("alertmanager", "unavailable").inc()
        log.error("alertmanager webhook not queued (503, Alertmanager will retry): %s", exc)
        return JSONResponse(
            {"error": "broker unavailable; retry later"}, status_code=503, headers={"Retry-After": "1"}
        )
    if not queued:
        count("alertmanager", "duplicate").inc()
        return JSONResponse({"status": "duplicate", "idempotency_key": key}, status_code=200)
    web.metrics.enqueue_seconds.observe(time.perf_counter() - started)
    count("alertmanager", "queued").inc()
    log.info(
        "alertmanager webhook queued: group=%s status=%s alerts=%d truncated=%d key=%s",
        webhook.groupKey[:120],
        webhook.status.value,
        len(webhook.alerts),
        webhook.truncatedAlerts,
        key[:12],
    )
    return JSONResponse({"status": "queued", "idempotency_key": key}, status_code=202)


def _pagerduty_event(body: bytes) -> dict[str, Any]:
    """The `event` of a PagerDuty v3 webhook body; raises ValueError/KeyError/TypeError when there is none."""
    event = json.loads(body)["event"]
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
        raise TypeError("event.event_type")
    return event


async def pagerduty(request: Request) -> Response:
    """POST /pagerduty: verify the signature of a PagerDuty v3 webhook and queue its event once."""
    web = web_state(request)
    settings, count = web.settings, web.metrics.webhooks.labels
    try:
        body = await read_limited_body(request, settings.max_body_bytes)
    except BodyTooLarge:
        count("pagerduty", "too_large").inc()
        return _error(413, f"body larger than {settings.max_body_bytes} bytes (MAX_BODY_BYTES)")
    if not verify_webhook(body, request.headers.get("x-pagerduty-signature"), web.pagerduty_secrets):
        count("pagerduty", "unauthorized").inc()
        log.warning("pagerduty webhook refused: no valid X-PagerDuty-Signature")
        return _error(401, "invalid or missing X-PagerDuty-Signature")
    webhook_id = request.headers.get("x-webhook-id", "")
    if not webhook_id or len(webhook_id) > 200:
        count("pagerduty", "bad_request").inc()
        return _error(400, "missing X-Webhook-Id header")
    try:
        event = _pagerduty_event(body)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        count("pagerduty", "invalid").inc()
        return _error(422, f"not a PagerDuty v3 webhook: missing or invalid {exc}")
    try:
        queued = await web.publisher.publish(
            PAGERDUTY_WEBHOOK,
            QUEUE_PAGING,  # the route of PAGERDUTY_WEBHOOK (bot.tasknames)
            json.dumps([event, webhook_id]).encode(),
            argsrepr=f"(<pagerduty {event['event_type']}>, {webhook_id!r})",
            unless=web.store.key("pd", "webhook", webhook_id),
        )
    except BrokerUnavailable as exc:
        count("pagerduty", "unavailable").inc()
        log.error("pagerduty webhook not queued (503, PagerDuty will retry): %s", exc)
        return JSONResponse({"error": "broker unavailable"}, status_code=503, headers={"Retry-After": "1"})
    count("pagerduty", "queued" if queued else "duplicate").inc()
    return JSONResponse({"status": "queued" if queued else "duplicate"}, status_code=202 if queued else 200)


async def healthz() -> dict[str, str]:
    """GET /healthz: the process answers."""
    return {"status": "ok"}


async def readyz(request: Request) -> Response:
    """GET /readyz: ready when the state Redis answers PING."""
    try:
        await run_in_threadpool(web_state(request).redis.ping)
    except RedisError as exc:
        return _error(503, f"redis unreachable: {exc}")
    return JSONResponse({"status": "ready"})


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the web process's own Prometheus metrics."""
    payload = await run_in_threadpool(generate_latest, web_state(request).metrics.registry)
    return PlainTextResponse(payload, media_type=CONTENT_TYPE_LATEST)
