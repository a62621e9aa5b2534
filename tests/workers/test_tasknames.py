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
        tasknames.PAGERDUTY_SYNC: "paging",
        tasknames.PAGERDUTY_WEBHOOK: "paging",
        tasknames.FLUSH_DIGEST: "notifications",
        tasknames.SLACK_COMMAND: "notifications",
        tasknames.ROLLBACK_CHANGE_EVENT: "notifications",
        tasknames.RUNBOOK_STEP: "runbooks",
        tasknames.ROLLBACK_EXECUTE: "runbooks",
    }
    router = make_celery(Settings(alertmanager_token="x"), with_tasks=False).amqp.router

    def queue(name: str) -> str:
        return str(router.route({}, name)["queue"].name)

    assert {name: queue(name) for name in expected} == expected
    assert {queue(n) for n in tasknames.ALL_TASKS} == set(tasknames.ALL_QUEUES)


def test_the_lanes_keep_paging_and_intake_away_from_slow_work() -> None:
    lanes = tasknames.LANES
    flat = [q for queues in lanes.values() for q in queues]
    assert sorted(flat) == sorted(tasknames.ALL_QUEUES)  # every queue in exactly one lane
    lane_of = {q: name for name, queues in lanes.items() for q in queues}
    slow = {tasknames.QUEUE_NOTIFICATIONS, tasknames.QUEUE_RUNBOOKS}
    for fast in (tasknames.QUEUE_ALERTS, tasknames.QUEUE_PAGING):
        assert not slow & set(lanes[lane_of[fast]]), f"{fast} shares a lane with slow work"
    assert lane_of[tasknames.QUEUE_NOTIFICATIONS] != lane_of[tasknames.QUEUE_RUNBOOKS]

    router = make_celery(Settings(alertmanager_token="x"), with_tasks=False).amqp.router
    paging = {n for n in tasknames.ALL_TASKS if router.route({}, n)["queue"].name == tasknames.QUEUE_PAGING}
    assert paging == {tasknames.PAGERDUTY_SYNC, tasknames.PAGERDUTY_WEBHOOK}  # no Slack task among them
