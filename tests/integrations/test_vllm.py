"""The vLLM adapter over real HTTP (httpx) against emulated vLLM servers on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from bot.errors import PermanentError, TransientError
from bot.integrations.vllm import HealthState, VLLMClient, VLLMTimeouts, run_sync
from bot.sandbox.vllm_emulator import (
    EmulatorConfig,
    EmulatorFleet,
    ReplicaCount,
    VLLMEmulator,
    start_emulators,
)
from bot.settings import Settings

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def emulator() -> Iterator[VLLMEmulator]:
    with VLLMEmulator(EmulatorConfig()) as server:
        yield server


@pytest.fixture
def fleet() -> Iterator[EmulatorFleet]:
    with start_emulators(3) as pods:
        yield pods


def client(**kwargs: object) -> VLLMClient:
    timeouts = kwargs.pop("timeouts", VLLMTimeouts(connect=1.0, read=3.0, warmup=10.0))
    return VLLMClient(timeouts=timeouts, **kwargs)  # type: ignore[arg-type]


async def test_health_ok_engine_dead_and_unreachable(fleet: EmulatorFleet) -> None:
    fleet[1].set(engine_dead=True)
    fleet[2].stop()
    async with client() as vllm:
        reports = await vllm.health_all(fleet.urls)
    assert [r.url for r in reports] == fleet.urls
    assert [r.state for r in reports] == [HealthState.OK, HealthState.ENGINE_DEAD, HealthState.UNREACHABLE]
    assert [r.status_code for r in reports] == [200, 503, None]
    assert reports[0].ok and not reports[1].ok and not reports[2].ok
    assert "ConnectError" in reports[2].detail


async def test_health_recovers_after_restart(emulator: VLLMEmulator) -> None:
    emulator.set(engine_dead=True)
    async with client() as vllm:
        assert (await vllm.health(emulator.url)).state is HealthState.ENGINE_DEAD
        port = emulator.port
        emulator.restart()
        assert emulator.port == port
        assert (await vllm.health(emulator.url)).state is HealthState.OK


async def test_models_version_and_load(emulator: VLLMEmulator) -> None:
    emulator.set(offered_rps=10)
    async with client() as vllm:
        cards = await vllm.models(emulator.url + "/")
        assert [c.id for c in cards] == [MODEL]
        assert cards[0].owned_by == "vllm" and cards[0].max_model_len == 8192
        assert await vllm.version(emulator.url) == "0.33.0"
        # 10 req/s * 0.8 s service time = 8 running in the emulator's model.
        assert await vllm.load(emulator.url) == 8


async def test_metrics_new_names(emulator: VLLMEmulator) -> None:
    emulator.set(offered_rps=10)
    async with client() as vllm:
        snap = await vllm.metrics(emulator.url)
    m = snap.model(MODEL)
    assert m.kv_cache_metric == "vllm:kv_cache_usage_perc"
    assert m.kv_cache_usage is not None and 0 < m.kv_cache_usage < 1
    assert m.num_requests_running == 8
    assert m.num_requests_waiting == 0
    assert "vllm:gpu_cache_usage_perc" not in snap.metric_names
    assert "vllm:inter_token_latency_seconds_count" in snap.metric_names


async def test_metrics_legacy_names(emulator: VLLMEmulator) -> None:
    emulator.set(legacy_metric_names=True, kv_cache_usage_min=0.99)
    async with client() as vllm:
        snap = await vllm.metrics(emulator.url)
    m = snap.model()
    assert m.kv_cache_metric == "vllm:gpu_cache_usage_perc"
    assert m.kv_cache_usage == pytest.approx(0.99)
    assert "vllm:kv_cache_usage_perc" not in snap.metric_names
    assert "vllm:time_per_output_token_seconds_count" in snap.metric_names


async def test_queue_depth_falls_when_replicas_rise() -> None:
    replicas = ReplicaCount(1)
    with VLLMEmulator(EmulatorConfig(), replicas=replicas, offered_rps=60) as pod:
        async with client() as vllm:
            saturated = (await vllm.metrics(pod.url)).model()
            replicas.set(4)
            scaled = (await vllm.metrics(pod.url)).model()
    # One replica: 60 req/s offered against 20 req/s capacity queues (60 - 20) * 10 s.
    assert saturated.num_requests_waiting == 400
    assert scaled.num_requests_waiting == 0
    assert scaled.num_requests_running < saturated.num_requests_running
    assert saturated.kv_cache_usage is not None and scaled.kv_cache_usage is not None
    assert scaled.kv_cache_usage < saturated.kv_cache_usage


async def test_warmup_measures_ttft(emulator: VLLMEmulator) -> None:
    emulator.set(extra_ttft_s=0.3)
    async with client() as vllm:
        result = await vllm.warmup(emulator.url)
        chat = await vllm.warmup(emulator.url, MODEL, chat=True)
    assert result.model == MODEL
    assert result.text == "the pool is healthy"  # max_tokens 4, deterministic
    assert result.chunks == 4
    assert 0.3 <= result.ttft_s <= result.total_s < 3
    assert chat.ttft_s >= 0.3 and chat.text == "the pool is healthy"


async def test_warmup_errors(emulator: VLLMEmulator) -> None:
    async with client() as vllm:
        with pytest.raises(PermanentError, match="404"):
            await vllm.warmup(emulator.url, "no-such-model")
        emulator.set(engine_dead=True)
        with pytest.raises(TransientError, match="500"):
            await vllm.warmup(emulator.url, MODEL)


async def test_api_key_guards_only_v1_paths() -> None:
    with VLLMEmulator(EmulatorConfig(api_key="s3cret")) as pod:
        async with client() as anonymous:
            with pytest.raises(PermanentError, match="401"):
                await anonymous.models(pod.url)
            # /health and /metrics stay open, as with vLLM's --api-key.
            assert (await anonymous.health(pod.url)).ok
            assert (await anonymous.metrics(pod.url)).model().num_requests_waiting == 0
        async with client(api_key="wrong") as wrong:
            with pytest.raises(PermanentError, match="401"):
                await wrong.warmup(pod.url, MODEL)
        async with client(api_key="s3cret") as keyed:
            assert [c.id for c in await keyed.models(pod.url)] == [MODEL]
            assert (await keyed.warmup(pod.url)).ttft_s > 0


async def test_key_is_sent_only_on_v1_paths() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("authorization")
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": []})
        return httpx.Response(200, text="")

    async with VLLMClient(api_key="k", transport=httpx.MockTransport(handler)) as vllm:
        await vllm.models("http://127.0.0.1:9")
        await vllm.metrics("http://127.0.0.1:9")
        await vllm.health("http://127.0.0.1:9")
    assert seen == {"/v1/models": "Bearer k", "/metrics": None, "/health": None}


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, TransientError), (502, TransientError), (429, TransientError), (404, PermanentError),
     (400, PermanentError), (401, PermanentError)],
)  # fmt: skip
async def test_status_codes_map_to_error_types(status: int, error: type[Exception]) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text="nope"))
    async with VLLMClient(transport=transport) as vllm:
        with pytest.raises(error, match=str(status)):
            await vllm.metrics("http://127.0.0.1:9")


async def test_health_4xx_raises_but_5xx_reports() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(404 if "404" in str(request.url) else 500))
    async with VLLMClient(transport=transport) as vllm:
        with pytest.raises(PermanentError, match="404"):
            await vllm.health("http://127.0.0.1:9/404")
        assert (await vllm.health("http://127.0.0.1:9")).state is HealthState.ERROR


async def test_slow_server_times_out_as_transient(emulator: VLLMEmulator) -> None:
    emulator.set(slow_s=1.0)
    async with client(timeouts=VLLMTimeouts(connect=1.0, read=0.2)) as vllm:
        with pytest.raises(TransientError, match="timed out"):
            await vllm.metrics(emulator.url)
        report = await vllm.health(emulator.url)
    assert report.state is HealthState.UNREACHABLE


async def test_dead_server_is_transient(emulator: VLLMEmulator) -> None:
    emulator.stop()
    async with client() as vllm:
        with pytest.raises(TransientError, match="ConnectError"):
            await vllm.metrics(emulator.url)
        with pytest.raises(TransientError):
            await vllm.warmup(emulator.url, MODEL)


async def test_fanout_is_bounded_and_keeps_failures_apart() -> None:
    with start_emulators(6, slow_s=0.3) as pods:
        pods[5].stop()
        async with client(max_concurrency=2) as vllm:
            started = time.perf_counter()
            results = await vllm.metrics_all(pods.urls)
            elapsed = time.perf_counter() - started
    # Five slow servers, two at a time: at least three rounds of 0.3 s.
    assert elapsed >= 0.85
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert isinstance(results[5].error, TransientError)
    assert all(r.value is not None and r.value.model().kv_cache_usage is not None for r in results[:5])


def test_sync_wrapper_uses_settings(emulator: VLLMEmulator) -> None:
    settings = Settings(vllm_endpoints=[emulator.url], vllm_read_timeout_seconds=3)

    async def check(vllm: VLLMClient) -> list[HealthState]:
        return [r.state for r in await vllm.health_all(settings.vllm_endpoints)]

    assert run_sync(check, settings) == [HealthState.OK]


def test_bad_url_is_permanent() -> None:
    async def call(vllm: VLLMClient) -> object:
        return await vllm.metrics("ftp://127.0.0.1:1")

    with pytest.raises(PermanentError, match="not http"):
        run_sync(call, Settings())
