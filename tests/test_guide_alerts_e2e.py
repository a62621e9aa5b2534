"""The guide's six alert rules through real Prometheus and real Alertmanager into the bot.

    Prometheus (the guide's rules, firing at once) ─▶ Alertmanager ─Bearer─▶ bot web (uvicorn)
        ─▶ Redis ─▶ real Celery worker: one incident per alert, classified by the shipped policy
        ─▶ automatic runbook (dry run) ─▶ target from the sandbox's service catalog ─▶ emulated Kubernetes

The rules are tests/fixtures/rules/guide-rules.yaml (the guide's labels and annotations: severity,
``service: llm-d``, ``team: sre``, no namespace). Only what makes them fire during a test changes
(``test_rules_copy_changes_only_expr_for_and_interval`` checks it): ``for`` and the group interval, and the
expressions over the guide's ``llm_d_*`` metrics (which nothing exports here) become constants that already
cross the rule's own threshold. LLMDServiceDown keeps its expression: Prometheus scrapes a
``job="llm-d-service"`` target on a closed loopback port, so ``up == 0`` is real.

Asserted for each incident: its severity and the reason the shipped policy gives (the guide's levels), the
runbook the worker started (or none for the notify-only alert) and that the run's target is the sandbox's
decode Deployment, found through the catalog entry for the guide's labels although no alert has a
namespace label. The runs are dry runs: they read the sandbox workload and change nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

import workers.celery_app
import workers.runbook_tasks as runbook_tasks
import workers.slack_tasks
from bot.models import Incident
from bot.runbook.engine import Engine, RunRecord
from bot.runtime import serve_in_thread
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender, build_engine, build_runtime
from tests.support.fixtures import worker_idle
from tests.support.prometheus import PrometheusProcess, free_port, require_binary, run_prometheus
from tests.support.prometheus import wait_until as poll
from tests.support.services import Alertmanager

pytestmark = pytest.mark.integration

GUIDE_RULES = Path(__file__).parent / "fixtures" / "rules" / "guide-rules.yaml"
NAMESPACE = "llm-d"
#: The guide's metrics are exported by nothing here: each expression becomes a constant above its threshold.
FIRING_EXPR = {
    "LLMDHighErrorRate": "vector(12) > 5",  # % of 5xx
    "LLMDHighLatency": "vector(4.2) > 3",  # p95 seconds
    "LLMDGPUHighUtilization": "vector(91) > 85",  # % GPU
    "LLMDMemoryPressure": "vector(93) > 90",  # % memory
    "LLMDKVCacheOverflow": "vector(150) > 100",  # evictions
}
#: alert -> (level, policy rule, part of its reason, runbook started or None: notify only)
EXPECTED: dict[str, tuple[str, str, str, str | None]] = {
    "LLMDServiceDown": ("P0", "guide-service-down", "the guide: Service Down is P0", "service-down"),
    "LLMDHighErrorRate": (
        "P1",
        "error-rate-critical-alert",
        "the guide: high error rate (>10%) is P1",
        "high-error-rate",
    ),
    "LLMDHighLatency": (
        "P2",
        "guide-high-latency",
        "the guide: High Inference Latency is P2",
        "high-latency",
    ),
    "LLMDGPUHighUtilization": (
        "P3",
        "capacity-warning-alert",
        "notify only (rule 'capacity-notify-only'): no runbook is started automatically",
        None,
    ),
    "LLMDMemoryPressure": ("P1", "guide-memory-pressure", "memory exhaustion is P1", "memory-pressure"),
    "LLMDKVCacheOverflow": ("P2", "kv-cache-pressure-alert", "KV-cache pressure", "kv-cache-exhaustion"),
}
AM_CONFIG = """
route:
  receiver: incident-bot
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: incident-bot
    webhook_configs:
      - url: {url}/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


