"""Game day, canary gone bad: an Argo Rollout's bad canary is aborted by the runbook, unattended.

    sandbox: decode tier = Argo Rollout (emulated controller); scenario canary-gone-bad rolls a broken image:
    the Rollout pauses at 20 % ─▶ the emulated vLLM servers fail 20 % of requests (gateway error counters)
        ◀─scrape 1 s─ Prometheus 2.42 evaluates the SHIPPED VLLMHighErrorRate ─▶ Alertmanager ─▶ bot web
        ─▶ Redis ─▶ real Celery worker: incident; high-error-rate runbook (automatic): argo.status finds the
        Rollout mid-canary ─▶ argo.abort (PATCH rollouts/vllm-decode/status {"status":{"abort":true}})
        ─▶ controller: weight 0, canary scaled to 0, stable serves ─▶ errors stop ─▶ alert resolves
        ─▶ resolved webhook ─▶ incident resolved

The only changes to the shipped rule are VLLMHighErrorRate's ``for:`` (5m → 3s) and its rate windows
(``[5m]`` → ``[15s]``), so it fires and resolves within the test (checked by
``test_rules_copy_changes_only_for_and_windows``). The bot's own PromQL steps are left without a Prometheus
URL: the runbook's 5-minute error-rate query would keep its verification waiting for five minutes after the
fix; that the errors stopped is shown by the real Prometheus resolving the shipped alert instead.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

import workers.celery_app
import workers.pagerduty_tasks
import workers.runbook_tasks as runbook_tasks
import workers.slack_tasks
from bot import wiring
from bot.integrations.argo import ArgoRollouts
from bot.integrations.kube import KubeClient
from bot.models import IncidentStatus
from bot.runbook.engine import Engine, RunStatus
from bot.runtime import serve_in_thread
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.scenario import ScenarioPlayer, load_scenario
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender, build_engine, build_runtime
from tests.gameday.test_gameday import AM_CONFIG, SHIPPED_RULES, binaries, gameday_settings, pd
from tests.support.fixtures import worker_idle
from tests.support.prometheus import PrometheusProcess, run_prometheus
from tests.support.prometheus import wait_until as poll
from tests.support.services import Alertmanager

pytestmark = pytest.mark.integration
__all__ = ["binaries", "gameday_settings", "pd"]  # fixtures shared with the saturation game day

ALERT = "VLLMHighErrorRate"
NAMESPACE = "llm-d"
ABORT_PATH = rf"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts/vllm-decode/status"


def rules_for_test(shipped: dict[str, Any]) -> dict[str, Any]:
    """The shipped groups with ALERT's ``for:`` at 3s and its ``[5m]`` windows at ``[15s]``."""
    copied = copy.deepcopy(shipped)
    matches = [r for g in copied["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    assert len(matches) == 1
    matches[0]["for"] = "3s"
    matches[0]["expr"] = matches[0]["expr"].replace("[5m]", "[15s]")
    return copied


def test_rules_copy_changes_only_for_and_windows() -> None:
    shipped = yaml.safe_load(SHIPPED_RULES.read_text())
    copied = rules_for_test(shipped)
    changed = [
        (a.get("alert") or a.get("record"), key)
        for g_a, g_b in zip(shipped["groups"], copied["groups"], strict=True)
        for a, b in zip(g_a["rules"], g_b["rules"], strict=True)
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]
    assert changed == [(ALERT, "expr"), (ALERT, "for")]
    rule = next(r for g in copied["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    assert (
        re.sub(r"\[15s\]", "[5m]", rule["expr"])
        == next(r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == ALERT)["expr"]
    )


@pytest.fixture
def sandbox(tmp_path: Path, binaries: None) -> Iterator[Sandbox]:
    """The decode tier as an Argo canary Rollout of 4 replicas behind two emulated vLLM servers."""
    config = SandboxConfig(namespace=NAMESPACE, decode_kind="Rollout", decode_replicas=4, vllm_servers=2)
    with Sandbox(config, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
def loop(
    gameday_settings: Settings,
    sandbox: Sandbox,
    store: IncidentStore,
    celery_worker: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[PrometheusProcess, Engine]]:
    """Bot web + wired worker, Alertmanager pointed at it, Prometheus (the test's rules) at both."""
    settings = gameday_settings.model_copy(update={"runbook_recheck_prometheus": False})
    am: Alertmanager | None = None
    engine = build_engine(settings)
    workers.slack_tasks.use_runtime(build_runtime(settings, sender=CeleryTaskSender(settings)))
    workers.pagerduty_tasks.use_sync(wiring.build_sync(settings, store))
    workers.celery_app.use_fanout_settings(settings)
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    monkeypatch.setattr(runbook_tasks, "get_settings", lambda: settings)
    try:
        with serve_in_thread(create_app(settings)) as bot_url:
            token = settings.alertmanager_token.get_secret_value()  # type: ignore[union-attr]
            am = Alertmanager(AM_CONFIG.format(url=bot_url, token=token))
            am.start()
            rules = rules_for_test(yaml.safe_load(SHIPPED_RULES.read_text()))
            targets = [url.removeprefix("http://") for url in sandbox.vllm_endpoints]
            with run_prometheus(
                tmp_path / "prometheus",
                scrape_configs=[
                    {
                        "job_name": "vllm",
                        "static_configs": [{"targets": targets, "labels": {"namespace": NAMESPACE}}],
                    }
                ],
                extra_config={
                    "rule_files": ["llmd-serving.rules.yaml"],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]
                    },
                },
                extra_files={"llmd-serving.rules.yaml": yaml.safe_dump(rules, sort_keys=False)},
                extra_args=["--rules.alert.resend-delay=1s"],
            ) as prom:
                yield prom, engine
                broker = redis.Redis.from_url(settings.effective_broker_url)
                poll(lambda: worker_idle(celery_worker, broker), timeout=30, what="the worker to go idle")
                broker.close()
    finally:
        engine.services.close()
        if am is not None:
            am.cleanup()
        workers.celery_app.use_fanout_settings(None)
        workers.pagerduty_tasks.use_sync(None)
        workers.slack_tasks.use_runtime(None)


def scalar(prom: PrometheusProcess, promql: str) -> float | None:
    result = prom.get_json("/api/v1/query", {"query": promql})["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_game_day_bad_canary_is_aborted_and_the_incident_resolves(
    loop: tuple[PrometheusProcess, Engine],
    sandbox: Sandbox,
    store: IncidentStore,
    pd: PagerDutyEmulator,
) -> None:
    prom, engine = loop
    started = time.monotonic()
    ratio = (
        f'sum(rate(inference_objective_request_error_total{{namespace="{NAMESPACE}"}}[15s]))'
        f' / sum(rate(inference_objective_request_total{{namespace="{NAMESPACE}"}}[15s]))'
    )
    prom.wait_targets_up(2, job="vllm")
    player = ScenarioPlayer(load_scenario("canary-gone-bad"), list(sandbox.vllm or []), sandbox=sandbox)
    player.advance_to(0)  # 20 req/s offered to the pool, none failing
    poll(lambda: scalar(prom, ratio) == 0, timeout=20, what="the gateway counters scraped, no errors")
    sandbox.kube.clear_requests()
    player.advance_to(5)  # the broken canary takes 20 % of the traffic
    argo = ArgoRollouts(KubeClient.from_kubeconfig(str(sandbox.kubeconfig)))
    assert argo.status(NAMESPACE, "vllm-decode").canary_weight == 20

    incident = poll(
        lambda: (store.recent() or [None])[0],
        timeout=60,
        what="an incident opened from Alertmanager's notification",
        on_timeout=lambda: f"error ratio {scalar(prom, ratio)}\n{prom.log_tail()}",
    )
    peak = scalar(prom, f"max_over_time(({ratio})[1m:1s])")
    assert peak is not None and 0.1 < peak < 0.3, peak  # ~ the canary's 20 % weight
    poll(
        lambda: argo.status(NAMESPACE, "vllm-decode").aborted,
        timeout=60,
        what="the runbook to abort the Rollout",
        on_timeout=lambda: store.timeline(incident.id),
    )
    resolved = poll(
        lambda: (i := store.get(incident.id)).status is IncidentStatus.RESOLVED and i,
        timeout=60,
        what="the incident resolved by Alertmanager's resolved notification",
        on_timeout=lambda: f"error ratio {scalar(prom, ratio)}; {store.timeline(incident.id)}",
    )
    assert [a.labels["alertname"] for a in resolved.alerts.values()] == [ALERT]

    # the cluster: aborted once, back to stable, nothing else changed
    state = argo.status(NAMESPACE, "vllm-decode")
    assert (state.phase, state.canary_weight, state.stable_images) == (
        "Degraded",
        0,
        ("vllm/vllm-openai:v0.8.5",),
    )
    assert state.ready_replicas == 4 and sandbox.decode_ready() == 4
    assert sandbox.kube.count("PATCH", ABORT_PATH, mutating=True) == 1
    assert sandbox.kube.count(mutating=True) == 1, [r.path for r in sandbox.kube.requests if r.mutating]
    poll(lambda: scalar(prom, ratio) == 0, timeout=30, what="no failing request left in the 15s window")

    # the run: automatic high-error-rate, argo steps first, Deployment steps skipped, succeeded
    run = poll(
        lambda: next((r for r in engine.runs_of(incident.id) if r.status.terminal), None),
        timeout=30,
        what="the high-error-rate run to finish",
    )
    assert (run.runbook, run.trigger, run.status) == ("high-error-rate", "automatic", RunStatus.SUCCEEDED)
    timeline = store.timeline(incident.id)
    steps = {t.data["step"]: t for t in timeline if t.kind == "runbook_step"}
    assert steps["rollout_state"].data["output"]["canary_in_progress"] is True
    assert "aborted Rollout llm-d/vllm-decode at canary weight 20%" in steps["abort_canary"].message
    assert steps["stable_healthy"].data["status"] == "ok"
    assert steps["rollback"].data["status"] == "skipped"
    kinds = [t.kind for t in timeline]
    assert kinds[0] == "opened" and kinds.count("resolved") == 1
    assert timeline.index(steps["abort_canary"]) < kinds.index("resolved")
    changes = [c.body["payload"] for c in pd.calls if c.path == "/v2/change/enqueue"]
    assert [c["custom_details"]["action"] for c in changes] == ["argo.abort"]
    total_s = time.monotonic() - started
    print(f"\ncanary game day: {resolved.severity.value}, resolved after {total_s:.1f}s")
    assert total_s < 150
