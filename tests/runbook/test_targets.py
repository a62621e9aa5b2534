"""Target resolution against the sandbox through the real kubernetes client: the catalog, pod owner
references, llm-d's labels, an InferencePool's selector; an unknown target parks the run for a person."""

from __future__ import annotations

from typing import Any

import pytest

from bot.catalog import parse_catalog
from bot.integrations.kube import KubeClient
from bot.models import AlertmanagerWebhook, Incident
from bot.plan.schema import parse_runbook
from bot.runbook.engine import RunStatus
from bot.runbook.targets import TargetResolver
from bot.sandbox.cluster import vllm_deployment
from bot.sandbox.sandbox import Sandbox
from bot.storage.incidents import IncidentStore
from tests.runbook.conftest import EngineFactory
from tests.support.payloads import alert, notification

NS = "llm-d"
CATALOG = parse_catalog(
    """
version: 1
services:
  - name: llm-d
    match: {service: llm-d, team: sre}
    namespace: llm-d
    decode: vllm-decode
    prefill: vllm-prefill
"""
)
#: Like the shipped runbooks once their defaults are gone: the target comes from labels only.
PODS = parse_runbook(
    """
name: pods-of-target
description: list the pods of the alert's decode workload
match: {alertnames: [LLMDServiceDown]}
parameters:
  namespace: {label: namespace}
  deployment: {label: deployment}
steps:
  - id: pods
    type: k8s.get_pods
    params: {namespace: "${params.namespace}", deployment: "${params.deployment}"}
""",
    "pods-of-target.yaml",
)
POD_PATH = "/api/v1/namespaces/llm-d/pods"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/llm-d/deployments/vllm-decode"


def resolver(sandbox: Sandbox, catalog: Any = None, namespaces: tuple[str, ...] = (NS,)) -> TargetResolver:
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    return TargetResolver(
        catalog or parse_catalog("version: 1\n"), lambda: kube, allowed_namespaces=namespaces, timeout=5
    )


def test_catalog_hit_needs_no_cluster(sandbox: Sandbox) -> None:
    sandbox.kube.clear_requests()
    res = resolver(sandbox, CATALOG).resolve(
        {"alertname": "LLMDServiceDown", "service": "llm-d", "team": "sre"}
    )
    assert res.target == "llm-d/vllm-decode"
    assert res.added["prefill_deployment"] == "vllm-prefill" and res.added["workload_kind"] == "Deployment"
    assert res.source == "catalog entry 'llm-d' (service=llm-d, team=sre)"
    assert sandbox.kube.count("GET", POD_PATH) == 0


def test_alert_labels_are_never_overwritten(sandbox: Sandbox) -> None:
    labels = {"service": "llm-d", "team": "sre", "namespace": "llm-d", "deployment": "mine"}
    res = resolver(sandbox, CATALOG).resolve(labels)
    assert res.target == "llm-d/mine" and res.source == "alert labels" and res.added == {}


def test_pod_owner_references_pod_to_replicaset_to_deployment(sandbox: Sandbox) -> None:
    pod = sandbox.cluster.deployment_pods(NS, "vllm-prefill")[0]["metadata"]["name"]
    res = resolver(sandbox).resolve({"alertname": "LLMDHighPreemptions", "pod": pod})  # no namespace label
    assert res.target == "llm-d/vllm-prefill"
    assert res.labels["workload_kind"] == "Deployment"
    assert res.source == "pod owner references"
    paths = [r.path for r in sandbox.kube.requests if "/replicasets/" in r.path]
    assert paths and paths[0].startswith(f"/apis/apps/v1/namespaces/{NS}/replicasets/vllm-prefill-")


def test_other_owner_kinds_are_reported_as_such(sandbox: Sandbox) -> None:
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    assert kube._controller_of(NS, {"metadata": {"labels": {"leaderworkerset.sigs.k8s.io/name": "big"}}}) == (
        "LeaderWorkerSet",
        "big",
    )
    ref = {"kind": "StatefulSet", "name": "sts", "controller": True}
    assert kube._controller_of(NS, {"metadata": {"ownerReferences": [ref]}}) == ("StatefulSet", "sts")


