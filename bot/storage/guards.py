"""The safety guards' state in Redis, shared by every worker: target locks, cooldowns, the action window.

Keys (under the store prefix):

    guard:lock:<ns>/<deployment>              one mutating action per target at a time (SET NX PX + token)
    guard:cooldown:<action>:<ns>/<deployment> set after an action; the same action waits until it expires
    guard:actions                             sorted set of recent actions (circuit breaker window)

The lock is taken first; cooldown and breaker are checked under it, and the breaker reserves its slot
atomically (``SlidingWindow.reserve``, in Lua), so two workers racing for the same target or the last slot
cannot both act. What a guard's answer means for a run is decided by the callers (``bot.runbook.guards``).
"""

from __future__ import annotations

import secrets
import time

import redis

from bot.settings import Settings
from bot.storage.window import SlidingWindow

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Guards:
    """Locks, cooldowns and the circuit breaker's window in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        cooldown_seconds: int,
        max_actions: int,
        window_seconds: int,
    ) -> None:
        self._r = client
        self._p = prefix
        self.cooldown_seconds = cooldown_seconds
        self.max_actions = max_actions
        self.window_seconds = window_seconds
        self._release = client.register_script(_RELEASE)
        self._actions = SlidingWindow(client, self._key("guard", "actions"), window_seconds)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> Guards:
        """The guards with the configured prefix, cooldown and circuit-breaker window."""
        return cls(
            client,
            settings.key_prefix,
            cooldown_seconds=settings.runbook_cooldown_seconds,
            max_actions=settings.runbook_max_actions,
            window_seconds=settings.runbook_action_window_seconds,
        )

    def _key(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    # --- lock ------------------------------------------------------------------------------------
    def acquire(self, target: str, ttl_seconds: float) -> str | None:
        """Take the target's lock for at most ttl; returns a token, or None when another holds it."""
        token = secrets.token_hex(8)
        ok = self._r.set(self._key("guard", "lock", target), token, nx=True, px=int(ttl_seconds * 1000))
        return token if ok else None

    def release(self, target: str, token: str) -> None:
        """Release the lock if this token still holds it."""
        self._release(keys=[self._key("guard", "lock", target)], args=[token])

    def holder(self, target: str) -> bool:
        """Whether someone holds the target's lock."""
        return bool(self._r.exists(self._key("guard", "lock", target)))

    # --- cooldown --------------------------------------------------------------------------------
    def cooldown_left(self, action: str, target: str) -> float:
        """Seconds until *action* on *target* is allowed again (0: now)."""
        ttl = self._r.pttl(self._key("guard", "cooldown", action, target))
        return max(0.0, ttl / 1000) if ttl and ttl > 0 else 0.0

    def start_cooldown(self, action: str, target: str, by: str) -> None:
        """Record that *action* just happened on *target*."""
        if self.cooldown_seconds > 0:
            self._r.set(self._key("guard", "cooldown", action, target), by, ex=self.cooldown_seconds)

    def cooldown_by(self, action: str, target: str) -> str | None:
        """Who started the running cooldown."""
        value = self._r.get(self._key("guard", "cooldown", action, target))
        return value.decode() if isinstance(value, bytes) else value

    # --- circuit breaker -------------------------------------------------------------------------
    def reserve_action(self, label: str) -> bool:
        """Count one action in the window; False (and nothing counted) when the breaker is tripped."""
        now = time.time()
        member = f"{now:.6f}:{label}:{secrets.token_hex(4)}"
        return self._actions.reserve(member, now, self.max_actions)

    def actions_in_window(self) -> int:
        """How many actions the window holds now."""
        return self._actions.count(time.time())
