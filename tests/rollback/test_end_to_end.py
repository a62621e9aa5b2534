"""A bad rollout rolled back from Slack: signed command -> worker -> preview -> signed Approve -> verified.

Real Redis, the real Celery worker, the Slack and PagerDuty emulators, the sandbox cluster; the result is
compared with what the real `kubectl rollout undo` makes of a twin Deployment with the same history.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

import workers.celery_app
import workers.pagerduty_tasks
import workers.rollback_tasks
import workers.slack_tasks
from bot import wiring
from bot.integrations.kube import KubeClient
from bot.sandbox.cluster import vllm_deployment
from bot.sandbox.helm_seed import mark_managed
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.sandbox import Sandbox
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender, build_flow, build_runtime
from tests.rollback.conftest import BAD, GOOD, NS, PLAIN_SECRET, roll_out
from tests.support.fixtures import wait_until
from tests.support.slack import APPROVER, STRANGER, action_body, command_body, open_incident, sign

pytestmark = pytest.mark.integration
HIGH = "C0HIGH0001"
KUBECTL = "/usr/bin/kubectl"


@pytest.fixture
def e2e_settings(rb_settings: Settings, pd: PagerDutyEmulator) -> Settings:
    """Slack and PagerDuty on their emulators, the sandbox's vLLM servers."""
    return rb_settings.model_copy(
        update={
            "pagerduty_routing_key": SecretStr("R0UTINGKEYDEFAULT"),
            "pagerduty_events_url": pd.url,
            "pagerduty_api_url": pd.url,
            "pagerduty_ca_bundle": pd.ca_path,
        }
    )


@pytest.fixture
def client(
    e2e_settings: Settings,
    kube: KubeClient,
    redis_client: redis.Redis,
    store: IncidentStore,
    celery_worker: object,
) -> Iterator[TestClient]:
    """The web app, and the real worker wired to the emulators and the sandbox."""
    sender = CeleryTaskSender(e2e_settings)
    flow = build_flow(e2e_settings, client=redis_client, sender=sender, kube=kube)
    workers.rollback_tasks.use_flow(flow)
    workers.slack_tasks.use_runtime(build_runtime(e2e_settings, sender=sender, rollbacks=flow))
    workers.pagerduty_tasks.use_sync(wiring.build_sync(e2e_settings, store))
    workers.celery_app.use_fanout_settings(e2e_settings)
    with TestClient(create_app(e2e_settings, slack_sender=sender)) as c:
        yield c
    workers.celery_app.use_fanout_settings(None)
    workers.pagerduty_tasks.use_sync(None)
    workers.slack_tasks.use_runtime(None)
    workers.rollback_tasks.use_flow(None)


def post_signed(client: TestClient, body: bytes) -> None:
    r = client.post(
        "/slack/events",
        content=body,
        headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def kubectl_undo_of_twin(sandbox: Sandbox, tmp_path: Path) -> dict[str, Any] | None:
    """Give a twin Deployment the same two revisions and let the real kubectl undo it."""
    if not (os.path.exists(KUBECTL) and shutil.which(KUBECTL)):
        return None
    # Helm-managed like the sandbox's vllm-decode (same labels and annotations), so a true twin.
    twin = mark_managed(vllm_deployment("twin", image=GOOD, replicas=2), "llm-d", NS)
    sandbox.cluster.create_deployment(twin, NS)
    roll_out(sandbox, "twin", crash=False)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(sandbox.kubeconfig)}
    subprocess.run(
        [KUBECTL, "--cache-dir", str(tmp_path / "cache"), "rollout", "undo", "deployment/twin", "-n", NS],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return sandbox.cluster.get("Deployment", NS, "twin")


def as_decode(obj: Any) -> Any:
    return json.loads(json.dumps(obj).replace('"twin"', '"vllm-decode"'))


def test_bad_rollout_rolled_back_from_slack(
    client: TestClient,
    sandbox: Sandbox,
    store: IncidentStore,
    emulator: SlackEmulator,
    pd: PagerDutyEmulator,
    redis_client: redis.Redis,
    e2e_settings: Settings,
    tmp_path: Path,
) -> None:
    twin = kubectl_undo_of_twin(sandbox, tmp_path)
    roll_out(sandbox)
    assert sandbox.decode_ready() == 0  # the new image crash-loops; vLLM answers /health 503
    inc = open_incident(store)

    # a stranger is refused, and nothing is queued for the cluster
    post_signed(
        client,
        command_body(
            f"rollback {NS}/vllm-decode --incident {inc.id}",
            user=STRANGER,
            response_url=emulator.response_url("stranger"),
        ),
    )
    reply = wait_until(lambda: [x for x in emulator.responses if x["path"] == "/response/stranger"])
    assert "only approvers" in reply[0]["text"]  # type: ignore[index]

    post_signed(
        client,
        command_body(
            f"rollback {NS}/vllm-decode --incident {inc.id}",
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
    assert f"image {BAD} -> {GOOD}" in text and "[Approve rollback]" in text and PLAIN_SECRET not in text
    buttons = next(b for b in message.blocks if b.get("block_id") == "rollback_buttons")  # type: ignore[attr-defined]
    value = buttons["elements"][0]["value"]
    assert json.loads(value) == {"request_id": "RB-0001"}

    post_signed(
        client, action_body("rollback_approve", value, user=APPROVER, channel=HIGH, message_ts=message.ts)
    )  # type: ignore[attr-defined]
    flow = workers.rollback_tasks.flow()
    done = wait_until(
        lambda: flow.requests.get("RB-0001").state.terminal and flow.requests.get("RB-0001"), 60
    )
    assert done.state.value == "verified", done.reason  # type: ignore[attr-defined]

    dep = sandbox.cluster.get("Deployment", NS, "vllm-decode")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD
    assert sandbox.decode_ready() == 2
    if twin is not None:  # the same template and annotations kubectl's own undo produced
        assert dep["spec"]["template"] == as_decode(twin["spec"]["template"])
        assert dep["metadata"]["annotations"] == twin["metadata"]["annotations"]

    # outcome in the channel, the incident thread, the preview updated, PagerDuty, the audit trail
    wait_until(
        lambda: any("verified" in m.text for m in emulator.channel_messages(HIGH, top_level_only=True))
    )
    # the preview's update is its own Slack call: it may land after the outcome message
    wait_until(lambda: "VERIFIED" in emulator.messages[(HIGH, message.ts)].text.upper())  # type: ignore[attr-defined]
    root = wait_until(
        lambda: next(
            (
                m
                for m in emulator.channel_messages(HIGH, top_level_only=True)
                if inc.id in m.text and "RB-" not in m.text
            ),
            None,
        )
    )
    wait_until(lambda: any("verified" in r.text.lower() for r in emulator.thread(HIGH, root.ts)), 30)  # type: ignore[attr-defined]
    change = wait_until(lambda: pd.calls_to("/v2/change/enqueue", ok=True), 30)
    details = change[0].body["payload"]["custom_details"]  # type: ignore[index]
    assert details["requested_by"] == f"slack:{APPROVER}" and details["approved_by"] == f"slack:{APPROVER}"
    assert (details["from_revision"], details["to_revision"], details["outcome"]) == (2, 1, "verified")
    assert details["namespace"] == NS and details["deployment"] == "vllm-decode"
    audit = [e for e in flow.audit.entries() if e["action"] == "rollback" and e["outcome"] == "verified"]
    assert len(audit) == 1 and json.loads(audit[0]["args"])["approved_by"] == f"slack:{APPROVER}"
