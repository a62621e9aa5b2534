"""The ChatOps rollback of an Argo Rollout: preview (abort of a bad canary), approval, execution through the
real client on the sandbox's emulated Rollout controller, verification, and a worker killed mid-abort."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.integrations.argo import ArgoRollouts
from bot.rollback.state import State
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from tests.rollback.conftest import NS, FlowFactory
from tests.support.slack import APPROVER, RESPONDER

pytestmark = pytest.mark.integration
NAME = "vllm-decode"
CANARY = "vllm/vllm-openai:v0.9.9-canary"
STABLE = "vllm/vllm-openai:v0.8.5"
ABORT_PATH = rf"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/{NAME}/status"
LOW = "C0LOW00001"


class SimulatedKill(BaseException):
    """The worker process dying mid-execution."""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """The decode tier as an Argo canary Rollout (2 replicas), a broken canary at 20 %."""
    config = SandboxConfig(decode_kind="Rollout", decode_replicas=2, vllm_servers=2, tls=True)
    with Sandbox(config, workdir=tmp_path) as sb:
        sb.start_canary(CANARY)
        yield sb


def test_bad_canary_is_previewed_as_an_abort_approved_and_verified(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator
) -> None:
    flow = make_flow()
    req = flow.request(NS, NAME, actor=f"slack:{RESPONDER}")  # no kind given: no Deployment, so the Rollout
    assert req.state is State.PREVIEWED, req.reason
    assert req.preview["kind"] == "Rollout" and req.preview["argo"]["action"] == "abort"
    assert (req.from_revision, req.to_revision) == (2, 1)
    shown = "\n".join(to_console({"blocks": m.blocks}) for m in emulator.channel_messages(LOW))
    assert "Argo Rollout" in shown and "goes back to the stable ReplicaSet" in shown
    assert f"canary:  {CANARY} at 20%" in shown
    assert "server-side dry run accepted the abort" in shown
    assert ArgoRollouts(flow.kube).status(NS, NAME).canary_in_progress, "the preview changed nothing"

    sandbox.kube.clear_requests()
    outcome, reply = flow.decide(req.id, APPROVER, approve=True)
    assert outcome == "accepted", reply
    done = flow.execute(req.id)
    assert done.state is State.VERIFIED, done.reason
    assert {c["name"]: c["ok"] for c in done.verification["checks"]} == {
        "rollout": True,
        "pods": True,
        "vllm_health": True,
        "warmup": True,
    }
    assert sandbox.kube.count("PATCH", ABORT_PATH, mutating=True) == 1
    assert sandbox.kube.count(mutating=True) == 1
    state = ArgoRollouts(flow.kube).status(NS, NAME)
    assert state.aborted and state.canary_weight == 0 and state.stable_images == (STABLE,)
    assert sandbox.canary_error_ratio() == 0.0


def test_worker_killed_after_the_abort_recovers_without_repeating_it(
    sandbox: Sandbox, make_flow: FlowFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = make_flow()
    req = flow.request(NS, NAME, actor=f"slack:{RESPONDER}", kind="Rollout")
    flow.decide(req.id, APPROVER, approve=True)
    original = ArgoRollouts.abort

    def dying(self: ArgoRollouts, namespace: str, name: str, **kw: Any) -> Any:
        original(self, namespace, name, **kw)
        raise SimulatedKill

    monkeypatch.setattr(ArgoRollouts, "abort", dying)
    sandbox.kube.clear_requests()
    with pytest.raises(SimulatedKill):
        flow.execute(req.id)
    assert flow.requests.get(req.id).state is State.EXECUTING
    monkeypatch.setattr(ArgoRollouts, "abort", original)
    done = make_flow().execute(req.id)  # the redelivered task
    assert done.state is State.VERIFIED, done.reason
    assert "recovered: the abort is in place" in json.dumps(done.model_dump(mode="json"))
    assert sandbox.kube.count("PATCH", ABORT_PATH, mutating=True) == 1


def test_changed_after_the_preview_is_refused(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    flow = make_flow()
    req = flow.request(NS, NAME, actor=f"slack:{RESPONDER}")
    flow.decide(req.id, APPROVER, approve=True)
    ArgoRollouts(flow.kube).pause(NS, NAME)
    done = flow.execute(req.id)
    assert done.state is State.REFUSED and "paused" in done.reason
    assert ArgoRollouts(flow.kube).status(NS, NAME).canary_in_progress
