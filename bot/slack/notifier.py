"""Keeping Slack in step with incidents: one root message per incident, one threaded reply per event.

`SlackNotifier.sync(incident_id)` is idempotent: it makes Slack show the incident's current state and
every timeline entry exactly once, however often it runs (Celery redelivery, several events at once).

The Redis keys it keeps (root, posted, storm, digest, locks, buckets) are listed in
bot/storage/slack_messages.py.

Exactly-once posting: before chat.postMessage the entry is marked pending; after it, the ts is stored. A
task that finds "pending" (the previous attempt died between the two) looks for its own message by the
metadata ``event_id`` it attached, and records that instead of posting again.

Alert storms: when more than SLACK_STORM_THRESHOLD incidents get a root in one channel within
SLACK_STORM_WINDOW_SECONDS, further incidents in that channel get no message of their own; they join the
channel's digest, a single message re-rendered in place at most every SLACK_DIGEST_INTERVAL_SECONDS.

Rate limits never hold a worker slot: every post and update takes its token with
`TokenBucket.take_in_turn`, which never waits. When a channel's bucket is empty (or earlier syncs are
queued for it), the sync stops where it is, keeps its place in the channel's first-come line, and asks
`reschedule_sync(incident_id, seconds)` to run it again when its turn is due (one re-run scheduled per
incident at a time: later notifications of the same incident coalesce into it, since a sync shows the whole
state). A digest flush does the same through `schedule_digest_flush`. The slot then serves other work at
once; per-channel order is the order in which syncs first asked for the channel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.errors import TransientError
from bot.integrations.slack import SlackWeb
from bot.models import Incident, TimelineEntry
from bot.settings import Settings
from bot.slack.render import Message, SlackRenderer
from bot.storage.bucket import LEASE_GRACE_SECONDS, TokenBucket
from bot.storage.incidents import IncidentStore
from bot.storage.slack_messages import SlackMessages, StorageError

log = logging.getLogger("incident_bot.slack.notifier")

#: Timeline kinds that get no reply of their own (the root message already says it).
SILENT_KINDS = frozenset({"opened"})
#: The event id of a sync re-run after a rate-limit wait (the task passes `resumed=True` for it).
DEFERRED_EVENT = "slack:deferred"
#: chat.update is Tier 3 (~50 per minute per workspace).
UPDATE_RATE, UPDATE_BURST = 50 / 60, 10


def _digest(message: Message) -> str:
    body = json.dumps({"text": message.text, "blocks": message.blocks}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class SyncResult:
    """What one sync did."""

    root: str = "unchanged"  # posted | updated | unchanged | digest
    replies: list[str] = field(default_factory=list)  # timeline entry ids posted now
    deferred: float | None = None  # seconds until the rest is due, when a rate limit stopped the sync


class _NoToken(Exception):
    """A bucket has no token for this caller now; `wait` seconds until its turn."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"no token for {wait:.2f}s")
        self.wait = wait


