"""Keeping Slack in step with incidents: one root message per incident, one threaded reply per event.

`SlackNotifier.sync(incident_id)` is idempotent: it makes Slack show the incident's current state and
every timeline entry exactly once, however often it runs (Celery redelivery, several events at once).

Redis keys (under the store prefix):

    slack:root:<incident>       hash: channel (as configured), channel_id, ts, mode (message|digest),
                                pending (epoch of a post in flight), digest (hash of the last rendering)
    slack:posted:<incident>     hash: timeline entry id -> message ts, or "pending:<epoch>" while posting
    slack:lock:<incident>       serialises syncs of one incident across workers
    slack:storm:<channel>       sorted set: incidents given a root in the channel, by time
    slack:digest:<channel>      hash: channel_id, ts, pending, started, last_added
    slack:digest:<channel>:members    set of incident ids the digest stands for
    slack:digest:<channel>:scheduled  set while a flush of the digest is scheduled
    slack:bucket:post:<channel> token bucket for chat.postMessage in that channel
    slack:bucket:update         token bucket for chat.update (a per-workspace limit)

Exactly-once posting: before chat.postMessage the entry is marked pending; after it, the ts is stored. A
task that finds "pending" (the previous attempt died between the two) looks for its own message by the
metadata ``event_id`` it attached, and records that instead of posting again.

Alert storms: when more than SLACK_STORM_THRESHOLD incidents get a root in one channel within
SLACK_STORM_WINDOW_SECONDS, further incidents in that channel get no message of their own; they join the
channel's digest, a single message re-rendered in place at most every SLACK_DIGEST_INTERVAL_SECONDS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from redis.exceptions import LockError, RedisError

from bot.errors import TransientError
from bot.incidents.store import IncidentStore
from bot.integrations.slack import SlackWeb
from bot.models import Incident, TimelineEntry
from bot.settings import Settings
from bot.slack.render import Message, SlackRenderer
from bot.storage.bucket import TokenBucket

log = logging.getLogger("incident_bot.slack.notifier")

#: Timeline kinds that get no reply of their own (the root message already says it).
SILENT_KINDS = frozenset({"opened"})
#: chat.update is Tier 3 (~50 per minute per workspace).
UPDATE_RATE, UPDATE_BURST = 50 / 60, 10


def _t(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _digest(message: Message) -> str:
    body = json.dumps({"text": message.text, "blocks": message.blocks}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class SyncResult:
    """What one sync did."""

    root: str = "unchanged"  # posted | updated | unchanged | digest
    replies: list[str] = field(default_factory=list)  # timeline entry ids posted now


class SlackNotifier:
    """Posts and updates incident messages through SlackWeb, within Slack's rate limits."""

    def __init__(
        self,
        web: SlackWeb,
        store: IncidentStore,
        client: redis.Redis,
        renderer: SlackRenderer,
        settings: Settings,
        *,
        schedule_digest_flush: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.web = web
        self._store = store
        self._r = client
        self._render = renderer
        self._s = settings
        self._schedule = schedule_digest_flush
        self._clock = clock
        self._sleep = sleep

    # --- keys and buckets -----------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A Redis key of the Slack side."""
        return self._store.key("slack", *parts)

    def _post_bucket(self, channel: str) -> TokenBucket:
        return TokenBucket(
            self._r,
            self.key("bucket", "post", channel),
            rate=self._s.slack_posts_per_second,
            burst=self._s.slack_post_burst,
            sleep=self._sleep,
        )

    def _update_bucket(self) -> TokenBucket:
        return TokenBucket(
            self._r, self.key("bucket", "update"), rate=UPDATE_RATE, burst=UPDATE_BURST, sleep=self._sleep
        )

    def channel_for(self, incident: Incident) -> str:
        """The channel configured for the incident's severity."""
        return self._s.slack_channels[incident.severity.value]

    def root_of(self, incident_id: str) -> dict[str, str]:
        """The stored root record of an incident ({} when none)."""
        raw = self._r.hgetall(self.key("root", incident_id))
        return {_t(k): _t(v) for k, v in raw.items()}

    # --- sync -----------------------------------------------------------------------------------
    def sync(self, incident_id: str) -> SyncResult:
        """Make Slack show the incident's current state and each of its timeline entries once."""
        try:
            lock = self._r.lock(self.key("lock", incident_id), timeout=120, blocking_timeout=30)
            if not lock.acquire():
                raise TransientError(f"Slack sync of {incident_id} busy in another worker; will retry")
            try:
                return self._sync_locked(incident_id)
            finally:
                with contextlib.suppress(LockError):
                    lock.release()
        except RedisError as exc:
            raise TransientError(f"redis error during Slack sync of {incident_id}: {exc}") from exc

    def _sync_locked(self, incident_id: str) -> SyncResult:
        incident = self._store.get(incident_id)
        timeline = self._store.timeline(incident_id)
        now = datetime.now(UTC)
        result = SyncResult()
        root = self.root_of(incident_id)
        if not root.get("ts") and root.get("mode") != "digest":
            channel = self.channel_for(incident)
            if not root.get("pending") and self._storming(channel, incident_id):
                self._join_digest(channel, incident_id)
                result.root = "digest"
                return result
            message = self._render.root(incident, timeline, now)
            root = self._post_root(incident_id, channel, message, root)
            result.root = "posted"
        elif root.get("mode") == "digest":
            self._mark_digest_dirty(root["channel"], incident_id)
            result.root = "digest"
            return result
        else:
            message = self._render.root(incident, timeline, now)
            if _digest(message) != root.get("digest"):
                self._update_bucket().take()
                self.web.update_message(root["channel_id"], root["ts"], message.text, message.blocks)
                self._r.hset(self.key("root", incident_id), "digest", _digest(message))
                result.root = "updated"

        for entry in timeline:
            if self._post_reply(incident, entry, root):
                result.replies.append(entry.id)
        return result

    # --- root -----------------------------------------------------------------------------------
    def _post_root(
        self, incident_id: str, channel: str, message: Message, root: dict[str, str]
    ) -> dict[str, str]:
        key = self.key("root", incident_id)
        event_id = f"{incident_id}/root"
        ts: str | None = None
        channel_id = root.get("channel_id") or self._known_channel_id(channel)
        if root.get("pending") and channel_id:
            ts = self.web.find_posted(channel_id, event_id, thread_ts=None, oldest=float(root["pending"]) - 5)
        if ts is None:
            self._post_bucket(channel).take()
            self._r.hset(key, mapping={"channel": channel, "mode": "message", "pending": str(self._clock())})
            channel_id, ts = self.web.post_message(channel, message.text, message.blocks, event_id=event_id)
            self._r.hset(self.key("channel_ids"), channel, channel_id)
        record: dict[str, str] = {
            "channel": channel,
            "channel_id": channel_id or "",
            "ts": ts,
            "mode": "message",
        }
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={"channel": channel, "channel_id": record["channel_id"], "ts": ts, "mode": "message"},
        )
        pipe.hset(key, "digest", _digest(message))
        pipe.hdel(key, "pending")
        pipe.execute()
        log.info("slack root posted: incident=%s channel=%s ts=%s", incident_id, channel, ts)
        return record

    def _known_channel_id(self, channel: str) -> str | None:
        value = self._r.hget(self.key("channel_ids"), channel)
        return _t(value) if value else None

    # --- replies --------------------------------------------------------------------------------
    def _post_reply(self, incident: Incident, entry: TimelineEntry, root: dict[str, str]) -> bool:
        posted_key = self.key("posted", incident.id)
        state = self._r.hget(posted_key, entry.id)
        if state is not None and not _t(state).startswith("pending:"):
            return False
        if entry.kind in SILENT_KINDS:
            self._r.hset(posted_key, entry.id, "root")
            return False
        event_id = f"{incident.id}/{entry.id}"
        ts: str | None = None
        if state is not None:
            ts = self.web.find_posted(root["channel_id"], event_id, thread_ts=root["ts"], oldest=0)
        if ts is None:
            message = self._render.event(incident, entry)
            self._post_bucket(root["channel"]).take()
            self._r.hset(posted_key, entry.id, f"pending:{self._clock()}")
            _, ts = self.web.post_message(
                root["channel_id"], message.text, message.blocks, thread_ts=root["ts"], event_id=event_id
            )
        self._r.hset(posted_key, entry.id, ts)
        return True

    def reply_ts(self, incident_id: str, entry_id: str) -> str | None:
        """The ts of the threaded reply posted for a timeline entry, if any."""
        value = self._r.hget(self.key("posted", incident_id), entry_id)
        text = _t(value) if value is not None else None
        return text if text and not text.startswith("pending:") and text != "root" else None

    # --- storms and digests ---------------------------------------------------------------------
    def _storming(self, channel: str, incident_id: str) -> bool:
        """Register a new root in the channel; True when the channel is in an alert storm."""
        now = self._clock()
        key = self.key("storm", channel)
        pipe = self._r.pipeline(transaction=True)
        pipe.zremrangebyscore(key, 0, now - self._s.slack_storm_window_seconds)
        pipe.zadd(key, {incident_id: now})
        pipe.zcard(key)
        pipe.expire(key, self._s.slack_storm_window_seconds * 2)
        count = int(pipe.execute()[2])
        return count > self._s.slack_storm_threshold

    def _join_digest(self, channel: str, incident_id: str) -> None:
        now = self._clock()
        dkey = self.key("digest", channel)
        last = self._r.hget(dkey, "last_added")
        if last is not None and now - float(_t(last)) > self._s.slack_storm_window_seconds:
            # The previous storm in this channel went quiet: this one gets a digest of its own.
            self._r.delete(dkey, dkey + ":members")
        pipe = self._r.pipeline(transaction=True)
        pipe.hsetnx(dkey, "started", str(now))
        pipe.hset(dkey, "last_added", str(now))
        pipe.sadd(dkey + ":members", incident_id)
        pipe.hset(self.key("root", incident_id), mapping={"channel": channel, "mode": "digest"})
        pipe.execute()
        self._mark_digest_dirty(channel, incident_id)

    def _mark_digest_dirty(self, channel: str, incident_id: str) -> None:
        interval = self._s.slack_digest_interval_seconds
        scheduled = self._r.set(
            self.key("digest", channel) + ":scheduled", incident_id, nx=True, ex=max(5, int(interval * 10))
        )
        if scheduled:
            if self._schedule is not None:
                self._schedule(channel, interval)
            else:
                self.flush_digest(channel)

    def flush_digest(self, channel: str) -> str:
        """Post or update the channel's digest to list its incidents now; returns 'posted'/'updated'."""
        try:
            lock = self._r.lock(self.key("lock", "digest", channel), timeout=120, blocking_timeout=30)
            if not lock.acquire():
                raise TransientError(f"digest of {channel} busy in another worker; will retry")
            try:
                return self._flush_locked(channel)
            finally:
                with contextlib.suppress(LockError):
                    lock.release()
        except RedisError as exc:
            raise TransientError(f"redis error while flushing the digest of {channel}: {exc}") from exc

    def _flush_locked(self, channel: str) -> str:
        dkey = self.key("digest", channel)
        self._r.delete(dkey + ":scheduled")  # changes from now on schedule another flush
        ids = sorted(_t(i) for i in self._r.smembers(dkey + ":members"))
        incidents = [i for i in (self._get_or_none(x) for x in ids) if i is not None]
        message = self._render.digest(
            channel, incidents, self._s.slack_storm_window_seconds, datetime.now(UTC)
        )
        state = {_t(k): _t(v) for k, v in self._r.hgetall(dkey).items()}
        if state.get("ts"):
            self._update_bucket().take()
            self.web.update_message(state["channel_id"], state["ts"], message.text, message.blocks)
            return "updated"
        event_id = f"digest/{channel}/{state.get('started', '')}"
        ts: str | None = None
        channel_id = state.get("channel_id") or self._known_channel_id(channel)
        if state.get("pending") and channel_id:
            ts = self.web.find_posted(
                channel_id, event_id, thread_ts=None, oldest=float(state["pending"]) - 5
            )
        if ts is None:
            self._post_bucket(channel).take()
            self._r.hset(dkey, "pending", str(self._clock()))
            channel_id, ts = self.web.post_message(channel, message.text, message.blocks, event_id=event_id)
        self._r.hset(dkey, mapping={"channel_id": channel_id or "", "ts": ts})
        self._r.hdel(dkey, "pending")
        log.info("slack digest posted: channel=%s incidents=%d", channel, len(incidents))
        return "posted"

    def _get_or_none(self, incident_id: str) -> Incident | None:
        try:
            return self._store.get(incident_id)
        except Exception:  # an expired or malformed incident must not block the digest
            log.warning("digest: incident %s unreadable; left out", incident_id)
            return None
