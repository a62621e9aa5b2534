"""What the safety guards' answers mean: a verdict for one more action (decisions only, no Redis).

The guards' state (target locks, cooldowns, the circuit breaker's window) lives in
:mod:`bot.storage.guards`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.guards import Guards


@dataclass(frozen=True)
class Verdict:
    """Whether a guard lets an action through, and why not."""

    allowed: bool
    reason: str = ""


def breaker_verdict(used: int, max_actions: int, window_seconds: int) -> Verdict:
    """Whether one more action fits in the circuit breaker's window (no reservation; for dry runs, plans)."""
    if used >= max_actions:
        return Verdict(False, f"circuit breaker: {used} actions in the last {window_seconds}s")
    return Verdict(True)


def breaker_check(guards: Guards) -> Verdict:
    """The breaker's verdict on one more action, from the guards' current window."""
    return breaker_verdict(guards.actions_in_window(), guards.max_actions, guards.window_seconds)
