"""The Slack Web API and response_url, through slack_sdk, with errors translated at the boundary.

`SlackWeb` is the only object the rest of the bot uses to talk to Slack. Vendor errors become
`TransientError` (HTTP 429 after the client's own Retry-After waits, 5xx, network errors, Slack errors
that mean "try later") or `PermanentError` (everything else: bad channel, bad blocks, bad token).
"""

from __future__ import annotations

import logging
import urllib.error
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.errors import IncidentBotError, PermanentError, TransientError
from bot.settings import Settings

log = logging.getLogger("incident_bot.slack")

#: Slack `error` codes worth retrying later.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}
)
#: Event type of the message metadata the bot attaches to every post (finds its own posts again).
METADATA_EVENT_TYPE = "incident_bot_event"


def translate(exc: Exception, what: str) -> IncidentBotError:
    """The project error for a slack_sdk / network exception raised while doing `what`."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        error = str(exc.response.get("error", "")) if exc.response is not None else ""
        if status == 429 or status >= 500 or error in TRANSIENT_ERRORS:
            return TransientError(
                f"Slack {what} failed (HTTP {status}, {error or 'no error code'}); will retry"
            )
        return PermanentError(f"Slack {what} failed: {error or f'HTTP {status}'}")
    if isinstance(exc, urllib.error.URLError | OSError | TimeoutError):
        return TransientError(f"Slack {what} unreachable: {exc}")
    if isinstance(exc, SlackClientError):
        return PermanentError(f"Slack {what} failed: {exc}")
    return PermanentError(f"Slack {what} failed unexpectedly: {exc!r}")


def make_web_client(settings: Settings, *, max_rate_limit_retries: int = 3) -> WebClient:
    """A WebClient for the configured token and API URL that waits out 429s (Retry-After)."""
    if settings.slack_bot_token is None:
        raise PermanentError("Slack is not configured (SLACK_BOT_TOKEN)")
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1),
            RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
        ],
    )


class SlackWeb:
    """The Web API calls the bot makes, each returning plain values or raising project errors."""

    def __init__(self, client: WebClient, *, response_url_prefixes: tuple[str, ...] = ()) -> None:
        self.client = client
        self._response_prefixes = response_url_prefixes

    def _call(self, what: str, fn: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            response = fn(**kwargs)
        except Exception as exc:
            raise translate(exc, what) from exc
        return dict(response.data) if isinstance(response.data, dict) else {}

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        *,
        thread_ts: str | None = None,
        event_id: str | None = None,
    ) -> tuple[str, str]:
        """chat.postMessage; returns (channel ID, ts). `event_id` goes into the message metadata."""
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if event_id:
            kwargs["metadata"] = {"event_type": METADATA_EVENT_TYPE, "event_payload": {"event_id": event_id}}
        data = self._call("chat.postMessage", self.client.chat_postMessage, **kwargs)
        return str(data["channel"]), str(data["ts"])

    def update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """chat.update of one message."""
        self._call("chat.update", self.client.chat_update, channel=channel, ts=ts, text=text, blocks=blocks)

    def find_posted(self, channel: str, event_id: str, *, thread_ts: str | None, oldest: float) -> str | None:
        """The ts of a message the bot posted for `event_id` (by its metadata), or None."""
        if thread_ts:
            data = self._call(
                "conversations.replies",
                self.client.conversations_replies,
                channel=channel,
                ts=thread_ts,
                include_all_metadata=True,
                limit=200,
            )
        else:
            data = self._call(
                "conversations.history",
                self.client.conversations_history,
                channel=channel,
                oldest=str(oldest),
                include_all_metadata=True,
                limit=200,
            )
        for message in data.get("messages", []):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("event_id") == event_id:
                return str(message["ts"])
        return None

    def usergroup_members(self, usergroup: str) -> list[str]:
        """User IDs in a user group (usergroups.users.list)."""
        data = self._call("usergroups.users.list", self.client.usergroups_users_list, usergroup=usergroup)
        return [str(u) for u in data.get("users", [])]

    def respond(
        self,
        response_url: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        replace_original: bool = False,
        in_channel: bool = False,
    ) -> None:
        """Post a reply to an interaction's response_url (ephemeral unless `in_channel`)."""
        if not response_url.startswith(self._response_prefixes):
            raise PermanentError("response_url is not a Slack hooks URL (SLACK_RESPONSE_URL_PREFIXES)")
        try:
            response = WebhookClient(response_url, timeout=10).send(
                text=text,
                blocks=blocks,
                response_type="in_channel" if in_channel else "ephemeral",
                replace_original=replace_original,
            )
        except Exception as exc:
            raise translate(exc, "response_url") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"response_url answered HTTP {response.status_code}; will retry")
        if response.status_code != 200:
            raise PermanentError(f"response_url answered HTTP {response.status_code}: {response.body[:200]}")
