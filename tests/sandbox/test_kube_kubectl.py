"""The real kubectl (1.32) against the emulator, and the bot's undo compared with kubectl's."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.integrations.kube import KubeClient
from bot.sandbox.cluster import Cluster, vllm_deployment
from bot.sandbox.kube_emulator import KubeEmulator

KUBECTL = shutil.which("kubectl") or "kubectl"
NS = "llm-d"


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    cluster = Cluster(seed=3)
    cluster.seed_llmd(NS, image="vllm/vllm-openai:v0.8.5")
    # kubectl only sends a bearer token over TLS, so this fixture exercises TLS + token auth too.
    with KubeEmulator(cluster, token="kubectl-token", tls=True) as emu:
        yield emu


@pytest.fixture
def kubectl(emulator: KubeEmulator, tmp_path: Path) -> Any:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (>= 1.27) is not installed: these tests drive the emulator with the real one")
    config = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path), "KUBECONFIG": str(config)}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, "--cache-dir", str(tmp_path / "cache"), "--request-timeout=20s", *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


def set_image(cluster: Cluster, name: str, image: str) -> None:
    cluster.patch_deployment(
        NS,
        name,
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}}},
    )


def test_get_deployments_prints_server_side_table(kubectl: Any) -> None:
    out = kubectl("get", "deploy").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in out[1:]}
    assert rows == {"vllm-decode": ["2/2", "2", "2"], "vllm-prefill": ["1/1", "1", "1"]}
    pods = kubectl("get", "pods", "-l", "llm-d.ai/role=decode", "-o", "name").stdout.split()
    assert len(pods) == 2 and all(p.startswith("pod/vllm-decode-") for p in pods)


def test_scale(kubectl: Any, emulator: KubeEmulator) -> None:
    assert "scaled" in kubectl("scale", "deployment/vllm-decode", "--replicas=4").stdout
    assert emulator.cluster.ready_replicas(NS, "vllm-decode") == 4
    assert emulator.count("PATCH", rf"/apis/apps/v1/namespaces/{NS}/deployments/vllm-decode/scale") == 1


def test_rollout_restart_status_and_history(kubectl: Any, emulator: KubeEmulator) -> None:
    assert "restarted" in kubectl("rollout", "restart", "deployment/vllm-decode").stdout
    dep = emulator.cluster.get("Deployment", NS, "vllm-decode")
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    status = kubectl("rollout", "status", "deployment/vllm-decode", "--timeout=20s")
    assert 'deployment "vllm-decode" successfully rolled out' in status.stdout
    history = kubectl("rollout", "history", "deployment/vllm-decode").stdout.split()
    assert history[-4:] == ["1", "<none>", "2", "<none>"]


def test_rollout_status_times_out_on_a_stuck_rollout(kubectl: Any, emulator: KubeEmulator) -> None:
    emulator.cluster.script_pods("crashloop", image="vllm/vllm-openai:bad")
    set_image(emulator.cluster, "vllm-decode", "vllm/vllm-openai:bad")
    proc = kubectl("rollout", "status", "deployment/vllm-decode", "--timeout=2s", check=False)
    assert proc.returncode != 0
    assert "Waiting for deployment" in proc.stdout + proc.stderr
    # kubectl watched: the emulator streamed a watch for it.
    assert any(r.query.get("watch") in ("true", "1") for r in emulator.requests)


def test_rollout_undo_and_to_revision(kubectl: Any, emulator: KubeEmulator) -> None:
    cluster = emulator.cluster
    set_image(cluster, "vllm-decode", "vllm/vllm-openai:v0.8.6")
    set_image(cluster, "vllm-decode", "vllm/vllm-openai:v0.8.7")
    assert "rolled back" in kubectl("rollout", "undo", "deployment/vllm-decode").stdout
    images = [
        c["image"]
        for c in cluster.get("Deployment", NS, "vllm-decode")["spec"]["template"]["spec"]["containers"]
    ]
    assert images == ["vllm/vllm-openai:v0.8.6"]
    assert "rolled back" in kubectl("rollout", "undo", "deployment/vllm-decode", "--to-revision=1").stdout
    images = [
        c["image"]
        for c in cluster.get("Deployment", NS, "vllm-decode")["spec"]["template"]["spec"]["containers"]
    ]
    assert images == ["vllm/vllm-openai:v0.8.5"]
    revision = kubectl("rollout", "history", "deployment/vllm-decode", "--revision=5").stdout
    assert "vllm/vllm-openai:v0.8.5" in revision
    assert "pod-template-hash" in revision
    proc = kubectl("rollout", "undo", "deployment/vllm-decode", "--to-revision=99", check=False)
    assert proc.returncode != 0 and "unable to find specified revision" in proc.stderr


def test_rollout_undo_dry_run_server(kubectl: Any, emulator: KubeEmulator) -> None:
    set_image(emulator.cluster, "vllm-decode", "vllm/vllm-openai:v0.8.6")
    before = emulator.cluster.get("Deployment", NS, "vllm-decode")
    kubectl("rollout", "undo", "deployment/vllm-decode", "--dry-run=server")
    assert emulator.cluster.get("Deployment", NS, "vllm-decode") == before
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.query.get("dryRun") == "All"


def _seed_twins(cluster: Cluster) -> None:
    for name in ("twin-kubectl", "twin-bot"):
        manifest = vllm_deployment(name, image="vllm/vllm-openai:v0.8.5", replicas=2)
        manifest["metadata"]["annotations"] = {"kubernetes.io/change-cause": "initial"}
        cluster.create_deployment(manifest, NS)
        cluster.patch_deployment(
            NS,
            name,
            "application/strategic-merge-patch+json",
            {
                "metadata": {"annotations": {"kubernetes.io/change-cause": "bump to v0.9.0"}},
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"prometheus.io/scrape": "true"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "vllm",
                                    "image": "vllm/vllm-openai:v0.9.0",
                                    "env": [{"name": "X", "value": "1"}],
                                }
                            ]
                        },
                    }
                },
            },
        )


def _strip_names(obj: dict[str, Any], name: str) -> Any:
    import json

    return json.loads(json.dumps(obj).replace(name, "<twin>"))


@pytest.mark.parametrize("to_revision", [None, 1])
def test_bot_undo_matches_kubectl_undo(
    kubectl: Any, emulator: KubeEmulator, tmp_path: Path, to_revision: int | None
) -> None:
    cluster = emulator.cluster
    cluster.add_node("gpu-node-2", gpus=8)
    _seed_twins(cluster)
    args = ["rollout", "undo", "deployment/twin-kubectl"]
    if to_revision:
        args.append(f"--to-revision={to_revision}")
    kubectl(*args)
    kube = KubeClient.from_kubeconfig(str(emulator.write_kubeconfig(tmp_path / "bot-kc", namespace=NS)))
    assert kube.rollout_undo(NS, "twin-bot", to_revision=to_revision).changed

    by_kubectl = cluster.get("Deployment", NS, "twin-kubectl")
    by_bot = cluster.get("Deployment", NS, "twin-bot")
    assert _strip_names(by_bot["spec"]["template"], "twin-bot") == _strip_names(
        by_kubectl["spec"]["template"], "twin-kubectl"
    )
    assert by_bot["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.8.5"
    assert "env" not in by_bot["spec"]["template"]["spec"]["containers"][0]
    assert by_bot["metadata"]["annotations"] == by_kubectl["metadata"]["annotations"]
    assert by_bot["metadata"]["annotations"]["kubernetes.io/change-cause"] == "initial"
    # Both sent one JSON patch with the same operations.
    patches = [r for r in emulator.requests if r.method == "PATCH"]
    assert len(patches) == 2 and {p.content_type for p in patches} == {"application/json-patch+json"}
    assert _strip_names({"ops": patches[0].body}, "twin-kubectl") == _strip_names(
        {"ops": patches[1].body}, "twin-bot"
    )


def test_set_image_rolls_out_a_new_revision(kubectl: Any, emulator: KubeEmulator) -> None:
    out = kubectl("set", "image", "deployment/vllm-decode", "vllm=vllm/vllm-openai:v0.9.0").stdout
    assert "image updated" in out
    dep = emulator.cluster.get("Deployment", NS, "vllm-decode")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.9.0"
    (patch,) = [r for r in emulator.requests if r.method == "PATCH"]
    assert patch.content_type == "application/strategic-merge-patch+json"
    kubectl("rollout", "status", "deployment/vllm-decode", "--timeout=20s")
    assert kubectl("rollout", "history", "deployment/vllm-decode").stdout.split()[-2:] == ["2", "<none>"]
    images = kubectl(
        "get", "pods", "-l", "llm-d.ai/role=decode", "-o", "jsonpath={.items[*].spec.containers[0].image}"
    ).stdout.split()
    assert images == ["vllm/vllm-openai:v0.9.0"] * 2


@pytest.mark.parametrize(
    ("patch_type", "patch"),
    [
        ("strategic", '{"metadata":{"labels":{"tier":"gpu"}}}'),
        ("merge", '{"metadata":{"labels":{"tier":"gpu"}}}'),
        ("json", '[{"op":"add","path":"/metadata/labels/tier","value":"gpu"}]'),
    ],
)
def test_patch_each_type(kubectl: Any, emulator: KubeEmulator, patch_type: str, patch: str) -> None:
    out = kubectl("patch", "deployment", "vllm-decode", "--type", patch_type, "-p", patch).stdout
    assert "patched" in out
    assert emulator.cluster.get("Deployment", NS, "vllm-decode")["metadata"]["labels"]["tier"] == "gpu"
    label = kubectl("get", "deploy", "vllm-decode", "-o", "jsonpath={.metadata.labels.tier}").stdout
    assert label == "gpu"


def test_get_events_and_logs(kubectl: Any, emulator: KubeEmulator) -> None:
    emulator.cluster.script_pods("crashloop", image="vllm/vllm-openai:bad")
    set_image(emulator.cluster, "vllm-decode", "vllm/vllm-openai:bad")
    events = kubectl("get", "events", "--field-selector", "type=Warning").stdout
    assert "BackOff" in events or "Failed" in events, events
    pod = kubectl("get", "pods", "-l", "llm-d.ai/role=prefill", "-o", "name").stdout.split()[0]
    logs = kubectl("logs", pod).stdout
    assert "vLLM" in logs
