"""The shipped service-down and high-error-rate runbooks on an Argo Rollout mid-canary, and argo.abort's
crash safety through the engine; target resolution of a Rollout (pod -> ReplicaSet -> Rollout, catalog kind).

The sandbox cluster runs the emulated Rollout controller (bot.sandbox.argo); everything goes through the
real kubernetes client to the loopback API emulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.catalog import parse_catalog
from bot.integrations.argo import ArgoRollouts
from bot.integrations.kube import KubeClient
from bot.runbook.engine import RunStatus
from bot.runbook.targets import TargetResolver
from bot.sandbox.argo import RolloutController, canary_rollout
from bot.sandbox.cluster import vllm_deployment
from bot.sandbox.sandbox import Sandbox
from bot.storage.incidents import IncidentStore
from tests.runbook.conftest import EngineFactory
from tests.support.runbooks import open_incident, story

pytestmark = pytest.mark.integration
NS = "llm-d"
NAME = "ms-decode"
STABLE = "vllm/vllm-openai:v0.8.5"
BAD = "vllm/vllm-openai:v0.9.9-canary-bad"
ABORT_PATH = rf"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/{NAME}/status"
STEPS = [{"setWeight": 20}, {"pause": {}}, {"analysis": {}}, {"setWeight": 50}, {"pause": {}}]


def start_bad_canary(sandbox: Sandbox) -> None:
    """A canary Rollout (4 replicas) updated to an image whose pods never get Ready: paused at 20 %."""
    cluster = sandbox.cluster
    RolloutController(cluster)
    cluster.script_pods("not_ready", image=BAD)
    template = vllm_deployment(NAME, role="decode", image=STABLE, replicas=4, gpus=0, model="m")["spec"][
        "template"
    ]
    cluster.create_object("Rollout", canary_rollout(NAME, template, replicas=4, steps=STEPS), NS)
    cluster.patch_object(
        "Rollout",
        NS,
        NAME,
        "application/json-patch+json",
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": BAD}],
    )
    state = argo(sandbox).status(NS, NAME)
    assert (state.phase, state.canary_weight, state.canary_in_progress) == ("Paused", 20, True)


def argo(sandbox: Sandbox) -> ArgoRollouts:
    return ArgoRollouts(KubeClient.from_kubeconfig(str(sandbox.kubeconfig)))


def replicas_by_image(sandbox: Sandbox) -> dict[str, int]:
    return {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
        for rs in sandbox.cluster.list_objects("ReplicaSet", NS)
        if rs["metadata"]["name"].startswith(NAME)
    }


@pytest.mark.parametrize(
    ("runbook", "alert", "labels"),
    [
        ("service-down", "VLLMServiceDown", {"severity": "critical", "workload_kind": "Rollout"}),
        ("high-error-rate", "VLLMHighErrorRate", {"severity": "critical"}),  # kind unknown: looked up
    ],
)
def test_runbook_aborts_a_bad_canary_first(
    runbook: str,
    alert: str,
    labels: dict[str, str],
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
) -> None:
    start_bad_canary(sandbox)
    engine = make_engine()
    incident = open_incident(store, alert, deployment=NAME, **labels)
    run, _ = engine.create_run(incident.id, runbook)
    sandbox.kube.clear_requests()
    run = engine.run_inline(run.id, max_seconds=120)
    lines = story(store, incident.id, run.id)
    text = "\n".join(lines)
    assert run.status is RunStatus.SUCCEEDED, text
    steps = [line.split("] ", 1)[1] for line in lines if line.startswith("runbook_step:")]
    assert steps[0].startswith("rollout_state (argo.status, read): ok - Rollout llm-d/ms-decode: Paused")
    assert steps[1].startswith("abort_canary (argo.abort, mutating): ok - aborted Rollout llm-d/ms-decode")
    assert "at canary weight 20%: back to stable vllm/vllm-openai:v0.8.5" in steps[1]
    assert steps[2].startswith("stable_healthy (wait, read): ok")
    for skipped in ("pods", "history", "rollback", "rollout"):
        assert any(s.startswith(f"{skipped} (") and "skipped" in s for s in steps), text
    assert any(s.startswith("report (notify") and "aborted Rollout llm-d/ms-decode" in s for s in steps), text
    assert sandbox.kube.count("PATCH", ABORT_PATH, mutating=True) == 1
    assert sandbox.kube.count(mutating=True) == 1, [r.path for r in sandbox.kube.requests if r.mutating]
    state = argo(sandbox).status(NS, NAME)
    assert state.aborted and state.canary_weight == 0 and state.ready_replicas == 4
    assert replicas_by_image(sandbox) == {STABLE: 4, BAD: 0}


def test_dry_run_only_says_it_would_abort(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    start_bad_canary(sandbox)
    engine = make_engine()
    incident = open_incident(store, "VLLMServiceDown", deployment=NAME, workload_kind="Rollout")
    run, _ = engine.create_run(incident.id, "service-down", dry_run=True)
    sandbox.kube.clear_requests()
    engine.run_inline(run.id, max_seconds=120)
    text = "\n".join(story(store, incident.id, run.id))
    assert "would abort Rollout llm-d/ms-decode at canary weight 20%" in text
    assert sandbox.kube.count(mutating=True) == 0
    assert [r.query.get("dryRun") for r in sandbox.kube.requests if r.method == "PATCH"] == ["All"]
    assert argo(sandbox).status(NS, NAME).canary_in_progress


def test_deployment_target_skips_the_argo_steps(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine()
    incident = open_incident(store, "VLLMServiceDown", workload_kind="Deployment")
    run, _ = engine.create_run(incident.id, "service-down")
    sandbox.kube.clear_requests()
    engine.run_inline(run.id, max_seconds=120)
    text = "\n".join(story(store, incident.id, run.id))
    assert "llm-d/vllm-decode is a Deployment, not an Argo Rollout" in text
    assert "abort_canary (argo.abort, mutating): skipped" in text
    assert not [r for r in sandbox.kube.requests if "argoproj.io" in r.path], "no Rollout API call"


# --- crash safety: a worker killed mid-abort ---------------------------------------------------------


class SimulatedKill(BaseException):
    """Stands for the worker process dying: no handler in the engine catches it."""


@pytest.mark.parametrize("when", ["after", "before"])
def test_kill_mid_abort_applies_it_once(
    when: str,
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start_bad_canary(sandbox)
    original = ArgoRollouts.abort

    def dying_abort(self: ArgoRollouts, namespace: str, name: str, **kwargs: Any) -> Any:
        if when == "after":
            original(self, namespace, name, **kwargs)
        raise SimulatedKill

    monkeypatch.setattr(ArgoRollouts, "abort", dying_abort)
    first = make_engine()
    incident = open_incident(store, "VLLMServiceDown", deployment=NAME, workload_kind="Rollout")
    run, _ = first.create_run(incident.id, "service-down")
    sandbox.kube.clear_requests()
    with pytest.raises(SimulatedKill):
        first.run_inline(run.id)
    record = first.step_record(first.get_run(run.id), "abort_canary")
    assert record is not None and record.phase == "intent" and record.intent["abort"] is True
    assert sandbox.kube.count("PATCH", ABORT_PATH, mutating=True) == (1 if when == "after" else 0)

    monkeypatch.setattr(ArgoRollouts, "abort", original)
    final = make_engine().run_inline(run.id, max_seconds=120)  # the redelivered task, another worker
    text = "\n".join(story(store, incident.id, run.id))
    assert final.status is RunStatus.SUCCEEDED, text
    assert sandbox.kube.count("PATCH", ABORT_PATH, mutating=True) == 1
    assert text.count("abort_canary (argo.abort") == 1
    if when == "after":
        assert "aborted Rollout llm-d/ms-decode (confirmed after a restart)" in text
    assert replicas_by_image(sandbox) == {STABLE: 4, BAD: 0}


# --- target resolution -----------------------------------------------------------------------------


def test_pod_of_a_rollout_resolves_to_kind_rollout(sandbox: Sandbox) -> None:
    start_bad_canary(sandbox)
    pod = next(p for p in sandbox.cluster.pods(NS, "app.kubernetes.io/name=ms-decode"))
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    resolver = TargetResolver(parse_catalog("version: 1\n"), lambda: kube, allowed_namespaces=(NS,))
    res = resolver.resolve({"alertname": "VLLMServiceDown", "pod": pod["metadata"]["name"]})
    assert (res.labels["deployment"], res.labels["workload_kind"]) == (NAME, "Rollout")
    assert res.source == "pod owner references"


def test_catalog_kind_completes_alert_labels() -> None:
    catalog = parse_catalog(
        "version: 1\nservices:\n  - name: llm-d\n    match: {service: llm-d}\n    namespace: llm-d\n"
        "    decode: {name: ms-decode, kind: Rollout}\n"
    )
    resolver = TargetResolver(catalog, None)
    labels = {"service": "llm-d", "namespace": NS}
    res = resolver.resolve({**labels, "deployment": NAME})
    assert res.labels["workload_kind"] == "Rollout" and "kind from catalog entry 'llm-d'" in res.source
    other = resolver.resolve({**labels, "deployment": "vllm-decode"})
    assert "workload_kind" not in other.labels, "the catalog's kind is for its own workload only"
    told = resolver.resolve({**labels, "deployment": NAME, "workload_kind": "Deployment"})
    assert told.labels["workload_kind"] == "Deployment", "alert labels are never overwritten"