def firing_copy(guide: dict[str, Any]) -> dict[str, Any]:
    """The guide's groups with ``for`` 0s, a 1 s interval and the constant expressions above."""
    copied = copy.deepcopy(guide)
    for group in copied["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
            rule["expr"] = FIRING_EXPR.get(rule["alert"], rule["expr"])
    return copied


def test_rules_copy_changes_only_expr_for_and_interval() -> None:
    guide = yaml.safe_load(GUIDE_RULES.read_text())
    copied = firing_copy(guide)
    rules = [r for g in guide["groups"] for r in g["rules"]]
    assert sorted(r["alert"] for r in rules) == sorted(EXPECTED)
    for before, after in zip(rules, [r for g in copied["groups"] for r in g["rules"]], strict=True):
        assert before["labels"] == after["labels"]
        assert set(before["labels"]) == {"severity", "service", "team"}  # no namespace, as the guide has it
        assert before["annotations"] == after["annotations"]
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed <= {"expr", "for"}, (before["alert"], changed)
    service_down = next(r for g in copied["groups"] for r in g["rules"] if r["alert"] == "LLMDServiceDown")
    assert service_down["expr"] == 'up{job="llm-d-service"} == 0'


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    require_binary("prometheus", env_var="PROMETHEUS_BIN")
    workdir = tmp_path / "sandbox"
    workdir.mkdir()
    with Sandbox(SandboxConfig(namespace=NAMESPACE, vllm_servers=1), workdir=workdir) as sb:
        yield sb


@pytest.fixture
def bot_settings(slack_settings: Settings, sandbox: Sandbox) -> Settings:
    """Slack on its emulator, runbooks against the sandbox with its catalog, automatic dry runs."""
    return slack_settings.model_copy(
        update={
            "kubeconfig": str(sandbox.kubeconfig),
            "kube_config_mode": "kubeconfig",
            "vllm_endpoints": sandbox.vllm_endpoints,
            "catalog": sandbox.catalog,
            "runbook_auto_run": True,
            "runbook_auto_dry_run": True,
        }
    )


@pytest.fixture
def loop(
    bot_settings: Settings,
    celery_worker: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[PrometheusProcess, Engine]]:
    """Bot web + wired worker, Alertmanager pointed at the bot, Prometheus with the guide's rules."""
    am: Alertmanager | None = None
    engine: Engine | None = None
    workers.slack_tasks.use_runtime(build_runtime(bot_settings, sender=CeleryTaskSender(bot_settings)))
    workers.celery_app.use_fanout_settings(bot_settings)
    try:
        with serve_in_thread(create_app(bot_settings)) as bot_url:
            token = bot_settings.alertmanager_token.get_secret_value()  # type: ignore[union-attr]
            am = Alertmanager(AM_CONFIG.format(url=bot_url, token=token))
            am.start()
            rules = firing_copy(yaml.safe_load(GUIDE_RULES.read_text()))
            with run_prometheus(
                tmp_path / "prometheus",
                scrape_configs=[
                    {  # nothing listens there: the guide's LLMDServiceDown sees up == 0
                        "job_name": "llm-d-service",
                        "static_configs": [{"targets": [f"127.0.0.1:{free_port()}"]}],
                    }
                ],
                extra_config={
                    "rule_files": ["guide.rules.yaml"],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]
                    },
                },
                extra_files={"guide.rules.yaml": yaml.safe_dump(rules, sort_keys=False)},
                extra_args=["--rules.alert.resend-delay=1s"],
            ) as prom:
                settings = bot_settings.model_copy(update={"prometheus_url": prom.url})
                engine = build_engine(settings)
                monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
                monkeypatch.setattr(runbook_tasks, "get_settings", lambda: settings)
                yield prom, engine
                broker = redis.Redis.from_url(settings.effective_broker_url)
                poll(lambda: worker_idle(celery_worker, broker), timeout=30, what="the worker to go idle")
                broker.close()
    finally:
        if engine is not None:
            engine.services.close()
        if am is not None:
            am.cleanup()
        workers.celery_app.use_fanout_settings(None)
        workers.slack_tasks.use_runtime(None)


def by_alert(store: IncidentStore) -> dict[str, Incident]:
    """The open incidents by the name of their (single) alert."""
    found: dict[str, Incident] = {}
    for incident in store.recent():
        names = {a.labels["alertname"] for a in incident.alerts.values()}
        if len(names) == 1:
            found[names.pop()] = incident
    return found