def test_llmd_labels_with_the_model(sandbox: Sandbox) -> None:
    res = resolver(sandbox).resolve({"model_name": "meta-llama/Llama-3.1-8B-Instruct"})
    assert res.target == "llm-d/vllm-decode"
    assert res.source.startswith("llm-d labels (llm-d.ai/role=decode,llm-d.ai/model=meta-llama-llama-3.1-8b")
    missing = resolver(sandbox).resolve({"model_name": "other/model"})
    assert missing.target is None
    assert any("no pods in llm-d match" in t for t in missing.tried)


def test_inference_pool_selector(sandbox: Sandbox) -> None:
    res = resolver(sandbox).resolve({"alertname": "HighInferencePoolAvgQueueSize", "name": "llm-d-pool"})
    assert res.target == "llm-d/vllm-decode"
    assert res.source == "InferencePool 'llm-d-pool' selector"
    assert res.labels["inference_pool"] == "llm-d-pool"
    assert (
        sandbox.kube.count(
            "GET", "/apis/inference.networking.k8s.io/v1/namespaces/llm-d/inferencepools/llm-d-pool"
        )
        == 1
    )


def test_several_candidates_are_not_guessed_and_no_namespace_means_no_search(sandbox: Sandbox) -> None:
    sandbox.cluster.create_deployment(vllm_deployment("other-decode", replicas=1), NS)
    sandbox.cluster.reconcile()
    res = resolver(sandbox).resolve({"alertname": "LLMDHighErrorRate"})
    assert res.target is None
    assert any(
        "several workloads (Deployment other-decode, Deployment vllm-decode); not guessing" in t
        for t in res.tried
    )
    nowhere = resolver(sandbox, namespaces=()).resolve({"alertname": "LLMDHighErrorRate"})
    assert nowhere.target is None
    assert "the catalog is empty" in nowhere.tried
    assert any("KUBE_ALLOWED_NAMESPACES is empty" in t for t in nowhere.tried)


def open_without_target(store: IncidentStore, **labels: str) -> Incident:
    """An incident from an alert with the guide's labels and no namespace (as its rule leaves it)."""
    body = alert("LLMDServiceDown", severity="critical", service="llm-d", team="sre", **labels)
    del body["labels"]["namespace"]
    payload = notification([body], group_key='{}:{alertname="LLMDServiceDown"}')
    payload["commonLabels"] = dict(body["labels"])
    webhook = AlertmanagerWebhook.model_validate(payload)
    result = store.apply_notification(webhook, webhook.idempotency_key())
    assert result.incident_id is not None
    return store.get(result.incident_id)


def test_unknown_target_parks_the_run_and_a_persons_overrides_complete_it(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={PODS.name: PODS})
    engine.targets = resolver(sandbox, namespaces=())
    incident = open_without_target(store)
    run, created = engine.create_run(incident.id, PODS.name, trigger="automatic", request_id="auto:1")
    assert created and run.status is RunStatus.NEEDS_TARGET and run.params == {}
    assert run.target["missing"] == ["namespace", "deployment"]
    assert engine.create_run(incident.id, PODS.name, request_id="auto:1")[0].id == run.id  # redelivery
    assert engine.create_run(incident.id, PODS.name, trigger="automatic")[0].id == run.id  # parked once
    waiting = [t for t in store.timeline(incident.id) if t.kind == "runbook_needs_target"]
    assert len(waiting) == 1
    text = waiting[0].message
    assert "no value for namespace (label 'namespace'), deployment (label 'deployment')" in text
    assert "the catalog is empty" in text and "KUBE_ALLOWED_NAMESPACES is empty" in text
    assert f"`/incident runbook {incident.id} pods-of-target namespace=… deployment=…`" in text
    assert engine.execute_step(run.id, 0).status is RunStatus.NEEDS_TARGET  # nothing runs while parked

    sandbox.kube.clear_requests()
    resumed, _ = engine.create_run(
        incident.id,
        PODS.name,
        trigger="requested by U1",
        overrides={"namespace": NS, "deployment": "vllm-decode"},
    )
    assert resumed.id == run.id and resumed.status is RunStatus.RUNNING
    assert resumed.params == {"namespace": NS, "deployment": "vllm-decode"}
    done = engine.run_inline(resumed.id)
    assert done.status is RunStatus.SUCCEEDED
    assert sandbox.kube.count("GET", DEPLOYMENT_PATH) >= 1
    target = [t.message for t in store.timeline(incident.id) if t.kind == "runbook_target"]
    assert target == [
        "Runbook pods-of-target: target llm-d/vllm-decode via supplied by a person (requested by U1)"
    ]


