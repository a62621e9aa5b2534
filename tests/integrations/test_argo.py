"""The Argo Rollouts adapter against the Kubernetes emulator and its Rollout controller.

Every action goes through the real ``kubernetes`` client (CustomObjectsApi) to the loopback emulator; the
effect is checked on the emulator's own state (the Rollout's status as the controller wrote it, its
ReplicaSets and pods). The real ``kubectl`` reads Rollouts and sends the plugin's status-subresource patch.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.integrations.argo import HASH_LABEL, ArgoRollouts, RolloutWorkload, summarize_rollout
from bot.integrations.kube import KubeClient, NoRolloutHistory
from bot.sandbox.argo import RolloutController, canary_rollout, parse_duration
from bot.sandbox.cluster import Cluster, vllm_deployment
from bot.sandbox.kube_emulator import KubeEmulator

NS = "llm-d"
NAME = "ms-decode"
STABLE = "vllm/vllm-openai:v0.8.5"
CANARY = "vllm/vllm-openai:v0.9.0"
BROKEN = "vllm/vllm-openai:v0.9.9-broken"
STEPS = [
    {"setWeight": 20},
    {"pause": {}},
    {"analysis": {"templates": [{"templateName": "success-rate"}]}},
    {"setWeight": 50},
    {"pause": {"duration": "30s"}},
]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo"
MERGE = "application/merge-patch+json"


def template(image: str = STABLE) -> dict[str, Any]:
    dep = vllm_deployment(NAME, role="decode", image=image, replicas=5, gpus=0, model="m")
    return copy.deepcopy(dep["spec"]["template"])


def new_cluster(*, strategy: dict[str, Any] | None = None) -> Cluster:
    cluster = Cluster(seed=11)
    cluster.seed_llmd(NS, image=STABLE, decode_replicas=1, prefill_replicas=1)
    RolloutController(cluster)
    cluster.script_pods("crashloop", image=BROKEN)
    body = canary_rollout(NAME, template(), replicas=5, steps=STEPS)
    if strategy is not None:
        body["spec"]["strategy"] = strategy
    cluster.create_object("Rollout", body, NS)
    return cluster


def set_image(cluster: Cluster, image: str) -> None:
    """What `kubectl argo rollouts set image` does: a JSON patch of the container's image."""
    cluster.patch_object(
        "Rollout",
        NS,
        NAME,
        "application/json-patch+json",
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}],
    )


def status(cluster: Cluster) -> dict[str, Any]:
    return dict(cluster.get("Rollout", NS, NAME)["status"])


def rs_replicas(cluster: Cluster) -> dict[str, int]:
    """Image -> spec.replicas of the Rollout's ReplicaSets."""
    out = {}
    for rs in cluster.list_objects("ReplicaSet", NS):
        if rs["metadata"]["name"].startswith(NAME):
            out[rs["spec"]["template"]["spec"]["containers"][0]["image"]] = rs["spec"]["replicas"]
    return out


@pytest.fixture
def cluster() -> Cluster:
    return new_cluster()


@pytest.fixture
def emulator(cluster: Cluster) -> Iterator[KubeEmulator]:
    with KubeEmulator(cluster, token="argo-token") as emu:
        yield emu


@pytest.fixture
def kube(emulator: KubeEmulator, tmp_path: Path) -> Iterator[KubeClient]:
    config = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    client = KubeClient.from_kubeconfig(str(config), field_manager="incident-bot-test", request_timeout=5)
    yield client
    client.close()


@pytest.fixture
def argo(kube: KubeClient) -> ArgoRollouts:
    return ArgoRollouts(kube)


# --- the controller as the adapter reads it ------------------------------------------------------


def test_first_template_is_stable_and_healthy(argo: ArgoRollouts, cluster: Cluster) -> None:
    s = argo.status(NS, NAME)
    assert (s.phase, s.strategy, s.fully_promoted, s.canary_in_progress) == ("Healthy", "canary", True, False)
    assert s.stable_images == (STABLE,) and s.ready_replicas == 5 and s.revision == 1
    assert (s.step_index, s.step_count) == (5, 5)
    assert rs_replicas(cluster) == {STABLE: 5}