class SlackNotifier:
    """Posts and updates incident messages through SlackWeb, within Slack's rate limits."""

    def __init__(
        self,
        web: SlackWeb,
        store: IncidentStore,
        messages: SlackMessages,
        renderer: SlackRenderer,
        settings: Settings,
        *,
        schedule_digest_flush: Callable[[str, float], None] | None = None,
        reschedule_sync: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.web = web
        self._store = store
        self._m = messages
        self._render = renderer
        self._s = settings
        self._schedule = schedule_digest_flush
        self._reschedule = reschedule_sync
        self._clock = clock
        self._sleep = sleep

    # --- keys and buckets -----------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A Redis key of the Slack side."""
        return self._m.key(*parts)

    def _post_bucket(self, channel: str) -> TokenBucket:
        rate, burst = self._s.slack_posts_per_second, self._s.slack_post_burst
        return self._m.bucket("post", channel, rate=rate, burst=burst, sleep=self._sleep)

    def _update_bucket(self) -> TokenBucket:
        return self._m.bucket("update", rate=UPDATE_RATE, burst=UPDATE_BURST, sleep=self._sleep)

    @staticmethod
    def _take(bucket: TokenBucket, waiter: str) -> None:
        """Take a token in turn, or stop the caller with the seconds until its turn (never sleeps)."""
        wait = bucket.take_in_turn(waiter)
        if wait > 0:
            raise _NoToken(wait)

    def channel_for(self, incident: Incident) -> str:
        """The channel configured for the incident's severity."""
        return self._s.slack_channels[incident.severity.value]

    def root_of(self, incident_id: str) -> dict[str, str]:
        """The stored root record of an incident ({} when none)."""
        return self._m.root(incident_id)

    # --- sync -----------------------------------------------------------------------------------
    def sync(self, incident_id: str, *, resumed: bool = False) -> SyncResult:
        """Make Slack show the incident's current state and each of its timeline entries once.

        When a rate limit stops it, the result's `deferred` says when the rest is due and a re-run is
        scheduled (`resumed=True` marks that re-run).
        """
        result = SyncResult()
        try:
            with self._m.locked(incident_id) as held:
                if not held:
                    raise TransientError(f"Slack sync of {incident_id} busy in another worker; will retry")
                if resumed:
                    self._m.clear_deferral(incident_id)
                try:
                    self._sync_locked(incident_id, result)
                except _NoToken as stop:
                    self._defer(incident_id, result, stop.wait)
                    return result
                if resumed:  # a place in line it kept and no longer needs (e.g. it joined a digest)
                    self._leave_lines(incident_id)
                return result
        except StorageError as exc:
            raise TransientError(f"redis error during Slack sync of {incident_id}: {exc}") from exc

    def _defer(self, incident_id: str, result: SyncResult, wait: float) -> None:
        result.deferred = wait
        if self._reschedule is not None and self._m.claim_deferral(incident_id, wait + LEASE_GRACE_SECONDS):
            self._reschedule(incident_id, wait)
        log.info("slack sync of %s waits %.2fs for its rate-limit turn", incident_id, wait)

    def _leave_lines(self, incident_id: str) -> None:
        channel = self.root_of(incident_id).get("channel")
        if channel:
            self._post_bucket(channel).leave(incident_id)
        self._update_bucket().leave(incident_id)

    def _sync_locked(self, incident_id: str, result: SyncResult) -> None:
        incident = self._store.get(incident_id)
        timeline = self._store.timeline(incident_id)
        now = datetime.now(UTC)
        root = self.root_of(incident_id)
        if not root.get("ts") and root.get("mode") != "digest":
            channel = self.channel_for(incident)
            if not root.get("pending") and not root.get("admitted"):
                if self._storming(channel, incident_id):
                    self._join_digest(channel, incident_id)
                    result.root = "digest"
                    return
                self._m.admit_root(incident_id, channel)  # a re-run after a rate-limit wait posts it
            message = self._render.root(incident, timeline, now)
            root = self._post_root(incident_id, channel, message, root)
            result.root = "posted"
        elif root.get("mode") == "digest":
            self._mark_digest_dirty(root["channel"], incident_id)
            result.root = "digest"
            return
        else:
            message = self._render.root(incident, timeline, now)
            if _digest(message) != root.get("digest"):
                self._take(self._update_bucket(), incident_id)
                self.web.update_message(root["channel_id"], root["ts"], message.text, message.blocks)
                self._m.set_root_digest(incident_id, _digest(message))
                result.root = "updated"

        for entry in timeline:
            if self._post_reply(incident, entry, root):
                result.replies.append(entry.id)

    # --- root -----------------------------------------------------------------------------------
    def _post_root(
        self, incident_id: str, channel: str, message: Message, root: dict[str, str]
    ) -> dict[str, str]:
        event_id = f"{incident_id}/root"
        ts: str | None = None
        channel_id = root.get("channel_id") or self._known_channel_id(channel)
        if root.get("pending") and channel_id:
            ts = self.web.find_posted(channel_id, event_id, thread_ts=None, oldest=float(root["pending"]) - 5)
        if ts is None:
            self._take(self._post_bucket(channel), incident_id)
            self._m.mark_root_pending(incident_id, channel, self._clock())
            channel_id, ts = self.web.post_message(channel, message.text, message.blocks, event_id=event_id)
            self._m.remember_channel_id(channel, channel_id)
        record: dict[str, str] = {
            "channel": channel,
            "channel_id": channel_id or "",
            "ts": ts,
            "mode": "message",
        }
        self._m.save_root(incident_id, channel, record["channel_id"], ts, _digest(message))
        log.info("slack root posted: incident=%s channel=%s ts=%s", incident_id, channel, ts)
        return record

    def _known_channel_id(self, channel: str) -> str | None:
        return self._m.channel_id(channel)

    # --- replies --------------------------------------------------------------------------------
    def _post_reply(self, incident: Incident, entry: TimelineEntry, root: dict[str, str]) -> bool:
        state = self._m.reply(incident.id, entry.id)
        if state is not None and not state.startswith("pending:"):
            return False
        if entry.kind in SILENT_KINDS:
            self._m.set_reply(incident.id, entry.id, "root")
            return False
        event_id = f"{incident.id}/{entry.id}"
        ts: str | None = None
        if state is not None:
            ts = self.web.find_posted(root["channel_id"], event_id, thread_ts=root["ts"], oldest=0)
        if ts is None:
            message = self._render.event(incident, entry)
            self._take(self._post_bucket(root["channel"]), incident.id)
            self._m.set_reply(incident.id, entry.id, f"pending:{self._clock()}")
            _, ts = self.web.post_message(
                root["channel_id"], message.text, message.blocks, thread_ts=root["ts"], event_id=event_id
            )
        self._m.set_reply(incident.id, entry.id, ts)
        return True

    def reply_ts(self, incident_id: str, entry_id: str) -> str | None:
        """The ts of the threaded reply posted for a timeline entry, if any."""
        text = self._m.reply(incident_id, entry_id)
        return text if text and not text.startswith("pending:") and text != "root" else None

    # --- storms and digests ---------------------------------------------------------------------
    def _storming(self, channel: str, incident_id: str) -> bool:
        """Register a new root in the channel; True when the channel is in an alert storm."""
        count = self._m.storm_count(channel, incident_id, self._clock(), self._s.slack_storm_window_seconds)
        return count > self._s.slack_storm_threshold

    def _join_digest(self, channel: str, incident_id: str) -> None:
        now = self._clock()
        last = self._m.digest_last_added(channel)
        if last is not None and now - last > self._s.slack_storm_window_seconds:
            # The previous storm in this channel went quiet: this one gets a digest of its own.
            self._m.reset_digest(channel)
        self._m.join_digest(channel, incident_id, now)
        self._mark_digest_dirty(channel, incident_id)

    def _mark_digest_dirty(self, channel: str, incident_id: str) -> None:
        interval = self._s.slack_digest_interval_seconds
        scheduled = self._m.claim_flush(channel, incident_id, max(5, int(interval * 10)))
        if scheduled:
            if self._schedule is not None:
                self._schedule(channel, interval)
            else:
                self.flush_digest(channel)

    def flush_digest(self, channel: str) -> str:
        """Post or update the channel's digest to list its incidents now: 'posted', 'updated' or 'deferred'.

        'deferred': no token yet; another flush is scheduled for when its turn is due.
        """
        try:
            with self._m.locked("digest", channel) as held:
                if not held:
                    raise TransientError(f"digest of {channel} busy in another worker; will retry")
                try:
                    return self._flush_locked(channel)
                except _NoToken as stop:
                    interval = self._s.slack_digest_interval_seconds
                    ttl = max(5, int(stop.wait + interval * 10))
                    if self._m.claim_flush(channel, "deferred", ttl) and self._schedule is not None:
                        self._schedule(channel, stop.wait)
                    return "deferred"
        except StorageError as exc:
            raise TransientError(f"redis error while flushing the digest of {channel}: {exc}") from exc

    def _flush_locked(self, channel: str) -> str:
        self._m.clear_flush(channel)  # changes from now on schedule another flush
        ids = self._m.digest_members(channel)
        incidents = [i for i in (self._get_or_none(x) for x in ids) if i is not None]
        message = self._render.digest(
            channel, incidents, self._s.slack_storm_window_seconds, datetime.now(UTC)
        )
        state = self._m.digest(channel)
        if state.get("ts"):
            self._take(self._update_bucket(), f"digest:{channel}")
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
            self._take(self._post_bucket(channel), f"digest:{channel}")
            self._m.mark_digest_pending(channel, self._clock())
            channel_id, ts = self.web.post_message(channel, message.text, message.blocks, event_id=event_id)
        self._m.save_digest(channel, channel_id or "", ts)
        log.info("slack digest posted: channel=%s incidents=%d", channel, len(incidents))
        return "posted"

    def _get_or_none(self, incident_id: str) -> Incident | None:
        try:
            return self._store.get(incident_id)
        except Exception:  # an expired or malformed incident must not block the digest
            log.warning("digest: incident %s unreadable; left out", incident_id)
            return None