def test_catalog_target_goes_into_the_run_and_the_timeline(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={PODS.name: PODS})
    engine.targets = resolver(sandbox, CATALOG)
    incident = open_without_target(store)
    run, _ = engine.create_run(incident.id, PODS.name)
    assert run.params == {"namespace": NS, "deployment": "vllm-decode"}
    assert run.target["source"] == "catalog entry 'llm-d' (service=llm-d, team=sre)"
    entry = next(t for t in store.timeline(incident.id) if t.kind == "runbook_target")
    assert entry.message == (
        "Runbook pods-of-target: target llm-d/vllm-decode via catalog entry 'llm-d' (service=llm-d, team=sre)"
    )


@pytest.mark.parametrize("bad", [{"namespace": "llm-d", "deployment": "x", "colour": "red"}])
def test_unknown_override_is_refused(
    bad: dict[str, str], sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={PODS.name: PODS})
    incident = open_without_target(store)
    with pytest.raises(Exception, match="unknown parameter"):
        engine.create_run(incident.id, PODS.name, overrides=bad)


#: The shipped runbooks that used to fall back to namespace llm-d / deployment vllm-decode, each with
#: one of its guide/llm-d triggers and the name of its decode-workload parameter.
FORMERLY_DEFAULTED = [
    ("service-down", "LLMDServiceDown", "deployment"),
    ("high-error-rate", "LLMDHighErrorRate", "deployment"),
    ("high-latency", "LLMDHighLatency", "decode_deployment"),
    ("kv-cache-exhaustion", "LLMDKVCacheOverflow", "deployment"),
    ("memory-pressure", "LLMDMemoryPressure", "deployment"),
    ("gpu-exhaustion", "GPUMemoryExhausted", "deployment"),
    ("low-cache-hit", "VLLMLowPrefixCacheHitRate", "deployment"),
    ("model-loading", "VLLMModelLoadFailed", "deployment"),
]


@pytest.mark.parametrize(("book", "alertname", "workload_param"), FORMERLY_DEFAULTED)
def test_shipped_runbook_without_any_target_waits_for_a_person(
    sandbox: Sandbox,
    make_engine: EngineFactory,
    store: IncidentStore,
    rb_settings: Any,
    book: str,
    alertname: str,
    workload_param: str,
) -> None:
    """No namespace/deployment label, no catalog entry, discovery finds nothing: park, never guess."""
    from bot.plan.schema import load_runbooks

    shipped = load_runbooks(rb_settings.runbooks_dir)
    assert alertname in shipped[book].match.alertnames
    engine = make_engine(runbooks=shipped)
    # Discovery may search only a namespace that holds no llm-d pods, so it finds nothing.
    engine.targets = resolver(sandbox, namespaces=("quiet",))
    body = alert(alertname, severity="critical", service="chat", team="search")
    del body["labels"]["namespace"]
    payload = notification([body], group_key=f'{{}}:{{alertname="{alertname}"}}')
    payload["commonLabels"] = dict(body["labels"])
    webhook = AlertmanagerWebhook.model_validate(payload)
    incident_id = store.apply_notification(webhook, webhook.idempotency_key()).incident_id
    assert incident_id is not None
    sandbox.kube.clear_requests()

    run, created = engine.create_run(incident_id, book, trigger="automatic")
    assert created and run.status is RunStatus.NEEDS_TARGET and run.params == {}
    assert run.target["missing"] == ["namespace", workload_param]
    assert "no catalog entry matched" not in run.reason and "the catalog is empty" in run.reason
    assert f"no value for namespace (label 'namespace'), {workload_param} (label 'deployment')" in run.reason
    message = next(t.message for t in store.timeline(incident_id) if t.kind == "runbook_needs_target")
    assert f"namespace=… {workload_param}=…" in message
    # Nothing was read from or done to the old default workload.
    assert "vllm-decode" not in message and "vllm-decode" not in str(run.labels)
    assert sandbox.kube.count("GET", DEPLOYMENT_PATH) == 0
    assert sandbox.kube.count("PATCH", DEPLOYMENT_PATH, mutating=True) == 0
    assert engine.execute_step(run.id, 0).status is RunStatus.NEEDS_TARGET
