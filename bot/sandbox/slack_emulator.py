"""A loopback Slack Web API for tests, rehearsals and the demo, spoken to through the real `slack_sdk`.

It answers the methods the bot uses in Slack's wire format: requests as JSON, form or query parameters,
the token in ``Authorization: Bearer`` (or a ``token`` parameter), replies ``{"ok": true, …}`` or
``{"ok": false, "error": "…"}`` with HTTP 200, 429 with ``Retry-After`` when rate limited. Every call is
recorded with its time, so tests can count posts and measure rates. It can be told to answer the next
calls of a method with 429 or 5xx. It also serves ``response_url`` endpoints (``/response/<id>``) and
records what is posted there. `to_console` renders a message as the text a person would read.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bot.sandbox.loopback import serve, shutdown

TEAM_ID = "T0EMULATOR"
BOT_USER_ID = "UBOTEMU01"


@dataclass(frozen=True)
class Call:
    """One recorded Web API call."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the request arrived
    wall: float  # time.time() when the request arrived
    status: int  # HTTP status answered


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class Posted:
    """A message as the emulated workspace holds it."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    metadata: dict[str, Any] | None
    user: str = BOT_USER_ID
    edits: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_api(self) -> dict[str, Any]:
        """The message as conversations.history returns it."""
        out: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "bot_id": "BEMU",
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
        }
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.metadata:
            out["metadata"] = self.metadata
        return out


class SlackEmulator:
    """The emulated Web API plus response_url sink, served on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        *,
        token: str = "xoxb-emulator-token",  # noqa: S107 - a fake token for a loopback emulator
        channels: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        usergroups: dict[str, list[str]] | None = None,
    ) -> None:
        self.token = token
        #: channel name (without #) -> channel ID; unknown names get channel_not_found.
        self.channels = dict(
            channels
            or {
                "incidents-critical": "C0CRIT0001",
                "incidents-high": "C0HIGH0001",
                "incidents-medium": "C0MED00001",
                "incidents-low": "C0LOW00001",
                "general": "C0GENERAL1",
            }
        )
        self.users = dict(users or {})
        self.usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Posted] = {}
        self.responses: list[dict[str, Any]] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SlackEmulator:
        """Start serving on a free loopback port."""
        self._server = serve(self._handle, host="127.0.0.1", name="slack-emulator", methods=("GET", "POST"))
        return self

    def stop(self) -> None:
        """Stop serving."""
        shutdown(self._server)
        self._server = None

    def __enter__(self) -> SlackEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL to give slack_sdk (`base_url`) or SLACK_API_URL."""
        return self.base + "/api/"

    def response_url(self, name: str = "r1") -> str:
        """A response_url whose posts are recorded in `responses`."""
        return f"{self.base}/response/{name}"

    # --- test controls --------------------------------------------------------------------------
    def fail_next(
        self, method: str, *, status: int = 429, retry_after: int | None = 1, times: int = 1
    ) -> None:
        """Answer the next `times` calls of `method` with `status` (429 carries Retry-After)."""
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(status, retry_after, times))

    def calls_of(self, method: str) -> list[Call]:
        """Recorded calls of one method, oldest first (failed attempts included)."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def ok_calls_of(self, method: str) -> list[Call]:
        """Recorded calls of one method that were answered 200."""
        return [c for c in self.calls_of(method) if c.status == 200]

    def channel_messages(self, channel_id: str, *, top_level_only: bool = False) -> list[Posted]:
        """Messages in a channel, oldest first."""
        with self._lock:
            msgs = [m for m in self.messages.values() if m.channel == channel_id]
        if top_level_only:
            msgs = [m for m in msgs if m.thread_ts is None]
        return sorted(msgs, key=lambda m: float(m.ts))

    def thread(self, channel_id: str, ts: str) -> list[Posted]:
        """Replies in the thread of message `ts`, oldest first."""
        return [m for m in self.channel_messages(channel_id) if m.thread_ts == ts]

    def channel_id(self, name_or_id: str) -> str | None:
        """The ID of a channel given as `#name`, `name` or ID."""
        name = name_or_id.removeprefix("#")
        if name in self.channels:
            return self.channels[name]
        return name_or_id if name_or_id in self.channels.values() else None

    def reset(self) -> None:
        """Forget calls, messages, responses and pending failures."""
        with self._lock:
            self.calls.clear()
            self.messages.clear()
            self.responses.clear()
            self._failures.clear()

    # --- HTTP -----------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        arrived, wall = time.monotonic(), time.time()
        parts = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        params: dict[str, Any] = dict(parse_qsl(parts.query))
        ctype = req.headers.get("Content-Type", "")
        if raw:
            if "json" in ctype:
                try:
                    params.update(json.loads(raw))
                except json.JSONDecodeError:
                    self._reply(req, 200, {"ok": False, "error": "invalid_json"})
                    return
            else:
                params.update(dict(parse_qsl(raw.decode())))

        if parts.path.startswith("/response/"):
            with self._lock:
                self.responses.append({"path": parts.path, "at": arrived, **params})
                self.calls.append(Call("response_url", params, arrived, wall, 200))
            self._reply(req, 200, None, text="ok")
            return
        if not parts.path.startswith("/api/"):
            self._reply(req, 404, {"ok": False, "error": "not_found"})
            return

        method = parts.path.removeprefix("/api/")
        failure = self._take_failure(method)
        if failure is not None:
            with self._lock:
                self.calls.append(Call(method, params, arrived, wall, failure.status))
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            body = {"ok": False, "error": "ratelimited" if failure.status == 429 else "internal_error"}
            self._reply(req, failure.status, body, headers=headers)
            return

        auth = req.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else params.get("token")
        with self._lock:
            self.calls.append(Call(method, params, arrived, wall, 200))
        if not token:
            self._reply(req, 200, {"ok": False, "error": "not_authed"})
            return
        if token != self.token:
            self._reply(req, 200, {"ok": False, "error": "invalid_auth"})
            return
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            self._reply(req, 200, {"ok": False, "error": "unknown_method"})
            return
        self._reply(req, 200, handler(params))

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(method)
            if not queue:
                return None
            failure = queue[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                queue.pop(0)
            return failure

    @staticmethod
    def _reply(
        req: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any] | None,
        *,
        headers: dict[str, str] | None = None,
        text: str | None = None,
    ) -> None:
        payload = (text if text is not None else json.dumps(body)).encode()
        req.send_response(status)
        req.send_header(
            "Content-Type", "text/plain" if text is not None else "application/json; charset=utf-8"
        )
        req.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(payload)

    # --- methods --------------------------------------------------------------------------------
    def _next_ts(self) -> str:
        return f"{1_800_000_000 + next(self._ts)}.{next(self._ts) % 1_000_000:06d}"

    @staticmethod
    def _blocks(params: dict[str, Any]) -> list[dict[str, Any]] | str:
        blocks = params.get("blocks") or []
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                return "invalid_blocks_format"
        if not isinstance(blocks, list) or len(blocks) > 50:
            return "invalid_blocks"
        if any(not isinstance(b, dict) or "type" not in b for b in blocks):
            return "invalid_blocks"
        return blocks

    @staticmethod
    def _metadata(params: dict[str, Any]) -> dict[str, Any] | None:
        meta = params.get("metadata")
        if isinstance(meta, str):
            meta = json.loads(meta) if meta else None
        return meta if isinstance(meta, dict) else None

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://emulator.slack.com/",
            "team": "Emulator",
            "user": "incident-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": "BEMU",
        }

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        blocks = self._blocks(params)
        if isinstance(blocks, str):
            return {"ok": False, "error": blocks}
        text = str(params.get("text") or "")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        thread_ts = params.get("thread_ts") or None
        with self._lock:
            if thread_ts and (channel, thread_ts) not in self.messages:
                return {"ok": False, "error": "thread_not_found"}
            ts = self._next_ts()
            msg = Posted(channel, ts, text, blocks, thread_ts, self._metadata(params))
            self.messages[(channel, ts)] = msg
        return {"ok": True, "channel": channel, "ts": ts, "message": msg.as_api()}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if channel not in self.channels.values():
            return {"ok": False, "error": "channel_not_found"}
        blocks = self._blocks(params)
        if isinstance(blocks, str):
            return {"ok": False, "error": blocks}
        with self._lock:
            msg = self.messages.get((channel, str(params.get("ts", ""))))
            if msg is None:
                return {"ok": False, "error": "message_not_found"}
            msg.history.append({"text": msg.text, "blocks": msg.blocks})
            msg.text = str(params.get("text") or msg.text)
            msg.blocks = blocks
            msg.edits += 1
            if "metadata" in params:
                msg.metadata = self._metadata(params)
        return {"ok": True, "channel": channel, "ts": msg.ts, "text": msg.text, "message": msg.as_api()}

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _api_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(params.get("oldest") or 0)
        limit = int(params.get("limit") or 100)
        msgs = [m for m in self.channel_messages(channel, top_level_only=True) if float(m.ts) > oldest]
        msgs.reverse()  # newest first, as Slack returns them
        return {"ok": True, "messages": [m.as_api() for m in msgs[:limit]], "has_more": len(msgs) > limit}

    def _api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(params.get("ts", ""))
        with self._lock:
            parent = self.messages.get((channel, ts))
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        msgs = [parent, *self.thread(channel, ts)]
        return {"ok": True, "messages": [m.as_api() for m in msgs], "has_more": False}

    def _api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        name = next(n for n, i in self.channels.items() if i == channel)
        return {"ok": True, "channel": {"id": channel, "name": name, "is_channel": True, "is_member": True}}

    def _api_conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "channels": [{"id": i, "name": n, "is_channel": True} for n, i in self.channels.items()],
            "response_metadata": {"next_cursor": ""},
        }

    def _api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user", ""))
        if user not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": {"id": user, "name": self.users[user], "real_name": self.users[user]}}

    def _api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup", ""))
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}


