"""End to end through the real Celery worker: the guide's LLMDServiceDown (service: llm-d, team: sre, no
namespace label) runs its runbook against the sandbox's decode Deployment, found through the sandbox's
own service catalog, with the target's source in the incident timeline."""

from __future__ import annotations

import pytest

import workers.runbook_tasks as runbook_tasks
from bot.catalog import load_catalog
from bot.integrations.kube import KubeClient
from bot.models import AlertmanagerWebhook
from bot.runbook.engine import RunStatus
from bot.runbook.targets import TargetResolver
from bot.sandbox.sandbox import Sandbox
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.tasknames import PROCESS_ALERT_GROUP, QUEUE_ALERTS
from tests.runbook.conftest import EngineFactory
from tests.runbook.test_targets import PODS
from tests.support.fixtures import wait_until
from tests.support.payloads import alert, notification
from workers.celery_app import app

pytestmark = pytest.mark.integration


def test_guide_alert_without_namespace_runs_against_the_sandbox_decode_deployment(
    celery_worker: object,
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    rb_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sandbox.catalog is not None and sandbox.environment()["CATALOG"] == str(sandbox.catalog)
    engine = make_engine(runbooks={PODS.name: PODS})
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    engine.targets = TargetResolver(load_catalog(sandbox.catalog), lambda: kube)
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    monkeypatch.setattr(
        runbook_tasks, "get_settings", lambda: rb_settings.model_copy(update={"runbook_auto_run": True})
    )
    body = alert(
        "LLMDServiceDown", severity="critical", service="llm-d", team="sre", instance="10.0.0.7:8000"
    )
    del body["labels"]["namespace"]
    payload = notification([body], group_key='{}:{alertname="LLMDServiceDown"}')
    payload["commonLabels"] = {"alertname": "LLMDServiceDown", "service": "llm-d", "team": "sre"}
    webhook = AlertmanagerWebhook.model_validate(payload)
    assert "namespace" not in webhook.alerts[0].labels
    sandbox.kube.clear_requests()
    app.send_task(
        PROCESS_ALERT_GROUP,
        args=(webhook.model_dump(mode="json"), webhook.idempotency_key()),
        queue=QUEUE_ALERTS,
        routing_key=QUEUE_ALERTS,
    )
    incident = wait_until(lambda: store.recent())[0]  # type: ignore[index]
    run = wait_until(
        lambda: next((r for r in engine.runs_of(incident.id) if r.status.terminal), None), timeout=60
    )
    assert run.status is RunStatus.SUCCEEDED, run.reason  # type: ignore[union-attr]
    assert run.params == {"namespace": "llm-d", "deployment": "vllm-decode"}  # type: ignore[union-attr]
    assert sandbox.kube.count("GET", "/apis/apps/v1/namespaces/llm-d/deployments/vllm-decode") >= 1
    assert sandbox.kube.count("GET", "/api/v1/namespaces/llm-d/pods") >= 1
    target = [t for t in store.timeline(incident.id) if t.kind == "runbook_target"]
    assert [t.message for t in target] == [
        "Runbook pods-of-target: target llm-d/vllm-decode via catalog entry 'llm-d-sandbox' "
        "(service=llm-d, team=sre)"
    ]
    assert target[0].data["added"]["inference_pool"] == "llm-d-pool"
