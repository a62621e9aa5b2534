"""The Kubernetes adapter driven through the real ``kubernetes`` client against the loopback emulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import PermanentError, TransientError
from bot.integrations.kube import (
    RESTARTED_AT,
    KubeClient,
    KubeConflict,
    KubeForbidden,
    KubeNotFound,
    KubeRejected,
    KubeUnauthorized,
    KubeUnavailable,
    NamespaceNotAllowed,
    NoRolloutHistory,
    RolloutPaused,
)
from bot.sandbox.cluster import Cluster, PodBehaviour
from bot.sandbox.kube_emulator import KubeEmulator
from bot.settings import Settings

NS = "llm-d"
OLD_IMAGE = "vllm/vllm-openai:v0.8.5"
BAD_IMAGE = "vllm/vllm-openai:v0.9.0"
DEPLOY_PATH = rf"/apis/apps/v1/namespaces/{NS}/deployments/vllm-decode"


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    cluster = Cluster(seed=7)
    cluster.seed_llmd(NS, image=OLD_IMAGE, decode_replicas=2, prefill_replicas=1)
    with KubeEmulator(cluster, token="token-1") as emu:
        yield emu


@pytest.fixture
def kubeconfig(emulator: KubeEmulator, tmp_path: Path) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(str(kubeconfig), field_manager="incident-bot-test", request_timeout=5)
    yield client
    client.close()


def set_image(cluster: Cluster, image: str, name: str = "vllm-decode") -> None:
    """Roll a new image the way `kubectl set image` does (strategic merge on the container by name)."""
    cluster.patch_deployment(
        NS,
        name,
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}}},
    )


def template_images(cluster: Cluster, name: str = "vllm-decode") -> list[str]:
    dep = cluster.get("Deployment", NS, name)
    return [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]


# --- reads ---------------------------------------------------------------------------------------


def test_get_deployment_summary(kube: KubeClient) -> None:
    d = kube.get_deployment(NS, "vllm-decode")
    assert (d.name, d.namespace, d.replicas, d.ready_replicas, d.available_replicas) == (
        "vllm-decode",
        NS,
        2,
        2,
        2,
    )
    assert d.updated_replicas == 2 and d.unavailable_replicas == 0 and not d.paused
    assert d.revision == 1 and d.generation == d.observed_generation == 1
    assert d.images == (OLD_IMAGE,)
    assert d.selector == "app.kubernetes.io/name=vllm-decode"
    assert d.progressing_reason == "NewReplicaSetAvailable"


def test_missing_deployment_is_not_found(kube: KubeClient) -> None:
    with pytest.raises(KubeNotFound, match=r'deployments\.apps "nope" not found') as info:
        kube.get_deployment(NS, "nope")
    assert isinstance(info.value, PermanentError) and info.value.status == 404


# --- scale ---------------------------------------------------------------------------------------


def test_scale_patches_the_scale_subresource_and_pods_follow(
    kube: KubeClient, emulator: KubeEmulator
) -> None:
    result = kube.scale(NS, "vllm-decode", 4)
    assert (result.previous_replicas, result.replicas, result.dry_run) == (2, 4, False)
    patches = [r for r in emulator.requests if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].path == DEPLOY_PATH + "/scale"
    assert patches[0].content_type == "application/merge-patch+json"
    assert patches[0].query == {"fieldManager": "incident-bot-test"}
    assert patches[0].body == {"spec": {"replicas": 4}}
    assert emulator.cluster.ready_replicas(NS, "vllm-decode") == 4
    assert len(kube.list_pods(NS, deployment="vllm-decode")) == 4
    managers = {
        e["manager"]
        for e in emulator.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["managedFields"]
    }
    assert "incident-bot-test" in managers

    kube.scale(NS, "vllm-decode", 1)
    pods = kube.list_pods(NS, deployment="vllm-decode")
    assert len(pods) == 1 and pods[0].ready


def test_scale_dry_run_changes_nothing(kube: KubeClient, emulator: KubeEmulator) -> None:
    before = emulator.cluster.get("Deployment", NS, "vllm-decode")
    pods_before = {p["metadata"]["name"] for p in emulator.cluster.pods(NS)}
    result = kube.scale(NS, "vllm-decode", 5, dry_run=True)
    assert result.replicas == 5 and result.dry_run
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.query["dryRun"] == "All"
    after = emulator.cluster.get("Deployment", NS, "vllm-decode")
    assert after == before
    assert {p["metadata"]["name"] for p in emulator.cluster.pods(NS)} == pods_before


def test_negative_replicas_refused_before_any_call(kube: KubeClient, emulator: KubeEmulator) -> None:
    with pytest.raises(KubeRejected):
        kube.scale(NS, "vllm-decode", -1)
    assert emulator.count(mutating=True) == 0


# --- restart -------------------------------------------------------------------------------------


def test_restart_sets_annotation_and_replaces_pods(kube: KubeClient, emulator: KubeEmulator) -> None:
    old_pods = {p.name for p in kube.list_pods(NS, deployment="vllm-decode")}
    now = dt.datetime(2026, 11, 27, 8, 30, tzinfo=dt.UTC)
    summary = kube.rollout_restart(NS, "vllm-decode", now=now)
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-27T08:30:00Z"}}}}
    }
    dep = emulator.cluster.get("Deployment", NS, "vllm-decode")
    assert dep["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == "2026-11-27T08:30:00Z"
    assert summary.generation == 2
    new_pods = {p.name for p in kube.list_pods(NS, deployment="vllm-decode")}
    assert len(new_pods) == 2 and not (new_pods & old_pods)
    assert kube.get_deployment(NS, "vllm-decode").revision == 2
    assert kube.rollout_status(NS, "vllm-decode").complete


def test_restart_dry_run_changes_nothing(kube: KubeClient, emulator: KubeEmulator) -> None:
    before = emulator.cluster.get("Deployment", NS, "vllm-decode")
    summary = kube.rollout_restart(NS, "vllm-decode", dry_run=True)
    assert summary.generation == 2  # the would-be object
    assert emulator.cluster.get("Deployment", NS, "vllm-decode") == before
    assert len(emulator.cluster.list_objects("ReplicaSet", NS, "app.kubernetes.io/name=vllm-decode")) == 1


def test_restart_refuses_paused(kube: KubeClient, emulator: KubeEmulator) -> None:
    emulator.cluster.patch_deployment(
        NS, "vllm-decode", "application/merge-patch+json", {"spec": {"paused": True}}
    )
    with pytest.raises(RolloutPaused):
        kube.rollout_restart(NS, "vllm-decode")
    assert emulator.count("PATCH") == 0


# --- undo ----------------------------------------------------------------------------------------


def test_undo_rolls_back_a_stuck_rollout(kube: KubeClient, emulator: KubeEmulator) -> None:
    cluster = emulator.cluster
    cluster.script_pods(PodBehaviour("crashloop", restart_count=6), image=BAD_IMAGE)
    set_image(cluster, BAD_IMAGE)
    status = kube.rollout_status(NS, "vllm-decode")
    assert not status.complete
    assert "1 of 2 updated replicas" in status.message or "new replicas have been updated" in status.message
    assert cluster.ready_replicas(NS, "vllm-decode") == 2  # old pods keep serving (maxUnavailable 0)
    history = kube.rollout_history(NS, "vllm-decode")
    assert [(h.revision, h.images) for h in history] == [(1, (OLD_IMAGE,)), (2, (BAD_IMAGE,))]

    emulator.clear_requests()
    result = kube.rollout_undo(NS, "vllm-decode")
    assert (result.from_revision, result.to_revision, result.changed) == (2, 1, True)
    assert result.images == (OLD_IMAGE,)
    (rs_list,) = [r for r in emulator.requests if r.path.endswith("/replicasets")]
    assert rs_list.query["labelSelector"] == "app.kubernetes.io/name=vllm-decode"
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.content_type == "application/json-patch+json"
    assert [op["path"] for op in patch.body] == ["/spec/template", "/metadata/annotations"]
    assert "pod-template-hash" not in patch.body[0]["value"]["metadata"]["labels"]

    assert template_images(cluster) == [OLD_IMAGE]
    d = kube.get_deployment(NS, "vllm-decode")
    assert d.revision == 3  # the old ReplicaSet is reused and its revision bumped, as the controller does
    assert [h.revision for h in kube.rollout_history(NS, "vllm-decode")] == [2, 3]
    assert kube.rollout_status(NS, "vllm-decode").complete
    pods = kube.list_pods(NS, deployment="vllm-decode")
    assert len(pods) == 2 and all(p.ready and p.status == "Running" for p in pods)


def test_undo_to_revision(kube: KubeClient, emulator: KubeEmulator) -> None:
    set_image(emulator.cluster, "vllm/vllm-openai:v0.8.6")
    set_image(emulator.cluster, "vllm/vllm-openai:v0.8.7")
    assert [h.revision for h in kube.rollout_history(NS, "vllm-decode")] == [1, 2, 3]
    result = kube.rollout_undo(NS, "vllm-decode", to_revision=1)
    assert result.to_revision == 1 and result.changed
    assert template_images(emulator.cluster) == [OLD_IMAGE]
    assert kube.get_deployment(NS, "vllm-decode").revision == 4


def test_undo_to_missing_revision(kube: KubeClient) -> None:
    with pytest.raises(NoRolloutHistory, match="unable to find specified revision 7"):
        kube.rollout_undo(NS, "vllm-decode", to_revision=7)


def test_undo_without_history(kube: KubeClient, emulator: KubeEmulator) -> None:
    with pytest.raises(NoRolloutHistory, match="no rollout history"):
        kube.rollout_undo(NS, "vllm-decode")
    assert emulator.count("PATCH") == 0


def test_undo_refuses_paused(kube: KubeClient, emulator: KubeEmulator) -> None:
    set_image(emulator.cluster, "vllm/vllm-openai:v0.8.6")
    emulator.cluster.patch_deployment(
        NS, "vllm-decode", "application/merge-patch+json", {"spec": {"paused": True}}
    )
    with pytest.raises(RolloutPaused):
        kube.rollout_undo(NS, "vllm-decode")
    assert emulator.count("PATCH") == 0
    assert emulator.count("GET", r".*/replicasets") == 0


def test_undo_to_current_template_is_a_noop(kube: KubeClient, emulator: KubeEmulator) -> None:
    set_image(emulator.cluster, "vllm/vllm-openai:v0.8.6")
    result = kube.rollout_undo(NS, "vllm-decode", to_revision=2)
    assert not result.changed
    assert emulator.count("PATCH") == 0


def test_undo_dry_run_changes_nothing(kube: KubeClient, emulator: KubeEmulator) -> None:
    set_image(emulator.cluster, "vllm/vllm-openai:v0.8.6")
    before = emulator.cluster.get("Deployment", NS, "vllm-decode")
    result = kube.rollout_undo(NS, "vllm-decode", dry_run=True)
    assert result.changed and result.dry_run
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.query == {"dryRun": "All", "fieldManager": "incident-bot-test"}
    assert emulator.cluster.get("Deployment", NS, "vllm-decode") == before


# --- rollout status ------------------------------------------------------------------------------


def test_wait_for_rollout_and_progress_deadline(kube: KubeClient, emulator: KubeEmulator) -> None:
    cluster = emulator.cluster
    cluster.script_pods("not_ready", image=BAD_IMAGE)
    set_image(cluster, BAD_IMAGE)
    ticks = iter(range(100))
    status = kube.wait_for_rollout(
        NS, "vllm-decode", timeout=3, interval=1, sleep=lambda _s: None, clock=lambda: float(next(ticks))
    )
    assert not status.complete and not status.deadline_exceeded
    cluster.advance(601)
    status = kube.rollout_status(NS, "vllm-decode")
    assert status.deadline_exceeded and not status.complete
    assert status.message == 'deployment "vllm-decode" exceeded its progress deadline'
    # The pods recover: the rollout completes.
    cluster.script_pods("running", image=BAD_IMAGE)
    status = kube.wait_for_rollout(NS, "vllm-decode", timeout=5, interval=0.01)
    assert status.complete, status.message
    assert cluster.ready_replicas(NS, "vllm-decode") == 2


# --- pods, events, logs --------------------------------------------------------------------------


def test_pod_summaries_crashloop_oom_and_pending_gpu(kube: KubeClient, emulator: KubeEmulator) -> None:
    cluster = emulator.cluster
    cluster.script_pods(PodBehaviour("crashloop", restart_count=9), namespace=NS, deployment="vllm-prefill")
    cluster.script_pods(PodBehaviour("oomkilled", restart_count=3), namespace=NS, deployment="vllm-decode")
    (prefill,) = kube.list_pods(NS, deployment="vllm-prefill")
    assert prefill.status == "CrashLoopBackOff" and not prefill.ready and prefill.restarts == 9
    assert prefill.phase == "Running" and prefill.last_terminated_reason == "Error" and not prefill.oom_killed
    decode = kube.list_pods(NS, deployment="vllm-decode")
    assert len(decode) == 2
    assert all(p.oom_killed and p.waiting_reason == "CrashLoopBackOff" for p in decode)
    assert decode[0].containers[0].last_exit_code == 137

    cluster.script_pods("running", namespace=NS, deployment="vllm-decode")
    kube.scale(NS, "vllm-decode", 9)  # 8 GPUs on the node, prefill holds one
    pods = kube.list_pods(NS, deployment="vllm-decode")
    pending = [p for p in pods if p.phase == "Pending"]
    assert len(pods) == 9 and len(pending) == 2
    assert all(p.pending_for_gpu and p.node is None and not p.ready for p in pending)
    assert "Insufficient nvidia.com/gpu" in (pending[0].unschedulable_message or "")
    assert kube.get_deployment(NS, "vllm-decode").ready_replicas == 7

    cluster.add_node("gpu-node-2", gpus=8)
    assert all(p.phase == "Running" for p in kube.list_pods(NS, deployment="vllm-decode"))


def test_events_filtered_server_side(kube: KubeClient, emulator: KubeEmulator) -> None:
    emulator.cluster.script_pods("crashloop", namespace=NS, deployment="vllm-prefill")
    kube.scale(NS, "vllm-decode", 9)
    scheduling = kube.list_events(NS, reason="FailedScheduling")
    assert len(scheduling) == 2 and all(e.type == "Warning" for e in scheduling)
    assert all("Insufficient nvidia.com/gpu" in e.message for e in scheduling)
    (req,) = [r for r in emulator.requests if r.path.endswith("/events")]
    assert req.query["fieldSelector"] == "reason=FailedScheduling"
    scaling = kube.list_events(NS, involved_name="vllm-decode", involved_kind="Deployment")
    assert {e.reason for e in scaling} == {"ScalingReplicaSet"}
    assert any("to 9" in e.message for e in scaling)
    backoff = kube.list_events(NS, reason="BackOff", event_type="Warning")
    assert backoff and backoff[0].object_kind == "Pod" and backoff[0].source == "kubelet"
    assert len(kube.list_events(NS, limit=3)) == 3


def test_logs_tail_and_previous(kube: KubeClient, emulator: KubeEmulator) -> None:
    cluster = emulator.cluster
    cluster.script_pods(
        PodBehaviour("oomkilled", previous_logs=("loading", "CUDA out of memory", "Killed")),
        namespace=NS,
        deployment="vllm-prefill",
    )
    (pod,) = kube.list_pods(NS, deployment="vllm-prefill")
    assert kube.pod_logs(NS, pod.name, previous=True, tail_lines=2) == "CUDA out of memory\nKilled\n"
    (healthy, _) = kube.list_pods(NS, deployment="vllm-decode")
    cluster.append_logs(NS, healthy.name, [f"line {i}" for i in range(10)])
    assert kube.pod_logs(NS, healthy.name, container="vllm", tail_lines=3) == "line 7\nline 8\nline 9\n"
    with pytest.raises(KubeRejected, match="previous terminated container"):
        kube.pod_logs(NS, healthy.name, previous=True)


# --- credentials and error mapping ---------------------------------------------------------------


def test_401_reloads_rotated_token_once(kube: KubeClient, emulator: KubeEmulator, kubeconfig: Path) -> None:
    assert kube.get_deployment(NS, "vllm-decode").replicas == 2
    emulator.set_tokens("token-2")  # the old token is revoked
    emulator.write_kubeconfig(kubeconfig, token="token-2", namespace=NS)  # and the file rotated
    emulator.clear_requests()
    assert kube.get_deployment(NS, "vllm-decode").replicas == 2
    assert kube.reloads == 1
    assert emulator.count("GET", DEPLOY_PATH) == 2  # one 401, one retry


def test_401_reload_from_token_file(emulator: KubeEmulator, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-1")
    path = emulator.write_kubeconfig(tmp_path / "kc", token_file=token_file, namespace=NS)
    kube = KubeClient.from_kubeconfig(str(path))
    assert kube.get_deployment(NS, "vllm-decode").name == "vllm-decode"
    emulator.set_tokens("token-3")
    token_file.write_text("token-3")
    assert kube.scale(NS, "vllm-decode", 3).replicas == 3
    assert kube.reloads == 1


def test_401_twice_is_unauthorized(kube: KubeClient, emulator: KubeEmulator) -> None:
    emulator.set_tokens("someone-else")
    with pytest.raises(KubeUnauthorized):
        kube.get_deployment(NS, "vllm-decode")
    assert kube.reloads == 1
    assert emulator.count("GET", DEPLOY_PATH) == 2


@pytest.mark.parametrize(
    ("status", "error", "base"),
    [
        (500, KubeUnavailable, TransientError),
        (503, KubeUnavailable, TransientError),
        (429, KubeUnavailable, TransientError),
        (409, KubeConflict, TransientError),
        (422, KubeRejected, PermanentError),
        (400, KubeRejected, PermanentError),
        (403, KubeForbidden, PermanentError),
        (404, KubeNotFound, PermanentError),
    ],
)
def test_status_codes_map_to_the_error_tree(
    kube: KubeClient, emulator: KubeEmulator, status: int, error: type[Exception], base: type[Exception]
) -> None:
    emulator.fail_next(status, method="PATCH", path=r"/scale$", message=f"server says {status}")
    with pytest.raises(error, match=f"server says {status}") as info:
        kube.scale(NS, "vllm-decode", 3)
    assert isinstance(info.value, base)
    assert emulator.cluster.get("Deployment", NS, "vllm-decode")["spec"]["replicas"] == 2


def test_real_validation_error_is_permanent_with_server_message(
    kube: KubeClient, emulator: KubeEmulator
) -> None:
    # A server-side 422 (not injected): the deployment's selector no longer matches the template labels of
    # the revision we roll back to, so the API server rejects the undo.
    cluster = emulator.cluster
    set_image(cluster, "vllm/vllm-openai:v0.8.6")
    rs1 = next(
        rs
        for rs in cluster.list_objects("ReplicaSet", NS)
        if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    )
    broken = rs1["spec"]["template"]["metadata"]["labels"]
    broken.pop("app.kubernetes.io/name")
    with cluster.lock:  # corrupt the stored history directly, as a hand edit could
        cluster._objects["ReplicaSet"][(NS, rs1["metadata"]["name"])]["spec"]["template"]["metadata"][
            "labels"
        ] = broken
    with pytest.raises(KubeRejected, match="`selector` does not match template `labels`") as info:
        kube.rollout_undo(NS, "vllm-decode")
    assert info.value.status == 422


def test_connection_refused_is_transient(kube: KubeClient, emulator: KubeEmulator) -> None:
    emulator.stop()
    fast = KubeClient(kube._loader, request_timeout=1)
    with pytest.raises(KubeUnavailable):
        fast.get_deployment(NS, "vllm-decode")


def test_namespace_allow_list(kubeconfig: Path, emulator: KubeEmulator) -> None:
    kube = KubeClient.from_kubeconfig(str(kubeconfig), allowed_namespaces=["prod"])
    with pytest.raises(NamespaceNotAllowed):
        kube.scale(NS, "vllm-decode", 5)
    assert emulator.requests == []


def test_from_settings_uses_kubeconfig_context_and_field_manager(
    emulator: KubeEmulator, tmp_path: Path
) -> None:
    path = emulator.write_kubeconfig(tmp_path / "kc", context="lab", namespace=NS)
    settings = Settings(
        kubeconfig=str(path),
        kube_context="lab",
        kube_config_mode="kubeconfig",
        kube_field_manager="bot-from-settings",
        kube_allowed_namespaces="llm-d, other",  # type: ignore[arg-type]
    )
    assert settings.kube_allowed_namespaces == ["llm-d", "other"]
    kube = KubeClient.from_settings(settings)
    kube.scale(NS, "vllm-decode", 3)
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.query["fieldManager"] == "bot-from-settings"
