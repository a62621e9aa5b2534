"""The Celery application: Redis broker, late acks, one queue per kind of work.

Visibility timeout: 900 s by default (CELERY_VISIBILITY_TIMEOUT). On Redis a task that was taken but not
acknowledged is handed out again after this long, so it must exceed the longest task; every task here is
bounded well below it (alert intake takes milliseconds; runbook steps carry their own timeouts, capped at
10 minutes). Nothing uses countdowns or ETAs near it: escalation timers live in a Redis sorted set polled by
beat (``workers.tasks.timers.tick`` every TIMER_TICK_SECONDS, see bot.storage.timers); the longest
countdowns are a Slack sync's re-run when its rate-limit turn is due (seconds) and the digest flush.
Longer would delay recovery after a whole worker node is lost; shorter risks running a long step twice.
"""

from __future__ import annotations

from bot.settings import Settings, get_settings
from bot.wiring import make_celery

app = make_celery(get_settings())
app.set_default()

#: Settings that replace the process's for the change fan-out only (tests and embedding).
_fanout: Settings | None = None


def fanout_settings() -> Settings:
    """The settings that decide which integrations hear about incident changes (the process's by default)."""
    return _fanout or get_settings()


def use_fanout_settings(settings: Settings | None) -> None:
    """Decide the fan-out with other settings (tests and embedding); None goes back to the process's."""
    global _fanout
    _fanout = settings
