"""What the Slack notifier remembers per incident and per channel, in Redis.

Keys (under the store prefix):

    slack:root:<incident>       hash: channel (as configured), channel_id, ts, mode (message|digest),
                                pending (epoch of a post in flight), digest (hash of the last rendering),
                                admitted (the storm check gave it a root of its own; set before the post)
    slack:posted:<incident>     hash: timeline entry id -> message ts, or "pending:<epoch>" while posting
    slack:channel_ids           hash: configured channel -> channel id, as Slack answered a post
    slack:lock:<incident>       serialises syncs of one incident across workers
    slack:lock:digest:<channel> serialises flushes of one channel's digest
    slack:storm:<channel>       sorted set: incidents given a root in the channel, by time
    slack:digest:<channel>      hash: channel_id, ts, pending, started, last_added
    slack:digest:<channel>:members    set of incident ids the digest stands for
    slack:digest:<channel>:scheduled  set while a flush of the digest is scheduled
    slack:bucket:post:<channel> token bucket for chat.postMessage in that channel
    slack:bucket:update         token bucket for chat.update (a per-workspace limit)
    slack:bucket:<...>:queue|lease|seq   the first-come line in front of a bucket (bot/storage/bucket.py)
    slack:deferred:<incident>   set while a re-run of the incident's sync is scheduled (waiting for a token)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis
from redis.exceptions import LockError, RedisError

from bot.storage.bucket import TokenBucket
from bot.storage.window import SlidingWindow

#: What a failed Redis call raises; the notifier turns it into a TransientError (Celery retries the task).
StorageError = RedisError


def _t(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_t(k): _t(v) for k, v in raw.items()}


class SlackMessages:
    """The Slack notifier's state: root messages, threaded replies, digests, storms, locks, buckets."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def key(self, *parts: str) -> str:
        """A Redis key of the Slack side."""
        return self._p + ":".join(("slack", *parts))

    @contextlib.contextmanager
    def locked(self, *parts: str) -> Iterator[bool]:
        """Hold the lock `slack:lock:<parts>` (120 s, waiting up to 30 s); yields whether it was taken."""
        lock = self._r.lock(self.key("lock", *parts), timeout=120, blocking_timeout=30)
        if not lock.acquire():
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(LockError):
                lock.release()

    def bucket(
        self, *parts: str, rate: float, burst: int, sleep: Callable[[float], None] = time.sleep
    ) -> TokenBucket:
        """The token bucket `slack:bucket:<parts>` shared by every worker."""
        return TokenBucket(self._r, self.key("bucket", *parts), rate=rate, burst=burst, sleep=sleep)

    # --- root messages ---------------------------------------------------------------------------
    def root(self, incident_id: str) -> dict[str, str]:
        """The stored root record of an incident ({} when none)."""
        return _hash(self._r.hgetall(self.key("root", incident_id)))

    def set_root_digest(self, incident_id: str, digest: str) -> None:
        """Remember the hash of the root message as last rendered."""
        self._r.hset(self.key("root", incident_id), "digest", digest)

    def admit_root(self, incident_id: str, channel: str) -> None:
        """Note that the incident gets a root message of its own (the storm check said so, once)."""
        self._r.hset(self.key("root", incident_id), mapping={"channel": channel, "admitted": "1"})

    def mark_root_pending(self, incident_id: str, channel: str, now: float) -> None:
        """Note that the root message is being posted (a crash after the post is found by metadata)."""
        mapping = {"channel": channel, "mode": "message", "pending": str(now)}
        self._r.hset(self.key("root", incident_id), mapping=mapping)  # type: ignore[arg-type]

    def save_root(self, incident_id: str, channel: str, channel_id: str, ts: str, digest: str) -> None:
        """Record the posted root message and clear its pending mark, atomically."""
        key = self.key("root", incident_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping={"channel": channel, "channel_id": channel_id, "ts": ts, "mode": "message"})
        pipe.hset(key, "digest", digest)
        pipe.hdel(key, "pending")
        pipe.execute()

    def channel_id(self, channel: str) -> str | None:
        """The channel id Slack gave for a configured channel, if a post told us."""
        value = self._r.hget(self.key("channel_ids"), channel)
        return _t(value) if value else None

    def remember_channel_id(self, channel: str, channel_id: str) -> None:
        """Keep the channel id Slack answered a post to `channel` with."""
        self._r.hset(self.key("channel_ids"), channel, channel_id)

    # --- threaded replies ------------------------------------------------------------------------
    def reply(self, incident_id: str, entry_id: str) -> str | None:
        """What is recorded for a timeline entry: a ts, "root", "pending:<epoch>", or None."""
        value = self._r.hget(self.key("posted", incident_id), entry_id)
        return _t(value) if value is not None else None

    def set_reply(self, incident_id: str, entry_id: str, value: str) -> None:
        """Record a timeline entry's reply (its ts, "root", or "pending:<epoch>")."""
        self._r.hset(self.key("posted", incident_id), entry_id, value)

    # --- storms and digests ----------------------------------------------------------------------
    def storm_count(self, channel: str, incident_id: str, now: float, window_seconds: int) -> int:
        """Register a new root in the channel; how many the channel got within the window."""
        window = SlidingWindow(self._r, self.key("storm", channel), window_seconds, ttl=window_seconds * 2)
        return window.add_and_count(incident_id, now)

    def digest(self, channel: str) -> dict[str, str]:
        """The channel's digest record ({} when none)."""
        return _hash(self._r.hgetall(self.key("digest", channel)))

    def digest_last_added(self, channel: str) -> float | None:
        """When an incident last joined the channel's digest."""
        last = self._r.hget(self.key("digest", channel), "last_added")
        return float(_t(last)) if last is not None else None

    def reset_digest(self, channel: str) -> None:
        """Forget the channel's digest and its members (the next storm gets a digest of its own)."""
        dkey = self.key("digest", channel)
        self._r.delete(dkey, dkey + ":members")

    def join_digest(self, channel: str, incident_id: str, now: float) -> None:
        """Add the incident to the channel's digest; its root record says it lives there."""
        dkey = self.key("digest", channel)
        pipe = self._r.pipeline(transaction=True)
        pipe.hsetnx(dkey, "started", str(now))
        pipe.hset(dkey, "last_added", str(now))
        pipe.sadd(dkey + ":members", incident_id)
        pipe.hset(self.key("root", incident_id), mapping={"channel": channel, "mode": "digest"})
        pipe.execute()

    def digest_members(self, channel: str) -> list[str]:
        """The incident ids the channel's digest stands for, sorted."""
        return sorted(_t(i) for i in self._r.smembers(self.key("digest", channel) + ":members"))

    def claim_flush(self, channel: str, incident_id: str, ttl: int) -> bool:
        """Mark a flush of the digest scheduled; False when one is scheduled already."""
        return bool(self._r.set(self.key("digest", channel) + ":scheduled", incident_id, nx=True, ex=ttl))

    def clear_flush(self, channel: str) -> None:
        """The scheduled flush runs: changes from now on schedule another one."""
        self._r.delete(self.key("digest", channel) + ":scheduled")

    def mark_digest_pending(self, channel: str, now: float) -> None:
        """Note that the digest message is being posted."""
        self._r.hset(self.key("digest", channel), "pending", str(now))

    def save_digest(self, channel: str, channel_id: str, ts: str) -> None:
        """Record the posted digest message and clear its pending mark."""
        dkey = self.key("digest", channel)
        self._r.hset(dkey, mapping={"channel_id": channel_id, "ts": ts})
        self._r.hdel(dkey, "pending")

    # --- deferred syncs --------------------------------------------------------------------------
    def claim_deferral(self, incident_id: str, ttl: float) -> bool:
        """Mark a deferred re-run of the incident's sync scheduled; False when one is scheduled already."""
        ms = max(1000, int(ttl * 1000))
        return bool(self._r.set(self.key("deferred", incident_id), "1", nx=True, px=ms))

    def clear_deferral(self, incident_id: str) -> None:
        """The deferred re-run runs: a new deferral schedules another one."""
        self._r.delete(self.key("deferred", incident_id))
