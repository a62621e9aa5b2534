"""The emulator's own behaviour: patch dialects, controller semantics, watches, hooks and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from bot.sandbox.cluster import ApiError, Cluster, PodBehaviour, vllm_deployment
from bot.sandbox.kube_emulator import KubeEmulator
from bot.sandbox.kube_patch import json_patch, merge_patch, strategic_merge_patch

NS = "llm-d"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    cluster = Cluster(seed=5)
    cluster.seed_llmd(NS)
    with KubeEmulator(cluster) as emu:
        yield emu


@pytest.fixture
def api(emulator: KubeEmulator, tmp_path: Path) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(emulator.write_kubeconfig(tmp_path / "kc")), client_configuration=configuration
    )
    with client.ApiClient(configuration) as api_client:
        yield api_client


# --- patch dialects ------------------------------------------------------------------------------


def test_strategic_merge_merges_containers_by_name_and_honours_directives() -> None:
    doc = {
        "containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "b:1"},
        ],
        "labels": {"keep": "1", "drop": "2"},
    }
    patch = {
        "containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "$patch": "delete"}]},
            {"name": "c", "image": "c:1"},
        ],
        "labels": {"drop": None},
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
    }
    out = strategic_merge_patch(doc, patch)
    assert [(c["name"], c["image"]) for c in out["containers"]] == [("a", "a:2"), ("b", "b:1"), ("c", "c:1")]
    assert out["containers"][0]["env"] == [{"name": "X", "value": "1"}]
    assert out["labels"] == {"keep": "1"}
    assert doc["containers"][0]["image"] == "a:1"  # input untouched
    replaced = strategic_merge_patch(
        doc, {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}
    )
    assert replaced["containers"] == [{"name": "z", "image": "z"}]


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [9]}) == {"a": {"c": 2, "d": 3}, "l": [9]}


def test_json_patch_operations_and_errors() -> None:
    doc = {"a": {"b": [1, 2]}, "m": {"x/y": 1}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/m/x~1y", "value": 2},
            {"op": "copy", "from": "/a", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/d/b/2", "value": 3},
        ],
    )
    assert out == {"a": {"b": [2, 3]}, "m": {"x/y": 2}, "d": {"b": [1, 2, 3]}}
    with pytest.raises(ValueError, match="missing key"):
        json_patch(doc, [{"op": "replace", "path": "/nope", "value": 1}])
    with pytest.raises(ValueError, match="failed"):
        json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": 7}])


# --- controller semantics ------------------------------------------------------------------------


def test_template_back_to_an_old_one_reuses_its_replicaset_and_bumps_revision() -> None:
    cluster = Cluster()
    cluster.seed_llmd(NS, prefill_replicas=0)

    def image(tag: str) -> None:
        cluster.patch_deployment(
            NS,
            "vllm-decode",
            "application/strategic-merge-patch+json",
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "vllm", "image": f"vllm/vllm-openai:{tag}"}]}
                    }
                }
            },
        )

    image("v2")
    image("v0.8.5")  # back to revision 1's template
    sets = cluster.list_objects("ReplicaSet", NS, "app.kubernetes.io/name=vllm-decode")
    assert len(sets) == 2
    revisions = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["metadata"]["annotations"] for rs in sets
    }
    assert revisions["vllm/vllm-openai:v0.8.5"]["deployment.kubernetes.io/revision"] == "3"
    assert revisions["vllm/vllm-openai:v0.8.5"]["deployment.kubernetes.io/revision-history"] == "1"
    assert revisions["vllm/vllm-openai:v2"]["deployment.kubernetes.io/revision"] == "2"
    for rs in sets:
        labels = rs["spec"]["template"]["metadata"]["labels"]
        assert rs["metadata"]["name"] == f"vllm-decode-{labels['pod-template-hash']}"
        assert rs["spec"]["selector"]["matchLabels"]["pod-template-hash"] == labels["pod-template-hash"]
        (owner,) = rs["metadata"]["ownerReferences"]
        assert owner["controller"] and owner["kind"] == "Deployment"
    dep = cluster.get("Deployment", NS, "vllm-decode")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert dep["metadata"]["generation"] == 3 and dep["status"]["observedGeneration"] == 3


def test_paused_deployment_does_not_roll() -> None:
    cluster = Cluster()
    cluster.seed_llmd(NS)
    cluster.patch_deployment(NS, "vllm-decode", "application/merge-patch+json", {"spec": {"paused": True}})
    cluster.patch_deployment(
        NS,
        "vllm-decode",
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:new"}]}}}},
    )
    assert len(cluster.list_objects("ReplicaSet", NS, "app.kubernetes.io/name=vllm-decode")) == 1
    images = {p["spec"]["containers"][0]["image"] for p in cluster.deployment_pods(NS, "vllm-decode")}
    assert images == {"vllm/vllm-openai:v0.8.5"}
    status = cluster.get("Deployment", NS, "vllm-decode")["status"]
    assert status["conditions"][1]["reason"] == "DeploymentPaused"
    cluster.patch_deployment(NS, "vllm-decode", "application/merge-patch+json", {"spec": {"paused": None}})
    images = {p["spec"]["containers"][0]["image"] for p in cluster.deployment_pods(NS, "vllm-decode")}
    assert images == {"vllm/vllm-openai:new"}


def test_recreate_strategy_and_deleted_pod_is_replaced() -> None:
    cluster = Cluster()
    cluster.seed_llmd(NS)
    cluster.patch_deployment(
        NS,
        "vllm-decode",
        "application/merge-patch+json",
        {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}},
    )
    victim = cluster.deployment_pods(NS, "vllm-decode")[0]["metadata"]["name"]
    cluster.script_pods("crashloop", namespace=NS, deployment="vllm-decode", existing=False)
    cluster.delete_pod(NS, victim)
    pods = cluster.deployment_pods(NS, "vllm-decode")
    assert victim not in {p["metadata"]["name"] for p in pods} and len(pods) == 2
    assert cluster.ready_replicas(NS, "vllm-decode") == 1  # the replacement crash-loops


def test_hooks_for_the_vllm_emulator() -> None:
    cluster = Cluster()
    cluster.seed_llmd(NS, decode_replicas=3)
    seen: list[tuple[str, str]] = []
    cluster.add_listener(lambda kind, event, obj: seen.append((kind, event)))
    assert cluster.ready_replicas(NS, "vllm-decode") == 3
    assert cluster.ready_replicas(NS, "missing") == 0
    decode = cluster.pods(NS, {"llm-d.ai/role": "decode"})
    assert len(decode) == 3 and all(p["status"]["podIP"].startswith("10.244.") for p in decode)
    assert len(cluster.pods(NS, "llm-d.ai/role in (decode,prefill)")) == 4
    assert len(cluster.pods(NS, "llm-d.ai/role!=decode")) == 1
    cluster.script_pods(PodBehaviour("not_ready"), namespace=NS, deployment="vllm-decode")
    assert cluster.ready_replicas(NS, "vllm-decode") == 0
    assert ("Pod", "MODIFIED") in seen


def test_validation_errors() -> None:
    cluster = Cluster()
    bad = vllm_deployment("bad")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ApiError) as info:
        cluster.create_deployment(bad, "default")
    assert info.value.code == 422 and "`selector` does not match template `labels`" in info.value.message
    cluster.create_deployment(vllm_deployment("ok", gpus=0), "default")
    with pytest.raises(ApiError) as info:
        cluster.create_deployment(vllm_deployment("ok", gpus=0), "default")
    assert (info.value.code, info.value.reason) == (409, "AlreadyExists")
    with pytest.raises(ApiError) as info:
        cluster.patch_deployment(
            "default",
            "ok",
            "application/merge-patch+json",
            {"spec": {"selector": {"matchLabels": {"a": "b"}}}},
        )
    assert info.value.code == 422 and "field is immutable" in info.value.message
    with pytest.raises(ApiError) as info:
        cluster.create_deployment(vllm_deployment("x"), "no-such-namespace")
    assert info.value.code == 404


# --- over HTTP with the real client --------------------------------------------------------------


def test_create_with_dry_run_then_for_real(api: client.ApiClient, emulator: KubeEmulator) -> None:
    apps = client.AppsV1Api(api)
    body = vllm_deployment("vllm-extra", gpus=0)
    dry = apps.create_namespaced_deployment(NS, body, dry_run="All")
    assert dry.metadata.name == "vllm-extra" and dry.metadata.generation == 1
    assert emulator.cluster.ready_replicas(NS, "vllm-extra") == 0
    with pytest.raises(client.ApiException) as info:
        apps.read_namespaced_deployment("vllm-extra", NS)
    assert info.value.status == 404
    made = apps.create_namespaced_deployment(NS, body, field_manager="tester")
    assert made.metadata.uid and int(made.metadata.resource_version) > 0
    assert emulator.cluster.ready_replicas(NS, "vllm-extra") == 2
    assert emulator.count("POST", rf"/apis/apps/v1/namespaces/{NS}/deployments", mutating=True) == 1
    assert emulator.count("POST", mutating=False) == 1  # the dry run


def test_put_and_scale_subresource(api: client.ApiClient, emulator: KubeEmulator) -> None:
    apps = client.AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale("vllm-decode", NS)
    assert scale.spec.replicas == 2 and scale.status.selector == "app.kubernetes.io/name=vllm-decode"
    scale.spec.replicas = 3
    assert apps.replace_namespaced_deployment_scale("vllm-decode", NS, scale).spec.replicas == 3
    dep = apps.read_namespaced_deployment("vllm-decode", NS)
    dep.spec.replicas = 1
    assert apps.replace_namespaced_deployment("vllm-decode", NS, dep).spec.replicas == 1
    dep.spec.replicas = 4  # stale resourceVersion now
    with pytest.raises(client.ApiException) as info:
        apps.replace_namespaced_deployment("vllm-decode", NS, dep)
    assert info.value.status == 409
    assert emulator.cluster.ready_replicas(NS, "vllm-decode") == 1


def test_selectors_and_bad_field_selector(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    running = core.list_namespaced_pod(
        NS, field_selector="status.phase=Running", label_selector="llm-d.ai/role"
    )
    assert len(running.items) == 3
    none = core.list_namespaced_pod(NS, label_selector="!llm-d.ai/role")
    assert none.items == []
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_pod(NS, field_selector="spec.bogus=1")
    assert info.value.status == 400 and "field label not supported" in info.value.body


def test_watch_streams_changes(api: client.ApiClient, emulator: KubeEmulator) -> None:
    apps = client.AppsV1Api(api)
    listing = apps.list_namespaced_deployment(NS, field_selector="metadata.name=vllm-decode")
    seen: list[tuple[str, Any]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            apps.list_namespaced_deployment,
            NS,
            field_selector="metadata.name=vllm-decode",
            resource_version=listing.metadata.resource_version,
            timeout_seconds=5,
        ):
            seen.append((event["type"], event["object"].spec.replicas))
            if event["object"].spec.replicas == 5:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    emulator.cluster.patch_deployment(
        NS, "vllm-prefill", "application/merge-patch+json", {"spec": {"replicas": 2}}
    )
    emulator.cluster.patch_deployment(
        NS, "vllm-decode", "application/merge-patch+json", {"spec": {"replicas": 5}}
    )
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert ("MODIFIED", 5) in seen
    assert all(replicas in (2, 5) for _, replicas in seen)


def test_pod_log_endpoint_and_errors(api: client.ApiClient, emulator: KubeEmulator) -> None:
    core = client.CoreV1Api(api)
    pod = emulator.cluster.deployment_pods(NS, "vllm-decode")[0]["metadata"]["name"]
    text = core.read_namespaced_pod_log(pod, NS, tail_lines=1)
    assert text == "INFO:     Application startup complete.\n"
    with pytest.raises(client.ApiException) as info:
        core.read_namespaced_pod_log(pod, NS, container="sidecar")
    assert info.value.status == 400


def test_fault_injection_and_auth(emulator: KubeEmulator, tmp_path: Path) -> None:
    emulator.set_tokens("sekret")
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(emulator.write_kubeconfig(tmp_path / "kc", token="wrong")),
        client_configuration=configuration,
    )
    with client.ApiClient(configuration) as api_client, pytest.raises(client.ApiException) as info:
        client.AppsV1Api(api_client).read_namespaced_deployment("vllm-decode", NS)
    assert info.value.status == 401 and json.loads(info.value.body)["reason"] == "Unauthorized"
    emulator.set_tokens()
    emulator.fail_next(503, path=r"/deployments/vllm-decode$", times=2)
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(emulator.write_kubeconfig(tmp_path / "kc2")), client_configuration=configuration
    )
    with client.ApiClient(configuration) as api_client:
        apps = client.AppsV1Api(api_client)
        for _ in range(2):
            with pytest.raises(client.ApiException) as info:
                apps.read_namespaced_deployment("vllm-decode", NS)
            assert info.value.status == 503
        assert apps.read_namespaced_deployment("vllm-decode", NS).metadata.name == "vllm-decode"


def test_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        KubeEmulator(host="0.0.0.0")
    emulator = KubeEmulator(host="127.0.0.2").start()
    try:
        assert emulator.url.startswith("http://127.0.0.2:")
    finally:
        emulator.stop()


def test_cli_starts_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox.kube_emulator", "--seed-llmd", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("kube emulator serving on http://127.0.0.1:")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        with client.ApiClient(configuration) as api_client:
            names = [
                d.metadata.name for d in client.AppsV1Api(api_client).list_namespaced_deployment(NS).items
            ]
        assert names == ["vllm-decode", "vllm-prefill"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
