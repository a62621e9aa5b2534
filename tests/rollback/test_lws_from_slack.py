"""A multi-node LeaderWorkerSet scaled, restarted and rolled back from Slack, with a preview.

Signed slash commands and button clicks into the web app, the real Celery worker running the runbook engine
and the rollback flow, real Redis, the Slack emulator and the sandbox (its LeaderWorkerSet controller rolls
groups and keeps ControllerRevisions; the workloads are Helm release llm-d's, stored as Helm stores them).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

import workers.celery_app
import workers.rollback_tasks
import workers.runbook_tasks
import workers.slack_tasks
from bot.integrations.kube import RESTARTED_AT, KubeClient
from bot.plan.schema import parse_runbook
from bot.runbook.engine import Engine, RunStatus
from bot.runbook.services import Services
from bot.sandbox.helm_seed import build_release, release_secret
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.storage.controls import AutomationControls
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore
from bot.storage.runs import RunStore
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender, build_flow, build_runtime
from tests.rollback.conftest import GOOD, NS
from tests.support.fixtures import wait_until
from tests.support.slack import APPROVER, action_body, command_body, open_incident, sign

pytestmark = pytest.mark.integration
HIGH = "C0HIGH0001"
LWS = "vllm-multinode"
BAD = "vllm/vllm-openai:v0.9.9-bad"

CAPACITY = parse_runbook(
    """
name: lws-capacity
description: Add serving groups to a workload of any kind, then restart it
match: {alertnames: [NeverFires]}
parameters:
  namespace: {label: namespace, default: llm-d}
  deployment: {label: deployment}
  kind: {label: workload_kind, default: Deployment}
  groups: {default: "3"}
steps:
  - id: scale
    type: k8s.scale
    params:
      namespace: "${params.namespace}"
      deployment: "${params.deployment}"
      kind: "${params.kind}"
      replicas: "${int(params.groups)}"
      max_replicas: 4
  - id: restart
    type: k8s.rollout_restart
    params: {namespace: "${params.namespace}", deployment: "${params.deployment}", kind: "${params.kind}"}
  - id: rolled_out
    type: k8s.rollout_status
    params:
      namespace: "${params.namespace}"
      deployment: "${params.deployment}"
      kind: "${params.kind}"
      timeout: 1m
