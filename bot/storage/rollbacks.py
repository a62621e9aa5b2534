"""Rollback request records in Redis: the numbering, the records (JSON) and each Deployment's claim.

Keys (under the store prefix):

    rollback:seq                     request numbers (RB-0001 …)
    rollback:req:<id>                the request (JSON, kept 90 days)
    rollback:active:<ns>/<name>      the one open request of a Deployment (SET NX); removed with the
                                     move to a terminal state, and expires by itself as a safety net

The records are opaque text here; what a request is and which moves it may make is bot.rollback.state.
Every rewrite is a WATCHed read-check-write, so two workers cannot both rewrite the same version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

#: How long a request's record is kept.
RECORD_TTL_SECONDS = 90 * 86400
#: Delete the claim only if this request still holds it.
_RELEASE_IF_HELD = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Rewrite:
    """A record's new text, and the Deployment (``ns/name``) whose claim the request gives up, if any."""

    text: str
    release_target: str | None = None


class RollbackStore:
    """Rollback records, their sequence and the per-Deployment claims in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, *, active_ttl_seconds: int) -> None:
        self._r = client
        self._p = prefix
        self.active_ttl_seconds = active_ttl_seconds

    def key(self, *parts: str) -> str:
        """A key under the prefix."""
        return self._p + ":".join(("rollback", *parts))

    def next_number(self) -> int:
        """A new request number."""
        return int(self._r.incr(self.key("seq")))

    def last_number(self) -> int:
        """The number of the newest request (0 when none)."""
        return int(_text(self._r.get(self.key("seq")) or b"0"))

    def load(self, request_id: str) -> str | None:
        """The record of a request (JSON), or None."""
        raw = self._r.get(self.key("req", request_id))
        return _text(raw) if raw is not None else None

    def save(self, request_id: str, text: str) -> None:
        """Write a request's record."""
        self._r.set(self.key("req", request_id), text, ex=RECORD_TTL_SECONDS)

    def holder(self, target: str) -> str | None:
        """The id of the request that claims the Deployment `target` (``ns/name``), if any."""
        raw = self._r.get(self.key("active", target))
        return _text(raw) if raw is not None else None

    def claim(self, target: str, request_id: str) -> str | None:
        """Claim the Deployment for the request; None when claimed, else the holder's id ("?" if gone)."""
        active = self.key("active", target)
        if self._r.set(active, request_id, nx=True, ex=self.active_ttl_seconds):
            return None
        return _text(self._r.get(active) or b"?")

    def release_if_held(self, target: str, holder: str) -> bool:
        """Free the Deployment's claim if `holder` still has it; False when someone else does."""
        key = self.key("active", target)
        with self._r.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                if _text(pipe.get(key) or b"") != holder:
                    return False
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def rewrite(self, request_id: str, change: Callable[[str | None], Rewrite]) -> None:
        """Replace a record by `change(current text)` atomically, retrying when another writer came first.

        `change` may raise to leave the record alone; with `release_target` the request's claim on that
        Deployment goes in the same transaction.
        """
        key = self.key("req", request_id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    new = change(_text(raw) if raw is not None else None)
                    pipe.multi()
                    pipe.set(key, new.text, ex=RECORD_TTL_SECONDS)
                    if new.release_target is not None:
                        pipe.eval(_RELEASE_IF_HELD, 1, self.key("active", new.release_target), request_id)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
