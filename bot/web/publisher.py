"""Durable hand-off of accepted webhooks to the Celery workers.

The web process writes Celery task messages (message protocol v2, in the envelope of kombu's Redis
transport) straight into the queue's Redis list with one Lua script that also checks the delivery marker:
one round trip per webhook, no thread hop, and an answer only once Redis holds the message. Going through
``Celery.send_task`` costs ~0.35 ms of CPU per message (a new Redis client object per publish inside kombu,
a repr of the arguments), which capped ingest at a fraction of a bare endpoint. The format is checked in
tests against what the installed Celery produces, and a real worker consumes these messages.

Group commit: the webhooks that arrive while the event loop is busy are written together, one script call
for up to BATCH_MAX of them (in arrival order), and each request is answered once that call returned, i.e.
once Redis holds its message (and, under REDIS_MIN_REPLICAS_ACK, the replicas acknowledged it). A batch
that fails answers every request in it with BrokerUnavailable (503): none is acknowledged unless stored.
redis-py's per-command cost (connection checkout, packing, parsing) was most of a webhook's CPU time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from typing import Any, Protocol

from redis.exceptions import RedisError

from bot import wiring
from bot.errors import BrokerUnavailable
from bot.settings import Settings
from bot.storage.replication import ReplicaAck, eval_replicated
from bot.tasknames import PROCESS_ALERT_GROUP as TASK_PROCESS_ALERT_GROUP
from bot.tasknames import QUEUE_ALERTS

_EMBED = b'{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'

# KEYS[1] delivery marker, KEYS[2] queue list, KEYS[3] queued marker; ARGV[1] message, ARGV[2] marker TTL
# (0: no marker). Returns 0 for an applied delivery, 2 for one queued already (a retry after a 503 for a
# WAIT that timed out: not queued twice), 1 otherwise.
_PUBLISH_IF_NEW = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] ~= '0' and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then return 2 end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""


# The same decision for a batch: KEYS are (delivery marker, queue, queued marker) per message, ARGV
# (message, marker TTL) per message, in arrival order. Returns one answer per message.
_PUBLISH_BATCH = """
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local done, queue, marker = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local ttl = ARGV[2 * i + 2]
  if redis.call('EXISTS', done) == 1 then
    out[i + 1] = 0
  elseif ttl ~= '0' and not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    out[i + 1] = 2
  else
    redis.call('LPUSH', queue, ARGV[2 * i + 1])
    out[i + 1] = 1
  end
end
return out
"""
#: At most this many messages per script call.
BATCH_MAX = 128

_Pending = tuple[list[str], list[bytes | int], "asyncio.Future[int]"]


class Publisher(Protocol):
    """Puts work on the broker; returns only once the message is stored there."""

    async def publish_alert_group(self, payload_json: bytes, delivery_key: str) -> bool:
        """Enqueue one notification unless already applied (False); raises BrokerUnavailable."""

    async def publish(self, task: str, queue: str, args_json: bytes, *, argsrepr: str, unless: str) -> bool:
        """Enqueue a task unless the key `unless` exists (False); raises BrokerUnavailable."""


def celery_task_message(task: str, args_json: bytes, queue: str, *, argsrepr: str, origin: str) -> bytes:
    """A Celery protocol-v2 task message in kombu's Redis envelope; `args_json` is the JSON args list."""
    task_id = str(uuid.uuid4())
    body = base64.b64encode(b"[" + args_json + b", {}, " + _EMBED + b"]").decode()
    return _ENVELOPE.format(
        body=body,
        task=json.dumps(task),
        id=task_id,
        argsrepr=json.dumps(argsrepr),
        origin=json.dumps(origin),
        queue=json.dumps(queue),
        tag=uuid.uuid4(),
    ).encode()


# The envelope as a format string: json.dumps of the nested dict was a tenth of the request's cost.
# Every substituted value is a uuid, base64 text, or already JSON-encoded.
_ENVELOPE = (
    '{{"body": "{body}", "content-encoding": "utf-8", "content-type": "application/json", '
    '"headers": {{"lang": "py", "task": {task}, "id": "{id}", "shadow": null, "eta": null, '
    '"expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], '
    '"root_id": "{id}", "parent_id": null, "argsrepr": {argsrepr}, "kwargsrepr": "{{}}", '
    '"origin": {origin}, "ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, '
    '"stamps": {{}}}}, '
    '"properties": {{"correlation_id": "{id}", "reply_to": "", "delivery_mode": 2, '
    '"delivery_info": {{"exchange": "", "routing_key": {queue}}}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "{tag}"}}}}'
)


