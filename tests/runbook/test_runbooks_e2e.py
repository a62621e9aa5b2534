"""Every shipped runbook, end to end against the sandbox: for real, and as a dry run that changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bot.integrations.kube import KubeClient
from bot.runbook.engine import Engine, RunRecord, RunStatus
from bot.sandbox.sandbox import Sandbox
from bot.storage.incidents import IncidentStore
from tests.runbook.conftest import EngineFactory
from tests.support.fixtures import wait_until
from tests.support.runbooks import open_incident, story

pytestmark = pytest.mark.integration
NS = "llm-d"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def bad_rollout(sandbox: Sandbox, *, crash: bool = True) -> None:
    """Roll vllm-decode to a new image (crash-looping when crash=True)."""
    image = "vllm/vllm-openai:v0.9.9-bad"
    if crash:
        sandbox.cluster.script_pods("crashloop", image=image)
    sandbox.cluster.patch_deployment(
        NS,
        "vllm-decode",
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}}},
    )
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    wait_until(lambda: kube.get_deployment(NS, "vllm-decode").images == (image,))


def oom_decode(sandbox: Sandbox) -> None:
    """Decode pods keep getting OOMKilled."""
    sandbox.cluster.script_pods("oomkilled", namespace=NS, deployment="vllm-decode")
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    kube.scale(NS, "vllm-decode", 3)
    wait_until(lambda: len(kube.list_pods(NS, deployment="vllm-decode")) == 3)


def kv_pressure(sandbox: Sandbox) -> None:
    """30 req/s on one decode replica: the KV cache is nearly full; two replicas drain it."""
    assert sandbox.vllm is not None
    sandbox.vllm.set(offered_rps=30.0)


@dataclass(frozen=True)
class Case:
    runbook: str
    alert: str
    labels: dict[str, str]
    setup: Callable[[Sandbox], None] | None
    status: RunStatus
    real_story: tuple[str, ...]
    dry_story: tuple[str, ...]
    approve: bool = False


CASES = [
    Case(
        "high-latency",
        "VLLMHighQueueDepth",
        {},
        None,
        RunStatus.SUCCEEDED,
        ("scale_decode (k8s.scale, mutating): ok - scaled llm-d/vllm-decode 1 -> 3", "warmup", "verify"),
        ("would scale llm-d/vllm-decode 1 -> 3",),
    ),
    Case(
        "service-down",
        "VLLMServiceDown",
        {"severity": "critical"},
        bad_rollout,
        RunStatus.SUCCEEDED,
        (
            "rolled back llm-d/vllm-decode from revision 2 to 1",
            "restart (k8s.rollout_restart",
            "skipped",
            "release llm-d rev 1 → 2, chart 1.3.0 → 1.3.1, deployed 3 days ago",
        ),
        ("would roll back llm-d/vllm-decode from revision 2 to 1",),
    ),
    Case(
        "gpu-exhaustion",
        "GPUMemoryExhausted",
        {},
        oom_decode,
        RunStatus.ESCALATED,
        ("approved by alice", "deleted 1 of 3 pod(s)", "recheck (wait, read): failed", "escalate"),
        ("replace_oom (k8s.delete_pods, dry run, mutating): ok",),
        approve=True,
    ),
    Case(
        "kv-cache-exhaustion",
        "VLLMKVCacheExhausted",
        {},
        kv_pressure,
        RunStatus.SUCCEEDED,
        ("scaled llm-d/vllm-decode 1 -> 2", "drained (wait, read): ok"),
        ("would scale llm-d/vllm-decode 1 -> 2",),
    ),
    Case(
        "memory-pressure",
        "KubePodOOMKilled",
        {},
        oom_decode,
        RunStatus.ESCALATED,
        (
            "oom_logs (k8s.logs, read): ok - 3 line(s)",
            "replace (k8s.delete_pods, mutating): ok - deleted 1 of 3",
            "escalate",
        ),
        ("would delete",),
    ),
    Case(
        "high-error-rate",
        "VLLMHighErrorRate",
        {"severity": "critical"},
        lambda sb: bad_rollout(sb, crash=False),
        RunStatus.SUCCEEDED,
        ("approved by alice", "rolled back llm-d/vllm-decode from revision 2 to 1"),
        ("would roll back llm-d/vllm-decode from revision 2 to 1",),
        approve=True,
    ),
    Case(
        "low-cache-hit",
        "VLLMLowPrefixCacheHitRate",
        {},
        None,
        RunStatus.SUCCEEDED,
        ("Prefix-cache hit ratio", "very_low (escalate, read): skipped"),
        ("would notify: Prefix-cache hit ratio",),
    ),
    Case(
        "model-loading",
        "VLLMModelLoading",
        {"model_name": MODEL},
        None,
        RunStatus.SUCCEEDED,
        ("served (wait, read): ok", "warmup (vllm.warmup, read): ok - warmed 2/2"),
        ("would notify: Model loaded",),
    ),
]


def run_with_approvals(engine: Engine, run: RunRecord, approve: bool) -> RunRecord:
    """Run inline; a second thread approves every step that asks, as a person would from Slack."""
    done = threading.Event()

    def approver() -> None:
        while not done.is_set():
            current = engine.get_run(run.id)
            if current.status is RunStatus.AWAITING_APPROVAL:
                step_id = engine.runbooks[run.runbook].steps[current.cursor].id
                engine.decide(run.incident_id, f"{run.id}:{step_id}", "approve", "alice")
            done.wait(0.05)

    thread = threading.Thread(target=approver, daemon=True)
    if approve:
        thread.start()
    try:
        return engine.run_inline(run.id, max_seconds=120)
    finally:
        done.set()
        if approve:
            thread.join(5)


def decode_state(sandbox: Sandbox) -> tuple[int, tuple[str, ...], list[str]]:
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    dep = kube.get_deployment(NS, "vllm-decode")
    pods = sorted(p.name for p in kube.list_pods(NS, deployment="vllm-decode"))
    return dep.replicas, dep.images, pods


@pytest.mark.parametrize("case", CASES, ids=[c.runbook for c in CASES])
def test_runbook_for_real(
    case: Case, sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    if case.setup:
        case.setup(sandbox)
    engine = make_engine()
    incident = open_incident(store, case.alert, **case.labels)
    run, _ = engine.create_run(incident.id, case.runbook)
    run = run_with_approvals(engine, run, case.approve)
    lines = story(store, incident.id, run.id)
    text = "\n".join(lines)
    assert run.status is case.status, text
    for fragment in case.real_story:
        assert fragment in text, f"{fragment!r} missing from:\n{text}"
    steps = engine.runbooks[case.runbook].steps
    # Every step that was reached tells its story, in order, and the run ends with a verdict.
    reached = [line for line in lines if line.startswith("runbook_step:")]
    assert [line.split("] ", 1)[1].split(" ", 1)[0] for line in reached] == [s.id for s in steps][
        : len(reached)
    ]
    assert lines[0].startswith("runbook_started:") and lines[-1].startswith("runbook_finished:")


@pytest.mark.parametrize("case", CASES, ids=[c.runbook for c in CASES])
def test_runbook_dry_run_changes_nothing(
    case: Case, sandbox: Sandbox, make_engine: EngineFactory, store: IncidentStore
) -> None:
    if case.setup:
        case.setup(sandbox)
    engine = make_engine()
    incident = open_incident(store, case.alert, **case.labels)
    before = decode_state(sandbox)
    sandbox.kube.clear_requests()
    run, _ = engine.create_run(incident.id, case.runbook, dry_run=True)
    run = engine.run_inline(run.id, max_seconds=120)
    text = "\n".join(story(store, incident.id, run.id))
    assert run.status is not RunStatus.AWAITING_APPROVAL
    for fragment in case.dry_story:
        assert fragment in text, f"{fragment!r} missing from:\n{text}"
    assert sandbox.kube.count(mutating=True) == 0, [r for r in sandbox.kube.requests if r.mutating]
    dry = [r for r in sandbox.kube.requests if r.query.get("dryRun") == "All"]
    assert bool(dry) == any(
        s.type.startswith("k8s.") and engine.registry[s.type].mutating
        for s in engine.runbooks[case.runbook].steps
        if "would" in text
    )
    assert decode_state(sandbox) == before
    assert not any(t.kind == "notify" for t in store.timeline(incident.id))
