"""The workload abstraction (bot/integrations/workloads.py) for StatefulSets and LeaderWorkerSets, through the
real ``kubernetes`` client against the emulator with its StatefulSet and LeaderWorkerSet controllers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.integrations.kube import RESTARTED_AT, KubeClient, KubeRejected, NoRolloutHistory
from bot.integrations.workloads import (
    ArgoRolloutWorkload,
    DeploymentWorkload,
    LeaderWorkerSetWorkload,
    StatefulSetWorkload,
    workload_for,
)
from bot.sandbox.cluster import Cluster
from bot.sandbox.kube_emulator import KubeEmulator
from bot.sandbox.workload_controllers import install, vllm_leaderworkerset, vllm_statefulset

NS = "llm-d"
OLD, NEW = "vllm/vllm-openai:v0.8.5", "vllm/vllm-openai:v0.9.0"


@pytest.fixture
def cluster() -> Cluster:
    cluster = Cluster(seed=11)
    cluster.seed_llmd(NS, image=OLD, gpu_nodes=2)
    install(cluster)
    cluster.create_object("LeaderWorkerSet", vllm_leaderworkerset("ms-decode", image=OLD), NS)
    cluster.create_object("StatefulSet", vllm_statefulset("ms-prefill", image=OLD), NS)
    return cluster


@pytest.fixture
def kube(cluster: Cluster, tmp_path: Path) -> Iterator[KubeClient]:
    with KubeEmulator(cluster, token="tok") as emu:
        client = KubeClient.from_kubeconfig(
            str(emu.write_kubeconfig(tmp_path / "kc", namespace=NS)),
            field_manager="bot-test",
            request_timeout=5,
        )
        yield client
        client.close()


def set_lws_image(cluster: Cluster, image: str) -> None:
    containers = [{"name": "vllm", "image": image}]
    patch = {
        "spec": {
            "leaderWorkerTemplate": {
                "leaderTemplate": {"spec": {"containers": containers}},
                "workerTemplate": {"spec": {"containers": containers}},
            }
        }
    }
    # A merge patch replaces the containers list: keep the other fields by patching from the stored object.
    current = cluster.get("LeaderWorkerSet", NS, "ms-decode")
    for role in ("leaderTemplate", "workerTemplate"):
        stored = current["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]
        patch["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"] = [{**stored, "image": image}]
    cluster.patch_object("LeaderWorkerSet", NS, "ms-decode", "application/merge-patch+json", patch)


def test_registry_picks_the_kind() -> None:
    kube = KubeClient(lambda: None)  # type: ignore[arg-type,return-value]
    assert isinstance(workload_for(kube, None), DeploymentWorkload)
    assert isinstance(workload_for(kube, "StatefulSet"), StatefulSetWorkload)
    assert isinstance(workload_for(kube, "LeaderWorkerSet"), LeaderWorkerSetWorkload)
    assert isinstance(workload_for(kube, "Rollout"), ArgoRolloutWorkload)
    with pytest.raises(KubeRejected, match="unknown workload kind 'DaemonSet'"):
        workload_for(kube, "DaemonSet")


def test_lws_get_pods_groups_and_scale(kube: KubeClient, cluster: Cluster) -> None:
    lws = workload_for(kube, "LeaderWorkerSet")
    summary = lws.get(NS, "ms-decode")
    assert (summary.replicas, summary.ready_replicas, summary.updated_replicas) == (2, 2, 2)
    assert summary.images == (OLD,) and summary.revision == 1
    pods = sorted(p.name for p in lws.pods(NS, "ms-decode"))
    assert pods == ["ms-decode-0", "ms-decode-0-1", "ms-decode-1", "ms-decode-1-1"]
    result = lws.scale(NS, "ms-decode", 3)
    assert (result.previous_replicas, result.replicas) == (2, 3)
    assert len(lws.pods(NS, "ms-decode")) == 6, "3 groups of a leader and one worker"
    assert lws.rollout_status(NS, "ms-decode").complete
    dry = lws.scale(NS, "ms-decode", 1, dry_run=True)
    assert dry.replicas == 1 and cluster.get("LeaderWorkerSet", NS, "ms-decode")["spec"]["replicas"] == 3


def test_lws_restart_stamps_both_templates_and_rolls_every_group(kube: KubeClient, cluster: Cluster) -> None:
    lws = workload_for(kube, "LeaderWorkerSet")
    before = {p.name: p for p in lws.pods(NS, "ms-decode")}
    stamp = dt.datetime(2026, 12, 4, 19, 0, tzinfo=dt.UTC)
    lws.restart(NS, "ms-decode", now=stamp)
    lwt = cluster.get("LeaderWorkerSet", NS, "ms-decode")["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert lwt[role]["metadata"]["annotations"][RESTARTED_AT] == "2026-12-04T19:00:00Z"
        assert lwt[role]["spec"]["containers"][0]["image"] == OLD, "a merge patch keeps the containers"
    assert lws.restart_marker(NS, "ms-decode") == "2026-12-04T19:00:00Z"
    after = {p.name: p for p in lws.pods(NS, "ms-decode")}
    assert set(after) == set(before)
    assert all(after[n].created is not None for n in after)
    uids = {n: cluster.get("Pod", NS, n)["metadata"]["uid"] for n in after}
    assert len(set(uids.values())) == 4
    assert lws.rollout_status(NS, "ms-decode").complete


def test_lws_history_and_undo_from_a_controller_revision(kube: KubeClient, cluster: Cluster) -> None:
    lws = workload_for(kube, "LeaderWorkerSet")
    cluster.script_pods("crashloop", image=NEW)
    set_lws_image(cluster, NEW)
    status = lws.rollout_status(NS, "ms-decode")
    assert not status.complete and status.updated_replicas == 1, "the broken image stalls after one group"
    history = lws.history(NS, "ms-decode")
    assert [(r.revision, r.images) for r in history] == [(1, (OLD,)), (2, (NEW,))]
    undone = lws.undo(NS, "ms-decode")
    assert (undone.from_revision, undone.to_revision, undone.changed) == (2, 1, True)
    assert undone.source == "controllerrevision" and undone.images == (OLD,)
    assert lws.get(NS, "ms-decode").images == (OLD,)
    assert lws.rollout_status(NS, "ms-decode").complete
    again = lws.undo(NS, "ms-decode", to_revision=1)
    assert not again.changed, "undo to the current template is a no-op"


def test_lws_prunes_revisions_after_a_completed_update(kube: KubeClient, cluster: Cluster) -> None:
    lws = workload_for(kube, "LeaderWorkerSet")
    set_lws_image(cluster, NEW)
    assert lws.rollout_status(NS, "ms-decode").complete
    assert [r.revision for r in lws.history(NS, "ms-decode")] == [2], "LWS keeps only the current revision"
    with pytest.raises(NoRolloutHistory):
        lws.undo(NS, "ms-decode")
    old_template = vllm_leaderworkerset("ms-decode", image=OLD)["spec"]["leaderWorkerTemplate"]
    with_fallback = LeaderWorkerSetWorkload(
        kube, fallback=lambda obj: (old_template, "helm release llm-d rev 7")
    )
    undone = with_fallback.undo(NS, "ms-decode")
    assert undone.changed and undone.source == "helm release llm-d rev 7" and undone.to_revision == 0
    assert lws.get(NS, "ms-decode").images == (OLD,)


def test_statefulset_scale_restart_history_undo_status(kube: KubeClient, cluster: Cluster) -> None:
    sts = workload_for(kube, "StatefulSet")
    assert sts.rollout_status(NS, "ms-prefill").complete
    assert sorted(p.name for p in sts.pods(NS, "ms-prefill")) == ["ms-prefill-0", "ms-prefill-1"]
    assert sts.scale(NS, "ms-prefill", 3).replicas == 3
    assert len(sts.pods(NS, "ms-prefill")) == 3
    cluster.script_pods("crashloop", image=NEW)
    cluster.patch_object(
        "StatefulSet",
        NS,
        "ms-prefill",
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": NEW}]}}}},
    )
    status = sts.rollout_status(NS, "ms-prefill")
    assert not status.complete and status.updated_replicas == 1
    assert "rolling update" in status.message or "ready" in status.message
    assert [(r.revision, r.images) for r in sts.history(NS, "ms-prefill")] == [(1, (OLD,)), (2, (NEW,))]
    undone = sts.undo(NS, "ms-prefill")
    assert (undone.from_revision, undone.to_revision, undone.changed) == (2, 1, True)
    assert sts.get(NS, "ms-prefill").images == (OLD,)
    assert sts.rollout_status(NS, "ms-prefill").complete
    assert [(r.revision, r.images) for r in sts.history(NS, "ms-prefill")] == [(2, (NEW,)), (3, (OLD,))], (
        "the template gone back to is renumbered, as the StatefulSet controller does"
    )
    assert sts.get(NS, "ms-prefill").revision == 3
    sts.restart(NS, "ms-prefill", now=dt.datetime(2026, 12, 4, 19, 5, tzinfo=dt.UTC))
    assert sts.restart_marker(NS, "ms-prefill") == "2026-12-04T19:05:00Z"
    assert sts.rollout_status(NS, "ms-prefill").complete
