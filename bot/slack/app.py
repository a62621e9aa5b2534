"""The Slack HTTP endpoint: a Bolt `AsyncApp` mounted at ``POST /slack/events`` (HTTP mode).

In the request the bot only verifies, de-duplicates, parses and queues; it never calls the Web API, so
the 3-second acknowledgement deadline holds however slow Slack or the workers are:

1. Bolt verifies the ``v0`` signature and rejects timestamps older than 5 minutes (401).
2. `SlackListeners.edge_guard` rejects a replay of a signed request inside that window (``SET NX EX
   300`` on the signature, 401) and answers Events API retries of an event already taken with 200 and
   nothing else.
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

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot import tasknames
from bot.errors import BrokerUnavailable
from bot.settings import Settings
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
from bot.storage.audit import AuditLog
from bot.storage.markers import Markers
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


class SlackListeners:
    """The Bolt listeners: the edge guard, the `/incident` command, the buttons and app mentions.

    Bolt injects its arguments (``ack``, ``body``, ``command`` …) into these bound methods by name.
    """

    def __init__(self, settings: Settings, *, sender: TaskSender, audit: AuditLog, markers: Markers) -> None:
        self._settings = settings
        self._sender = sender
        self._audit = audit
        self._markers = markers

    async def _send(self, name: str, payload: dict[str, Any]) -> None:
        await asyncio.to_thread(self._sender.send, name, args=(payload,))

    async def edge_guard(
        self, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        """Refuse other workspaces (403) and replayed requests (401); drop Events API redeliveries."""
        team_id = self._settings.slack_team_id
        if team_id and req.context.team_id != team_id:
            log.warning("slack request from workspace %s refused (SLACK_TEAM_ID)", req.context.team_id)
            return BoltResponse(status=403, body="this app serves another workspace")
        digest = hashlib.sha256(_header(req, "x-slack-signature").encode()).hexdigest()
        if not await asyncio.to_thread(self._markers.claim_signature, digest, REPLAY_TTL_SECONDS):
            log.warning("slack request refused: replay of an already processed signed request")
            return BoltResponse(status=401, body="replayed request")
        body = req.body if isinstance(req.body, dict) else {}
        event_id = body.get("event_id")
        if body.get("type") == "event_callback" and event_id:
            first = await asyncio.to_thread(self._markers.claim_event, str(event_id), EVENT_DEDUP_TTL_SECONDS)
            if not first:
                log.info(
                    "slack event %s redelivered (retry %s, %s): already taken",
                    event_id,
                    _header(req, "x-slack-retry-num"),
                    _header(req, "x-slack-retry-reason"),
                )
                return BoltResponse(status=200, body="", headers={"X-Slack-No-Retry": "1"})
        return await next()

    async def on_command(self, ack: Callable[..., Awaitable[None]], command: dict[str, Any]) -> None:
        """`/incident …`: help and usage errors in the ack, everything else queued for the worker."""
        text = str(command.get("text", ""))
        actor, team = f"slack:{command.get('user_id', '')}", str(command.get("team_id", ""))
        try:
            parsed = parse(text)
        except UsageError as exc:
            record = self._audit.record
            await asyncio.to_thread(
                record, actor=actor, team_id=team, action="usage", outcome="usage", reason=str(exc)
            )
            await ack(text=f":warning: {escape(str(exc))}\n\n{USAGE}")
            return
        if parsed.name == "help":
            await asyncio.to_thread(
                self._audit.record, actor=actor, team_id=team, action="help", outcome="accepted"
            )
            await ack(text=USAGE)
            return
        form = {k: str(command.get(k, "")) for k in _COMMAND_FIELDS}
        try:
            await self._send(tasknames.SLACK_COMMAND, form)
        except BrokerUnavailable as exc:
            log.error("slack command not queued: %s", exc)
            await ack(text=":warning: The bot cannot queue work right now; please try again in a minute.")
            return
        await ack(text=f":hourglass_flowing_sand: Working on `/incident {escape(text, 200)}`…")

    async def on_button(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        """A button click: its fields queued for the worker, then the ack."""
        fields = _button_fields(body, action)
        try:
            await self._send(tasknames.SLACK_ACTION, fields)
        except BrokerUnavailable as exc:
            log.error("slack button %s not queued: %s", fields["action_id"], exc)
        await ack()

    async def on_link(self, ack: Callable[..., Awaitable[None]]) -> None:
        """A URL button: it opens in the browser; Slack still reports the click."""
        await ack()

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """`@bot …` in a channel: run like `/incident …`, answered in the thread."""
        form = {
            "team_id": str(body.get("team_id", "")),
            "channel_id": str(event.get("channel", "")),
            "user_id": str(event.get("user", "")),
            "text": _MENTION.sub("", str(event.get("text", ""))),
            "thread_ts": str(event.get("thread_ts") or event.get("ts", "")),
            "trigger_id": f"event:{body.get('event_id', '')}",
        }
        await self._send(tasknames.SLACK_COMMAND, form)


def _button_fields(body: dict[str, Any], action: dict[str, Any]) -> dict[str, str]:
    """The block_actions fields the worker needs."""
    container = body.get("container") or {}
    user = body.get("user") or {}
    return {
        "user_id": str(user.get("id", "")),
        "team_id": str((body.get("team") or {}).get("id", "") or user.get("team_id", "")),
        "action_id": str(action.get("action_id", "")),
        "value": str(action.get("value", "")),
        "channel_id": str(container.get("channel_id") or (body.get("channel") or {}).get("id", "")),
        "message_ts": str(container.get("message_ts", "")),
        "response_url": str(body.get("response_url", "")),
        "request_id": str(body.get("trigger_id") or action.get("action_ts", "")),
    }


def _authorize_with(token: str) -> Callable[..., Awaitable[AuthorizeResult]]:
    """Bolt's `authorize`: the configured bot token for every request (no ``auth.test`` call)."""

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=token)

    return authorize


def build_bolt_app(
    settings: Settings,
    *,
    sender: TaskSender,
    audit: AuditLog,
    markers: Markers,
) -> AsyncApp:
    """The Bolt app with the edge guard, the `/incident` command, the buttons and app mentions."""
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        raise ValueError("Slack is not configured")
    bolt = AsyncApp(
        name="llmd-incident-bot",
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        client=AsyncWebClient(base_url=settings.slack_api_url),  # the token comes from authorize()
        authorize=_authorize_with(settings.slack_bot_token.get_secret_value()),
        logger=logging.getLogger("incident_bot.slack.bolt"),
    )
    listeners = SlackListeners(settings, sender=sender, audit=audit, markers=markers)
    bolt.middleware(listeners.edge_guard)
    bolt.command(COMMAND)(listeners.on_command)
    bolt.action(_BUTTONS)(listeners.on_button)
    bolt.action(re.compile(f"^{LINK_ACTION_PREFIX}"))(listeners.on_link)
    bolt.event("app_mention")(listeners.on_mention)
    return bolt
