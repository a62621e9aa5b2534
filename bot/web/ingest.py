"""POST /alertmanager on the fast path: a raw ASGI handler that runs ahead of FastAPI's machinery.

`BotApp` (bot.web.app) hands it every ``POST /alertmanager`` before FastAPI's middleware stack, routing
and Request/Response objects. It keeps every guarantee of the endpoint (tests/web define them):
credentials checked in constant time (401), the body limit (413, by Content-Length and while streaming),
400 for a body that is not JSON, 422 naming the field for JSON that is not a valid v4 payload (the same
model the worker applies, so nothing accepted here fails there), 2xx only once Redis holds the message
(the publisher's group commit), 503 + Retry-After when it does not, 200 "duplicate" for a delivery that
was applied already. The body goes to the queue as received: it is parsed once, to validate, never
re-serialised. Errors answer through the same helpers as the other endpoints (bot.web.handlers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import JSONResponse, Response

from bot.errors import BrokerUnavailable
from bot.web.auth import alertmanager_authorized
from bot.web.handlers import WebState, _error, _parse_alertmanager

log = logging.getLogger("incident_bot.web")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_OUTCOMES = ("unauthorized", "too_large", "bad_request", "invalid", "unavailable", "duplicate", "queued")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class AlertmanagerIngest:
    """The raw ASGI handler of ``POST /alertmanager``."""

    def __init__(self, web: WebState) -> None:
        self._web = web
        self._limit = web.settings.max_body_bytes
        self._count = {o: web.metrics.webhooks.labels("alertmanager", o) for o in _OUTCOMES}
        self._observe = web.metrics.enqueue_seconds.observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._handle(scope, receive, tracked)
        except _Disconnected:
            return  # the client went away before sending its body: nobody to answer
        except Exception:
            log.exception("alertmanager webhook: internal error")
            if not started:
                await _error(500, "internal error")(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        if not alertmanager_authorized(self._web.settings, authorization):
            self._count["unauthorized"].inc()
            return await _unauthorized(scope)(scope, receive, send)
        try:
            body = await self._body(receive, length)
        except _TooLarge:
            self._count["too_large"].inc()
            answer = _error(413, f"body larger than {self._limit} bytes (MAX_BODY_BYTES)")
            return await answer(scope, receive, send)
        webhook = _parse_alertmanager(body, self._web)
        if isinstance(webhook, Response):
            return await webhook(scope, receive, send)
        key = webhook.idempotency_key()
        began = time.perf_counter()
        try:
            queued = await self._web.publisher.publish_alert_group(body, key)
        except BrokerUnavailable as exc:
            self._count["unavailable"].inc()
            log.error("alertmanager webhook not queued (503, Alertmanager will retry): %s", exc)
            answer = JSONResponse(
                {"error": "broker unavailable; retry later"}, status_code=503, headers={"Retry-After": "1"}
            )
            return await answer(scope, receive, send)
        if not queued:
            self._count["duplicate"].inc()
            return await _json(send, 200, b'{"status":"duplicate","idempotency_key":"%s"}' % key.encode())
        self._observe(time.perf_counter() - began)
        self._count["queued"].inc()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "alertmanager webhook queued: group=%s status=%s alerts=%d truncated=%d key=%s",
                webhook.groupKey[:120],
                webhook.status.value,
                len(webhook.alerts),
                webhook.truncatedAlerts,
                key[:12],
            )
        await _json(send, 202, b'{"status":"queued","idempotency_key":"%s"}' % key.encode())

    async def _body(self, receive: Receive, length: bytes | None) -> bytes:
        """The request body; _TooLarge past the limit (declared or streamed), _Disconnected if it left."""
        if length is not None and length.isdigit() and int(length) > self._limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _json(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _unauthorized(scope: Scope) -> Response:
    client = scope.get("client")
    log.warning(
        "alertmanager webhook refused: bad or missing credentials from %s", client[0] if client else "?"
    )
    return JSONResponse(
        {"error": "unauthorized: send the configured Bearer token or basic-auth credentials"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="incident-bot", Basic realm="incident-bot"'},
    )
