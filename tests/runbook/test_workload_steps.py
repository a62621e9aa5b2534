"""k8s.* steps on other workload kinds and k8s.helm_history, through the engine against the sandbox
(its workloads are Helm release llm-d's; a StatefulSet and a LeaderWorkerSet run beside them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.plan.schema import parse_runbook
from bot.runbook.engine import RunStatus
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.workload_controllers import vllm_statefulset
from bot.storage.incidents import IncidentStore
from tests.runbook.conftest import EngineFactory
from tests.support.runbooks import open_incident, story

pytestmark = pytest.mark.integration
LWS_SCALE = r"/apis/leaderworkerset.x-k8s.io/v1/namespaces/llm-d/leaderworkersets/vllm-multinode/scale"

BOOK = parse_runbook(
    """
name: kinds
description: test
match: {alertnames: [TestAlert]}
parameters:
  kind: {default: LeaderWorkerSet}
  name: {default: vllm-multinode}
steps:
  - id: helm
    type: k8s.helm_history
    params: {namespace: llm-d, deployment: "${params.name}", kind: "${params.kind}"}
  - id: plain
    type: k8s.helm_history
    params: {namespace: llm-d, deployment: prefill-sts, kind: StatefulSet}
  - id: pods
    type: k8s.get_pods
    params: {namespace: llm-d, deployment: "${params.name}", kind: "${params.kind}"}
  - id: history
    type: k8s.rollout_history
    params: {namespace: llm-d, deployment: "${params.name}", kind: "${params.kind}"}
  - id: scale
    type: k8s.scale
    params:
      {namespace: llm-d, deployment: "${params.name}", kind: "${params.kind}", replicas: 3, max_replicas: 4}
  - id: sts_scale
    type: k8s.scale
    params: {namespace: llm-d, deployment: prefill-sts, kind: StatefulSet, delta: 1, max_replicas: 4}
  - id: sts_status
    type: k8s.rollout_status
    params: {namespace: llm-d, deployment: prefill-sts, kind: StatefulSet, timeout: 30s}
""",
    "kinds.yaml",
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    config = SandboxConfig(decode_replicas=1, vllm_servers=1, lws_groups=2, gpus_per_node=16)
    with Sandbox(config, workdir=tmp_path) as sb:
        sb.cluster.create_object("StatefulSet", vllm_statefulset("prefill-sts", replicas=1), "llm-d")
        yield sb


@pytest.mark.parametrize("dry_run", [True, False])
def test_steps_act_on_the_kind_and_read_helm_history(
    dry_run: bool, sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={"kinds": BOOK})
    incident = open_incident(store, "TestAlert")
    run, _ = engine.create_run(incident.id, "kinds", dry_run=dry_run)
    sandbox.kube.clear_requests()
    final = engine.run_inline(run.id, max_seconds=60)
    assert final.status is RunStatus.SUCCEEDED, story(store, incident.id)
    out = final.outputs
    assert out["helm"]["helm_managed"] is True and out["helm"]["current_revision"] == 2
    assert out["helm"]["rollback_command"] == "helm rollback llm-d 1 -n llm-d"
    assert out["helm"]["summary"].startswith("release llm-d rev 1 → 2, chart 1.3.0 → 1.3.1"), out["helm"]
    assert out["plain"]["helm_managed"] is False and "not managed by Helm" in out["plain"]["summary"]
    assert out["pods"]["total"] == 4 and out["pods"]["ready"] == 4, "2 groups of a leader and a worker"
    assert out["history"]["count"] == 1 and out["history"]["current_revision"] == 1
    groups = sandbox.cluster.get("LeaderWorkerSet", "llm-d", "vllm-multinode")["spec"]["replicas"]
    replicas = sandbox.cluster.get("StatefulSet", "llm-d", "prefill-sts")["spec"]["replicas"]
    text = "\n".join(story(store, incident.id, run.id))
    if dry_run:
        assert (groups, replicas) == (2, 1), "a dry run changes nothing"
        assert "would scale llm-d/vllm-multinode 2 -> 3" in text
        assert sandbox.kube.count("PATCH", LWS_SCALE, mutating=True) == 0
    else:
        assert (groups, replicas) == (3, 2)
        assert "scaled llm-d/vllm-multinode 2 -> 3" in text and "scaled llm-d/prefill-sts 1 -> 2" in text
        assert sandbox.kube.count("PATCH", LWS_SCALE, mutating=True) == 1
        assert out["sts_status"]["complete"] is True


UNAWARE = parse_runbook(
    """
name: unaware
description: a runbook written for Deployments (no kind anywhere)
match: {alertnames: [TestAlert]}
parameters:
  namespace: {label: namespace}
  deployment: {label: deployment}
steps:
  - id: target
    type: k8s.get_pods
    params: {namespace: "${params.namespace}", deployment: "${params.deployment}"}
  - id: other
    type: k8s.get_pods
    params: {namespace: llm-d, deployment: vllm-decode}
""",
    "unaware.yaml",
)


def test_a_step_on_the_run_target_takes_the_target_kind(
    sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    engine = make_engine(runbooks={"unaware": UNAWARE})
    incident = open_incident(
        store, "TestAlert", namespace="llm-d", deployment="vllm-multinode", workload_kind="LeaderWorkerSet"
    )
    run, _ = engine.create_run(incident.id, "unaware")
    final = engine.run_inline(run.id, max_seconds=60)
    assert final.status is RunStatus.SUCCEEDED, story(store, incident.id)
    assert final.outputs["target"]["total"] == 4, "the LeaderWorkerSet's leader and worker pods"
    assert final.outputs["other"]["total"] == 1, "another workload keeps the default kind (Deployment)"
