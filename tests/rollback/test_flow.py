"""The rollback flow against the sandbox cluster and the Slack emulator, tasks recorded (called by hand)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import redis

from bot.integrations.kube import KubeClient
from bot.rollback.flow import RollbackFlow
from bot.rollback.state import State
from bot.sandbox.sandbox import Sandbox
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.storage.controls import AutomationSwitch
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore
from bot.tasknames import ROLLBACK_EXECUTE as TASK_EXECUTE
from tests.rollback.conftest import (
    APPROVER_2,
    BAD,
    FLAG_SECRET,
    GOOD,
    NS,
    PLAIN_SECRET,
    FlowFactory,
    roll_out,
)
from tests.support.runbooks import FastClock
from tests.support.slack import APPROVER, RESPONDER, RecordingSender, open_incident

pytestmark = pytest.mark.integration
TARGET = f"{NS}/vllm-decode"
LOW = "C0LOW00001"  # #incidents-low: the default level's channel (P3), used without an incident


def actor(user: str) -> str:
    return f"slack:{user}"


def shown(emulator: SlackEmulator, channel: str) -> str:
    """Everything posted or updated in a channel, as Slack would show it, plus the raw blocks."""
    return "\n".join(
        to_console({"blocks": m.blocks}) + json.dumps(m.blocks) + m.text
        for m in emulator.channel_messages(channel)
    )


def test_preview_shows_the_change_and_never_env_values(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator
) -> None:
    roll_out(sandbox)
    req = make_flow().request(NS, "vllm-decode", actor=actor(APPROVER))
    assert req.state is State.PREVIEWED and (req.from_revision, req.to_revision) == (2, 1)
    text = shown(emulator, LOW)
    for expected in (
        f"image {BAD} -&gt; {GOOD}",
        "model meta-llama/Llama-3.3-70B-Instruct -&gt; meta-llama/Llama-3.1-8B-Instruct",
        "limits nvidia.com/gpu: 2 -&gt; 1",
        "args flag --max-model-len removed",
        "env HF_TOKEN removed (was from secret hf/token)",
        "env EXTRA_KEY removed (was from value)",
        "server-side dry run accepted",
        "[Approve rollback]",
        "[Cancel]",
    ):
        assert expected in text, expected
    assert PLAIN_SECRET not in text and FLAG_SECRET not in text
    assert PLAIN_SECRET not in json.dumps(req.preview) and FLAG_SECRET not in json.dumps(req.preview)
    # the preview's dry run changed nothing
    assert sandbox.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["generation"] == 3


def test_approved_rollback_runs_verifies_and_records(
    sandbox: Sandbox,
    make_flow: FlowFactory,
    emulator: SlackEmulator,
    store: IncidentStore,
    redis_client: redis.Redis,
) -> None:
    roll_out(sandbox)
    assert sandbox.decode_ready() == 0
    inc = open_incident(store)
    sender = RecordingSender()
    flow = make_flow(sender=sender)
    req = flow.request(NS, "vllm-decode", actor=actor(RESPONDER), incident_id=inc.id)
    outcome, reply = flow.decide(req.id, APPROVER, approve=True)
    assert outcome == "accepted", reply
    assert sender.named(TASK_EXECUTE) == [((req.id,), {})]
    done = flow.execute(req.id)
    assert done.state is State.VERIFIED, done.reason
    assert sandbox.decode_ready() == 2
    assert {c["name"]: c["ok"] for c in done.verification["checks"]} == {
        "rollout": True,
        "pods": True,
        "vllm_health": True,
        "warmup": True,
    }
    images = [
        c["image"]
        for c in sandbox.cluster.get("Deployment", NS, "vllm-decode")["spec"]["template"]["spec"][
            "containers"
        ]
    ]
    assert images == [GOOD]
    kinds = [e.kind for e in store.timeline(inc.id)]
    assert {"rollback_previewed", "rollback_approved", "rollback_verified"} <= set(kinds)
    result = shown(emulator, "C0HIGH0001")
    assert "Rollback RB-0001 verified" in result and "approved by" in result
    audit = [e for e in flow.audit.entries() if e["action"] == "rollback" and e["outcome"] == "verified"]
    args = json.loads(audit[0]["args"])
    assert args["requested_by"] == actor(RESPONDER) and args["approved_by"] == actor(APPROVER)
    assert (args["from_revision"], args["to_revision"]) == (2, 1) and args["duration_s"] > 0
    assert f"image {BAD} -> {GOOD}" in args["diff"]
    # a runbook undoing right after would flip back to the bad revision: the runbooks' cooldown is on
    assert flow.guards.cooldown_left("k8s.rollout_undo", TARGET) > 0


def test_failed_verification_is_loud_escalates_and_offers_next_steps(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator, store: IncidentStore
) -> None:
    roll_out(sandbox)
    sandbox.cluster.script_pods("crashloop", namespace=NS, deployment="vllm-decode")  # every image crashes
    inc = open_incident(store)
    flow = make_flow(clock=FastClock())
    req = flow.request(NS, "vllm-decode", actor=actor(RESPONDER), incident_id=inc.id)
    flow.decide(req.id, APPROVER, approve=True)
    done = flow.execute(req.id)
    assert done.state is State.FAILED
    assert "pods" in done.reason and "vllm_health" in done.reason
    text = shown(emulator, "C0HIGH0001")
    assert "FAILED VERIFICATION" in text and f"<@{APPROVER}>" in text
    assert f"/incident runbook {inc.id} service-down" in text
    assert "escalate" in [e.kind for e in store.timeline(inc.id)]
    # the next step was offered, not taken: the rollback left revision 1's template in place, nothing more
    dep = sandbox.cluster.get("Deployment", NS, "vllm-decode")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD


# --- refusals ------------------------------------------------------------------------------------
def refused(flow: RollbackFlow, *args: str, **kwargs: object) -> tuple[str, str]:
    req = flow.request(NS, *args, actor=actor(APPROVER), **kwargs)  # type: ignore[arg-type]
    assert req.state is State.REFUSED
    return req.history[-1].note, req.reason


def test_refuses_a_paused_deployment(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator
) -> None:
    roll_out(sandbox, crash=False)
    sandbox.cluster.patch_deployment(
        NS, "vllm-decode", "application/merge-patch+json", {"spec": {"paused": True}}
    )
    code, reason = refused(make_flow(), "vllm-decode")
    assert code == "paused" and "rollout resume" in reason
    assert "REFUSED" in shown(emulator, LOW) and "[Approve rollback]" not in shown(emulator, LOW)


def test_refuses_without_a_previous_revision(make_flow: FlowFactory) -> None:
    code, reason = refused(make_flow(), "vllm-prefill")
    assert code == "no_previous_revision" and "no previous revision" in reason


def test_refuses_a_missing_revision_and_the_current_one(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    roll_out(sandbox, crash=False)
    flow = make_flow()
    code, reason = refused(flow, "vllm-decode", to_revision=2)
    assert code == "target_is_current" and "what runs now" in reason
    code, reason = refused(flow, "vllm-decode", to_revision=9)
    assert code == "revision_not_found" and "known: 1, 2" in reason


def test_refuses_while_a_runbook_holds_the_deployment(
    sandbox: Sandbox, make_flow: FlowFactory, rb_settings: Settings, redis_client: redis.Redis
) -> None:
    roll_out(sandbox, crash=False)
    guards = Guards(
        redis_client, rb_settings.key_prefix, cooldown_seconds=0, max_actions=10, window_seconds=60
    )
    token = guards.acquire(TARGET, 60)  # exactly what the runbook engine takes around a step
    assert token is not None
    code, reason = refused(make_flow(), "vllm-decode")
    assert code == "rollout_in_progress" and "runbook" in reason


def test_refuses_with_the_kill_switch_on(
    sandbox: Sandbox, make_flow: FlowFactory, rb_settings: Settings, redis_client: redis.Redis
) -> None:
    roll_out(sandbox, crash=False)
    AutomationSwitch(redis_client, rb_settings.key_prefix).disable("alice", "hands off")
    code, reason = refused(make_flow(), "vllm-decode")
    assert code == "kill_switch" and "kill switch" in reason


def test_refuses_a_namespace_outside_the_allow_list(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    roll_out(sandbox, crash=False)
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig), allowed_namespaces=["llm-d-batch"])
    code, reason = refused(make_flow(kube=kube), "vllm-decode")
    assert code == "namespace_not_allowed" and "KUBE_ALLOWED_NAMESPACES" in reason


def test_only_approvers_approve(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    roll_out(sandbox, crash=False)
    sender = RecordingSender()
    flow = make_flow(sender=sender)
    req = flow.request(NS, "vllm-decode", actor=actor(APPROVER))
    outcome, reply = flow.decide(req.id, RESPONDER, approve=True)
    assert outcome == "refused" and "only approvers" in reply
    assert flow.requests.get(req.id).state is State.PREVIEWED and sender.named(TASK_EXECUTE) == []


# --- concurrency, expiry, two-person rule ----------------------------------------------------------
def test_two_concurrent_requests_one_is_refused(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    roll_out(sandbox, crash=False)
    flows = [make_flow(), make_flow()]
    results: list[State] = []
    barrier = threading.Barrier(2)

    def go(flow: RollbackFlow) -> None:
        barrier.wait()
        results.append(flow.request(NS, "vllm-decode", actor=actor(APPROVER)).state)

    threads = [threading.Thread(target=go, args=(f,)) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [State.PREVIEWED, State.REFUSED]
    loser = next(r for r in flows[0].requests.recent() if r.state is State.REFUSED)
    assert loser.history[-1].note == "busy" and "one rollback per deployment" in loser.reason


def test_execution_refused_when_the_lock_is_taken_after_approval(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator
) -> None:
    roll_out(sandbox, crash=False)
    flow = make_flow()
    req = flow.request(NS, "vllm-decode", actor=actor(APPROVER))
    flow.decide(req.id, APPROVER, approve=True)
    assert flow.guards.acquire(TARGET, 60) is not None  # a runbook step started meanwhile
    before = sandbox.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["generation"]
    done = flow.execute(req.id)
    assert done.state is State.REFUSED and "acting on" in done.reason
    assert sandbox.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["generation"] == before
    (message,) = emulator.channel_messages(LOW, top_level_only=True)  # the preview, updated in place
    assert "refused" in message.text and "[Approve rollback]" not in to_console({"blocks": message.blocks})


def test_expired_approval_does_nothing(
    sandbox: Sandbox, make_flow: FlowFactory, emulator: SlackEmulator
) -> None:
    roll_out(sandbox, crash=False)
    clock = FastClock()
    sender = RecordingSender()
    flow = make_flow(clock=clock, sender=sender)
    req = flow.request(NS, "vllm-decode", actor=actor(APPROVER))
    clock.offset += timedelta(seconds=flow.settings.rollback_approval_timeout_seconds + 1)
    before = sandbox.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["generation"]
    outcome, reply = flow.decide(req.id, APPROVER, approve=True)
    assert outcome == "refused" and "expired" in reply
    assert flow.requests.get(req.id).state is State.EXPIRED and sender.named(TASK_EXECUTE) == []
    assert flow.execute(req.id).state is State.EXPIRED  # a stray execute changes nothing either
    assert sandbox.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["generation"] == before
    assert "EXPIRED" in shown(emulator, LOW)
    # the deployment is free again for a new request
    assert flow.request(NS, "vllm-decode", actor=actor(APPROVER)).state is State.PREVIEWED


def test_two_person_rule_refuses_the_requesters_own_approval(
    sandbox: Sandbox, make_flow: FlowFactory, rb_settings: Settings
) -> None:
    roll_out(sandbox, crash=False)
    sender = RecordingSender()
    flow = make_flow(rb_settings.model_copy(update={"rollback_two_person_namespaces": [NS]}), sender=sender)
    req = flow.request(NS, "vllm-decode", actor=actor(APPROVER))
    assert req.two_person
    outcome, reply = flow.decide(req.id, APPROVER, approve=True)
    assert outcome == "refused" and "two-person rule" in reply
    assert flow.requests.get(req.id).state is State.PREVIEWED and sender.named(TASK_EXECUTE) == []
    outcome, _ = flow.decide(req.id, APPROVER_2, approve=True)
    assert outcome == "accepted" and flow.requests.get(req.id).approved_by == actor(APPROVER_2)
    assert sender.named(TASK_EXECUTE) == [((req.id,), {})]
    outcome, reply = flow.decide(req.id, APPROVER, approve=False)  # too late to cancel
    assert outcome == "failed" and "already approved" in reply


def test_cancel_by_the_requester(sandbox: Sandbox, make_flow: FlowFactory) -> None:
    roll_out(sandbox, crash=False)
    flow = make_flow()
    req = flow.request(NS, "vllm-decode", actor=actor(RESPONDER))
    outcome, _ = flow.decide(req.id, RESPONDER, approve=False)
    assert outcome == "accepted" and flow.requests.get(req.id).state is State.CANCELLED
