"""The one list of Celery task names and queues, shared by the senders (bot/) and the workers (workers/).

Routing follows the name: ``workers.tasks.runbook.*`` runs on the runbooks queue, ``workers.tasks.notify.*``
on notifications, everything else (alert intake, the timer tick) on alerts; the PagerDuty tasks that page,
acknowledge and resolve (PAGERDUTY_SYNC, PAGERDUTY_WEBHOOK) are routed by exact name to the paging queue,
which no Slack work shares. A task module registers its tasks under these names; a sender sends by name
and never imports the worker's code.

Lanes (LANES): which queues one worker consumes. Intake and paging share a lane of short tasks
(milliseconds each); Slack syncs (seconds, rate-limited) and runbook steps (up to minutes) have lanes of
their own, so neither a page nor an alert ever waits for a free slot behind them. `incident-bot dev`, the
Procfile and deploy/ run one worker per lane.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.settings import Settings

QUEUE_ALERTS = "alerts"
QUEUE_RUNBOOKS = "runbooks"
QUEUE_NOTIFICATIONS = "notifications"
QUEUE_PAGING = "paging"
ALL_QUEUES = (QUEUE_ALERTS, QUEUE_PAGING, QUEUE_RUNBOOKS, QUEUE_NOTIFICATIONS)

#: Worker lanes: name -> the queues one worker of that lane consumes (every queue in exactly one lane).
LANES: dict[str, tuple[str, ...]] = {
    "intake": (QUEUE_ALERTS, QUEUE_PAGING),
    "notifications": (QUEUE_NOTIFICATIONS,),
    "runbooks": (QUEUE_RUNBOOKS,),
}

# -- alerts queue ---------------------------------------------------------------------------------------
#: Apply one Alertmanager notification (the web side LPUSHes the message itself). Args: body, key.
PROCESS_ALERT_GROUP = "workers.tasks.process_alert_group"
#: Fire the escalation/reminder timers that are due (beat, every TIMER_TICK_SECONDS).
TIMERS_TICK = "workers.tasks.timers.tick"

# -- notifications queue --------------------------------------------------------------------------------
#: Sync an incident's Slack messages (root + thread) with its state and timeline. Args: incident_id, event_id.
NOTIFY_INCIDENT = "workers.tasks.notify.incident_event"
#: Re-render a channel's alert-storm digest. Args: channel.
FLUSH_DIGEST = "workers.tasks.notify.flush_digest"
#: Run a slash command that the web side acknowledged. Args: the command's form fields (dict).
SLACK_COMMAND = "workers.tasks.notify.slack_command"
#: Handle a button click that the web side acknowledged. Args: the interaction fields (dict).
SLACK_ACTION = "workers.tasks.notify.slack_action"
#: Reconcile PagerDuty with an incident (page, acknowledge, resolve). Args: incident_id. Queue: paging.
PAGERDUTY_SYNC = "workers.tasks.notify.pagerduty_sync"
#: Apply a verified PagerDuty webhook v3 event. Args: event (dict), webhook id. Queue: paging.
PAGERDUTY_WEBHOOK = "workers.tasks.notify.pagerduty_webhook"
#: Send the PagerDuty change event of a finished rollback. Args: request id.
ROLLBACK_CHANGE_EVENT = "workers.tasks.notify.rollback_change_event"

# -- runbooks queue -------------------------------------------------------------------------------------
#: Start a runbook run. kwargs: incident_id, runbook, dry_run, trigger.
RUNBOOK_RUN = "workers.tasks.runbook.run"
#: Execute (or resume) one run's next step. Args: run id.
RUNBOOK_STEP = "workers.tasks.runbook.step"
#: Approval gate decision. Args: incident_id, step_key, decision ("approve"|"deny"), actor.
APPROVAL_DECISION = "workers.tasks.runbook.approval_decision"
#: File a rollback request. kwargs: namespace, deployment, to_revision, incident_id, dry_run, actor.
ROLLBACK_REQUEST = "workers.tasks.runbook.rollback_request"
#: Execute an approved rollback. Args: request id.
ROLLBACK_EXECUTE = "workers.tasks.runbook.rollback_execute"

TASK_ROUTES: dict[str, dict[str, str]] = {
    PROCESS_ALERT_GROUP: {"queue": QUEUE_ALERTS, "routing_key": QUEUE_ALERTS},
    TIMERS_TICK: {"queue": QUEUE_ALERTS, "routing_key": QUEUE_ALERTS},
    # exact names are matched before the patterns: paging keeps its "notify" names (messages already
    # queued under them stay valid) but never shares a queue with Slack work
    PAGERDUTY_SYNC: {"queue": QUEUE_PAGING, "routing_key": QUEUE_PAGING},
    PAGERDUTY_WEBHOOK: {"queue": QUEUE_PAGING, "routing_key": QUEUE_PAGING},
    "workers.tasks.runbook.*": {"queue": QUEUE_RUNBOOKS, "routing_key": QUEUE_RUNBOOKS},
    "workers.tasks.notify.*": {"queue": QUEUE_NOTIFICATIONS, "routing_key": QUEUE_NOTIFICATIONS},
}

#: Every task name above, for the check that the workers register exactly these.
ALL_TASKS = (
    PROCESS_ALERT_GROUP,
    TIMERS_TICK,
    NOTIFY_INCIDENT,
    FLUSH_DIGEST,
    SLACK_COMMAND,
    SLACK_ACTION,
    PAGERDUTY_SYNC,
    PAGERDUTY_WEBHOOK,
    ROLLBACK_CHANGE_EVENT,
    RUNBOOK_RUN,
    RUNBOOK_STEP,
    APPROVAL_DECISION,
    ROLLBACK_REQUEST,
    ROLLBACK_EXECUTE,
)


class TaskSender(Protocol):
    """Sends a Celery task by name (the receiving code lives in workers/)."""

    def send(
        self,
        name: str,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
    ) -> str:
        """Enqueue the task; returns its id. Raises BrokerUnavailable when the broker refuses."""


def change_notifications(
    settings: Settings, incident_id: str, event_id: str | None = None
) -> list[tuple[str, tuple[object, ...]]]:
    """The (task name, args) to send after `incident_id` changed, for the integrations configured."""
    tasks: list[tuple[str, tuple[object, ...]]] = []
    if settings.slack_configured:
        tasks.append((NOTIFY_INCIDENT, (incident_id, event_id)))
    if settings.pagerduty_configured:
        tasks.append((PAGERDUTY_SYNC, (incident_id,)))
    return tasks
