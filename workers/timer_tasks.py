"""The timer tick: beat sends it every TIMER_TICK_SECONDS; it fires due escalations and reminders."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from bot.tasknames import TIMERS_TICK, change_notifications
from workers.celery_app import app, fanout_settings
from workers.tasks import incident_store

log = logging.getLogger("incident_bot.worker")


@app.task(name=TIMERS_TICK)  # type: ignore[untyped-decorator]
def tick(now: str | None = None) -> dict[str, int]:
    """Claim the due timers (each goes to exactly one tick) and fire them; returns outcome counts.

    `now` (ISO 8601) fires as of another time: game days and tests fast-forward escalations with it.
    """
    store = incident_store()
    results = store.fire_due(datetime.fromisoformat(now) if now else None)
    counts = Counter(outcome for _timer, outcome in results)
    for outcome, n in counts.items():
        for _ in range(n):
            store.count_task("timers.tick", outcome)
    if results:
        log.info("timers fired: %s", ", ".join(f"{t.member}={o}" for t, o in results))
    # an escalation is a timeline entry: Slack's thread (and PagerDuty's view) follow through the fan-out
    for incident_id in sorted({t.incident_id for t, outcome in results if outcome == "escalated"}):
        for name, args in change_notifications(fanout_settings(), incident_id, "timer:escalated"):
            app.send_task(name, args=args)
    return dict(counts)
