"""The sandbox with an Argo Rollout as its decode tier: the canary-gone-bad scenario step by step, the
vLLM servers' error ratio following the broken canary's weight, through httpx and the kubernetes client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.errors import ConfigError
from bot.integrations.argo import ArgoRollouts
from bot.integrations.kube import KubeClient
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.scenario import ScenarioPlayer, load_scenario, parse_scenario
from bot.sandbox.vllm_emulator import VLLMEmulator

NS = "llm-d"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    config = SandboxConfig(decode_kind="Rollout", decode_replicas=4, vllm_servers=2, tls=False)
    with Sandbox(config, workdir=tmp_path) as sb:
        yield sb


def counters(server: VLLMEmulator) -> tuple[float, float]:
    """(requests, errors) from the gateway counters on /metrics."""
    values = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(("inference_objective_request_total", "inference_objective_request_error_total")):
            values[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return values["inference_objective_request_total"], values["inference_objective_request_error_total"]


def test_canary_gone_bad_step_by_step(sandbox: Sandbox) -> None:
    assert "kind: Rollout" in sandbox.catalog.read_text()  # type: ignore[union-attr]
    scenario = load_scenario("canary-gone-bad")
    player = ScenarioPlayer(scenario, list(sandbox.vllm or []), sandbox=sandbox)
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    argo = ArgoRollouts(kube)
    assert argo.status(NS, "vllm-decode").phase == "Healthy" and sandbox.decode_ready() == 4
    assert kube.pod_owners(NS, "llm-d.ai/role=decode").keys() == {("Rollout", "vllm-decode")}
    player.advance_to(0)
    server = sandbox.vllm[0]  # type: ignore[index]
    assert server.controls.error_ratio == 0.0
    player.advance_to(5)
    state = argo.status(NS, "vllm-decode")
    assert (state.phase, state.canary_weight, state.canary_images) == (
        "Paused",
        20,
        ("vllm/vllm-openai:v0.9.9-canary",),
    )
    assert [s.controls.error_ratio for s in sandbox.vllm or []] == [0.2, 0.2]
    # real requests: one in five fails, and the gateway counters count it
    body = {"model": scenario.model, "prompt": "hi", "max_tokens": 1}
    codes = [httpx.post(f"{server.url}/v1/completions", json=body).status_code for _ in range(10)]
    assert sorted(codes) == [200] * 8 + [500] * 2
    total, errors = counters(server)
    assert total >= 10 and errors >= 2
    argo.abort(NS, "vllm-decode")
    assert [s.controls.error_ratio for s in sandbox.vllm or []] == [0.0, 0.0]
    assert sandbox.decode_ready() == 4
    codes = [httpx.post(f"{server.url}/v1/completions", json=body).status_code for _ in range(10)]
    assert codes == [200] * 10


def test_canary_steps_need_a_rollout_and_a_sandbox() -> None:
    with pytest.raises(ConfigError, match="decode_kind: Rollout"):
        parse_scenario("name: x\nsteps: [{at: 0, canary: {image: a}}]")
    with pytest.raises(ConfigError, match="needs the sandbox"):
        ScenarioPlayer(load_scenario("canary-gone-bad"), [object(), object()])  # type: ignore[list-item]


def test_sandbox_up_plays_canary_gone_bad_on_a_rollout(tmp_path: Path) -> None:
    """`incident-bot sandbox up --scenario canary-gone-bad`: decode is a Rollout; the canary starts."""
    from tests.sandbox.test_sandbox import _sandbox_up
    from tests.support.fixtures import wait_until

    proc, text = _sandbox_up(tmp_path, "--no-tls", "--scenario=canary-gone-bad")
    try:
        kubeconfig = re.search(r"^KUBECONFIG=(.+)$", text, re.M).group(1)  # type: ignore[union-attr]
        argo = ArgoRollouts(KubeClient.from_kubeconfig(kubeconfig))
        assert argo.status(NS, "vllm-decode").strategy == "canary"
        # the scenario's step at 5 s rolls the broken canary in
        wait_until(lambda: argo.status(NS, "vllm-decode").canary_weight == 20, timeout=30)
        assert "kind: Rollout" in (tmp_path / "catalog.yaml").read_text()
    finally:
        proc.terminate()
        proc.wait(15)
