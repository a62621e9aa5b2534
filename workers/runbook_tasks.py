"""Runbook tasks (queue `runbooks`): start a run, execute one step, record an approval.

Rollbacks requested by people have their own flow and tasks (workers/rollback_tasks.py).

Each `step` task executes exactly one step and then enqueues the next one, so no task runs longer than
one step's timeout (≤ 10 min, under the visibility timeout). Waits and approvals re-check through
countdowns capped at half the visibility timeout; a redelivered or duplicate task is harmless (the run's
cursor and its per-step records make every step happen once).

Runs write to the incident's timeline (run started, each step, approval requested, `notify`, run finished),
so after each such task the incident's change fan-out is sent, as intake and timers do: Slack's thread and
PagerDuty follow the run as it happens, not only at the incident's next alert change.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from bot import tasknames
from bot.errors import ConfigError, TransientError
from bot.plan.select import MissingParameter, incident_label_sets, select
from bot.runbook.engine import Advance, Engine, RunStatus
from bot.settings import get_settings
from bot.severity import notify_only_rule
from bot.tasknames import QUEUE_RUNBOOKS, change_notifications
from bot.wiring import build_engine
from workers.celery_app import app, fanout_settings

log = logging.getLogger("incident_bot.worker.runbook")


_RETRY: dict[str, Any] = {
    "bind": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 40,
}


@functools.lru_cache(maxsize=1)
def engine() -> Engine:
    """The worker process's engine (runbooks are loaded once per process)."""
    return build_engine(get_settings())


def _send_step(run_id: str, index: int, countdown: float | None = None) -> None:
    app.send_task(
        tasknames.RUNBOOK_STEP,
        args=(run_id, index),
        queue=QUEUE_RUNBOOKS,
        routing_key=QUEUE_RUNBOOKS,
        countdown=countdown,
    )


def follow(eng: Engine, run_id: str, index: int, advance: Advance) -> None:
    """Enqueue what comes after one step call (the next step, or a re-check of this one)."""
    if advance.next_index is not None:
        if not advance.resend or not eng.kicked(run_id, advance.next_index):
            _send_step(run_id, advance.next_index)  # send first: a crash before the marker only duplicates
            eng.mark_kicked(run_id, advance.next_index)
    elif advance.recheck_after is not None:
        cap = get_settings().celery_visibility_timeout / 2
        _send_step(run_id, index, countdown=max(0.1, min(advance.recheck_after, cap)))


def announce(incident_id: str, event: str) -> None:
    """Send the incident's change notifications (Slack, PagerDuty) after a run wrote to its timeline."""
    try:
        for name, args in change_notifications(fanout_settings(), incident_id, event):
            app.send_task(name, args=args)
    except (KombuError, RedisError, OSError) as exc:
        raise TransientError(f"could not queue the notifications: {exc}") from exc


@app.task(name=tasknames.RUNBOOK_RUN, **_RETRY)  # type: ignore[untyped-decorator]
def run(
    self: Any,
    incident_id: str,
    runbook: str,
    dry_run: bool = False,
    trigger: str = "manual",
    request_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Create a run of *runbook* for the incident (once per request_id) and enqueue its first step."""
    return _start(incident_id, runbook, dry_run, trigger, request_id, overrides)


def _start(
    incident_id: str,
    runbook: str,
    dry_run: bool,
    trigger: str,
    request_id: str | None,
    overrides: dict[str, Any] | None,
) -> str:
    eng = engine()
    try:
        record, _created = eng.create_run(
            incident_id, runbook, dry_run=dry_run, trigger=trigger, request_id=request_id, overrides=overrides
        )
    except MissingParameter as exc:
        eng.store.append_timeline(
            incident_id, "runbook_not_started", f"Runbook {runbook} not started: {exc}", {"runbook": runbook}
        )
        announce(incident_id, f"runbook:{runbook}:not_started")
        return ""
    if record.status is RunStatus.NEEDS_TARGET:  # parked: a person's run command with overrides resumes it
        announce(incident_id, f"runbook:{record.id}:needs_target")
        return record.id
    if not eng.kicked(record.id, 0):
        _send_step(record.id, 0)
        eng.mark_kicked(record.id, 0)
    announce(incident_id, f"runbook:{record.id}:started")
    return record.id


@app.task(name=tasknames.RUNBOOK_STEP, **_RETRY)  # type: ignore[untyped-decorator]
def step(self: Any, run_id: str, index: int) -> str:
    """Execute step *index* of the run (no-op when it is not the run's current step)."""
    eng = engine()
    advance = eng.execute_step(run_id, index)
    follow(eng, run_id, index, advance)
    if advance.status is not RunStatus.WAITING:  # a wait that re-checks later writes no timeline entry
        announce(eng.get_run(run_id).incident_id, f"runbook:{run_id}:{index}")
    return advance.status.value


_DECISIONS = {"approve": "approve", "approved": "approve", "yes": "approve", "deny": "deny", "denied": "deny"}


@app.task(name=tasknames.APPROVAL_DECISION, **_RETRY)  # type: ignore[untyped-decorator]
def approval_decision(self: Any, incident_id: str, step_key: str, decision: str, actor: str) -> str:
    """Record a person's approve/deny of a paused step and resume the run."""
    eng = engine()
    verdict = eng.decide(incident_id, step_key, _DECISIONS.get(decision.lower(), decision), actor)
    if verdict.accepted and verdict.run_id is not None and verdict.index is not None:
        _send_step(verdict.run_id, verdict.index)
        announce(incident_id, f"runbook:{verdict.run_id}:{verdict.index}:decision")
    log.info("approval %s %s by %s: %s", incident_id, step_key, actor, verdict.message)
    return verdict.message


def start_matching_runbooks(incident_id: str) -> list[str]:
    """Enqueue a run of each runbook matching the incident's firing alerts (once per incident and runbook)."""
    settings = get_settings()
    if not settings.runbook_auto_run:
        return []
    try:
        eng = engine()
    except ConfigError as exc:
        log.error("runbooks not started for %s: %s", incident_id, exc)
        return []
    incident = eng.store.get(incident_id)
    # notify-only alerts (severity policy `notify_only: true`) are announced, never acted on
    actionable = [s for s in incident_label_sets(incident) if notify_only_rule(s, eng.store.policy) is None]
    chosen = select(eng.runbooks.values(), actionable, incident.severity)
    for selection in chosen:
        app.send_task(
            tasknames.RUNBOOK_RUN,
            kwargs={
                "incident_id": incident_id,
                "runbook": selection.runbook.name,
                "dry_run": settings.runbook_auto_dry_run,
                "trigger": "automatic",
                "request_id": f"auto:{incident_id}:{selection.runbook.name}",
            },
            queue=QUEUE_RUNBOOKS,
            routing_key=QUEUE_RUNBOOKS,
        )
    return [s.runbook.name for s in chosen]