class RedisPublisher:
    """Publishes task messages (Alertmanager and PagerDuty webhooks) to queues on the Redis broker."""

    def __init__(self, settings: Settings) -> None:
        self._redis = wiring.async_redis_client(settings, "web", url=settings.effective_broker_url)
        self._script = self._redis.register_script(_PUBLISH_IF_NEW)
        # the marker check and the push share one script only when state and broker are one database
        self._state = (
            None
            if settings.redis_url == settings.effective_broker_url
            else wiring.async_redis_client(settings, "web")
        )
        self._prefix = settings.key_prefix
        self._ack = ReplicaAck(settings.redis_min_replicas_ack, settings.redis_wait_timeout_ms)
        # Only a WAIT that times out answers 503 for a message Redis holds; a retry must not queue it
        # twice. The marker lives a visibility timeout (a queued message is taken or redelivered by then).
        self._queued_ttl = settings.celery_visibility_timeout if self._ack.replicas else 0
        self._origin = f"incident-bot-web@{socket.gethostname()}:{os.getpid()}"
        self._batch_script = self._redis.register_script(_PUBLISH_BATCH)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish_alert_group(self, payload_json: bytes, delivery_key: str) -> bool:
        """LPUSH `process_alert_group` unless the delivery marker exists; True when queued."""
        args = b"[" + payload_json + b", " + json.dumps(delivery_key).encode() + b"]"
        return await self.publish(
            TASK_PROCESS_ALERT_GROUP,
            QUEUE_ALERTS,
            args,
            argsrepr=f"(<alertmanager notification>, {delivery_key[:12]!r})",
            unless=f"{self._prefix}delivery:{delivery_key}",
        )

    async def publish(self, task: str, queue: str, args_json: bytes, *, argsrepr: str, unless: str) -> bool:
        """LPUSH a task message to `queue` unless the key `unless` exists (work done); True if queued.

        Under REDIS_MIN_REPLICAS_ACK a retry of a message queued already (its marker `<unless>:queued`)
        is answered True without queuing it again, once WAIT confirms the replicas hold it.
        """
        message = celery_task_message(task, args_json, queue, argsrepr=argsrepr, origin=self._origin)
        keys = [unless, queue, unless + ":queued"]
        args: list[bytes | int] = [message, self._queued_ttl]
        try:
            if self._state is not None and await self._state.exists(unless):
                return False
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"broker did not accept the task: {exc}") from exc
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, answer))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return bool(await answer)  # 2: queued by an earlier attempt, still not applied: accepted, once

    async def _flush(self) -> None:
        """Write the pending messages, BATCH_MAX per script call, until none is left."""
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
                await self._write(batch)
                batch = []
        except BaseException as exc:  # a bug or a cancelled task: no request may wait for ever
            stranded, self._pending = batch + self._pending, []
            _fail(stranded, BrokerUnavailable(f"publishing failed: {exc!r}"))
            raise
        finally:
            self._flusher = None

    async def _write(self, batch: list[_Pending]) -> None:
        keys = [k for item in batch for k in item[0]]
        args = [a for item in batch for a in item[1]]
        try:
            answers: list[Any] = await self._call(keys, args, single=len(batch) == 1)
        except BrokerUnavailable as exc:
            _fail(batch, exc)
            return
        except (RedisError, OSError) as exc:
            _fail(batch, BrokerUnavailable(f"broker did not accept the task: {exc}"))
            return
        for (_, _, answer), value in zip(batch, answers, strict=True):
            if not answer.done():
                answer.set_result(int(value))

    async def _call(self, keys: list[str], args: list[bytes | int], *, single: bool) -> list[Any]:
        script = _PUBLISH_IF_NEW if single else _PUBLISH_BATCH
        if self._ack.replicas:
            result = await eval_replicated(self._redis, script, keys, args, self._ack)
        else:
            result = await (self._script if single else self._batch_script)(keys=keys, args=args)
        return [result] if single else list(result)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
        if self._state is not None:
            await self._state.aclose()


def _fail(batch: list[_Pending], error: BrokerUnavailable) -> None:
    """Answer every request of `batch` still waiting with `error` (its handler answers 503)."""
    for _, _, answer in batch:
        if not answer.done():
            answer.set_exception(error)
