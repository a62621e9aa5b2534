"""Scenario files and the traffic generator driving emulated vLLM pods."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from bot.errors import ConfigError
from bot.integrations.vllm import HealthState, VLLMClient
from bot.sandbox.scenario import ScenarioPlayer, load_scenario, parse_scenario, shipped_scenarios
from bot.sandbox.traffic import (
    BackgroundTraffic,
    TrafficPlan,
    generate_traffic,
    require_loopback,
    run_traffic,
)
from bot.sandbox.vllm_emulator import EmulatorConfig, VLLMEmulator, start_emulators


def test_shipped_scenarios_load() -> None:
    names = {load_scenario(path).name for path in shipped_scenarios()}
    assert names == {"decode-pool-saturated", "bad-rollout", "gpu-oom", "canary-gone-bad"}
    assert load_scenario("gpu-oom").pods == 2  # a bare name finds a shipped file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsteps: [{at: 0, set: {bogus: 1}}]", "unknown control"),
        ("name: x\nsteps: [{at: 0, set: {kv_cache_usage_min: 3}}]", "kv_cache_usage_min"),
        ("name: x\npods: 2\nsteps: [{at: 0, pods: [5], action: stop}]", "pod index"),
        ("name: x\nsteps: [{at: 5, action: stop}, {at: 1, action: start}]", "time order"),
        ("name: x\nsteps: [{at: 0}]", "at least one"),
        ("name: x\nsteps: [{at: 0, action: explode}]", "steps.0.action"),
        ("name: x\nsteps: [{at: 0, traffic: {rps: 5, duration_s: 9999}}]", "duration_s"),
        ("- just a list", "mapping"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_bad_scenarios_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario(text, "bad.yaml")


def test_missing_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario("no-such-scenario")


async def test_bad_rollout_scenario_step_by_step() -> None:
    scenario = load_scenario("bad-rollout")
    with start_emulators(scenario.pods) as fleet:
        player = ScenarioPlayer(scenario, fleet)
        async with VLLMClient() as vllm:
            player.advance_to(0)
            assert [r.state for r in await vllm.health_all(fleet.urls)] == [HealthState.OK] * 3
            applied = player.advance_to(25)
            assert [s.at for s in applied] == [10, 25]
            states = [r.state for r in await vllm.health_all(fleet.urls)]
            assert states == [HealthState.ENGINE_DEAD, HealthState.ENGINE_DEAD, HealthState.OK]
            player.advance_to(90)
            assert player.finished
            states = [r.state for r in await vllm.health_all(fleet.urls)]
            assert states == [HealthState.UNREACHABLE, HealthState.ENGINE_DEAD, HealthState.OK]


async def test_gpu_oom_scenario_moves_metrics() -> None:
    scenario = load_scenario("gpu-oom")
    with start_emulators(scenario.pods) as fleet:
        player = ScenarioPlayer(scenario, fleet)
        async with VLLMClient() as vllm:
            player.advance_to(0)
            healthy = (await vllm.metrics(fleet.urls[0])).model()
            player.advance_to(10)
            oom = (await vllm.metrics(fleet.urls[0])).model()
    assert healthy.kv_cache_metric == "vllm:gpu_cache_usage_perc"
    assert healthy.kv_cache_usage is not None and healthy.kv_cache_usage < 0.9
    assert oom.kv_cache_usage == pytest.approx(0.99)
    assert fleet[0].state().ttft_s > 0.4


def test_saturation_scenario_with_replicas_step() -> None:
    text = """
name: saturate-then-scale
pods: 2
steps:
  - {at: 0, set: {offered_rps: 20}}
  - {at: 5, set: {offered_rps: 80}}
  - {at: 9, replicas: 8}
"""
    with start_emulators(2) as fleet:
        player = ScenarioPlayer(parse_scenario(text), fleet)
        player.advance_to(0)
        assert fleet[0].state().waiting == 0
        player.advance_to(5)
        # 80 req/s over 2 replicas = 40 per pod against 20 capacity: (40 - 20) * 10 s queued.
        assert fleet[0].state().waiting == 200
        player.advance_to(9)
        assert fleet[0].state().waiting == 0


def test_play_in_compressed_time_and_stop() -> None:
    text = """
