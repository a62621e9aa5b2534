"""The Prometheus adapter against a REAL Prometheus (Debian package) scraping emulated vLLM servers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import ConfigError, PermanentError, TransientError
from bot.integrations.prometheus import PrometheusClient, parse_instant
from bot.sandbox.vllm_emulator import EmulatorConfig, EmulatorFleet, ReplicaCount, VLLMEmulator
from bot.settings import Settings
from tests.support.prometheus import PrometheusProcess, free_port, run_prometheus, wait_until

pytestmark = pytest.mark.integration

MODEL_A = "meta-llama/Llama-3.1-8B-Instruct"
MODEL_B = "Qwen/Qwen3-8B"


class Cluster:
    """Two pods of model A (one decode pool) and one pod of model B, scraped by Prometheus."""

    def __init__(self, prom: PrometheusProcess, fleet: EmulatorFleet, replicas: ReplicaCount) -> None:
        self.prom = prom
        self.fleet = fleet
        self.replicas = replicas


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    replicas = ReplicaCount(1)
    pods = [
        VLLMEmulator(EmulatorConfig(model=MODEL_A), replicas=replicas, offered_rps=50),
        VLLMEmulator(EmulatorConfig(model=MODEL_A), replicas=replicas, offered_rps=50),
        VLLMEmulator(EmulatorConfig(model=MODEL_B), offered_rps=5),
    ]
    with EmulatorFleet(pods) as fleet:
        targets = [url.removeprefix("http://") for url in fleet.urls]
        with run_prometheus(tmp_path_factory.mktemp("prometheus"), targets) as prom:
            prom.wait_targets_up(3, job="vllm")
            prom.wait_query(f'vllm:num_requests_waiting{{model_name="{MODEL_B}"}}')
            yield Cluster(prom, fleet, replicas)


@pytest.fixture
def prometheus(cluster: Cluster) -> Iterator[PrometheusClient]:
    with PrometheusClient(cluster.prom.url, timeout=5, retries=0) as client:
        yield client


def test_instant_query_returns_typed_samples(cluster: Cluster, prometheus: PrometheusClient) -> None:
    wait_until(lambda: len(prometheus.query("vllm:num_requests_waiting")) == 3, timeout=15, what="3 series")
    samples = prometheus.query(f'vllm:num_requests_waiting{{model_name="{MODEL_A}"}}')
    assert len(samples) == 2
    pool_a = {u.removeprefix("http://") for u in cluster.fleet.urls[:2]}
    assert {s.labels["instance"] for s in samples} == pool_a
    for sample in samples:
        assert sample.name == "vllm:num_requests_waiting"
        assert sample.labels["job"] == "vllm"
        assert sample.labels["engine"] == "0"
        assert isinstance(sample.value, float)
        assert sample.timestamp > 0


def test_sum_by_model_name(cluster: Cluster, prometheus: PrometheusClient) -> None:
    cluster.replicas.set(1)
    # One replica: each pod's share is 50 req/s against 20 req/s capacity, so 300 waiting per pod.
    expected = 2 * cluster.fleet[0].state().waiting
    assert expected == 600

    def settled() -> dict[str, float] | None:
        by_model = prometheus.values_by("sum by (model_name) (vllm:num_requests_waiting)", "model_name")
        return by_model if by_model.get(MODEL_A) == expected else None

    by_model = wait_until(settled, timeout=15, what="the summed queue depth")
    assert by_model == {MODEL_A: 600.0, MODEL_B: 0.0}
    assert prometheus.query_value(f'sum(vllm:num_requests_waiting{{model_name="{MODEL_A}"}})') == 600.0


def test_scaling_decode_lowers_queue_depth_seen_by_prometheus(
    cluster: Cluster, prometheus: PrometheusClient
) -> None:
    query = f'sum(vllm:num_requests_waiting{{model_name="{MODEL_A}"}})'
    cluster.replicas.set(1)
    wait_until(lambda: prometheus.query_value(query) == 600.0, timeout=15, what="saturated queue")
    cluster.replicas.set(3)
    wait_until(lambda: prometheus.query_value(query) == 0.0, timeout=15, what="queue drained after scaling")
    kv = prometheus.query_value(f'max(vllm:kv_cache_usage_perc{{model_name="{MODEL_A}"}})')
    assert kv is not None and kv < 0.9
    cluster.replicas.set(1)


def test_range_query_and_counter_rate(cluster: Cluster, prometheus: PrometheusClient) -> None:
    rate_query = f'sum(rate(vllm:request_success_total{{model_name="{MODEL_B}"}}[5s]))'

    def settled_rate() -> float | None:
        # Model B: 5 req/s offered to one pod with spare capacity. rate() under-reads until the
        # window holds several scrapes, so poll until it settles near 5.
        value = prometheus.query_value(rate_query)
        return value if value is not None and 4.0 <= value <= 6.0 else None

    wait_until(settled_rate, timeout=20, what="a success rate near 5 req/s")
    end = datetime.now(UTC)
    series = prometheus.query_range(
        f'vllm:num_requests_running{{model_name="{MODEL_B}"}}', end - timedelta(seconds=30), end, "1s"
    )
    assert len(series) == 1
    assert len(series[0].points) >= 2
    assert set(series[0].values) == {4.0}  # 5 req/s * 0.8 s
    assert [t for t, _ in series[0].points] == sorted(t for t, _ in series[0].points)


def test_scalar_results_and_empty_results(prometheus: PrometheusClient) -> None:
    assert prometheus.query_value("1 + 1") == 2.0
    assert prometheus.query("vector(3)")[0].value == 3.0
    assert prometheus.query_value('vllm:num_requests_waiting{model_name="absent"}') is None
    assert prometheus.query_value("0 / 0") is None  # NaN reads as no value


def test_query_value_refuses_several_series(prometheus: PrometheusClient) -> None:
    with pytest.raises(PermanentError, match="aggregate"):
        prometheus.query_value("vllm:num_requests_waiting")


def test_bad_promql_is_permanent(prometheus: PrometheusClient) -> None:
    with pytest.raises(PermanentError, match="400"):
        prometheus.query("sum by (model_name (vllm:num_requests_waiting")
    with pytest.raises(PermanentError, match="400"):
        prometheus.query_range("rate(vllm:request_success_total)", datetime.now(UTC), datetime.now(UTC), "1s")


def test_ready(cluster: Cluster, prometheus: PrometheusClient) -> None:
    assert prometheus.ready()


def test_unreachable_prometheus_is_transient() -> None:
    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2, retries=0) as client:
        with pytest.raises(TransientError, match="ConnectionError"):
            client.query("up")
        with pytest.raises(TransientError):
            client.query_value("up")
        assert client.ready() is False


def test_settings_wiring() -> None:
    with pytest.raises(ConfigError, match="PROMETHEUS_URL"):
        PrometheusClient.from_settings(Settings())
    settings = Settings(prometheus_url="http://127.0.0.1:9090/", prometheus_timeout_seconds=3)
    client = PrometheusClient.from_settings(settings)
    assert client.url == "http://127.0.0.1:9090" and client.timeout == 3
    client.close()


def test_parse_instant_rejects_malformed_bodies() -> None:
    with pytest.raises(TransientError):
        parse_instant([{"metric": {}, "value": [1.0, "not-a-number"]}])
    with pytest.raises(TransientError):
        parse_instant({"unexpected": True})
    assert parse_instant([{"metric": {"a": "b"}, "value": [1.5, "+Inf"]}])[0].value == float("inf")
