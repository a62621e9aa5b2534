"""The rollback flow for a LeaderWorkerSet and a StatefulSet against the sandbox (tasks called by hand):
preview, a worker killed before or after the undo PATCH (the undo lands exactly once), and the refusal when
neither a ControllerRevision nor a Helm release holds an older template."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.integrations.workloads import LeaderWorkerSetWorkload
from bot.rollback.preview import preview_lines
from bot.rollback.state import State
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.sandbox.workload_controllers import vllm_statefulset
from tests.rollback.conftest import GOOD, NS, FlowFactory, roll_out
from tests.support.slack import APPROVER

pytestmark = pytest.mark.integration
LWS = "vllm-multinode"
BAD = "vllm/vllm-openai:v0.9.9-bad"
LOW = "C0LOW00001"  # #incidents-low: where a request without an incident is posted
LWS_PATH = rf"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/{LWS}"


class SimulatedKill(BaseException):
    """The worker process dying: nothing in the flow catches it."""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    config = SandboxConfig(decode_replicas=1, vllm_servers=1, tls=False, lws_groups=2, gpus_per_node=16)
    with Sandbox(config, workdir=tmp_path) as sb:
        yield sb


def set_lws_image(sandbox: Sandbox, image: str) -> None:
    sandbox.cluster.script_pods("crashloop", image=BAD)
    lwt = sandbox.cluster.get("LeaderWorkerSet", NS, LWS)["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        lwt[role]["spec"]["containers"][0]["image"] = image
    sandbox.cluster.patch_object(
        "LeaderWorkerSet", NS, LWS, "application/merge-patch+json", {"spec": {"leaderWorkerTemplate": lwt}}
    )


def images(sandbox: Sandbox) -> set[str]:
    lwt = sandbox.cluster.get("LeaderWorkerSet", NS, LWS)["spec"]["leaderWorkerTemplate"]
    return {c["image"] for r in ("leaderTemplate", "workerTemplate") for c in lwt[r]["spec"]["containers"]}


@pytest.mark.parametrize("when", ["before", "after"])
def test_worker_killed_mid_undo_rolls_back_exactly_once(
    when: str, sandbox: Sandbox, make_flow: FlowFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_lws_image(sandbox, BAD)
    flow = make_flow()
    req = flow.request(NS, LWS, actor=f"slack:{APPROVER}", kind="LeaderWorkerSet")
    assert req.state is State.PREVIEWED and req.kind == "LeaderWorkerSet", req.reason
    assert (req.from_revision, req.to_revision) == (2, 1)
    lines = preview_lines(req.preview)
    assert lines[0] == f"Rollback of LeaderWorkerSet {NS}/{LWS}"
    assert "template revision 2" in lines[1] and "template revision 1" in lines[2]
    assert any("helm: release llm-d rev 1 → 2" in line for line in lines), lines
    assert any("helm rollback llm-d 1 -n llm-d" in line for line in lines), lines
    flow.decide(req.id, APPROVER, approve=True)

    real_undo = LeaderWorkerSetWorkload.undo

    def dying_undo(self: Any, *args: Any, **kwargs: Any) -> Any:
        if when == "after":
            real_undo(self, *args, **kwargs)
        raise SimulatedKill

    sandbox.kube.clear_requests()
    monkeypatch.setattr(LeaderWorkerSetWorkload, "undo", dying_undo)
    with pytest.raises(SimulatedKill):
        flow.execute(req.id)
    assert flow.requests.get(req.id).state is State.EXECUTING
    monkeypatch.setattr(LeaderWorkerSetWorkload, "undo", real_undo)
    done = make_flow().execute(req.id)  # the redelivered task on another worker
    assert done.state is State.VERIFIED, done.reason
    expected = (
        "recovered: the target template is already in place" if when == "after" else "recovered: undo re-sent"
    )
    assert done.reason.startswith(expected), done.reason
    assert images(sandbox) == {GOOD}
    assert sandbox.kube.count("PATCH", LWS_PATH, mutating=True) == 1, "the undo landed exactly once"


def test_lws_without_older_template_is_refused_with_the_reason(
    sandbox: Sandbox, make_flow: FlowFactory
) -> None:
    # The sandbox's two Helm releases render the same template: neither ControllerRevisions nor Helm hold
    # an older one, so there is nothing to roll back to.
    req = make_flow().request(NS, LWS, actor=f"slack:{APPROVER}", kind="LeaderWorkerSet")
    assert req.state is State.REFUSED and "nothing to roll back" in req.reason, req.reason


def test_statefulset_rollback_previews_and_verifies(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    cluster = sandbox.cluster
    cluster.create_object("StatefulSet", vllm_statefulset("vllm-prefill-sts", image=GOOD, replicas=2), NS)
    cluster.script_pods("crashloop", image=BAD)
    cluster.patch_object(
        "StatefulSet",
        NS,
        "vllm-prefill-sts",
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": BAD}]}}}},
    )
    flow = make_flow()
    req = flow.request(NS, "vllm-prefill-sts", actor=f"slack:{APPROVER}", kind="StatefulSet")
    assert req.state is State.PREVIEWED, req.reason
    assert any(c["text"] == f"image {BAD} -> {GOOD}" for c in req.preview["changes"]), req.preview["changes"]
    assert req.preview["helm"] is None, "not Helm-managed: no Helm warning"
    flow.decide(req.id, APPROVER, approve=True)
    done = flow.execute(req.id)
    assert done.state is State.VERIFIED, done.reason
    sts = cluster.get("StatefulSet", NS, "vllm-prefill-sts")
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD


def test_helm_managed_deployment_preview_names_the_release_and_helm_rollback(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator
) -> None:
    roll_out(sandbox)  # a kubectl-style change of the Helm-managed vllm-decode
    req = make_flow().request(NS, "vllm-decode", actor=f"slack:{APPROVER}")
    assert req.state is State.PREVIEWED, req.reason
    helm = req.preview["helm"]
    assert (helm["release"], helm["current_revision"], helm["previous_revision"]) == ("llm-d", 2, 1)
    assert helm["change"] == "release llm-d rev 1 → 2, chart 1.3.0 → 1.3.1, deployed 3 days ago"
    text = "\n".join(to_console({"blocks": m.blocks}) for m in emulator.channel_messages(LOW))
    assert "Helm: release llm-d rev 1 → 2, chart 1.3.0 → 1.3.1, deployed 3 days ago" in text, text
    assert "reverted by the next `helm upgrade`" in text and "`helm rollback llm-d 1 -n llm-d`" in text, text
    assert "current: revision 2" in "\n".join(preview_lines(req.preview)), "a Deployment keeps 'revision'"