name: quick
pods: 1
duration_s: 20
steps:
  - {at: 0, set: {offered_rps: 5}}
  - {at: 10, set: {engine_dead: true}}
"""
    with start_emulators(1) as fleet:
        player = ScenarioPlayer(parse_scenario(text), fleet)
        started = time.monotonic()
        applied = player.play(speed=100)
        assert 0.15 <= time.monotonic() - started < 5
        assert [s.at for s in applied] == [0, 10]
        assert fleet[0].controls.engine_dead
        stop = threading.Event()
        stop.set()
        assert ScenarioPlayer(parse_scenario(text), fleet).play(stop=stop) == []


def test_traffic_is_loopback_only() -> None:
    assert require_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert require_loopback("http://localhost:1") == "http://localhost:1"
    for url in ("http://10.0.0.1:8000", "http://example.com", "http://[::1]:80", "ftp://127.0.0.1"):
        with pytest.raises(ValueError):
            require_loopback(url)
    with pytest.raises(ValueError):
        BackgroundTraffic(["http://192.168.1.1:8000"], TrafficPlan(rps=1, duration_s=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rps": 0, "duration_s": 1},
        {"rps": 1, "duration_s": 601},
        {"rps": 1, "duration_s": 1, "max_requests": 10_001},
        {"rps": 1, "duration_s": 1, "concurrency": 0},
    ],
)
def test_traffic_plans_are_bounded(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrafficPlan(**kwargs)  # type: ignore[arg-type]


def test_traffic_respects_max_requests_and_moves_metrics() -> None:
    with start_emulators(2) as fleet:
        report = run_traffic(fleet.urls, TrafficPlan(rps=100, duration_s=5, max_requests=12, stream=True))
        assert report.sent == 12 and report.ok == 12 and report.failed == 0
        assert report.elapsed_s < 4
        assert report.mean_latency_s is not None and report.mean_latency_s > 0
        for pod in fleet:  # round-robin: 6 each
            success = httpx.get(pod.url + "/metrics").text
            assert 'finished_reason="length"' in success
            assert pod.state().share_rps == pytest.approx(6 / 5)


def test_traffic_stops_at_duration_and_counts_failures() -> None:
    with VLLMEmulator() as alive, VLLMEmulator(EmulatorConfig(api_key="k")) as guarded:
        dead = VLLMEmulator().start()
        dead_url = dead.url
        dead.stop()
        plan = TrafficPlan(rps=20, duration_s=0.5, max_requests=1000, timeout_s=2)
        report = asyncio.run(generate_traffic([alive.url, guarded.url, dead_url], plan))
    assert 6 <= report.sent <= 11  # ~0.5 s at 20 req/s, never the 1000 allowed
    assert report.outcomes.get("401", 0) >= 2
    assert report.outcomes.get("connection_error", 0) >= 2
    assert report.ok == report.outcomes.get("200", 0) >= 2
    assert report.failed == report.sent - report.ok


def test_background_traffic_can_be_stopped() -> None:
    with VLLMEmulator() as pod:
        generator = BackgroundTraffic([pod.url], TrafficPlan(rps=10, duration_s=60)).start()
        time.sleep(0.3)
        report = generator.stop()
        assert not generator.running
    assert report is not None and 1 <= report.sent <= 10


def test_scenario_traffic_step_sends_real_requests() -> None:
    text = """
name: with-traffic
pods: 2
steps:
  - {at: 0, traffic: {rps: 50, duration_s: 1, max_requests: 10, max_tokens: 2}}
"""
    with start_emulators(2) as fleet:
        player = ScenarioPlayer(parse_scenario(text), fleet)
        player.advance_to(0)
        assert len(player.traffic) == 1
        report = player.traffic[0].join(10)
        player.stop_traffic()
    assert report is not None and report.ok == 10
