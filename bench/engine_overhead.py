"""Runbook engine overhead per step, and per-call latency of the loopback emulators against a bare server.

A runbook of N read-only `k8s.get_pods` steps runs through the engine (intent/result records, guards,
timeline entries, expression context) against the sandbox's Kubernetes API emulator; the baseline makes
the same N `list_pods` calls through the same adapter directly. Overhead per step = engine time per step
minus baseline time per step; the ratio is engine / baseline. Runs on a private redis-server.

The same run also times single small requests, each beside a bare loopback HTTP server (stdlib
ThreadingHTTPServer, HTTP/1.1 keep-alive, TCP_NODELAY, a prebuilt body of the emulator's answer, the
emulator's TLS setup) called through the same client, calls interleaved:

* Kubernetes: GET /api/v1/namespaces/llm-d/pods?labelSelector=... (the decode pods) over HTTPS, through
  the kubernetes client's ApiClient (param_serialize + call_api: urllib3, its CA, the bearer token);
* Slack: POST /api/chat.postMessage (plain HTTP), PagerDuty: POST /v2/enqueue (HTTPS), vLLM: GET
  /version (plain HTTP, Starlette on uvicorn), each with one httpx.Client.

The last line is the figures as JSON. Target: every emulator <= 5 ms per call at p50.

Usage: .venv/bin/python bench/engine_overhead.py [--steps 100] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx
import kubernetes.client as k8s
import redis

import bot.steps  # noqa: F401  (registers the shipped step types)
from bench.common import bare_http_server, machine, notification, pct, time_interleaved
from bot.integrations.kube import KubeClient, label_selector_string, load_api_client
from bot.models import AlertmanagerWebhook
from bot.plan.schema import parse_runbook
from bot.runbook.engine import Engine
from bot.runbook.services import Services
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.slack_emulator import SlackEmulator
from bot.sandbox.tls import issue_loopback_certificate
from bot.settings import Settings
from bot.storage.controls import AutomationControls
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore
from bot.storage.runs import RunStore
from tests.support.services import RedisServer

TARGET_P50_MS = 5.0


def runbook_text(steps: int) -> str:
    """A runbook of `steps` read-only pod listings."""
    lines = ["name: bench", "description: engine overhead benchmark", "steps:"]
    for i in range(steps):
        lines += [
            f"  - id: pods{i}",
            "    type: k8s.get_pods",
            "    params: {namespace: llm-d, deployment: vllm-decode}",
        ]
    return "\n".join(lines) + "\n"


def kube_getter(api: k8s.ApiClient, path: str, query: list[tuple[str, str]]) -> Callable[[], bytes]:
    """One GET through the kubernetes client's ApiClient (URL, auth, urllib3 pool), body read in full."""
    method, url, headers, _, _ = api.param_serialize(
        "GET",
        path,
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )

    def call() -> bytes:
        response = api.call_api(method, url, header_params=headers, _request_timeout=15)
        data = response.read()
        assert response.status == 200, (response.status, data[:200])
        return data

    return call