""",
    "lws-capacity.yaml",
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """vLLM decode as a Deployment plus a 2-group LeaderWorkerSet (leader + 1 worker), Helm-managed."""
    config = SandboxConfig(decode_replicas=1, vllm_servers=2, tls=True, lws_groups=2, gpus_per_node=16)
    with Sandbox(config, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
def client(
    rb_settings: Settings,
    kube: KubeClient,
    redis_client: redis.Redis,
    store: IncidentStore,
    celery_worker: object,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    """The web app; the worker runs the runbook engine (with lws-capacity) and the rollback flow."""
    s = rb_settings.model_copy(update={"runbook_cooldown_seconds": 300, "runbook_max_actions": 10})
    sender = CeleryTaskSender(s)
    engine = Engine(
        RunStore(redis_client, s.key_prefix),
        Guards.from_settings(redis_client, s),
        store,
        Services(s, store, kube=kube),
        s,
        {"lws-capacity": CAPACITY},
        AutomationControls(redis_client, s.key_prefix),
    )
    monkeypatch.setattr(workers.runbook_tasks, "engine", lambda: engine)
    flow = build_flow(s, client=redis_client, sender=sender, kube=kube)
    workers.rollback_tasks.use_flow(flow)
    workers.slack_tasks.use_runtime(build_runtime(s, sender=sender, rollbacks=flow))
    workers.celery_app.use_fanout_settings(s)
    with TestClient(create_app(s, slack_sender=sender)) as c:
        c.engine = engine  # type: ignore[attr-defined]
        yield c
    workers.celery_app.use_fanout_settings(None)
    workers.slack_tasks.use_runtime(None)
    workers.rollback_tasks.use_flow(None)


def post_signed(client: TestClient, body: bytes) -> None:
    r = client.post(
        "/slack/events",
        content=body,
        headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def helm_upgrade_to_bad_image(sandbox: Sandbox) -> None:
    """What `helm upgrade llm-d … --set image=BAD` leaves behind: rev 3 (chart 1.3.2) and the new template."""
    cluster = sandbox.cluster
    cluster.script_pods("crashloop", image=BAD)
    lws = cluster.get("LeaderWorkerSet", NS, LWS)
    lwt = lws["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        lwt[role]["spec"]["containers"][0]["image"] = BAD
    cluster.patch_object(
        "LeaderWorkerSet", NS, LWS, "application/merge-patch+json", {"spec": {"leaderWorkerTemplate": lwt}}
    )
    superseded = cluster.get("Secret", NS, "sh.helm.release.v1.llm-d.v2")
    superseded["metadata"]["labels"]["status"] = "superseded"
    cluster.update_object("Secret", NS, superseded["metadata"]["name"], lambda _obj: superseded)
    now = cluster.now()
    release = build_release(
        "llm-d", NS, 3, chart="llm-d-modelservice", chart_version="1.3.2", app_version="v0.2.0",
        status="deployed", deployed=now - dt.timedelta(minutes=12),
        first_deployed=now - dt.timedelta(days=30),
        manifests=[{k: v for k, v in cluster.get("LeaderWorkerSet", NS, LWS).items() if k != "status"}],
    )  # fmt: skip
    cluster.create_object("Secret", release_secret(release), NS)


def lws_images(sandbox: Sandbox) -> set[str]:
    lwt = sandbox.cluster.get("LeaderWorkerSet", NS, LWS)["spec"]["leaderWorkerTemplate"]
    return {
        c["image"] for role in ("leaderTemplate", "workerTemplate") for c in lwt[role]["spec"]["containers"]
    }


def test_lws_scaled_restarted_and_rolled_back_from_slack(
    client: TestClient, sandbox: Sandbox, store: IncidentStore, emulator: SlackEmulator
) -> None:
    engine: Engine = client.engine  # type: ignore[attr-defined]
    inc = open_incident(store)
    pods_before = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in sandbox.cluster.pods(NS, f"leaderworkerset.sigs.k8s.io/name={LWS}")
    }
    assert len(pods_before) == 4

    # 1. scale 2 -> 3 groups and restart, from Slack, through the runbook engine on the worker
    post_signed(
        client,
        command_body(
            f"runbook {inc.id} lws-capacity deployment={LWS} kind=LeaderWorkerSet groups=3",
            user=APPROVER,
            response_url=emulator.response_url("run"),
        ),
    )
    run = wait_until(lambda: next((r for r in engine.runs_of(inc.id) if r.status.terminal), None), timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run  # type: ignore[union-attr]
    lws = sandbox.cluster.get("LeaderWorkerSet", NS, LWS)
    assert lws["spec"]["replicas"] == 3 and lws["status"]["readyReplicas"] == 3
    for role in ("leaderTemplate", "workerTemplate"):
        assert RESTARTED_AT in lws["spec"]["leaderWorkerTemplate"][role]["metadata"]["annotations"]
    pods_after = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in sandbox.cluster.pods(NS, f"leaderworkerset.sigs.k8s.io/name={LWS}")
    }
    assert len(pods_after) == 6 and not set(pods_before.values()) & set(pods_after.values()), (
        "every pod restarted"
    )
    steps = [t for t in store.timeline(inc.id) if t.kind == "runbook_step"]
    assert [t.data["step"] for t in steps] == ["scale", "restart", "rolled_out"]
    assert "2 -> 3" in steps[0].message

    # 2. a bad helm upgrade stalls the LWS after one group; roll it back from Slack with a preview
    helm_upgrade_to_bad_image(sandbox)
    assert sandbox.cluster.get("LeaderWorkerSet", NS, LWS)["status"]["updatedReplicas"] == 1
    post_signed(
        client,
        command_body(
            f"rollback {NS}/{LWS} --kind lws --incident {inc.id}",
            user=APPROVER,
            response_url=emulator.response_url("rb"),
        ),
    )

    def preview() -> Any:
        return next(
            (m for m in emulator.channel_messages(HIGH, top_level_only=True) if "RB-0001" in m.text), None
        )

    message = wait_until(preview, timeout=30)
    text = to_console({"blocks": message.blocks})  # type: ignore[attr-defined]
    assert "of LeaderWorkerSet `llm-d/vllm-multinode`" in text, text
    assert "*Current*: template revision 3" in text and "*Roll back to*: template revision 2" in text, text
    assert f"image {BAD} -> {GOOD}" in text and "leader/vllm" in text and "worker/vllm" in text, text
    assert "release llm-d rev 2 → 3, chart 1.3.1 → 1.3.2, deployed 12 min ago" in text, text
    assert "helm rollback llm-d 2 -n llm-d" in text and "next `helm upgrade`" in text, text
    buttons = next(b for b in message.blocks if b.get("block_id") == "rollback_buttons")  # type: ignore[attr-defined]
    value = buttons["elements"][0]["value"]
    post_signed(
        client, action_body("rollback_approve", value, user=APPROVER, channel=HIGH, message_ts=message.ts)
    )  # type: ignore[attr-defined]
    flow = workers.rollback_tasks.flow()
    done = wait_until(
        lambda: flow.requests.get("RB-0001").state.terminal and flow.requests.get("RB-0001"), 60
    )
    assert done.state.value == "verified", done.reason  # type: ignore[attr-defined]
    assert (done.kind, done.from_revision, done.to_revision) == ("LeaderWorkerSet", 3, 2)  # type: ignore[attr-defined]
    assert lws_images(sandbox) == {GOOD}
    status = sandbox.cluster.get("LeaderWorkerSet", NS, LWS)["status"]
    assert status["readyReplicas"] == status["updatedReplicas"] == 3
    assert json.loads(value) == {"request_id": "RB-0001"}
    wait_until(
        lambda: any("verified" in m.text for m in emulator.channel_messages(HIGH, top_level_only=True))
    )
