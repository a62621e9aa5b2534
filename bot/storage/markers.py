"""Once-markers of the Slack side: keys set at most once for a while, to drop replays and redeliveries.

Keys (under the store prefix):

    slack:sig:<sha256 of the signature>     a signed request seen (replay guard of the web side)
    slack:event:<event id>                  an Events API event taken (Slack retries it otherwise)
    slack:done:<request id>                 a slash command handled: its outcome
    slack:done:action:<request id>          a button click handled: its outcome
    slack:approval:<incident>:<step key>    the first approval decision of a step (JSON)
"""

from __future__ import annotations

import redis


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Markers:
    """SET NX EX markers: the first caller claims a key, later ones see it taken until it expires."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def key(self, *parts: str) -> str:
        """A key of the Slack side under the prefix."""
        return self._p + ":".join(("slack", *parts))

    def _claim(self, key: str, value: str, ttl: int) -> bool:
        return bool(self._r.set(key, value, nx=True, ex=ttl))

    def claim_signature(self, digest: str, ttl: int) -> bool:
        """Claim a signed request (by the digest of its signature); False when it was seen already."""
        return self._claim(self.key("sig", digest), "1", ttl)

    def claim_event(self, event_id: str, ttl: int) -> bool:
        """Claim an Events API event; False when it was taken already (a retry)."""
        return self._claim(self.key("event", event_id), "1", ttl)

    def _done_key(self, request_id: str, action: bool) -> str:
        return self.key("done", "action", request_id) if action else self.key("done", request_id)

    def handled(self, request_id: str, *, action: bool = False) -> bool:
        """Whether a command (or with `action`, a button click) with this request id was handled."""
        return bool(self._r.exists(self._done_key(request_id, action)))

    def mark_handled(self, request_id: str, outcome: str, ttl: int, *, action: bool = False) -> None:
        """Record that the command (or button click) was handled, with its outcome."""
        self._r.set(self._done_key(request_id, action), outcome, ex=ttl)

    def claim_approval(self, incident_id: str, step_key: str, record: str, ttl: int) -> bool:
        """Record the first decision of an approval step; False when one was recorded already."""
        return self._claim(self.key("approval", incident_id, step_key), record, ttl)

    def approval(self, incident_id: str, step_key: str) -> str | None:
        """The decision recorded for an approval step, if any."""
        raw = self._r.get(self.key("approval", incident_id, step_key))
        return _text(raw) if raw is not None else None
