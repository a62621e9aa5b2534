"""The timer tick: beat sends it every TIMER_TICK_SECONDS; it fires due escalations and reminders."""

from __future__ import annotations

import logging
from collections import Counter

from workers.celery_app import TASK_TIMERS_TICK, app
from workers.tasks import incident_store

log = logging.getLogger("incident_bot.worker")


@app.task(name=TASK_TIMERS_TICK)  # type: ignore[untyped-decorator]
def tick() -> dict[str, int]:
    """Claim the due timers (each goes to exactly one tick) and fire them; returns outcome counts."""
    store = incident_store()
    results = store.fire_due()
    counts = Counter(outcome for _timer, outcome in results)
    for outcome, n in counts.items():
        for _ in range(n):
            store.count_task("timers.tick", outcome)
    if results:
        log.info("timers fired: %s", ", ".join(f"{t.member}={o}" for t, o in results))
    return dict(counts)
