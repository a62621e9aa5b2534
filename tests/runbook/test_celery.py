"""Runbooks through the real Celery worker: approval pauses and resumes; intake starts matching runbooks."""

from __future__ import annotations

from typing import Any

import pytest

import workers.celery_app
import workers.runbook_tasks as runbook_tasks
import workers.slack_tasks
from bot import tasknames, wiring
from bot.models import AlertmanagerWebhook
from bot.plan.schema import parse_runbook
from bot.runbook.engine import RunStatus
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.sandbox import Sandbox
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.tasknames import PROCESS_ALERT_GROUP as TASK_PROCESS_ALERT_GROUP
from bot.tasknames import QUEUE_ALERTS, QUEUE_RUNBOOKS
from bot.wiring import CeleryTaskSender, build_runtime
from tests.runbook.conftest import EngineFactory
from tests.support.fixtures import wait_until, worker_idle
from tests.support.payloads import alert, notification
from tests.support.runbooks import open_incident
from workers.celery_app import app

pytestmark = pytest.mark.integration
SCALE_PATH = r"/apis/apps/v1/namespaces/llm-d/deployments/vllm-decode/scale"
LOW = "C0LOW00001"  # the Slack emulator's #incidents-low (TestAlert classifies P3)

GATED = parse_runbook(
    """
name: gated
description: scale decode once a person approves
match: {alertnames: [TestAlert]}
steps:
  - id: queue
    type: vllm.metrics
  - id: ok_to_scale
    type: approval
    params: {message: "Scale vllm-decode to 3?", timeout: 10m}
  - id: scale
    type: k8s.scale
    params: {namespace: llm-d, deployment: vllm-decode, replicas: 3, max_replicas: 4}
""",
    "gated.yaml",
)