def started_runs(engine: Engine, incidents: dict[str, Incident]) -> dict[str, RunRecord] | None:
    """Each actionable alert's run once it has executed a step (None until all have)."""
    runs: dict[str, RunRecord] = {}
    for name, (_, _, _, runbook) in EXPECTED.items():
        if runbook is None:
            continue
        done = [r for r in engine.runs_of(incidents[name].id) if r.outputs or r.status.terminal]
        if not done:
            return None
        runs[name] = done[0]
    return runs


def test_guide_rules_fire_and_each_incident_gets_the_guides_level_reason_and_runbook(
    loop: tuple[PrometheusProcess, Engine], sandbox: Sandbox, store: IncidentStore
) -> None:
    prom, engine = loop
    sandbox.kube.clear_requests()
    incidents = poll(
        lambda: (found := by_alert(store)) and set(found) == set(EXPECTED) and found,
        timeout=45,
        what="one incident per guide alert from Alertmanager's notifications",
        on_timeout=lambda: f"{sorted(by_alert(store))}\n{prom.log_tail()}",
    )
    for name, (level, rule, reason, _) in EXPECTED.items():
        incident = incidents[name]
        (alert,) = incident.alerts.values()
        assert "namespace" not in alert.labels, alert.labels  # as the guide's rules leave them
        assert {alert.labels[k] for k in ("service", "team")} == {"llm-d", "sre"}
        assert incident.severity.value == level, incident.severity_reason
        assert incident.severity_reason.startswith(f"{level} by rule '{rule}'"), incident.severity_reason
        assert reason in incident.severity_reason
    # The guide's annotation templates were rendered by Prometheus, not by the bot.
    down = next(iter(incidents["LLMDServiceDown"].alerts.values()))
    assert down.labels["job"] == "llm-d-service" and down.labels["instance"].startswith("127.0.0.1:")
    assert down.annotations["description"] == (
        f"LLM-D service {down.labels['instance']} has been down for more than 1 minute"
    )
    assert next(iter(incidents["LLMDHighErrorRate"].alerts.values())).annotations["description"] == (
        "Error rate is 12% over the last 5 minutes"
    )

    runs = poll(
        lambda: started_runs(engine, incidents),
        timeout=60,
        what="the automatic runs to read their targets",
        on_timeout=lambda: str({n: engine.runs_of(i.id) for n, i in incidents.items()}),
    )
    for name, run in runs.items():
        expected_book = EXPECTED[name][3]
        all_runs = engine.runs_of(incidents[name].id)
        assert [(r.runbook, r.trigger, r.dry_run) for r in all_runs] == [(expected_book, "automatic", True)]
        assert run.target["target"] == f"{NAMESPACE}/vllm-decode", run.target
        assert run.target["source"] == "catalog entry 'llm-d-sandbox' (service=llm-d, team=sre)"
        workload = run.params.get("deployment") or run.params.get("decode_deployment")
        assert (run.params["namespace"], workload) == (NAMESPACE, "vllm-decode"), run.params
        entries = [t.message for t in store.timeline(incidents[name].id) if t.kind == "runbook_target"]
        assert entries == [
            f"Runbook {expected_book}: target {NAMESPACE}/vllm-decode via catalog entry 'llm-d-sandbox' "
            "(service=llm-d, team=sre)"
        ]
    # high-latency's prefill workload came from the catalog too (no default any more).
    assert runs["LLMDHighLatency"].params["prefill_deployment"] == "vllm-prefill"

    # The notify-only alert is announced and nothing is started for it.
    gpu = incidents["LLMDGPUHighUtilization"]
    assert "notify only (rule 'capacity-notify-only')" in gpu.severity_reason
    assert engine.runs_of(gpu.id) == []
    assert not [t for t in store.timeline(gpu.id) if t.kind.startswith("runbook")]

    # The dry runs read the sandbox's decode workload and changed nothing in the cluster.
    decode = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/vllm-decode"
    poll(
        lambda: engine.get_run(runs["LLMDServiceDown"].id).outputs.get("pods"),
        timeout=30,
        what="service-down to list the decode pods",
    )
    assert sandbox.kube.count("GET", decode) >= 1
    assert sandbox.kube.count(mutating=True) == 0
