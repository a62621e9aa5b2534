"""The emulator's generic object API (Secrets, StatefulSets, CRDs such as Argo Rollouts, LeaderWorkerSets and
InferencePools) through the real kubernetes client and the real kubectl: discovery, CRUD, patch dialects,
the status and scale subresources, label selectors and controller hooks."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client as k8s
import pytest
from kubernetes.client.rest import ApiException

from bot.sandbox.cluster import Cluster
from bot.sandbox.kube_emulator import KubeEmulator

NS = "llm-d"
ROLLOUT = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "ms-decode", "labels": {"app": "ms"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "ms"}},
        "template": {"spec": {"containers": []}},
    },
    "status": {"phase": "Healthy"},
}


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    cluster = Cluster(seed=5)
    cluster.add_namespace(NS)
    with KubeEmulator(cluster, token="t0ken") as emu:
        yield emu


@pytest.fixture
def api(emulator: KubeEmulator) -> Iterator[k8s.ApiClient]:
    config = k8s.Configuration(host=emulator.url, api_key={"authorization": "Bearer t0ken"})
    with k8s.ApiClient(config) as client:
        yield client


def test_custom_object_create_get_list_patch_delete(api: k8s.ApiClient) -> None:
    crd = k8s.CustomObjectsApi(api)
    created = crd.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", ROLLOUT)
    assert created["metadata"]["generation"] == 1
    assert created["status"] == {}, "status is a subresource: a create does not set it"
    listed = crd.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", label_selector="app=ms"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["ms-decode"]
    assert (
        crd.list_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", label_selector="app=x")[
            "items"
        ]
        == []
    )
    patched = crd.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode", {"spec": {"paused": True}}
    )
    assert patched["spec"]["paused"] is True and patched["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as conflict:
        crd.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", ROLLOUT)
    assert conflict.value.status == 409
    crd.delete_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode")
    with pytest.raises(ApiException) as gone:
        crd.get_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode")
    assert gone.value.status == 404


def test_status_subresource_changes_only_status(api: k8s.ApiClient) -> None:
    crd = k8s.CustomObjectsApi(api)
    crd.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", ROLLOUT)
    after = crd.patch_namespaced_custom_object_status(
        "argoproj.io",
        "v1alpha1",
        NS,
        "rollouts",
        "ms-decode",
        {"status": {"abort": True}, "spec": {"replicas": 9}},
    )
    assert after["status"] == {"abort": True}
    assert after["spec"]["replicas"] == 2 and after["metadata"]["generation"] == 1
    main = crd.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode", {"status": {"abort": False}}
    )
    assert main["status"] == {"abort": True}, "a main-resource write keeps the stored status"


def test_scale_subresource_of_leaderworkerset(api: k8s.ApiClient) -> None:
    crd = k8s.CustomObjectsApi(api)
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "ms-decode"},
        "spec": {"replicas": 1, "leaderWorkerTemplate": {"size": 2}},
    }
    crd.create_namespaced_custom_object("leaderworkerset.x-k8s.io", "v1", NS, "leaderworkersets", lws)
    scale = crd.patch_namespaced_custom_object_scale(
        "leaderworkerset.x-k8s.io", "v1", NS, "leaderworkersets", "ms-decode", {"spec": {"replicas": 3}}
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    stored = crd.get_namespaced_custom_object(
        "leaderworkerset.x-k8s.io", "v1", NS, "leaderworkersets", "ms-decode"
    )
    assert stored["spec"]["replicas"] == 3
    with pytest.raises(ApiException) as bad:
        crd.patch_namespaced_custom_object_scale(
            "leaderworkerset.x-k8s.io", "v1", NS, "leaderworkersets", "ms-decode", {"spec": {"replicas": -1}}
        )
    assert bad.value.status == 422


def test_secrets_and_statefulsets_through_typed_clients(emulator: KubeEmulator, api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    emulator.cluster.create_object(
        "Secret",
        {
            "metadata": {"name": "sh.helm.release.v1.llm-d.v1", "labels": {"owner": "helm", "name": "llm-d"}},
            "type": "helm.sh/release.v1",
            "data": {"release": "SDRzSQ=="},
        },
        NS,
    )
    secrets = core.list_namespaced_secret(NS, label_selector="owner=helm,name=llm-d")
    assert [s.metadata.name for s in secrets.items] == ["sh.helm.release.v1.llm-d.v1"]
    assert secrets.items[0].type == "helm.sh/release.v1"
    sts = k8s.V1StatefulSet(
        metadata=k8s.V1ObjectMeta(name="redis"),
        spec=k8s.V1StatefulSetSpec(
            replicas=1,
            service_name="redis",
            selector=k8s.V1LabelSelector(match_labels={"app": "redis"}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels={"app": "redis"}),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="redis", image="redis:7")]),
            ),
        ),
    )
    apps.create_namespaced_stateful_set(NS, sts)
    scaled = apps.patch_namespaced_stateful_set_scale("redis", NS, {"spec": {"replicas": 3}})
    assert scaled.spec.replicas == 3
    assert apps.read_namespaced_stateful_set("redis", NS).spec.replicas == 3


def test_registered_controller_runs_on_every_change(emulator: KubeEmulator, api: k8s.ApiClient) -> None:
    cluster = emulator.cluster

    def sync(key: tuple[str, str]) -> None:
        obj = cluster.get("Rollout", *key)
        want = {"phase": "Paused" if obj["spec"].get("paused") else "Healthy"}
        if obj.get("status") != want:
            cluster.update_object(
                "Rollout", key[0], key[1], lambda o: {**o, "status": want}, subresource="status"
            )

    cluster.register_controller("Rollout", sync)
    crd = k8s.CustomObjectsApi(api)
    crd.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", ROLLOUT)
    assert crd.get_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode")[
        "status"
    ] == {"phase": "Healthy"}
    crd.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode", {"spec": {"paused": True}}
    )
    assert crd.get_namespaced_custom_object_status("argoproj.io", "v1alpha1", NS, "rollouts", "ms-decode")[
        "status"
    ] == {"phase": "Paused"}


def test_builtin_kinds_still_refuse_generic_writes(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as refused:
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="x")))
    assert refused.value.status == 405


def test_kubectl_discovers_and_reads_crds(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (>= 1.27) is not installed: this test drives the emulator with the real one")
    cluster = Cluster(seed=5)
    cluster.add_namespace(NS)
    with KubeEmulator(cluster, token="t0ken", tls=True) as emulator:  # kubectl sends tokens over TLS only
        _kubectl_session(emulator, kubectl, tmp_path)


def _kubectl_session(emulator: KubeEmulator, kubectl: str, tmp_path: Path) -> None:
    emulator.cluster.create_object("Rollout", ROLLOUT, NS)
    emulator.cluster.create_object(
        "LeaderWorkerSet", {"metadata": {"name": "ms-prefill"}, "spec": {"replicas": 1}}, NS
    )
    config = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
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

    out = run("get", "rollouts,leaderworkersets", "-o", "name")
    assert out.split() == [
        "rollout.argoproj.io/ms-decode",
        "leaderworkerset.leaderworkerset.x-k8s.io/ms-prefill",
    ]
    run("patch", "ro", "ms-decode", "--type", "merge", "-p", '{"spec":{"paused":true}}')
    assert "true" in run("get", "ro", "ms-decode", "-o", "jsonpath={.spec.paused}")
