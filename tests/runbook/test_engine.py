"""Engine behaviour against the sandbox: crash recovery, shared guards, conditions, controls."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bot.integrations.kube import KubeClient, ScaleResult
from bot.models import AlertmanagerWebhook
from bot.plan.schema import Runbook, parse_runbook
from bot.runbook.engine import Engine, RunStatus
from bot.sandbox.sandbox import Sandbox
from bot.settings import Settings
from bot.storage.controls import AutomationSwitch
from bot.storage.incidents import IncidentStore
from tests.runbook.conftest import EngineFactory
from tests.support.fixtures import wait_until
from tests.support.payloads import alert, notification
from tests.support.runbooks import open_incident, story

pytestmark = pytest.mark.integration
SCALE_PATH = r"/apis/apps/v1/namespaces/llm-d/deployments/[a-z-]+/scale"


class SimulatedKill(BaseException):
    """Stands for the worker process dying: no handler in the engine catches it."""


class KillingKube(KubeClient):
    """A KubeClient whose worker 'dies' right before or right after sending the scale PATCH."""

    when = "after"

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> ScaleResult:
        if self.when == "before":
            raise SimulatedKill
        super().scale(namespace, name, replicas, dry_run=dry_run)
        raise SimulatedKill


def scale_book(name: str = "scale-test", deployment: str = "vllm-decode", extra: str = "") -> Runbook:
    return parse_runbook(
        f"""
name: {name}
description: test
match: {{alertnames: [TestAlert]}}
parameters:
  deployment: {{default: {deployment}}}
