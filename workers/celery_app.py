"""The Celery application: Redis broker, late acks, one queue per kind of work.

Visibility timeout: 900 s by default (CELERY_VISIBILITY_TIMEOUT). On Redis a task that was taken but not
acknowledged is handed out again after this long, so it must exceed the longest task; every task here is
bounded well below it (alert intake takes milliseconds; runbook steps carry their own timeouts, capped at
10 minutes). Nothing uses countdowns or ETAs near it: escalation timers live in a Redis sorted set polled by
beat (``workers.tasks.timers.tick`` every TIMER_TICK_SECONDS, see bot.incidents.timers). Longer would
delay recovery after a whole worker node is lost; shorter risks running a long step twice.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from bot.settings import Settings, get_settings

QUEUE_ALERTS = "alerts"
QUEUE_RUNBOOKS = "runbooks"
QUEUE_NOTIFICATIONS = "notifications"
ALL_QUEUES = (QUEUE_ALERTS, QUEUE_RUNBOOKS, QUEUE_NOTIFICATIONS)

TASK_PROCESS_ALERT_GROUP = "workers.tasks.process_alert_group"
TASK_TIMERS_TICK = "workers.tasks.timers.tick"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from the bot's settings."""
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": {
            "visibility_timeout": settings.celery_visibility_timeout,
            "socket_connect_timeout": settings.enqueue_timeout_seconds,
            "socket_timeout": settings.enqueue_timeout_seconds,
        },
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE_ALERTS,
        "task_queues": [Queue(q, routing_key=q) for q in ALL_QUEUES],  # type: ignore[no-untyped-call]
        "task_routes": {
            TASK_PROCESS_ALERT_GROUP: {"queue": QUEUE_ALERTS, "routing_key": QUEUE_ALERTS},
            TASK_TIMERS_TICK: {"queue": QUEUE_ALERTS, "routing_key": QUEUE_ALERTS},
            "workers.tasks.runbook.*": {"queue": QUEUE_RUNBOOKS, "routing_key": QUEUE_RUNBOOKS},
            "workers.tasks.notify.*": {"queue": QUEUE_NOTIFICATIONS, "routing_key": QUEUE_NOTIFICATIONS},
        },
        "beat_schedule": {
            "timers-tick": {
                "task": TASK_TIMERS_TICK,
                "schedule": settings.timer_tick_seconds,
                # a tick nobody picked up before the next one is due is useless: drop it
                "options": {"expires": settings.timer_tick_seconds},
            }
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def make_celery(settings: Settings, *, with_tasks: bool = True) -> Celery:
    """A Celery app for these settings; publishers may leave the tasks out (they use send_task)."""
    # The worker's app must be the current/default app: Task.retry publishes through it from worker threads,
    # and a non-default app sent retries to a default 'localhost' broker (retries were lost).
    celery = Celery("incident_bot", set_as_current=with_tasks)
    celery.conf.update(celery_config(settings))
    if with_tasks:
        celery.conf.include = [
            "workers.tasks",
            "workers.slack_tasks",
            "workers.pagerduty_tasks",
            "workers.timer_tasks",
            "workers.runbook_tasks",
            "workers.rollback_tasks",
        ]
    return celery


app = make_celery(get_settings())
app.set_default()
