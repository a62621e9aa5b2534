"""The Slack HTTP endpoint: a Bolt `AsyncApp` mounted at ``POST /slack/events`` (HTTP mode).

In the request the bot only verifies, de-duplicates, parses and queues; it never calls the Web API, so
the 3-second acknowledgement deadline holds however slow Slack or the workers are:

1. Bolt verifies the ``v0`` signature and rejects timestamps older than 5 minutes (401).
2. `edge_guard` rejects a replay of a signed request inside that window (``SET NX EX 300`` on the
   signature, 401) and answers Events API retries of an event already taken with 200 and nothing else.
3. Listeners parse and ``send_task`` to the ``notifications`` queue, then ack. ``help`` and usage errors
   are answered directly in the ack. Authorization (which may call ``usergroups.users.list``) happens in
   the worker, which replies through the ``response_url``.

Authorization of the app itself uses a local `authorize` function (the configured bot token) instead of
Bolt's default ``auth.test`` call on the first request; with SLACK_TEAM_ID set, other workspaces get 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot import tasknames
from bot.errors import BrokerUnavailable
from bot.settings import Settings
from bot.slack.audit import AuditLog
from bot.slack.commands import USAGE, UsageError, parse
from bot.slack.mrkdwn import escape
from bot.slack.render import (
    ACTION_ACK,
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_RESOLVE,
    ACTION_ROLLBACK_APPROVE,
    ACTION_ROLLBACK_CANCEL,
    ACTION_ROLLBACK_SUGGESTED,
    ACTION_RUN_RUNBOOK,
    LINK_ACTION_PREFIX,
)
from bot.tasknames import TaskSender

log = logging.getLogger("incident_bot.slack.web")

COMMAND = "/incident"
REPLAY_TTL_SECONDS = 300
EVENT_DEDUP_TTL_SECONDS = 3600
_BUTTONS = re.compile(
    f"^({ACTION_ACK}|{ACTION_RESOLVE}|{ACTION_APPROVE}|{ACTION_DENY}|{ACTION_RUN_RUNBOOK}"
    f"|{ACTION_ROLLBACK_APPROVE}|{ACTION_ROLLBACK_CANCEL}|{ACTION_ROLLBACK_SUGGESTED})$"
)
_MENTION = re.compile(r"^\s*<@[A-Z0-9]+(?:\|[^>]*)?>\s*")
#: The slash command form fields the worker needs.
_COMMAND_FIELDS = (
    "team_id",
    "channel_id",
    "user_id",
    "user_name",
    "command",
    "text",
    "response_url",
    "trigger_id",
)


def _header(req: AsyncBoltRequest, name: str) -> str:
    values = req.headers.get(name) or []
    return str(values[0]) if values else ""


def build_bolt_app(
    settings: Settings, *, client: redis.Redis, sender: TaskSender, audit: AuditLog, key: Callable[..., str]
) -> AsyncApp:
    """The Bolt app with the edge guard, the `/incident` command, the buttons and app mentions."""
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        raise ValueError("Slack is not configured")
    token = settings.slack_bot_token.get_secret_value()

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=token)

    bolt = AsyncApp(
        name="llmd-incident-bot",
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        client=AsyncWebClient(base_url=settings.slack_api_url),  # the token comes from authorize()
        authorize=authorize,
        logger=logging.getLogger("incident_bot.slack.bolt"),
    )

    async def send(name: str, payload: dict[str, Any]) -> None:
        await asyncio.to_thread(sender.send, name, args=(payload,))

    @bolt.middleware
    async def edge_guard(
        req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        if settings.slack_team_id and req.context.team_id != settings.slack_team_id:
            log.warning("slack request from workspace %s refused (SLACK_TEAM_ID)", req.context.team_id)
            return BoltResponse(status=403, body="this app serves another workspace")
        signature = _header(req, "x-slack-signature")
        digest = hashlib.sha256(signature.encode()).hexdigest()
        fresh = await asyncio.to_thread(
            client.set, key("slack", "sig", digest), "1", nx=True, ex=REPLAY_TTL_SECONDS
        )
        if not fresh:
            log.warning("slack request refused: replay of an already processed signed request")
            return BoltResponse(status=401, body="replayed request")
        body = req.body if isinstance(req.body, dict) else {}
        event_id = body.get("event_id")
        if body.get("type") == "event_callback" and event_id:
            first = await asyncio.to_thread(
                client.set, key("slack", "event", str(event_id)), "1", nx=True, ex=EVENT_DEDUP_TTL_SECONDS
            )
            if not first:
                log.info(
                    "slack event %s redelivered (retry %s, %s): already taken",
                    event_id,
                    _header(req, "x-slack-retry-num"),
                    _header(req, "x-slack-retry-reason"),
                )
                return BoltResponse(status=200, body="", headers={"X-Slack-No-Retry": "1"})
        return await next()

    @bolt.command(COMMAND)
    async def on_command(ack: Callable[..., Awaitable[None]], command: dict[str, Any]) -> None:
        text = str(command.get("text", ""))
        actor, team = f"slack:{command.get('user_id', '')}", str(command.get("team_id", ""))
        try:
            parsed = parse(text)
        except UsageError as exc:
            await asyncio.to_thread(
                audit.record, actor=actor, team_id=team, action="usage", outcome="usage", reason=str(exc)
            )
            await ack(text=f":warning: {escape(str(exc))}\n\n{USAGE}")
            return
        if parsed.name == "help":
            await asyncio.to_thread(
                audit.record, actor=actor, team_id=team, action="help", outcome="accepted"
            )
            await ack(text=USAGE)
            return
        form = {k: str(command.get(k, "")) for k in _COMMAND_FIELDS}
        try:
            await send(tasknames.SLACK_COMMAND, form)
        except BrokerUnavailable as exc:
            log.error("slack command not queued: %s", exc)
            await ack(text=":warning: The bot cannot queue work right now; please try again in a minute.")
            return
        await ack(text=f":hourglass_flowing_sand: Working on `/incident {escape(text, 200)}`…")

    @bolt.action(_BUTTONS)
    async def on_button(
        ack: Callable[..., Awaitable[None]], body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        container = body.get("container") or {}
        fields = {
            "user_id": str((body.get("user") or {}).get("id", "")),
            "team_id": str(
                (body.get("team") or {}).get("id", "") or (body.get("user") or {}).get("team_id", "")
            ),
            "action_id": str(action.get("action_id", "")),
            "value": str(action.get("value", "")),
            "channel_id": str(container.get("channel_id") or (body.get("channel") or {}).get("id", "")),
            "message_ts": str(container.get("message_ts", "")),
            "response_url": str(body.get("response_url", "")),
            "request_id": str(body.get("trigger_id") or action.get("action_ts", "")),
        }
        try:
            await send(tasknames.SLACK_ACTION, fields)
        except BrokerUnavailable as exc:
            log.error("slack button %s not queued: %s", fields["action_id"], exc)
        await ack()

    @bolt.action(re.compile(f"^{LINK_ACTION_PREFIX}"))
    async def on_link(ack: Callable[..., Awaitable[None]]) -> None:
        await ack()  # URL buttons open in the browser; Slack still reports the click

    @bolt.event("app_mention")
    async def on_mention(event: dict[str, Any], body: dict[str, Any]) -> None:
        form = {
            "team_id": str(body.get("team_id", "")),
            "channel_id": str(event.get("channel", "")),
            "user_id": str(event.get("user", "")),
            "text": _MENTION.sub("", str(event.get("text", ""))),
            "thread_ts": str(event.get("thread_ts") or event.get("ts", "")),
            "trigger_id": f"event:{body.get('event_id', '')}",
        }
        await send(tasknames.SLACK_COMMAND, form)

    return bolt