def test_bad_canary_pauses_at_20_percent(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    s = argo.status(NS, NAME)
    assert (s.phase, s.message, s.step_index, s.canary_weight) == ("Paused", "CanaryPauseStep", 1, 20)
    assert s.canary_in_progress and not s.aborted and s.pause_reasons == ("CanaryPauseStep",)
    assert (s.stable_images, s.canary_images, s.revision) == ((STABLE,), (BROKEN,), 2)
    assert rs_replicas(cluster) == {STABLE: 4, BROKEN: 1}
    assert status(cluster)["controllerPause"] is True


def test_abort_goes_back_to_stable(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    result = argo.abort(NS, NAME)
    assert [(p.subresource, p.body) for p in result.patches] == [("status", {"status": {"abort": True}})]
    st = status(cluster)
    assert st["abort"] is True and st["phase"] == "Degraded"
    assert st["message"] == "RolloutAborted: Rollout aborted update to revision 2"
    assert "weights" not in st["canary"], "no traffic router: Argo writes no weights"
    assert st["currentStepIndex"] == 0 and argo.status(NS, NAME).canary_weight == 0
    assert rs_replicas(cluster) == {STABLE: 5, BROKEN: 0}
    assert "pauseConditions" not in st
    managed = cluster.get("Rollout", NS, NAME)["metadata"]["managedFields"]
    assert any(m.get("subresource") == "status" and m["manager"] == "incident-bot-test" for m in managed)
    s = argo.status(NS, NAME)
    assert s.aborted and not s.canary_in_progress and s.ready_replicas == 5


def test_retry_starts_the_steps_over(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    argo.abort(NS, NAME)
    argo.retry(NS, NAME)
    st = status(cluster)
    assert "abort" not in st or st["abort"] is False
    assert (st["phase"], st["currentStepIndex"], argo.status(NS, NAME).canary_weight) == ("Paused", 1, 20)
    assert rs_replicas(cluster) == {STABLE: 4, BROKEN: 1}


def test_promote_into_failing_analysis_aborts(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    result = argo.promote(NS, NAME)
    assert [(p.subresource, p.body) for p in result.patches] == [
        ("status", {"status": {"pauseConditions": None}})
    ]
    s = argo.status(NS, NAME)
    assert s.phase == "Degraded" and s.aborted and s.canary_weight == 0
    failed = s.failed_analysis
    assert failed is not None and failed.phase == "Failed" and failed.failed_metrics == ("success-rate",)
    assert failed.pod_hash == s.canary_hash and failed.name == f"{NAME}-{s.canary_hash}-2-2"
    assert s.current_step_analysis == "Failed"
    assert s.message.startswith("RolloutAborted: Rollout aborted update to revision 2: Metric")
    assert rs_replicas(cluster) == {STABLE: 5, BROKEN: 0}
    reasons = {e["reason"] for e in cluster.events(NS, involved_name=NAME)}
    assert {"AnalysisRunFailed", "RolloutAborted"} <= reasons


def test_good_canary_walks_every_step(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, CANARY)
    argo.promote(NS, NAME)  # past the indefinite pause; the analysis passes; 50 %; a 30 s pause
    s = argo.status(NS, NAME)
    assert (s.phase, s.step_index, s.canary_weight, s.aborted) == ("Paused", 4, 50, False)
    assert s.analysis_runs[-1].phase == "Successful"
    assert rs_replicas(cluster) == {STABLE: 2, CANARY: 3}
    cluster.advance(parse_duration("31s"))
    s = argo.status(NS, NAME)
    assert (s.phase, s.fully_promoted, s.stable_images, s.step_index) == ("Healthy", True, (CANARY,), 5)
    assert rs_replicas(cluster) == {STABLE: 0, CANARY: 5}


def test_promote_past_a_step_without_pause_sets_the_index(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, CANARY)
    argo.promote(NS, NAME)
    # now in the timed pause at step 4: promote again clears it
    argo.promote(NS, NAME)
    assert argo.status(NS, NAME).fully_promoted


def test_promote_full_skips_steps_and_analysis(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    result = argo.promote(NS, NAME, full=True)
    assert [(p.subresource, p.body) for p in result.patches] == [
        ("status", {"status": {"promoteFull": True}})
    ]
    s = argo.status(NS, NAME)
    assert s.fully_promoted and s.stable_images == (BROKEN,) and s.analysis_runs == ()
    assert "promoteFull" not in status(cluster)
    assert argo.promote(NS, NAME, full=True).changed is False


def test_pause_and_promote_unpauses(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, CANARY)
    argo.promote(NS, NAME)
    argo.pause(NS, NAME)
    assert cluster.get("Rollout", NS, NAME)["spec"]["paused"] is True
    assert (status(cluster)["phase"], status(cluster)["message"]) == ("Paused", "manually paused")
    cluster.advance(60)
    assert status(cluster)["currentStepIndex"] == 4, "a paused Rollout does not progress"
    result = argo.promote(NS, NAME)
    assert (None, {"spec": {"paused": False}}) in [(p.subresource, p.body) for p in result.patches]
    assert (
        "paused" not in cluster.get("Rollout", NS, NAME)["spec"]
        or not cluster.get("Rollout", NS, NAME)["spec"]["paused"]
    )
    assert argo.status(NS, NAME).fully_promoted


def test_undo_mid_canary_returns_to_stable_at_once(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    result = argo.undo(NS, NAME)
    assert (result.from_revision, result.to_revision, result.changed, result.images) == (
        2,
        1,
        True,
        (STABLE,),
    )
    ro = cluster.get("Rollout", NS, NAME)
    assert ro["spec"]["template"]["spec"]["containers"][0]["image"] == STABLE
    assert HASH_LABEL not in ro["spec"]["template"]["metadata"].get("labels", {})
    s = argo.status(NS, NAME)
    assert (s.phase, s.fully_promoted, s.revision) == ("Healthy", True, 3)
    assert rs_replicas(cluster) == {STABLE: 5, BROKEN: 0}
    assert argo.undo(NS, NAME, to_revision=3).changed is False
    with pytest.raises(NoRolloutHistory):
        argo.undo(NS, NAME, to_revision=9)


def test_restart_replaces_the_pods(argo: ArgoRollouts, cluster: Cluster) -> None:
    before = {p["metadata"]["name"] for p in cluster.pods(NS, f"{HASH_LABEL}")}
    cluster.advance(2)
    argo.restart(NS, NAME, now=cluster.now())
    cluster.advance(1)
    after = {p["metadata"]["name"] for p in cluster.pods(NS, f"{HASH_LABEL}")}
    assert len(after) == 5 and not (before & after)
    assert status(cluster)["restartedAt"] == cluster.get("Rollout", NS, NAME)["spec"]["restartAt"]


def test_workload_protocol_scale_and_rollout_status(kube: KubeClient, cluster: Cluster) -> None:
    workload = RolloutWorkload(kube)
    assert workload.rollout_status(NS, NAME).complete
    result = workload.scale(NS, NAME, 3)
    assert (result.previous_replicas, result.replicas) == (5, 3)
    assert rs_replicas(cluster) == {STABLE: 3}
    assert len(workload.pods(NS, NAME)) == 3
    set_image(cluster, BROKEN)
    st = workload.rollout_status(NS, NAME)
    assert not st.complete and "Paused" in st.message
    assert [h.images for h in workload.history(NS, NAME)] == [(STABLE,), (BROKEN,)]


def test_blue_green_preview_then_promote(tmp_path: Path) -> None:
    cluster = new_cluster(
        strategy={
            "blueGreen": {
                "activeService": "ms-active",
                "previewService": "ms-preview",
                "autoPromotionEnabled": False,
            }
        }
    )
    with KubeEmulator(cluster, token="t") as emu:
        kube = KubeClient.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "kc", namespace=NS)))
        try:
            bg = ArgoRollouts(kube)
            set_image(cluster, CANARY)
            s = bg.status(NS, NAME)
            assert (s.strategy, s.phase, s.pause_reasons, s.canary_in_progress) == (
                "blueGreen",
                "Paused",
                ("BlueGreenPause",),
                True,
            )
            assert status(cluster)["blueGreen"] == {
                "activeSelector": s.stable_hash,
                "previewSelector": s.canary_hash,
            }
            assert rs_replicas(cluster) == {STABLE: 5, CANARY: 5}
            bg.promote(NS, NAME)
            s = bg.status(NS, NAME)
            assert (s.phase, s.fully_promoted, s.stable_images) == ("Healthy", True, (CANARY,))
            assert rs_replicas(cluster) == {STABLE: 0, CANARY: 5}
        finally:
            kube.close()


def test_traffic_routed_canary_reports_weights() -> None:
    cluster = new_cluster()
    body = canary_rollout("routed", template(), replicas=5, steps=STEPS, traffic_routing=True)
    cluster.create_object("Rollout", body, NS)
    cluster.patch_object(
        "Rollout",
        NS,
        "routed",
        "application/json-patch+json",
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": CANARY}],
    )
    weights = cluster.get("Rollout", NS, "routed")["status"]["canary"]["weights"]
    assert (weights["canary"]["weight"], weights["stable"]["weight"]) == (20, 80)
    # with a traffic router the stable keeps every replica; the canary gets its share on top
    images = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
        for rs in cluster.list_objects("ReplicaSet", NS)
        if rs["metadata"]["name"].startswith("routed-")
    }
    assert images == {STABLE: 5, CANARY: 1}
    assert summarize_rollout(cluster.get("Rollout", NS, "routed")).canary_weight == 20


def test_old_crd_without_status_subresource_gets_the_main_resource_patch(
    argo: ArgoRollouts, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old Rollout CRD without the status subresource: /status is 404, the plugin patches the object."""
    import bot.sandbox.cluster as cluster_module
    import bot.sandbox.kube_emulator as emulator_module

    old = frozenset(cluster_module.STATUS_SUBRESOURCE - {"Rollout"})
    monkeypatch.setattr(cluster_module, "STATUS_SUBRESOURCE", old)
    monkeypatch.setattr(emulator_module, "STATUS_SUBRESOURCE", old)
    set_image(cluster, BROKEN)
    result = argo.abort(NS, NAME)
    body = {"status": {"abort": True}}
    assert [(p.subresource, p.body) for p in result.patches] == [("status", body), (None, body)]
    assert (status(cluster)["abort"], status(cluster)["phase"]) == (True, "Degraded")
    argo.retry(NS, NAME)
    promoted = argo.promote(NS, NAME)  # status patch 404 -> one unified patch of the main resource
    assert [p.subresource for p in promoted.patches] == ["status", None]
    assert argo.status(NS, NAME).phase == "Degraded", "the failing analysis aborted it again"


def test_parse_duration() -> None:
    assert [parse_duration(v) for v in (30, "30s", "5m", "1h", "7")] == [30, 30, 300, 3600, 7]
    with pytest.raises(ValueError):
        parse_duration("soon")


# --- the real kubectl ----------------------------------------------------------------------------


def test_kubectl_reads_rollouts_and_aborts_through_status(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (>= 1.27) is not installed: this test drives the emulator with the real one")
    cluster = new_cluster()
    set_image(cluster, BROKEN)
    with KubeEmulator(cluster, token="t0ken", tls=True) as emu:  # kubectl sends tokens over TLS only
        config = emu.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path), "KUBECONFIG": str(config)}

        def run(*args: str) -> str:
            proc = subprocess.run(
                [kubectl, "--cache-dir", str(tmp_path / "cache"), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        assert run("get", "rollouts", "-o", "jsonpath={.items[*].status.phase}") == "Paused"
        # what `kubectl argo rollouts abort` sends
        run(
            "patch",
            "rollout",
            NAME,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            '{"status":{"abort":true}}',
        )
        assert run("get", "rollout", NAME, "-o", "jsonpath={.status.phase}") == "Degraded"
        runs = json.loads(run("get", "analysisruns", "-o", "json"))["items"]
        assert runs == []
    assert rs_replicas(cluster) == {STABLE: 5, BROKEN: 0}


# --- recorded shapes -----------------------------------------------------------------------------


def _types(value: Any, path: str = "") -> dict[str, str]:
    """JSON path (list items as []) -> JSON type, for every leaf and container."""
    out = {path: type(value).__name__}
    if isinstance(value, dict):
        for key, item in value.items():
            child = (
                f"{path}.[map]"
                if path.rsplit(".", 1)[-1] in ("labels", "annotations", "matchLabels")
                else f"{path}.{key}"
            )
            out |= _types(item, child)
    elif isinstance(value, list):
        for item in value:
            out |= _types(item, f"{path}[]")
    return out


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_recorded_rollout_and_analysis_run_parse() -> None:
    """A mid-canary Rollout aborted by a failed analysis, as argo-rollouts v1.7 writes it."""
    rollout = load("rollout-canary-aborted.json")
    state = summarize_rollout(rollout, load("replicasets.json")["items"], [load("analysisrun-failed.json")])
    assert (state.phase, state.strategy, state.aborted, state.step_index, state.step_count) == (
        "Degraded",
        "canary",
        True,
        0,
        4,
    )
    assert state.canary_weight == 0 and state.revision == 8 and state.observed_generation == 9
    assert state.stable_images == ("ghcr.io/llm-d/llm-d:v0.2.0",)
    assert state.canary_images == ("ghcr.io/llm-d/llm-d:v0.2.1",)
    assert state.current_step_analysis == "Failed"
    failed = state.failed_analysis
    assert failed is not None and failed.failed_metrics == ("error-rate",)
    assert failed.message.startswith('Metric "error-rate" assessed Failed')
    assert state.as_output()["failed_analysis"] == "ms-llm-d-decode-6d7b9c8f5d-8-2"


def test_emulated_rollout_has_the_recorded_shape(argo: ArgoRollouts, cluster: Cluster) -> None:
    """Every field the emulated controller writes exists in the recorded documents, with the same type."""
    set_image(cluster, BROKEN)
    argo.promote(NS, NAME)
    real_ro, real_run = _types(load("rollout-canary-aborted.json")), _types(load("analysisrun-failed.json"))
    real_ro |= _types(load("rollout-canary-paused.json"))
    emulated = cluster.get("Rollout", NS, NAME)
    invented = {k: v for k, v in _types(emulated["status"], ".status").items() if real_ro.get(k) != v}
    assert invented == {}
    run = cluster.list_objects("AnalysisRun", NS)[0]
    invented = {
        k: v
        for k, v in _types({"status": run["status"], "spec": run["spec"]}).items()
        if real_run.get(k) != v
    }
    assert invented == {}
