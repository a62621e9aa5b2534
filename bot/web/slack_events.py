"""``POST /slack/events``: the Bolt app (bot.slack.app) behind the web app's body limit."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp

from bot import wiring
from bot.settings import Settings
from bot.slack.app import COMMAND
from bot.tasknames import TaskSender
from bot.web.body import BodyTooLarge, read_limited_body

log = logging.getLogger("incident_bot.slack.web")


async def slack_events(request: Request) -> Response:
    """Hand one Slack request (slash command, interactivity, event) to the Bolt app, body limit first."""
    handler: AsyncSlackRequestHandler = request.app.state.slack_handler
    limit: int = request.app.state.slack_body_limit
    try:
        body = await read_limited_body(request, limit)
    except BodyTooLarge:
        return JSONResponse({"error": f"body larger than {limit} bytes"}, status_code=413)
    sent = False

    async def replay() -> dict[str, Any]:
        # Bolt reads the body again: give it the bytes already read, once, then a disconnect
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return await handler.handle(Request(request.scope, replay))


def mount_slack(
    app: FastAPI, settings: Settings, *, redis_client: redis.Redis, sender: TaskSender | None = None
) -> AsyncApp:
    """Add `POST /slack/events` (slash commands, interactivity and events) to the web app."""
    bolt = wiring.build_bolt(settings, redis_client, sender=sender)
    app.state.slack_handler = AsyncSlackRequestHandler(bolt)
    app.state.slack_body_limit = settings.max_body_bytes
    app.add_api_route(
        "/slack/events",
        slack_events,
        methods=["POST"],
        summary="Slack slash commands, interactivity and events (signed)",
    )
    log.info("Slack app mounted at POST /slack/events (command %s)", COMMAND)
    return bolt