steps:
  - id: queue
    type: vllm.metrics
  - id: scale
    type: k8s.scale
    when: steps.queue.queue_depth > 10
    params:
      namespace: llm-d
      deployment: "${{params.deployment}}"
      replicas: "${{min(6, int(steps.queue.queue_depth / 400) + 2)}}"
      max_replicas: 8
    on_failure: escalate
{extra}
""",
        f"{name}.yaml",
    )


def decode_replicas(sandbox: Sandbox, name: str = "vllm-decode") -> int:
    return KubeClient.from_kubeconfig(str(sandbox.kubeconfig)).get_deployment("llm-d", name).replicas


@pytest.mark.parametrize("when", ["after", "before"])
def test_redelivered_step_after_a_worker_kill_never_repeats_the_scale(
    when: str, sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    killing = KillingKube.from_kubeconfig(str(sandbox.kubeconfig))
    killing.when = when
    first = make_engine(kube=killing)
    incident = open_incident(store, "VLLMHighQueueDepth")
    run, _ = first.create_run(incident.id, "high-latency")
    sandbox.kube.clear_requests()
    with pytest.raises(SimulatedKill):
        first.run_inline(run.id)
    record = first.step_record(first.get_run(run.id), "scale_decode")
    assert (
        record is not None
        and record.phase == "intent"
        and record.intent
        == {
            "replicas": 3,
            "from": 1,
            "generation": record.intent["generation"],
        }
    )
    sent = sandbox.kube.count("PATCH", SCALE_PATH, mutating=True)
    assert sent == (1 if when == "after" else 0)

    second = make_engine()  # the redelivered task, in another worker with its own clients
    final = second.run_inline(run.id, max_seconds=60)
    assert final.status is RunStatus.SUCCEEDED, story(store, incident.id)
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 1
    assert decode_replicas(sandbox) == 3
    text = "\n".join(story(store, incident.id, run.id))
    if when == "after":
        assert "scaled llm-d/vllm-decode 1 -> 3 (confirmed after restart)" in text
    else:
        assert "scaled llm-d/vllm-decode 1 -> 3" in text
    assert text.count("scale_decode (k8s.scale") == 1


def test_interrupted_step_whose_target_changed_meanwhile_needs_a_human(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    killing = KillingKube.from_kubeconfig(str(sandbox.kubeconfig))
    killing.when = "before"
    incident = open_incident(store, "VLLMHighQueueDepth")
    first = make_engine(kube=killing)
    run, _ = first.create_run(incident.id, "high-latency")
    with pytest.raises(SimulatedKill):
        first.run_inline(run.id)
    KubeClient.from_kubeconfig(str(sandbox.kubeconfig)).scale("llm-d", "vllm-decode", 5)  # a person acted
    sandbox.kube.clear_requests()
    final = make_engine().run_inline(run.id, max_seconds=60)
    assert final.status is RunStatus.NEEDS_HUMAN
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 0
    assert decode_replicas(sandbox) == 5
    kinds = [t.kind for t in store.timeline(incident.id)]
    assert "escalate" in kinds


def test_a_condition_and_a_parameter_read_an_earlier_steps_output(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={"scale-test": scale_book()})
    busy = open_incident(store, "TestAlert")
    run = engine.run_inline(engine.create_run(busy.id, "scale-test")[0].id, max_seconds=60)
    queue = run.outputs["queue"]["queue_depth"]
    assert queue > 10
    assert run.outputs["scale"]["to"] == min(6, int(queue / 400) + 2)
    assert decode_replicas(sandbox) == run.outputs["scale"]["to"]

    assert sandbox.vllm is not None
    sandbox.vllm.set(offered_rps=0.0)
    wait_until(
        lambda: (
            KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
            .get_deployment("llm-d", "vllm-decode")
            .ready_replicas
            == run.outputs["scale"]["to"]
        )
    )
    quiet = open_incident(store, "TestAlert")
    run2 = engine.run_inline(engine.create_run(quiet.id, "scale-test")[0].id, max_seconds=60)
    assert run2.outputs["queue"]["queue_depth"] <= 10
    assert run2.outputs["scale"]["status"] == "skipped"
    assert "condition false: steps.queue.queue_depth > 10" in run2.outputs["scale"]["summary"]


def _race(engines: list[Engine], runs: list[str]) -> list[Any]:
    barrier = threading.Barrier(len(engines))
    results: list[Any] = [None] * len(engines)

    def go(i: int) -> None:
        barrier.wait()
        results[i] = engines[i].run_inline(runs[i], max_seconds=60)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return results


def test_lock_and_cooldown_hold_across_two_workers(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    books = {"scale-test": scale_book()}
    a, b = make_engine(runbooks=books), make_engine(runbooks=books)
    runs = [e.create_run(open_incident(store, "TestAlert").id, "scale-test")[0].id for e in (a, b)]
    sandbox.kube.clear_requests()
    results = _race([a, b], runs)
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 1
    statuses = sorted(r.status.value for r in results)
    assert statuses == ["escalated", "succeeded"], [r.reason for r in results]
    loser = next(r for r in results if r.status is RunStatus.ESCALATED)
    assert "cooldown: k8s.scale on llm-d/vllm-decode ran recently" in loser.reason


def test_circuit_breaker_escalates_instead_of_acting_across_two_workers(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore, rb_settings: Settings
) -> None:
    settings = rb_settings.model_copy(update={"runbook_max_actions": 1})
    books = {"decode": scale_book("decode"), "prefill": scale_book("prefill", "vllm-prefill")}
    a, b = make_engine(settings, runbooks=books), make_engine(settings, runbooks=books)
    runs = [
        a.create_run(open_incident(store, "TestAlert").id, "decode")[0].id,
        b.create_run(open_incident(store, "TestAlert").id, "prefill")[0].id,
    ]
    sandbox.kube.clear_requests()
    results = _race([a, b], runs)
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 1
    assert sorted(r.status.value for r in results) == ["escalated", "succeeded"]
    loser = next(r for r in results if r.status is RunStatus.ESCALATED)
    assert loser.reason.startswith("circuit breaker open: 1 changes in the last")
    assert any(t.kind == "escalate" for t in store.timeline(loser.incident_id))


def test_kill_switch_blocks_changes_but_not_diagnosis(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore, redis_client: Any, settings: Settings
) -> None:
    AutomationSwitch(redis_client, settings.key_prefix).disable("test", "incident review")
    engine = make_engine(runbooks={"scale-test": scale_book()})
    incident = open_incident(store, "TestAlert")
    sandbox.kube.clear_requests()
    run = engine.run_inline(engine.create_run(incident.id, "scale-test")[0].id, max_seconds=60)
    assert run.status is RunStatus.BLOCKED
    assert run.outputs["queue"]["status"] == "ok"
    assert sandbox.kube.count(mutating=True) == 0
    assert "kill switch" in run.reason


def test_no_change_once_the_alert_has_resolved(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={"scale-test": scale_book()})
    body = notification([alert("TestAlert", fingerprint="gone")], group_key='{}:{alertname="TestAlert"}')
    hook = AlertmanagerWebhook.model_validate(body)
    incident_id = store.apply_notification(hook, hook.idempotency_key()).incident_id
    assert incident_id is not None
    run_id = engine.create_run(incident_id, "scale-test")[0].id
    engine.execute_step(run_id, 0)  # diagnosis while still firing
    resolved = AlertmanagerWebhook.model_validate(
        notification([alert("TestAlert", fingerprint="gone", status="resolved")], group_key=hook.groupKey)
    )
    store.apply_notification(resolved, resolved.idempotency_key())
    sandbox.kube.clear_requests()
    run = engine.run_inline(run_id, max_seconds=30)
    assert run.status is RunStatus.STOPPED
    assert sandbox.kube.count(mutating=True) == 0
    assert "no firing alert" in run.reason
