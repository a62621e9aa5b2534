"""kombu's Redis Sentinel transport, made to survive the master it was talking to dying (``kill -9``).

Measured with real redis-server/redis-sentinel processes and a prefork worker (the failover test, commit
0156aaf): when
the master dies while messages are in flight, Celery 5.7 detaches the broken connection's transport
(``Connection.collect()`` sets ``transport.client = None``) and then closes its channel, which tries to put
the unacknowledged messages back. kombu's channel rebuilds its connection pool from ``transport.client`` and
raises ``AttributeError: 'NoneType' object has no attribute 'hostname'``; Celery calls that "Unrecoverable
error" and the worker stops consuming for good (1,799 of 2,000 notifications stayed queued). A late ack from a
task that finished after the connection broke fails the same way.

Two changes, nothing else:

* a channel remembers the connection it was created for, so rebuilding its pool after the transport was
  detached still asks the sentinels for the current master (late acks reach the new master);
* messages the worker held when the old master went away (delivered, not acknowledged) and that could not be
  put back at close are remembered by delivery tag and put back by the next channel that connects, instead of
  waiting out the visibility timeout (15 min by default). They run again: every task the bot queues is
  idempotent (delivery markers for notifications, step guards for runbooks), which is what makes this safe.

Celery picks this class through ``broker_transport`` (bot.wiring.celery_config) under REDIS_SENTINELS only.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("incident_bot.broker")

_pending_lock = threading.Lock()
_pending_tags: set[str] = set()  # delivery tags to put back once a channel reaches a master again


def pending_restores() -> set[str]:
    """Delivery tags waiting to be put back (a copy; for tests and the log line)."""
    with _pending_lock:
        return set(_pending_tags)


class FailoverQoS(kombu_redis.QoS):
    """Ack emulation whose restore-at-close defers, instead of failing, when no master answers."""

    def restore_unacked(self, client: Any = None) -> Any:
        tags = list(self._delivered)
        try:
            return super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except self.channel.connection_errors as exc:
            with _pending_lock:
                _pending_tags.update(tags)
            self._delivered.clear()
            log.warning(
                "broker: master unreachable while closing the channel (%s); %d message(s) in flight will be"
                " put back when the worker reconnects",
                exc,
                len(tags),
            )
            return None


class FailoverSentinelChannel(kombu_redis.SentinelChannel):
    """A Sentinel channel that can rebuild its pool after its transport was detached, and restores deferred
    messages when it connects."""

    QoS = FailoverQoS
    # Sweep for messages whose visibility timeout passed every 10 s (kombu: every 100 s). After a failover the
    # new master may hold a message whose work and ack the old master took with it (asynchronous
    # replication keeps order: a lost write means a lost ack too); it is put back one visibility timeout
    # after its delivery, plus at most this sweep.
    unacked_restore_throttle = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # pings the master the sentinels name: we are connected here
        self._client_info = self.connection.client
        self._restore_deferred()

    def _get_pool(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is not None:
            return super()._get_pool(asynchronous)  # type: ignore[no-untyped-call]
        transport.client = self._client_info  # detached by Connection.collect(): rebuild from our own
        try:
            return super()._get_pool(asynchronous)  # type: ignore[no-untyped-call]
        finally:
            transport.client = None

    def _restore_deferred(self) -> None:
        with _pending_lock:
            tags = list(_pending_tags)
            _pending_tags.clear()
        if not tags:
            return
        restored = 0
        try:
            for n, tag in enumerate(tags):
                self.qos.restore_by_tag(tag)
                restored = n + 1
        except self.connection_errors as exc:
            with _pending_lock:
                _pending_tags.update(tags[restored:])
            log.warning("broker: put back %d of %d deferred message(s): %s", restored, len(tags), exc)
            return
        log.warning("broker: reconnected; put back %d message(s) that were in flight at failover", restored)


class FailoverSentinelTransport(kombu_redis.SentinelTransport):
    """kombu's ``sentinel://`` transport with :class:`FailoverSentinelChannel`."""

    Channel = FailoverSentinelChannel


TRANSPORT = f"{__name__}:FailoverSentinelTransport"
