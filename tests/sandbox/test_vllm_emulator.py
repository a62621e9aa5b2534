"""The vLLM emulator: wire protocol, metric exposition, load model, faults and lifecycle."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.sandbox.vllm_cli import main
from bot.sandbox.vllm_emulator import (
    EmulatorConfig,
    EmulatorControls,
    ReplicaCount,
    VLLMEmulator,
    compute_load,
    start_emulators,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pod() -> Iterator[VLLMEmulator]:
    with VLLMEmulator() as server:
        yield server


def families(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """{family name: (type, [(sample name, labels, value)])} from exposition text."""
    return {
        f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def test_load_model_responds_to_replicas() -> None:
    config = EmulatorConfig()
    controls = EmulatorControls(offered_rps=80)
    states = [compute_load(config, controls, replicas, real_rps=0, inflight=0) for replicas in (1, 2, 4, 8)]
    waiting = [s.waiting for s in states]
    assert waiting == [600, 200, 0, 0]
    assert [s.running for s in states] == [16, 16, 16, 8]
    kv = [s.kv_cache_usage for s in states]
    ttft = [s.ttft_s for s in states]
    assert kv == sorted(kv, reverse=True) and kv[0] > kv[-1]
    assert ttft == sorted(ttft, reverse=True) and ttft[0] > 10 * ttft[-1]


def test_load_model_counts_real_requests_and_faults() -> None:
    config = EmulatorConfig()
    busy = compute_load(config, EmulatorControls(), 1, real_rps=0, inflight=20)
    assert busy.running == 16 and busy.waiting == 4
    oom = compute_load(config, EmulatorControls(kv_cache_usage_min=0.99), 1, real_rps=0, inflight=0)
    assert oom.kv_cache_usage == pytest.approx(0.99)
    dead = compute_load(config, EmulatorControls(offered_rps=50, engine_dead=True), 1, 0, 0)
    assert dead.running == 0 and dead.waiting == 0


def test_metrics_use_real_vllm_names_types_and_labels(pod: VLLMEmulator) -> None:
    response = httpx.get(pod.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = families(response.text)
    expected_types = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:num_preemptions": "counter",
        "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter",
        "vllm:request_success": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:request_queue_time_seconds": "histogram",
    }
    for name, kind in expected_types.items():
        assert found[name][0] == kind, name
        for _, labels, _ in found[name][1]:
            assert labels["model_name"] == MODEL and labels["engine"] == "0"
    assert "vllm:gpu_cache_usage_perc" not in found
    assert "vllm:time_per_output_token_seconds" not in found
    sample_names = {s[0] for s in found["vllm:num_preemptions"][1]}
    assert sample_names == {"vllm:num_preemptions_total"}
    reasons = {s[1]["finished_reason"] for s in found["vllm:request_success"][1]}
    assert reasons == {"stop", "length", "abort"}
    ttft_buckets = [
        s[1]["le"] for s in found["vllm:time_to_first_token_seconds"][1] if s[0].endswith("_bucket")
    ]
    assert ttft_buckets[0] == "0.001" and ttft_buckets[-2] == "2560.0" and ttft_buckets[-1] == "+Inf"


def test_legacy_names_mode(pod: VLLMEmulator) -> None:
    pod.set(legacy_metric_names=True)
    found = families(pod.metrics_text())
    assert "vllm:gpu_cache_usage_perc" in found and "vllm:kv_cache_usage_perc" not in found
    assert "vllm:time_per_output_token_seconds" in found and "vllm:inter_token_latency_seconds" not in found


def test_counters_and_histograms_advance_with_the_clock() -> None:
    clock = FakeClock()
    emulator = VLLMEmulator(clock=clock, offered_rps=10)
    before = families(emulator.metrics_text())
    clock.now += 10
    after = families(emulator.metrics_text())

    def value(found: dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]], name: str) -> float:
        return sum(v for sample, _, v in found[name][1] if sample == name + "_total" or sample == name)

    assert value(after, "vllm:request_success") - value(before, "vllm:request_success") == 100
    ttft_count = [v for s, _, v in after["vllm:time_to_first_token_seconds"][1] if s.endswith("_count")]
    assert ttft_count == [100]
    hits = value(after, "vllm:prefix_cache_hits")
    queries = value(after, "vllm:prefix_cache_queries")
    assert hits / queries == pytest.approx(0.3, abs=0.01)
    assert value(after, "vllm:num_preemptions") == 0


def test_memory_pressure_makes_preemptions_rise() -> None:
    clock = FakeClock()
    emulator = VLLMEmulator(clock=clock, offered_rps=10, kv_cache_usage_min=0.99, preemptions_per_s=2)
    clock.now += 5
    found = families(emulator.metrics_text())
    preemptions = found["vllm:num_preemptions"][1][0][2]
    # 2/s scripted plus 0.5/s per running request (8 running) while the KV cache is >= 95 % full.
    assert preemptions == 30
    assert found["vllm:kv_cache_usage_perc"][1][0][2] == pytest.approx(0.99)


def test_health_ping_version_load_models(pod: VLLMEmulator) -> None:
    assert httpx.get(pod.url + "/health").status_code == 200
    assert httpx.get(pod.url + "/ping").status_code == 200
    assert httpx.post(pod.url + "/ping").status_code == 200
    assert httpx.get(pod.url + "/version").json() == {"version": "0.33.0"}
    assert httpx.get(pod.url + "/load").json() == {"server_load": 0}
    body = httpx.get(pod.url + "/v1/models").json()
    assert body["object"] == "list" and body["data"][0]["id"] == MODEL
    pod.set(engine_dead=True)
    assert httpx.get(pod.url + "/health").status_code == 503
    assert httpx.get(pod.url + "/ping").status_code == 503
    dead = httpx.post(pod.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert dead.status_code == 500 and dead.json()["error"]["type"] == "InternalServerError"
    assert httpx.get(pod.url + "/metrics").status_code == 200  # the API process still answers


def test_completion_streaming_is_sse_with_done(pod: VLLMEmulator) -> None:
    response = httpx.post(
        pod.url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "the pool is"
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_streaming_starts_with_role(pod: VLLMEmulator) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    events = [e for e in httpx.post(pod.url + "/v1/chat/completions", json=body).text.split("\n\n") if e]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "the pool"
    assert chunks[0]["object"] == "chat.completion.chunk"
    plain = httpx.post(pod.url + "/v1/chat/completions", json={**body, "stream": False}).json()
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": "the pool"}
    assert plain["usage"]["completion_tokens"] == 2


def test_bad_requests_are_4xx(pod: VLLMEmulator) -> None:
    assert httpx.post(pod.url + "/v1/completions", content=b"{").status_code == 400
    assert httpx.post(pod.url + "/v1/completions", json={"model": "x", "prompt": "p"}).status_code == 404
    assert httpx.post(pod.url + "/v1/chat/completions", json={"model": MODEL}).status_code == 400
    assert httpx.post(pod.url + "/v1/completions", json={"prompt": "p", "max_tokens": -1}).status_code == 400


def test_real_requests_are_counted(pod: VLLMEmulator) -> None:
    for _ in range(3):
        httpx.post(pod.url + "/v1/completions", json={"prompt": "p", "max_tokens": 2})
    found = families(pod.metrics_text())
    assert sum(v for _, _, v in found["vllm:request_success"][1]) == 3
    counts = [v for s, _, v in found["vllm:time_to_first_token_seconds"][1] if s.endswith("_count")]
    assert counts == [3]
    assert pod.state().share_rps == pytest.approx(3 / 5)  # 3 arrivals over the 5 s rate window


def test_api_key_guard() -> None:
    with VLLMEmulator(EmulatorConfig(api_key="k")) as server:
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401
        assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/metrics").status_code == 200


def test_slow_mode_delays_every_response(pod: VLLMEmulator) -> None:
    pod.set(slow_s=0.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(pod.url + "/health", timeout=0.2)


def test_stop_refuses_connections_and_start_reuses_the_port() -> None:
    pod = VLLMEmulator().start()
    try:
        url = pod.url
        pod.stop()
        assert not pod.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health")
        pod.start()
        assert pod.url == url and httpx.get(url + "/health").status_code == 200
    finally:
        pod.stop()


def test_restart_resets_counters_and_revives_the_engine() -> None:
    with VLLMEmulator() as pod:
        httpx.post(pod.url + "/v1/completions", json={"prompt": "p", "max_tokens": 1})
        pod.set(engine_dead=True)
        pod.restart()
        assert httpx.get(pod.url + "/health").status_code == 200
        found = families(httpx.get(pod.url + "/metrics").text)
        assert sum(v for _, _, v in found["vllm:request_success"][1]) == 0


def test_many_servers_in_one_process_share_a_replica_source() -> None:
    replicas = ReplicaCount(1)
    with start_emulators(3, replicas=replicas, offered_rps=30) as fleet:
        assert len(set(fleet.urls)) == 3
        assert all(u.startswith("http://127.0.0.1:") for u in fleet.urls)
        assert [p.state().waiting for p in fleet] == [100, 100, 100]
        replicas.set(3)
        assert [p.state().waiting for p in fleet] == [0, 0, 0]


def test_failing_replica_source_keeps_the_last_value() -> None:
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("kube emulator down")
        return 4

    emulator = VLLMEmulator(replicas=flaky)
    assert emulator.replicas() == 4
    assert emulator.replicas() == 4


def test_controls_are_validated() -> None:
    emulator = VLLMEmulator()
    with pytest.raises(ValueError, match="unknown"):
        emulator.set(bogus=1)
    with pytest.raises(ValueError, match="kv_cache_usage_min"):
        emulator.set(kv_cache_usage_min=2)
    with pytest.raises(ValueError, match="offered_rps"):
        emulator.set(offered_rps=-1)
    with pytest.raises(ValueError, match="loopback"):
        EmulatorConfig(host="0.0.0.0")


def test_cli_serves_for_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--servers", "2", "--duration", "0.2", "--offered-rps", "5"]) == 0
    urls = capsys.readouterr().out.split()
    assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
    with pytest.raises(httpx.ConnectError):
        httpx.get(urls[0] + "/health")


def test_cli_plays_a_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scenario", "bad-rollout", "--speed", "100", "--duration", "1.5"]) == 0
    urls = capsys.readouterr().out.split()
    assert len(urls) == 3  # the scenario's pod count