# --- console rendering ----------------------------------------------------------------------------
_DATE = re.compile(r"<!date\^[0-9]+\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]*)>")
_BARE = re.compile(r"<(https?://[^|>]+)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SPECIAL = re.compile(r"<!(channel|here|everyone)>")


def mrkdwn_to_text(text: str, users: dict[str, str] | None = None) -> str:
    """mrkdwn as a reader sees it: dates, mentions and links resolved, entities decoded."""
    names = users or {}
    out = _DATE.sub(lambda m: m.group(1), text)
    out = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", out)
    out = _BARE.sub(lambda m: m.group(1), out)
    out = _USER.sub(lambda m: "@" + names.get(m.group(1), m.group(1)), out)
    out = _SPECIAL.sub(lambda m: "@" + m.group(1), out)
    return out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text_of(obj: Any, users: dict[str, str] | None) -> str:
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return mrkdwn_to_text(text, users) if obj.get("type") == "mrkdwn" else text


def to_console(message: dict[str, Any], users: dict[str, str] | None = None) -> str:
    """A message (`text` and `blocks`) as plain console text: what Slack would show."""
    blocks = message.get("blocks") or []
    if not blocks:
        return mrkdwn_to_text(str(message.get("text", "")), users)
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            if block.get("text"):
                lines.append(_text_of(block["text"], users))
            fields = [_text_of(f, users).replace("\n", ": ", 1) for f in block.get("fields", [])]
            lines.extend("  " + f for f in fields)
        elif kind == "header":
            lines.append(_text_of(block.get("text"), users).upper())
        elif kind == "context":
            lines.append("  " + " ".join(_text_of(e, users) for e in block.get("elements", [])))
        elif kind == "actions":
            buttons = []
            for e in block.get("elements", []):
                label = _text_of(e.get("text"), users)
                buttons.append(f"[{label}]" + (f"({e['url']})" if e.get("url") else ""))
            lines.append("  " + " ".join(buttons))
        elif kind == "divider":
            lines.append("-" * 40)
    return "\n".join(lines)
