"""One list of task names: the workers register exactly the names in bot.tasknames, routed as it says."""

from __future__ import annotations

import importlib

from bot import tasknames
from bot.settings import Settings
from bot.wiring import celery_config, make_celery


def test_workers_register_exactly_the_shared_task_names() -> None:
    from workers.celery_app import app

    for module in app.conf.include:
        importlib.import_module(module)
    registered = {name for name in app.tasks if name.startswith("workers.")}
    assert registered == set(tasknames.ALL_TASKS)
    assert len(tasknames.ALL_TASKS) == len(set(tasknames.ALL_TASKS))


def test_every_task_routes_to_the_queue_its_name_says() -> None:
    routes = celery_config(Settings(alertmanager_token="x"))["task_routes"]
    assert routes is tasknames.TASK_ROUTES
    expected = {
        tasknames.PROCESS_ALERT_GROUP: "alerts",
        tasknames.TIMERS_TICK: "alerts",
        tasknames.NOTIFY_INCIDENT: "notifications",
        tasknames.PAGERDUTY_SYNC: "notifications",
        tasknames.ROLLBACK_CHANGE_EVENT: "notifications",
        tasknames.RUNBOOK_STEP: "runbooks",
        tasknames.ROLLBACK_EXECUTE: "runbooks",
    }
    router = make_celery(Settings(alertmanager_token="x"), with_tasks=False).amqp.router

    def queue(name: str) -> str:
        return str(router.route({}, name)["queue"].name)

    assert {name: queue(name) for name in expected} == expected
    assert {queue(n) for n in tasknames.ALL_TASKS} == set(tasknames.ALL_QUEUES)
