"""The composed sandbox: the real kubernetes client and kubectl drive it; vLLM servers follow the cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bot.integrations.kube import KubeClient
from bot.integrations.vllm import HealthState, run_sync
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.settings import get_settings
from tests.support.fixtures import wait_until


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(decode_replicas=1, vllm_servers=2, offered_rps=60.0), workdir=tmp_path) as sb:
        yield sb


def waiting(sandbox: Sandbox) -> float:
    snaps = run_sync(lambda c: c.metrics_all(sandbox.vllm_endpoints), get_settings())
    return sum(s.value.model().num_requests_waiting for s in snaps if s.value is not None)  # type: ignore[union-attr]


def health(sandbox: Sandbox) -> set[HealthState]:
    reports = run_sync(lambda c: c.health_all(sandbox.vllm_endpoints), get_settings())
    return {r.state for r in reports}


def test_scaling_decode_through_the_real_client_shortens_the_vllm_queue(sandbox: Sandbox) -> None:
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    assert kube.get_deployment("llm-d", "vllm-decode").ready_replicas == 1
    before = waiting(sandbox)
    assert before > 10  # 60 req/s offered to one replica: saturated
    kube.scale("llm-d", "vllm-decode", 4)
    wait_until(lambda: kube.get_deployment("llm-d", "vllm-decode").ready_replicas == 4)
    after = waiting(sandbox)
    assert after < before / 2, (before, after)


def test_crashlooping_rollout_makes_the_servers_unhealthy_and_undo_heals_them(sandbox: Sandbox) -> None:
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    assert health(sandbox) == {HealthState.OK}
    sandbox.cluster.script_pods("crashloop", image="vllm/vllm-openai:v0.9.9-bad")
    sandbox.cluster.patch_deployment(
        "llm-d",
        "vllm-decode",
        "application/strategic-merge-patch+json",
        {
            "spec": {
                "strategy": {"type": "Recreate"},
                "template": {
                    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.9-bad"}]}
                },
            }
        },
    )
    wait_until(lambda: health(sandbox) == {HealthState.ENGINE_DEAD})
    result = kube.rollout_undo("llm-d", "vllm-decode")
    assert result.changed
    wait_until(lambda: health(sandbox) == {HealthState.OK})


def _sandbox_up(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    """Start `incident-bot sandbox up` as a user would; returns the process and what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", "up", *flags, f"--workdir={tmp_path}", "--duration=60"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("VLLM_ENDPOINTS="):
            break
    return proc, "".join(lines)


def test_sandbox_up_prints_a_kubeconfig_that_kubectl_uses_as_printed(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (>= 1.27) is not installed: this test drives the sandbox with the real one")
    proc, text = _sandbox_up(tmp_path)
    try:
        assert re.search(r"^sandbox: Kubernetes API at https://127\.0\.0\.1:\d+ ", text, re.M), text
        kubeconfig = re.search(r"^KUBECONFIG=(.+)$", text, re.M).group(1)  # type: ignore[union-attr]
        endpoints = re.search(r"^VLLM_ENDPOINTS=(.+)$", text, re.M).group(1).split(",")  # type: ignore[union-attr]
        config = yaml.safe_load(Path(kubeconfig).read_text())
        assert config["clusters"][0]["cluster"]["certificate-authority-data"]
        assert config["users"][0]["user"]["token"]
        # No flags: the kubeconfig alone carries the server, the CA and the token.
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KUBECONFIG": kubeconfig}
        out = subprocess.run(
            ["kubectl", "get", "deploy", "-A"], capture_output=True, text=True, timeout=30, env=env
        )
        assert out.returncode == 0, out.stderr
        assert "vllm-decode" in out.stdout and "vllm-prefill" in out.stdout
        assert all(httpx.get(f"{u}/health", timeout=5).status_code == 200 for u in endpoints)
        assert (tmp_path / "sandbox.env").read_text().startswith("export KUBECONFIG=")
    finally:
        proc.terminate()
        proc.wait(15)


def test_sandbox_up_no_tls_serves_plain_http(tmp_path: Path) -> None:
    proc, text = _sandbox_up(tmp_path, "--no-tls")
    try:
        url = re.search(r"^sandbox: Kubernetes API at (http://\S+) ", text, re.M).group(1)  # type: ignore[union-attr]
        kubeconfig = re.search(r"^KUBECONFIG=(.+)$", text, re.M).group(1)  # type: ignore[union-attr]
        cluster = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]
        assert cluster == {"server": url}
        kube = KubeClient.from_kubeconfig(kubeconfig)
        assert kube.get_deployment("llm-d", "vllm-decode").name == "vllm-decode"
    finally:
        proc.terminate()
        proc.wait(15)