def httpx_caller(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Callable[[], bytes]:
    """One request through `client`, checked for a 2xx."""

    def call() -> bytes:
        response = client.request(method, url, **kwargs)
        assert response.is_success, (response.status_code, response.text[:200])
        return response.content

    return call


def compare(
    name: str, baseline: Callable[[], object], emulator: Callable[[], object], calls: int
) -> dict[str, float]:
    """p50/p95 in ms of the bare server and the emulator, calls interleaved."""
    samples = time_interleaved({"baseline": baseline, "emulator": emulator}, calls)
    figures = {
        f"{name}_{who}_{q}_ms": round(pct(samples[who], p), 3)
        for who in ("baseline", "emulator")
        for q, p in (("p50", 50), ("p95", 95))
    }
    return figures


def line(label: str, figures: dict[str, float], prefix: str, size: int) -> list[str]:
    """Two output lines (bare server, emulator) and the ratio of their p50s."""
    b50, b95 = figures[f"{prefix}_baseline_p50_ms"], figures[f"{prefix}_baseline_p95_ms"]
    e50, e95 = figures[f"{prefix}_emulator_p50_ms"], figures[f"{prefix}_emulator_p95_ms"]
    verdict = "meets" if e50 <= TARGET_P50_MS else "MISSES"
    return [
        f"  {label + ' bare server':40} p50 {b50:7.2f} ms  p95 {b95:7.2f} ms  ({size} B body)",
        f"  {label + ' emulator':40} p50 {e50:7.2f} ms  p95 {e95:7.2f} ms  "
        f"(ratio emulator/baseline {e50 / b50:.2f}; {verdict} <= {TARGET_P50_MS:.0f} ms)",
    ]


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--calls", type=int, default=300, help="samples per per-call latency figure")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    out: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    server = RedisServer()
    server.start()
    try:
        with Sandbox(SandboxConfig(decode_replicas=2)) as sandbox:
            # -- the Kubernetes API emulator beside a bare TLS server, through one ApiClient stack ----
            api = load_api_client(kubeconfig=str(sandbox.kubeconfig), mode="kubeconfig")
            deployment = json.loads(
                kube_getter(api, "/apis/apps/v1/namespaces/llm-d/deployments/vllm-decode", [])()
            )
            selector = label_selector_string(deployment["spec"]["selector"])
            emulator_call = kube_getter(api, "/api/v1/namespaces/llm-d/pods", [("labelSelector", selector)])
            pod_list = emulator_call()
            certificate = issue_loopback_certificate()
            bare, bare_url = bare_http_server(pod_list, tls=certificate.server_context())
            # A fresh Configuration: a deep copy of the loaded one keeps the kubeconfig loader's
            # refresh_api_key_hook, which points the copy's TLS settings back at the emulator.
            configuration = k8s.Configuration(
                host=bare_url, api_key={"BearerToken": f"Bearer {sandbox.token}"}
            )
            configuration.ssl_ca_cert = str(certificate.write_ca(workdir / "bare-ca.pem"))
            bare_api = k8s.ApiClient(configuration)
            baseline_call = kube_getter(
                bare_api, "/api/v1/namespaces/llm-d/pods", [("labelSelector", selector)]
            )
            assert baseline_call() == pod_list
            figures |= compare("kube", baseline_call, emulator_call, args.calls)
            pool = api.rest_client.pool_manager.connection_from_url(api.configuration.host)
            kube_connections = pool.num_connections
            bare.shutdown()
            bare.server_close()
            out += line("k8s GET pods?labelSelector=", figures, "kube", len(pod_list))
            out.append(f"    (selector {selector}; {kube_connections} keep-alive connection(s) used)")

            # -- the adapter and the engine (the original benchmark) --------------------------------
            settings = Settings(
                redis_url=server.url,
                key_prefix="bench:",
                kubeconfig=str(sandbox.kubeconfig),
                kube_config_mode="kubeconfig",
                alertmanager_token="x",
            )
            client = redis.Redis.from_url(server.url)
            store = IncidentStore(client, prefix="bench:")
            kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
            webhook = AlertmanagerWebhook.model_validate(notification(1, 1))
            incident_id = store.apply_notification(webhook, webhook.idempotency_key()).incident_id
            assert incident_id is not None
            engine = Engine(
                RunStore(client, "bench:"),
                Guards.from_settings(client, settings),
                store,
                Services(settings, store, kube=kube),
                settings,
                {"bench": parse_runbook(runbook_text(args.steps), "bench.yaml")},
                AutomationControls(client, "bench:"),
            )

            for _ in range(20):  # warm-up: connections, caches
                kube.list_pods("llm-d", deployment="vllm-decode")
            adapter: list[float] = []
            started = time.perf_counter()
            for _ in range(args.steps):
                t0 = time.perf_counter()
                kube.list_pods("llm-d", deployment="vllm-decode")
                adapter.append((time.perf_counter() - t0) * 1000)
            direct = (time.perf_counter() - started) / args.steps

            run, _ = engine.create_run(incident_id, "bench")
            started = time.perf_counter()
            done = engine.run_inline(run.id)
            through_engine = (time.perf_counter() - started) / args.steps
            assert done.status.value == "succeeded", done.status
            entries = sum(1 for t in store.timeline(incident_id) if t.kind == "runbook_step")
            engine.services.close()

            # -- vLLM emulator (Starlette on uvicorn, plain HTTP) -------------------------------------
            with httpx.Client(timeout=10) as http:
                vllm_url = sandbox.vllm_endpoints[0] + "/version"
                version = http.get(vllm_url).content
                bare, bare_url = bare_http_server(version)
                try:
                    figures |= compare(
                        "vllm",
                        httpx_caller(http, "GET", bare_url + "/version"),
                        httpx_caller(http, "GET", vllm_url),
                        args.calls,
                    )
                finally:
                    bare.shutdown()
                    bare.server_close()
                vllm_lines = line("vLLM GET /version", figures, "vllm", len(version))
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    # -- Slack emulator (loopback.py, plain HTTP) ---------------------------------------------------
    with SlackEmulator() as slack, httpx.Client(timeout=10) as http:
        post = {
            "json": {"channel": "#incidents-medium", "text": "bench: decode queue depth above 10"},
            "headers": {"Authorization": f"Bearer {slack.token}"},
        }
        slack_url = slack.api_url + "chat.postMessage"
        answer = http.post(slack_url, **post).content
        assert json.loads(answer)["ok"], answer
        bare, bare_url = bare_http_server(answer, content_type="application/json; charset=utf-8")
        try:
            figures |= compare(
                "slack",
                httpx_caller(http, "POST", bare_url + "/api/chat.postMessage", **post),
                httpx_caller(http, "POST", slack_url, **post),
                args.calls,
            )
        finally:
            bare.shutdown()
            bare.server_close()
        slack_lines = line("Slack POST chat.postMessage", figures, "slack", len(answer))

    # -- PagerDuty emulator (loopback.py, HTTPS) ----------------------------------------------------
    event = {
        "routing_key": "R0UTINGKEY0000000000000000000000",
        "event_action": "trigger",
        "dedup_key": "bench-1",
        "payload": {"summary": "decode queue depth above 10", "source": "llm-d", "severity": "warning"},
    }
    with PagerDutyEmulator() as pd:
        pd_ca = ssl.create_default_context(cafile=str(pd.ca_path))
        with httpx.Client(timeout=10, verify=pd_ca) as http:
            answer = http.post(pd.url + "/v2/enqueue", json=event).content
            certificate = issue_loopback_certificate()
            bare, bare_url = bare_http_server(answer, tls=certificate.server_context())
            bare_ca = ssl.create_default_context(cadata=certificate.ca_pem.decode())
            try:
                with httpx.Client(timeout=10, verify=bare_ca) as bare_http:
                    figures |= compare(
                        "pagerduty",
                        httpx_caller(bare_http, "POST", bare_url + "/v2/enqueue", json=event),
                        httpx_caller(http, "POST", pd.url + "/v2/enqueue", json=event),
                        args.calls,
                    )
            finally:
                bare.shutdown()
                bare.server_close()
            pd_lines = line("PagerDuty POST /v2/enqueue", figures, "pagerduty", len(answer))

    figures |= {
        "adapter_p50_ms": round(pct(adapter, 50), 3),
        "adapter_p95_ms": round(pct(adapter, 95), 3),
        "adapter_mean_ms": round(direct * 1000, 3),
        "engine_step_ms": round(through_engine * 1000, 3),
        "engine_overhead_ms": round((through_engine - direct) * 1000, 3),
        "ratio_engine_baseline": round(through_engine / direct, 3),
    }
    print(f"machine: {machine()}")
    print(
        f"per-call latency, {args.calls} calls each, interleaved with a bare loopback server "
        f"(ThreadingHTTPServer, keep-alive, TCP_NODELAY, same TLS, same client):"
    )
    for text in out + vllm_lines + slack_lines + pd_lines:
        print(text)
    print(f"{args.steps} read-only k8s.get_pods steps against the sandbox's Kubernetes API emulator")
    print(
        f"adapter call list_pods (GET deployment + GET pods): p50 {figures['adapter_p50_ms']:.2f} ms  "
        f"p95 {figures['adapter_p95_ms']:.2f} ms"
    )
    print(f"baseline (adapter call alone):   {direct * 1000:7.2f} ms per call")
    print(
        f"through the runbook engine:      {through_engine * 1000:7.2f} ms per step "
        f"({entries} timeline entries)"
    )
    print(
        f"engine overhead per step:        {(through_engine - direct) * 1000:7.2f} ms "
        f"(ratio engine/baseline {through_engine / direct:.2f})"
    )
    emulators = ("kube", "vllm", "slack", "pagerduty")
    missed = [e for e in emulators if figures[f"{e}_emulator_p50_ms"] > TARGET_P50_MS]
    figures |= {
        "baseline_p50_ms": figures["kube_baseline_p50_ms"],
        "emulator_p50_ms": figures["kube_emulator_p50_ms"],
        "ratio_emulator_baseline": round(
            figures["kube_emulator_p50_ms"] / figures["kube_baseline_p50_ms"], 3
        ),
        "steps": args.steps,
        "calls": args.calls,
    }
    print(
        f"target: every emulator <= {TARGET_P50_MS:.0f} ms per call at p50: "
        + ("met" if not missed else f"NOT met ({', '.join(missed)})")
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