def send(task: str, *args: Any, **kwargs: Any) -> None:
    app.send_task(task, args=args, kwargs=kwargs, queue=QUEUE_RUNBOOKS, routing_key=QUEUE_RUNBOOKS)


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_approval_pauses_the_run_and_the_decision_resumes_it(
    decision: str,
    celery_worker: object,
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(runbooks={"gated": GATED})
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    incident = open_incident(store, "TestAlert")
    sandbox.kube.clear_requests()
    send(tasknames.RUNBOOK_RUN, incident.id, "gated", request_id="req-1")
    send(tasknames.RUNBOOK_RUN, incident.id, "gated", request_id="req-1")  # a redelivery: same run
    wait_until(lambda: [r.status for r in engine.runs_of(incident.id)] == [RunStatus.AWAITING_APPROVAL])
    request = next(t for t in store.timeline(incident.id) if t.kind == "approval_requested")
    assert request.data["step_key"] == f"{incident.id}-R1:ok_to_scale"
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 0

    send(tasknames.APPROVAL_DECISION, incident.id, request.data["step_key"], decision, "U123 (bob)")
    run = wait_until(lambda: next((r for r in engine.runs_of(incident.id) if r.status.terminal), None))
    assert len(engine.runs_of(incident.id)) == 1
    steps = [t for t in store.timeline(incident.id) if t.kind == "runbook_step"]
    if decision == "approve":
        assert run.status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
        assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 1
        gate = next(t for t in steps if t.data["step"] == "ok_to_scale")
        assert gate.data["approved_by"] == "U123 (bob)" and "approved by U123 (bob)" in gate.message
        assert steps[-1].data["step"] == "scale" and steps[-1].data["changed"] is True
    else:
        assert run.status is RunStatus.FAILED  # type: ignore[union-attr]
        assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 0
        assert "denied by U123 (bob)" in steps[-1].message
    # A second decision is refused: the first one wins.
    assert not engine.decide(incident.id, request.data["step_key"], "approve", "mallory").accepted


def test_intake_starts_the_matching_runbook_once(
    celery_worker: object,
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    rb_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine()
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    monkeypatch.setattr(
        runbook_tasks, "get_settings", lambda: rb_settings.model_copy(update={"runbook_auto_run": True})
    )
    body = AlertmanagerWebhook.model_validate(
        notification([alert("VLLMHighQueueDepth", deployment="vllm-decode")])
    ).model_dump(mode="json")
    key = AlertmanagerWebhook.model_validate(body).idempotency_key()
    for _ in range(2):  # the second is a redelivery
        app.send_task(
            TASK_PROCESS_ALERT_GROUP, args=(body, key), queue=QUEUE_ALERTS, routing_key=QUEUE_ALERTS
        )
    incident = wait_until(lambda: store.recent())[0]  # type: ignore[index]
    run = wait_until(
        lambda: next((r for r in engine.runs_of(incident.id) if r.status.terminal), None), timeout=60
    )
    assert run.runbook == "high-latency" and run.trigger == "automatic"  # type: ignore[union-attr]
    assert run.status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert [r.runbook for r in engine.runs_of(incident.id)] == ["high-latency"]
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 1


def test_a_real_change_sends_one_pagerduty_change_event_naming_the_approver(
    celery_worker: object,
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    pd_settings: Settings,
    pd: PagerDutyEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers import pagerduty_tasks

    engine = make_engine(runbooks={"gated": GATED})
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    pd_only = pd_settings.model_copy(update={"slack_bot_token": None})
    monkeypatch.setattr(workers.celery_app, "_fanout", pd_only)
    pagerduty_tasks.use_sync(wiring.build_sync(pd_settings, store))
    try:
        incident = open_incident(store, "TestAlert")
        send(tasknames.RUNBOOK_RUN, incident.id, "gated", request_id="req-pd")
        wait_until(lambda: [r.status for r in engine.runs_of(incident.id)] == [RunStatus.AWAITING_APPROVAL])
        request = next(t for t in store.timeline(incident.id) if t.kind == "approval_requested")
        send(tasknames.APPROVAL_DECISION, incident.id, request.data["step_key"], "approve", "slack:UAPPR0001")
        wait_until(lambda: pd.calls_to("/v2/change/enqueue", ok=True))
        wait_until(lambda: worker_idle(celery_worker, store.redis_client))
        changes = pd.calls_to("/v2/change/enqueue", ok=True)
        assert len(changes) == 1  # one real change; the read steps and the gate send none
        details = changes[0].body["payload"]["custom_details"]
        assert details["action"] == "k8s.scale" and details["target"] == "llm-d/vllm-decode"
        assert details["approved_by"] == "slack:UAPPR0001"
        assert details["runbook"] == "gated" and details["incident"] == incident.id
    finally:
        pagerduty_tasks.use_sync(None)


def test_a_runs_timeline_reaches_slack_while_it_runs(
    celery_worker: object,
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    slack_settings: Settings,
    emulator: SlackEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No alert changes after the incident opened: only the run itself can bring Slack up to date."""
    engine = make_engine(runbooks={"gated": GATED})
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    workers.slack_tasks.use_runtime(build_runtime(slack_settings, sender=CeleryTaskSender(slack_settings)))
    workers.celery_app.use_fanout_settings(slack_settings)
    try:
        incident = open_incident(store, "TestAlert")  # straight into the store: nothing told Slack
        send(tasknames.RUNBOOK_RUN, incident.id, "gated", request_id="req-slack")
        wait_until(lambda: [r.status for r in engine.runs_of(incident.id)] == [RunStatus.AWAITING_APPROVAL])

        def thread() -> list[str]:
            roots = emulator.channel_messages(LOW, top_level_only=True)
            if not roots:
                return []
            return [
                to_console({"text": m.text, "blocks": m.blocks}) for m in emulator.thread(LOW, roots[0].ts)
            ]

        # The person who must approve sees the request in the incident's thread, with the run's steps.
        replies = wait_until(lambda: (t := thread()) and "Scale vllm-decode to 3?" in "\n".join(t) and t)
        assert any("Runbook gated started" in r for r in replies)  # type: ignore[union-attr]
        assert any("queue (vllm.metrics" in r for r in replies)  # type: ignore[union-attr]
        assert len(emulator.channel_messages(LOW, top_level_only=True)) == 1
    finally:
        workers.celery_app.use_fanout_settings(None)
        workers.slack_tasks.use_runtime(None)
