"""The emulator's StatefulSet and LeaderWorkerSet controllers: the real kubectl against them (get, scale,
rollout restart/status/history/undo) and recorded-shape drift checks of a LeaderWorkerSet and its
ControllerRevision against team-written JSON in the real API's shape (tests/fixtures/lws)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.cluster import Cluster
from bot.sandbox.kube_emulator import KubeEmulator
from bot.sandbox.workload_controllers import install, vllm_leaderworkerset, vllm_statefulset
from tests.sandbox.test_kube_drift import assert_same_shape, fetch

NS = "llm-d"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lws"
LWS_LABEL = "leaderworkerset.sigs.k8s.io/name"


def real(name: str) -> Any:
    doc = json.loads((FIXTURES / name).read_text())
    doc.pop("_comment")
    return doc


def cluster() -> Cluster:
    cluster = Cluster(seed=21)
    cluster.seed_llmd(NS, gpu_nodes=2)
    install(cluster)
    cluster.create_object("LeaderWorkerSet", vllm_leaderworkerset("ms-decode", groups=2, size=2), NS)
    cluster.create_object("StatefulSet", vllm_statefulset("ms-prefill", replicas=2), NS)
    return cluster


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    """TLS: kubectl sends its bearer token over TLS only."""
    with KubeEmulator(cluster(), token="kubectl-token", tls=True) as emu:
        yield emu


@pytest.fixture
def plain() -> Iterator[KubeEmulator]:
    """Plain HTTP, no token: what the drift checks fetch from."""
    with KubeEmulator(cluster()) as emu:
        yield emu


@pytest.fixture
def kubectl(emulator: KubeEmulator, tmp_path: Path) -> Any:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl (>= 1.27) is not installed: these tests drive the emulator with the real one")
    config = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path), "KUBECONFIG": str(config)}

    def run(*args: str) -> str:
        cmd = [binary, "--cache-dir", str(tmp_path / "cache"), "--request-timeout=20s", *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    return run


def test_kubectl_gets_and_scales_a_leaderworkerset(kubectl: Any, emulator: KubeEmulator) -> None:
    assert kubectl("get", "leaderworkersets", "-o", "name").split() == [
        "leaderworkerset.leaderworkerset.x-k8s.io/ms-decode"
    ]
    pods = kubectl("get", "pods", "-l", f"{LWS_LABEL}=ms-decode", "-o", "name").split()
    assert pods == ["pod/ms-decode-0", "pod/ms-decode-0-1", "pod/ms-decode-1", "pod/ms-decode-1-1"]
    kubectl("scale", "lws", "ms-decode", "--replicas=3")
    assert kubectl("get", "lws", "ms-decode", "-o", "jsonpath={.spec.replicas}") == "3"
    pods = kubectl("get", "pods", "-l", f"{LWS_LABEL}=ms-decode", "-o", "name").split()
    assert len(pods) == 6 and "pod/ms-decode-2" in pods and "pod/ms-decode-2-1" in pods
    status = emulator.cluster.get("LeaderWorkerSet", NS, "ms-decode")["status"]
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (3, 3, 3)
    leader = emulator.cluster.get("Pod", NS, "ms-decode-2")
    assert leader["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    assert leader["metadata"]["ownerReferences"][0]["kind"] == "LeaderWorkerSet"
    assert leader["spec"]["containers"][0]["args"][0] == "--model"
    worker = emulator.cluster.get("Pod", NS, "ms-decode-2-1")
    assert worker["spec"]["containers"][0]["args"][0] == "--headless"


def test_kubectl_rolls_a_statefulset(kubectl: Any, emulator: KubeEmulator) -> None:
    kubectl("scale", "sts", "ms-prefill", "--replicas=3")
    assert len(kubectl("get", "pods", "-l", "app.kubernetes.io/name=ms-prefill", "-o", "name").split()) == 3
    kubectl("rollout", "restart", "sts/ms-prefill")
    out = kubectl("rollout", "status", "sts/ms-prefill", "--timeout=10s")
    assert out.strip() == "partitioned roll out complete: 3 new pods have been updated..."
    history = kubectl("rollout", "history", "sts/ms-prefill")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    kubectl("rollout", "undo", "sts/ms-prefill")
    sts = emulator.cluster.get("StatefulSet", NS, "ms-prefill")
    annotations = sts["spec"]["template"].get("metadata", {}).get("annotations") or {}
    assert "kubectl.kubernetes.io/restartedAt" not in annotations, "kubectl's undo restored revision 1"
    assert "roll out complete" in kubectl("rollout", "status", "sts/ms-prefill", "--timeout=10s")


def test_leaderworkerset_shape(plain: KubeEmulator) -> None:
    emulator = plain
    emulator.cluster.patch_object(
        "LeaderWorkerSet",
        NS,
        "ms-decode",
        "application/merge-patch+json",
        {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}}},
    )
    doc = fetch(emulator, f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/ms-decode")
    assert_same_shape(
        doc,
        real("leaderworkerset.json"),
        [
            ".metadata.uid",
            ".metadata.generation",
            ".spec.replicas",
            ".spec.leaderWorkerTemplate.size",
            ".spec.leaderWorkerTemplate.workerTemplate.spec.containers[].image",
            ".spec.leaderWorkerTemplate.leaderTemplate.spec.containers[].image",
            ".status.replicas",
            ".status.readyReplicas",
            ".status.updatedReplicas",
            ".status.hpaPodSelector",
            ".status.conditions[].lastTransitionTime",
        ],
    )


def test_leaderworkerset_controllerrevision_shape(plain: KubeEmulator) -> None:
    emulator = plain
    listing = fetch(
        emulator, f"/apis/apps/v1/namespaces/{NS}/controllerrevisions?labelSelector={LWS_LABEL}%3Dms-decode"
    )
    assert listing["kind"] == "ControllerRevisionList" and len(listing["items"]) == 1
    name = listing["items"][0]["metadata"]["name"]
    doc = fetch(emulator, f"/apis/apps/v1/namespaces/{NS}/controllerrevisions/{name}")
    assert_same_shape(
        doc,
        real("controllerrevision.json"),
        [
            ".metadata.labels.*",
            ".metadata.ownerReferences[].uid",
            ".data.spec.$patch",
            ".data.spec.leaderWorkerTemplate.workerTemplate.spec.containers[].image",
            ".revision",
        ],
    )
    assert isinstance(doc["revision"], int)
