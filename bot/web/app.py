"""The ASGI application: webhook receivers, health, readiness and metrics."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from bot import __version__, wiring
from bot.errors import BrokerUnavailable, ConfigError
from bot.integrations.pagerduty import verify_webhook
from bot.models import AlertmanagerWebhook
from bot.settings import Settings
from bot.tasknames import PAGERDUTY_WEBHOOK, QUEUE_NOTIFICATIONS
from bot.web.auth import alertmanager_authorized
from bot.web.metrics import StoreCollector, WebMetrics
from bot.web.publisher import Publisher, RedisPublisher

if TYPE_CHECKING:
    from bot.tasknames import TaskSender

log = logging.getLogger("incident_bot.web")


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit."""


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it grows past `limit` bytes (chunked bodies too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    redis_client: redis.Redis | None = None,
    slack_sender: TaskSender | None = None,
) -> FastAPI:
    """Build the web app; raises ConfigError when Alertmanager auth is neither configured nor waived."""
    if not settings.alertmanager_auth_configured and not settings.alertmanager_allow_anonymous:
        raise ConfigError(
            "no Alertmanager credentials: set ALERTMANAGER_TOKEN (or ALERTMANAGER_USERNAME and "
            "ALERTMANAGER_PASSWORD); ALERTMANAGER_ALLOW_ANONYMOUS=true waives this for local tests only"
        )
    client = redis_client or wiring.redis_client(settings, "web")
    store = wiring.incident_store(settings, client)
    pub = publisher or RedisPublisher(settings)
    metrics = WebMetrics()
    broker = wiring.redis_client(settings, "metrics", url=settings.effective_broker_url)
    metrics.registry.register(StoreCollector(store, broker))

    app = FastAPI(
        title="llmd-incident-bot",
        version=__version__,
        description="Receives Alertmanager, Slack and PagerDuty webhooks and turns them into incidents.",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics

    async def alertmanager(request: Request) -> Response:
        count = metrics.webhooks.labels
        if not alertmanager_authorized(settings, request.headers.get("authorization")):
            count("alertmanager", "unauthorized").inc()
            log.warning(
                "alertmanager webhook refused: bad or missing credentials from %s",
                request.client.host if request.client else "?",
            )
            return JSONResponse(
                {"error": "unauthorized: send the configured Bearer token or basic-auth credentials"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="incident-bot", Basic realm="incident-bot"'},
            )
        try:
            body = await read_limited_body(request, settings.max_body_bytes)
        except BodyTooLarge:
            count("alertmanager", "too_large").inc()
            return _error(413, f"body larger than {settings.max_body_bytes} bytes (MAX_BODY_BYTES)")
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            count("alertmanager", "bad_request").inc()
            return _error(400, f"body is not valid JSON: {exc}")
        try:
            webhook = AlertmanagerWebhook.model_validate(raw)
        except ValidationError as exc:
            count("alertmanager", "invalid").inc()
            details = _field_errors(exc)
            first = details[0]
            return _error(
                422, f"invalid Alertmanager payload: {first['field']}: {first['message']}", details=details
            )

        key = webhook.idempotency_key()
        started = time.perf_counter()
        try:
            queued = await pub.publish_alert_group(body, key)
        except BrokerUnavailable as exc:
            count("alertmanager", "unavailable").inc()
            log.error("alertmanager webhook not queued (503, Alertmanager will retry): %s", exc)
            return JSONResponse(
                {"error": "broker unavailable; retry later"}, status_code=503, headers={"Retry-After": "1"}
            )
        if not queued:
            count("alertmanager", "duplicate").inc()
            return JSONResponse({"status": "duplicate", "idempotency_key": key}, status_code=200)
        metrics.enqueue_seconds.observe(time.perf_counter() - started)
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

    # A plain Starlette route: FastAPI's per-request dependency machinery cost ~25% of ingest throughput
    # here and this endpoint parses its own body anyway; its OpenAPI entry is added by _install_openapi.
    app.router.add_route("/alertmanager", alertmanager, methods=["POST"], include_in_schema=False)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: Redis answers")
    async def readyz() -> Response:
        try:
            await run_in_threadpool(client.ping)
        except RedisError as exc:
            return _error(503, f"redis unreachable: {exc}")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="The bot's own Prometheus metrics")
    async def metrics_endpoint() -> Response:
        payload = await run_in_threadpool(generate_latest, metrics.registry)
        return PlainTextResponse(payload, media_type=CONTENT_TYPE_LATEST)

    secrets = settings.pagerduty_webhook_secret_list

    async def pagerduty(request: Request) -> Response:
        count = metrics.webhooks.labels
        try:
            body = await read_limited_body(request, settings.max_body_bytes)
        except BodyTooLarge:
            count("pagerduty", "too_large").inc()
            return _error(413, f"body larger than {settings.max_body_bytes} bytes (MAX_BODY_BYTES)")
        if not verify_webhook(body, request.headers.get("x-pagerduty-signature"), secrets):
            count("pagerduty", "unauthorized").inc()
            log.warning("pagerduty webhook refused: no valid X-PagerDuty-Signature")
            return _error(401, "invalid or missing X-PagerDuty-Signature")
        webhook_id = request.headers.get("x-webhook-id", "")
        if not webhook_id or len(webhook_id) > 200:
            count("pagerduty", "bad_request").inc()
            return _error(400, "missing X-Webhook-Id header")
        try:
            event = json.loads(body)["event"]
            if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
                raise TypeError("event.event_type")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            count("pagerduty", "invalid").inc()
            return _error(422, f"not a PagerDuty v3 webhook: missing or invalid {exc}")
        try:
            queued = await pub.publish(
                PAGERDUTY_WEBHOOK,
                QUEUE_NOTIFICATIONS,
                json.dumps([event, webhook_id]).encode(),
                argsrepr=f"(<pagerduty {event['event_type']}>, {webhook_id!r})",
                unless=store.key("pd", "webhook", webhook_id),
            )
        except BrokerUnavailable as exc:
            count("pagerduty", "unavailable").inc()
            log.error("pagerduty webhook not queued (503, PagerDuty will retry): %s", exc)
            return JSONResponse(
                {"error": "broker unavailable"}, status_code=503, headers={"Retry-After": "1"}
            )
        count("pagerduty", "queued" if queued else "duplicate").inc()
        return JSONResponse(
            {"status": "queued" if queued else "duplicate"}, status_code=202 if queued else 200
        )

    if secrets:
        app.router.add_route("/pagerduty", pagerduty, methods=["POST"], include_in_schema=False)
    else:
        log.info(
            "PagerDuty webhooks not configured (PAGERDUTY_WEBHOOK_SECRETS unset): /pagerduty not mounted"
        )

    if settings.slack_configured:
        from bot.slack.app import mount_slack  # imported only when used: keeps Slack optional

        mount_slack(app, settings, redis_client=client, sender=slack_sender)
    else:
        log.info(
            "Slack not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET unset): /slack/events not mounted"
        )

    _install_openapi(app)
    return app


ALERTMANAGER_OPENAPI: dict[str, Any] = {
    "post": {
        "summary": "Alertmanager webhook receiver (payload version 4)",
        "operationId": "alertmanager_webhook",
        "security": [{"bearer": []}, {"basic": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AlertmanagerWebhook"}}},
        },
        "responses": {
            "202": {"description": "Queued."},
            "200": {"description": "Already processed (status=duplicate); nothing queued."},
            "400": {"description": "Body is not JSON."},
            "401": {"description": "Missing or wrong credentials."},
            "413": {"description": "Body larger than MAX_BODY_BYTES."},
            "422": {"description": "JSON that is not a valid v4 payload; names the field."},
            "503": {"description": "Broker unreachable; Alertmanager retries."},
        },
    }
}


def _install_openapi(app: FastAPI) -> None:
    """Add the webhook route and body schemas to the generated OpenAPI document (for fuzzers and clients)."""
    original = app.openapi
    webhook_schema = AlertmanagerWebhook.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(webhook_schema.pop("$defs", {}))
    components["AlertmanagerWebhook"] = webhook_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            }
            schema["paths"]["/alertmanager"] = ALERTMANAGER_OPENAPI
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
