"""The ASGI application: assembles the webhook receivers, health, readiness and metrics (bot.web.handlers)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI

from bot import __version__, wiring
from bot.errors import ConfigError
from bot.models import AlertmanagerWebhook
from bot.settings import Settings
from bot.tasknames import TaskSender
from bot.web import handlers
from bot.web.handlers import WebState
from bot.web.ingest import AlertmanagerIngest
from bot.web.metrics import StoreCollector, WebMetrics
from bot.web.publisher import Publisher, RedisPublisher
from bot.web.slack_events import mount_slack

log = logging.getLogger("incident_bot.web")


def _require_alertmanager_auth(settings: Settings) -> None:
    if not settings.alertmanager_auth_configured and not settings.alertmanager_allow_anonymous:
        raise ConfigError(
            "no Alertmanager credentials: set ALERTMANAGER_TOKEN (or ALERTMANAGER_USERNAME and "
            "ALERTMANAGER_PASSWORD); ALERTMANAGER_ALLOW_ANONYMOUS=true waives this for local tests only"
        )


class BotApp(FastAPI):
    """FastAPI, with ``POST /alertmanager`` answered ahead of its middleware and routing (bot.web.ingest).

    The route stays registered in FastAPI too (other methods get its 405; OpenAPI documents it), but a
    POST never reaches it: ingest is the hot path, and that machinery cost a third of its throughput.
    """

    fast_ingest: AlertmanagerIngest | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry: the ingest fast path, else FastAPI."""
        if (
            self.fast_ingest is not None
            and scope["type"] == "http"
            and scope["path"] == "/alertmanager"
            and scope["method"] == "POST"
        ):
            await self.fast_ingest(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    redis_client: redis.Redis | None = None,
    slack_sender: TaskSender | None = None,
) -> BotApp:
    """Build the web app; raises ConfigError when Alertmanager auth is neither configured nor waived."""
    _require_alertmanager_auth(settings)
    client = redis_client or wiring.redis_client(settings, "web")
    store = wiring.incident_store(settings, client)
    pub = publisher or RedisPublisher(settings)
    metrics = WebMetrics()
    broker = wiring.redis_client(settings, "metrics", url=settings.effective_broker_url)
    metrics.registry.register(StoreCollector(store, broker))

    app = BotApp(
        title="llmd-incident-bot",
        version=__version__,
        description="Receives Alertmanager, Slack and PagerDuty webhooks and turns them into incidents.",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.web = WebState(settings, store, metrics, pub, client, settings.pagerduty_webhook_secret_list)
    app.fast_ingest = AlertmanagerIngest(app.state.web)
    _add_routes(app, settings)
    if settings.slack_configured:
        mount_slack(app, settings, redis_client=client, sender=slack_sender)
    else:
        log.info(
            "Slack not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET unset): /slack/events not mounted"
        )
    _install_openapi(app)
    return app


def _add_routes(app: FastAPI, settings: Settings) -> None:
    """Mount /alertmanager, /healthz, /readyz, /metrics, and /pagerduty when its secrets are set."""
    # A plain Starlette route: FastAPI's per-request dependency machinery cost ~25% of ingest throughput
    # here and this endpoint parses its own body anyway; its OpenAPI entry is added by _install_openapi.
    app.router.add_route("/alertmanager", handlers.alertmanager, methods=["POST"], include_in_schema=False)
    app.add_api_route("/healthz", handlers.healthz, methods=["GET"], summary="Liveness: the process answers")
    app.add_api_route("/readyz", handlers.readyz, methods=["GET"], summary="Readiness: Redis answers")
    app.add_api_route(
        "/metrics", handlers.metrics_endpoint, methods=["GET"], summary="The bot's own Prometheus metrics"
    )
    if settings.pagerduty_webhook_secret_list:
        app.router.add_route("/pagerduty", handlers.pagerduty, methods=["POST"], include_in_schema=False)
    else:
        log.info(
            "PagerDuty webhooks not configured (PAGERDUTY_WEBHOOK_SECRETS unset): /pagerduty not mounted"
        )


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
