"""Classification against a real Prometheus serving recorded vLLM / llm-d series.

Synthetic samples for the last seven hours are written as OpenMetrics text, backfilled with
``promtool tsdb create-blocks-from openmetrics``, and served by ``/usr/bin/prometheus`` on a free
loopback port. Each namespace is a scenario whose expected severity was worked out by hand.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bot import slo
from bot.cli_classify import add_classify_parser
from bot.severity import SeverityPolicy, classify, fetch_signals, load_policy, promql_string

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[1] / "bot" / "policy" / "severity.yaml"
STEP = 30  # seconds between samples, like a 30 s scrape interval
SPAN = 7 * 3600  # enough history for the 6 h burn-rate window
RPS = 10.0  # requests per second in every scenario
BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]  # vLLM's e2e

# Latency mixes: (bucket upper bound, share of requests). p95 by histogram_quantile, by hand:
# FAST: cumulative 0.90 at 0.5 s, 1.0 at 0.8 s → 0.5 + (0.95-0.90)/0.10 x 0.3 = 0.65 s.
# SLOW: cumulative 0.90 at 5 s, 1.0 at 10 s → 5 + (0.95-0.90)/0.10 x 5 = 7.5 s.
FAST = [(0.3, 0.5), (0.5, 0.4), (0.8, 0.1)]
SLOW = [(1.0, 0.5), (2.5, 0.4), (10.0, 0.1)]


@dataclass(frozen=True)
class Scenario:
    namespace: str
    error_ratio: Callable[[float], float]  # age in seconds (0 = now) -> fraction of requests failing
    latency: list[tuple[float, float]]
    kv_usage: float = 0.4
    kv_metric: str = "vllm:kv_cache_usage_perc"
    ready_pods: float = 4.0
    queue: float = 1.0
    serving: bool = True  # False: vLLM finishes nothing (all requests fail at the gateway)


def _const(ratio: float) -> Callable[[float], float]:
    return lambda _age: ratio


SCENARIOS = [
    # 12 % errors: error_rate_pct = 12 > 10 → P1 error-rate-high (slo-fast-burn, burn 120, also
    # matches at P1 but comes later in the file).
    Scenario("llm-errors", _const(0.12), FAST),
    # 2 % errors: error-rate-medium (P2), but burn = 0.02 / 0.001 = 20 > 14.4 over 1 h and 5 m → P1.
    Scenario("llm-burn", _const(0.02), FAST),
    # 0.8 % errors: burn 8 over every window: > 6 (ticket) but < 14.4 (no page) → P2 slo-slow-burn.
    Scenario("llm-slowburn", _const(0.008), FAST),
    # 0.1 % errors, then 5 % for the last 10 minutes. 5 m: 5 % → burn 50, error_rate 5 → P2.
    # 1 h: (50 x 0.1 + 10 x 5) / 60 = 0.917 % → burn 9.2 < 14.4, so no page.
    # 30 m: (20 x 0.1 + 10 x 5) / 30 = 1.73 % → 17.3; 6 h: (350 x 0.1 + 10 x 5) / 360 = 0.236 % → 2.4 < 6.
    Scenario("llm-spike", lambda age: 0.05 if age < 600 else 0.001, FAST),
    # p95 7.5 s → P1 latency-p95-high (queue 15 also matches queue-growing at P3).
    Scenario("llm-slow", _const(0.001), SLOW, queue=15.0),
    # KV cache 97 %, exported under the pre-0.33 name only → P1 kv-cache-exhausted.
    Scenario("llm-kv", _const(0.0), FAST, kv_usage=0.97, kv_metric="vllm:gpu_cache_usage_perc"),
    # Nothing served: 100 % errors → P0 error-rate-outage (no-ready-pods matches too, later in file).
    Scenario("llm-down", _const(1.0), FAST, ready_pods=0.0, serving=False),
    # Healthy: 0.05 % errors, p95 0.65 s, KV 40 % → nothing matches → P3 default.
    Scenario("llm-healthy", _const(0.0005), FAST),
    # A namespace value that needs escaping in PromQL; 12 % errors → P1 error-rate-high.
    Scenario('we"ird\\ns', _const(0.12), FAST),
]

EXPECTED = {
    "llm-errors": ("P1", "error-rate-high"),
    "llm-burn": ("P1", "slo-fast-burn"),
    "llm-slowburn": ("P2", "slo-slow-burn"),
    "llm-spike": ("P2", "error-rate-medium"),
    "llm-slow": ("P1", "latency-p95-high"),
    "llm-kv": ("P1", "kv-cache-exhausted"),
    "llm-down": ("P0", "error-rate-outage"),
    "llm-healthy": ("P3", None),
    'we"ird\\ns': ("P1", "error-rate-high"),
}


def _om_value(value: str) -> str:
    """A label value escaped for the OpenMetrics text format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _om_labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_om_value(v)}"' for k, v in labels.items()) + "}"


