"""What the PagerDuty sync remembers, in Redis.

Keys (under the store prefix):

    pd:<incident>               hash: state (what PagerDuty was last told or told us), pd_incident_id
    pd:<incident>:changes       set of timeline entry ids whose change event was sent
    pd:webhook:<webhook id>     a webhook delivery handled: its outcome (kept a day)
    pd:by-pd-id:<pd incident>   the bot's incident id of a PagerDuty incident
    pd:ignored                  stream of webhook events about incidents the bot did not open
    lock:pd:<incident>          serialises syncs of one incident across workers
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PagingState:
    """The PagerDuty sync's per-incident state, webhook markers and links to PagerDuty incidents."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def key(self, *parts: str) -> str:
        """A key under the prefix."""
        return self._p + ":".join(parts)

    @contextlib.contextmanager
    def locked(self, incident_id: str) -> Iterator[bool]:
        """Hold the incident's sync lock (60 s, waiting up to 30 s); yields whether it was taken."""
        lock = self._r.lock(self.key("lock", "pd", incident_id), timeout=60, blocking_timeout=30)
        if not lock.acquire():
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def recorded(self, incident_id: str) -> dict[str, str]:
        """What the bot last told PagerDuty (or learnt from it) about this incident."""
        raw = self._r.hgetall(self.key("pd", incident_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    def record(self, incident_id: str, **fields: str) -> None:
        """Update fields of the incident's PagerDuty state."""
        mapping: dict[str | bytes, str | bytes] = dict(fields.items())
        self._r.hset(self.key("pd", incident_id), mapping=mapping)  # type: ignore[arg-type]

    def change_sent(self, incident_id: str, entry_id: str) -> bool:
        """Whether the change event of this timeline entry was sent."""
        return bool(self._r.sismember(self.key("pd", incident_id, "changes"), entry_id))

    def mark_change_sent(self, incident_id: str, entry_id: str) -> None:
        """Record that the change event of this timeline entry was sent."""
        self._r.sadd(self.key("pd", incident_id, "changes"), entry_id)

    def webhook_handled(self, webhook_id: str) -> bool:
        """Whether this webhook delivery was handled already."""
        return bool(self._r.exists(self.key("pd", "webhook", webhook_id)))

    def mark_webhook(self, webhook_id: str, outcome: str) -> None:
        """Record a handled webhook delivery (for a day: PagerDuty redelivers within hours)."""
        self._r.set(self.key("pd", "webhook", webhook_id), outcome, ex=86_400)

    def incident_of(self, pd_id: str) -> str | None:
        """The bot's incident id of a PagerDuty incident, once a webhook linked them."""
        raw = self._r.get(self.key("pd", "by-pd-id", pd_id))
        return _text(raw) if raw else None

    def link(self, pd_id: str, incident_id: str) -> None:
        """Remember which incident a PagerDuty incident is."""
        self._r.set(self.key("pd", "by-pd-id", pd_id), incident_id)

    def ignored(self, event_type: str, pd_id: str, incident_key: str) -> None:
        """Note a webhook event about an incident the bot did not open (the last 1000 are kept)."""
        self._r.xadd(
            self.key("pd", "ignored"),
            {"event_type": event_type, "pd_incident": pd_id, "incident_key": incident_key},
            maxlen=1000,
        )
