"""Runbook engine overhead per step, excluding the action's own I/O.

A runbook of N read-only `k8s.get_pods` steps runs through the engine (intent/result records, guards,
timeline entries, expression context) against the sandbox's Kubernetes API emulator; the baseline makes
the same N `list_pods` calls through the same adapter directly. Overhead per step = engine time per step
minus baseline time per step; the ratio is engine / baseline. Runs on a private redis-server.

Usage: .venv/bin/python bench/engine_overhead.py [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis

from bench.common import machine, notification
from bot.controls import AutomationControls
from bot.incidents.store import IncidentStore
from bot.integrations.kube import KubeClient
from bot.models import AlertmanagerWebhook
from bot.runbook.engine import Engine
from bot.runbook.schema import parse_runbook
from bot.runbook.services import Services
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.settings import Settings
from tests.support.services import RedisServer


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


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        with Sandbox(SandboxConfig(decode_replicas=2)) as sandbox:
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
                client,
                store,
                Services(settings, store, kube=kube),
                settings,
                {"bench": parse_runbook(runbook_text(args.steps), "bench.yaml")},
                AutomationControls(client, "bench:"),
            )

            for _ in range(20):  # warm-up: connections, caches
                kube.list_pods("llm-d", deployment="vllm-decode")
            started = time.perf_counter()
            for _ in range(args.steps):
                kube.list_pods("llm-d", deployment="vllm-decode")
            direct = (time.perf_counter() - started) / args.steps

            run, _ = engine.create_run(incident_id, "bench")
            started = time.perf_counter()
            done = engine.run_inline(run.id)
            through_engine = (time.perf_counter() - started) / args.steps
            assert done.status.value == "succeeded", done.status
            entries = sum(1 for t in store.timeline(incident_id) if t.kind == "runbook_step")
            engine.services.close()
    finally:
        server.cleanup()
    print(f"machine: {machine()}")
    print(f"{args.steps} read-only k8s.get_pods steps against the sandbox's Kubernetes API emulator")
    print(f"baseline (adapter call alone):   {direct * 1000:7.2f} ms per call")
    print(
        f"through the runbook engine:      {through_engine * 1000:7.2f} ms per step "
        f"({entries} timeline entries)"
    )
    print(
        f"engine overhead per step:        {(through_engine - direct) * 1000:7.2f} ms "
        f"(ratio engine/baseline {through_engine / direct:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