def write_openmetrics(path: Path, end: int) -> None:
    """Write every scenario's series from end - SPAN to end, one sample per STEP, grouped by family."""
    times = list(range(end - SPAN, end + 1, STEP))
    families: dict[str, tuple[str, list[str]]] = {}

    def add(family: str, kind: str, name: str, labels: str, values: list[float]) -> None:
        lines = families.setdefault(family, (kind, []))[1]
        lines.extend(f"{name}{labels} {v!r} {t}" for t, v in zip(times, values, strict=True))

    for sc in SCENARIOS:
        ns = sc.namespace
        total, errors, ok, aborted, lat_sum = 0.0, 0.0, 0.0, 0.0, 0.0
        series: dict[str, list[float]] = {
            k: [] for k in ("total", "errors", "stop", "abort", "sum", "count", *map(str, BUCKETS), "inf")
        }
        per_bucket = dict(sc.latency)
        buckets = dict.fromkeys(BUCKETS, 0.0)
        for index, t in enumerate(times):
            if index:
                requests = RPS * STEP
                failed = requests * sc.error_ratio(end - t)
                total += requests
                errors += failed
                if sc.serving:
                    ok += (requests - failed) * 0.99
                    aborted += (requests - failed) * 0.01
                    for bound in BUCKETS:
                        buckets[bound] += (requests - failed) * sum(
                            share for b, share in per_bucket.items() if b <= bound
                        )
                    lat_sum += (requests - failed) * sum(b * share for b, share in per_bucket.items())
            series["total"].append(total)
            series["errors"].append(errors)
            series["stop"].append(ok)
            series["abort"].append(aborted)
            series["sum"].append(lat_sum)
            series["count"].append(ok + aborted)
            for bound in BUCKETS:
                series[str(bound)].append(buckets[bound])
            series["inf"].append(ok + aborted)
        gw = {"namespace": ns, "model_name": "llama-3-8b", "target_model_name": "llama-3-8b"}
        add(
            "inference_objective_request",
            "counter",
            "inference_objective_request_total",
            _om_labels(**gw),
            series["total"],
        )
        add(
            "inference_objective_request_error",
            "counter",
            "inference_objective_request_error_total",
            _om_labels(**gw, error_code="500"),
            series["errors"],
        )
        srv = {"namespace": ns, "model_name": "llama-3-8b", "engine": "0"}
        for reason in ("stop", "abort"):
            add(
                "vllm:request_success",
                "counter",
                "vllm:request_success_total",
                _om_labels(**srv, finished_reason=reason),
                series[reason],
            )
        hist = "vllm:e2e_request_latency_seconds"
        for bound in BUCKETS:
            add(hist, "histogram", f"{hist}_bucket", _om_labels(**srv, le=str(bound)), series[str(bound)])
        add(hist, "histogram", f"{hist}_bucket", _om_labels(**srv, le="+Inf"), series["inf"])
        add(hist, "histogram", f"{hist}_sum", _om_labels(**srv), series["sum"])
        add(hist, "histogram", f"{hist}_count", _om_labels(**srv), series["count"])
        add(sc.kv_metric, "gauge", sc.kv_metric, _om_labels(**srv), [sc.kv_usage] * len(times))
        pool = {"namespace": ns, "name": "llama-pool"}
        for metric, value in (
            ("inference_pool_ready_pods", sc.ready_pods),
            ("inference_pool_average_queue_size", sc.queue),
        ):
            add(metric, "gauge", metric, _om_labels(**pool), [value] * len(times))

    with path.open("w") as out:
        for family, (kind, lines) in families.items():
            out.write(f"# TYPE {family} {kind}\n")
            out.write("\n".join(lines))
            out.write("\n")
        out.write("# EOF\n")


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.fail(
            f"{name} is not installed; these tests need a real Prometheus: apt-get install prometheus"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    prometheus, promtool = _tool("prometheus"), _tool("promtool")
    root = tmp_path_factory.mktemp("prometheus")
    data, om = root / "data", root / "series.om"
    write_openmetrics(om, end=int(time.time()) - 5)
    backfill = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert backfill.returncode == 0, f"promtool failed:\n{backfill.stdout}\n{backfill.stderr}"
    config = root / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    port = _free_port()
    log = (root / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=30d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {proc.returncode}: {(root / 'prometheus.log').read_text()}"
                )
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class RawPrometheus:
    """The test's own SignalSource: Prometheus' raw HTTP API through httpx."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)
        self.queries: list[str] = []

    def query_value(self, promql: str) -> float | None:
        self.queries.append(promql)
        response = self.client.get("/api/v1/query", params={"query": promql})
        assert response.status_code == 200, f"{promql!r}: {response.text}"
        result = response.json()["data"]["result"]
        values = [float(item["value"][1]) for item in result]
        known = [v for v in values if not math.isnan(v)]
        return max(known) if known else None


@pytest.fixture(scope="module")
def source(prometheus_url: str) -> Iterator[RawPrometheus]:
    raw = RawPrometheus(prometheus_url)
    yield raw
    raw.client.close()


@pytest.fixture(scope="module")
def policy() -> SeverityPolicy:
    return load_policy(SHIPPED)


def _alert(namespace: str) -> dict[str, str]:
    return {"alertname": "VLLMServiceDegraded", "namespace": namespace, "severity": "warning"}


@pytest.mark.parametrize("namespace", list(EXPECTED))
def test_classify_scenarios_through_real_prometheus(
    namespace: str, source: RawPrometheus, policy: SeverityPolicy
) -> None:
    signals = fetch_signals(_alert(namespace), policy, source)
    result = classify(_alert(namespace), signals, policy)
    level, rule = EXPECTED[namespace]
    assert (result.severity.value, result.rule) == (level, rule), (result.explanation, signals)
    assert result.labels_only is False


def test_twelve_percent_errors_explained(source: RawPrometheus, policy: SeverityPolicy) -> None:
    signals = fetch_signals(_alert("llm-errors"), policy, source)
    assert signals["error_rate_pct"] == pytest.approx(12.0, rel=1e-6)
    assert signals["p95_latency_seconds"] == pytest.approx(0.65, rel=1e-6)
    assert signals["kv_cache_usage"] == pytest.approx(0.4)
    assert signals["aborted_pct"] == pytest.approx(1.0, rel=1e-6)
    assert signals["ready_pods"] == 4.0
    result = classify(_alert("llm-errors"), signals, policy)
    assert result.explanation == "P1 by rule 'error-rate-high': error_rate_pct=12 > 10"
    assert result.signals_used == {"error_rate_pct": pytest.approx(12.0, rel=1e-6)}
    assert "slo-fast-burn" in result.matched_rules


def _burn_rates(
    source: RawPrometheus, policy: SeverityPolicy, namespace: str
) -> dict[timedelta, float | None]:
    signals = fetch_signals(_alert(namespace), policy, source)
    return {
        timedelta(minutes=5): signals["burn_rate_5m"],
        timedelta(minutes=30): signals["burn_rate_30m"],
        timedelta(hours=1): signals["burn_rate_1h"],
        timedelta(hours=6): signals["burn_rate_6h"],
    }


def test_burn_rate_twenty_pages(source: RawPrometheus, policy: SeverityPolicy) -> None:
    rates = _burn_rates(source, policy, "llm-burn")
    assert all(r == pytest.approx(20.0, rel=1e-6) for r in rates.values()), rates
    decision = slo.evaluate_burn_rates(rates)
    assert decision.action == "page"
    assert decision.explanation == "page by fast-burn: burn rate 1h=20 and 5m=20 both > 14.4"
    result = classify(_alert("llm-burn"), fetch_signals(_alert("llm-burn"), policy, source), policy)
    assert result.explanation.startswith(
        "P1 by rule 'slo-fast-burn': burn_rate_1h=20 > 14.4; burn_rate_5m=20 > 14.4"
    )
    assert "error-rate-medium" in result.matched_rules


def test_burn_rate_eight_tickets(source: RawPrometheus, policy: SeverityPolicy) -> None:
    rates = _burn_rates(source, policy, "llm-slowburn")
    assert all(r == pytest.approx(8.0, rel=1e-6) for r in rates.values()), rates
    assert slo.evaluate_burn_rates(rates).action == "ticket"


def test_short_spike_does_not_page(source: RawPrometheus, policy: SeverityPolicy) -> None:
    rates = _burn_rates(source, policy, "llm-spike")
    five, thirty, hour, six = (rates[timedelta(minutes=m)] for m in (5, 30, 60, 360))
    assert five == pytest.approx(50.0, rel=0.02)
    assert hour == pytest.approx(9.17, rel=0.05)
    assert thirty == pytest.approx(17.3, rel=0.05)
    assert six == pytest.approx(2.36, rel=0.05)
    assert slo.evaluate_burn_rates(rates).action == "none"


def test_outage_signals_and_nan(source: RawPrometheus, policy: SeverityPolicy) -> None:
    signals = fetch_signals(_alert("llm-down"), policy, source)
    assert signals["error_rate_pct"] == pytest.approx(100.0)
    assert signals["ready_pods"] == 0.0
    assert signals["p95_latency_seconds"] is None  # 0/0 in histogram_quantile → NaN → unknown
    assert signals["aborted_pct"] is None
    result = classify(_alert("llm-down"), signals, policy)
    assert result.matched_rules[:2] == ("error-rate-outage", "no-ready-pods")
    assert "signals unavailable: p95_latency_seconds" in result.explanation


def test_namespace_without_data(source: RawPrometheus, policy: SeverityPolicy) -> None:
    signals = fetch_signals(_alert("no-such-namespace"), policy, source)
    assert set(signals.values()) == {None}
    result = classify(_alert("no-such-namespace"), signals, policy)
    assert result.severity.value == "P3"
    assert result.explanation.startswith(
        "P3 by default: no rule matched (signals unavailable: error_rate_pct,"
    )


def test_hostile_namespace_cannot_inject(source: RawPrometheus, policy: SeverityPolicy) -> None:
    hostile = 'llm-healthy"} or vector(1000) or up{namespace="'
    signals = fetch_signals(_alert(hostile), policy, source)
    assert set(signals.values()) == {None}  # no series has that literal namespace
    assert all(hostile not in q for q in source.queries[-len(signals) :])


@pytest.mark.parametrize("value", ['a"b\\c', "line\nbreak", "bell\x07tab\t", "ünïcødé ✓", 'x"} or up{a=~".*'])
def test_promql_string_round_trips(prometheus_url: str, value: str) -> None:
    # ("$" is left out: label_replace itself expands $name in its replacement argument.)
    query = f'label_replace(vector(1), "x", {promql_string(value)}, "", "")'
    body = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=10).json()
    assert body["status"] == "success", body
    assert body["data"]["result"][0]["metric"]["x"] == value


def test_cli_with_prometheus(prometheus_url: str, tmp_path: Path) -> None:
    import argparse

    alert = {"labels": _alert("llm-errors"), "annotations": {}, "status": "firing"}
    webhook = {"version": "4", "status": "firing", "alerts": [alert, {**alert, "labels": _alert("llm-kv")}]}
    file = tmp_path / "webhook.json"
    file.write_text(json.dumps(webhook))
    parser = argparse.ArgumentParser(prog="incident-bot")
    add_classify_parser(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["classify", "--alert", str(file), "--prometheus", prometheus_url])
    out, err = io.StringIO(), io.StringIO()
    assert args.handler(args, stdout=out, stderr=err) == 0, err.getvalue()
    text = out.getvalue()
    assert "severity: P1 (high; #incidents-high; pages)" in text
    assert "explanation: P1 by rule 'error-rate-high': error_rate_pct=12 > 10" in text
    assert "kv-cache-exhausted" in text
    assert f"signals ({prometheus_url}): error_rate_pct=12," in text
    assert "labels alone" not in text

    args = parser.parse_args(["classify", "--json", "--alert", str(file), "--prometheus", prometheus_url])
    out = io.StringIO()
    assert args.handler(args, stdout=out, stderr=err) == 0
    data = json.loads(out.getvalue())
    assert (data["severity"], data["rule"], data["labels_only"]) == ("P1", "error-rate-high", False)
    assert data["alerts"][1]["signals"]["kv_cache_usage"] == pytest.approx(0.97)


def test_cli_with_unreachable_prometheus_degrades(tmp_path: Path) -> None:
    import argparse

    file = tmp_path / "alert.json"
    file.write_text(json.dumps({"labels": _alert("llm-errors")}))
    parser = argparse.ArgumentParser(prog="incident-bot")
    add_classify_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["classify", "--alert", str(file), "--prometheus", f"http://127.0.0.1:{_free_port()}"]
    )
    out = io.StringIO()
    assert args.handler(args, stdout=out, stderr=io.StringIO()) == 0
    assert "P3 by default: no rule matched (signals unavailable: error_rate_pct," in out.getvalue()
