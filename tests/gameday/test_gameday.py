"""Game day: the whole closed loop, unattended, with every part real that can run here.

    bounded traffic ─▶ emulated vLLM servers (queue depth grows) ◀─scrape 1 s─ Prometheus 2.42
        Prometheus evaluates the SHIPPED serving rules ─▶ Alertmanager 0.25 ─Bearer─▶ bot web (uvicorn)
        ─▶ Redis ─▶ real Celery worker: incident P2 ─▶ Slack emulator; high-latency runbook (automatic)
        ─▶ emulated Kubernetes API: PATCH vllm-decode/scale ─▶ more ready decode replicas
        ─▶ queue depth falls ─▶ alert resolves ─▶ resolved webhook ─▶ incident resolved ─▶ Slack

The only change to the shipped rules is VLLMHighQueueDepth's ``for:`` (5m shipped, FAST_FOR here), so the
test fits in a minute: its expression, name, labels and annotations, and every other rule, are loaded
exactly as shipped (``test_rules_copy_changes_only_the_for_duration`` checks it). The other rules keep
their long ``for:``, so they cannot fire during the test (the saturated emulator also fills the KV cache:
VLLMKVCacheExhausted goes pending, never firing).

Load: the emulator serves 20 req/s per ready decode replica (max_num_seqs 16 / 0.8 s); its queue is
(share - 20) x 10 s, where share = offered_rps / ready decode replicas + real req/s at that server. With a
base offered load of 36 req/s over 2 replicas (18 each: no queue) and real traffic of 12 req/s over the
2 servers (+6 each), every server queues ~40 requests: above the alert's 20 and the runbook's
``steps.queue.queue_depth > 10``. The runbook adds 2 decode replicas: 36/4 + 6 = 15 req/s each, no queue.
"""

from __future__ import annotations

import copy
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from pydantic import SecretStr

import workers.celery_app
import workers.pagerduty_tasks
import workers.runbook_tasks as runbook_tasks
import workers.slack_tasks
from bot import wiring
from bot.models import IncidentStatus
from bot.runbook.engine import Engine, RunStatus
from bot.runtime import serve_in_thread
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.sandbox.traffic import BackgroundTraffic, TrafficPlan
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from bot.wiring import CeleryTaskSender, build_engine, build_runtime
from tests.support.fixtures import worker_idle
from tests.support.prometheus import PrometheusProcess, require_binary, run_prometheus
from tests.support.prometheus import wait_until as poll
from tests.support.services import Alertmanager

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RULES = ROOT / "deploy" / "monitoring" / "rules" / "llmd-serving.rules.yaml"
ALERT = "VLLMHighQueueDepth"
FAST_FOR = "3s"
NAMESPACE = "llm-d"
GROUP_KEY = f'{{}}:{{alertname="{ALERT}", namespace="{NAMESPACE}"}}'
SCALE_PATH = rf"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/vllm-decode/scale"
MEDIUM = "C0MED00001"  # the Slack emulator's #incidents-medium (P2)
FOOTER = re.compile(r"INC-\d+ · (\w+) · ")  # a threaded reply's context line: id · timeline kind · time

BASE_OFFERED_RPS = 36.0  # 18 req/s per decode replica: below the 20 req/s each serves
TRAFFIC_RPS = 12.0  # +6 req/s at each of the 2 servers: 24 > 20, ~40 queued per server
TRAFFIC_S = 75.0  # bounded: stopped as soon as the incident resolves

AM_CONFIG = """
route:
  receiver: incident-bot
  group_by: [alertname, namespace]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: incident-bot
    webhook_configs:
      - url: {url}/alertmanager
        send_resolved: true
        max_alerts: 100
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


def rules_for_test(shipped: dict[str, Any]) -> dict[str, Any]:
    """The shipped rule groups with ALERT's ``for:`` shortened to FAST_FOR; nothing else changes."""
    copied = copy.deepcopy(shipped)
    matches = [r for g in copied["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    assert len(matches) == 1, f"{ALERT} must be defined once in {SHIPPED_RULES}"
    matches[0]["for"] = FAST_FOR
    return copied


def test_rules_copy_changes_only_the_for_duration() -> None:
    shipped = yaml.safe_load(SHIPPED_RULES.read_text())
    copied = rules_for_test(shipped)
    changed = [
        (a.get("alert") or a.get("record"), key)
        for g_a, g_b in zip(shipped["groups"], copied["groups"], strict=True)
        for a, b in zip(g_a["rules"], g_b["rules"], strict=True)
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]
    assert changed == [(ALERT, "for")]


# --- the parts, each torn down by its fixture -------------------------------------------------------


@pytest.fixture
def binaries() -> None:
    """Fail (never skip) naming the Debian package when a server binary is missing."""
    require_binary("prometheus", env_var="PROMETHEUS_BIN")
    if shutil.which("alertmanager") is None:  # upstream's name; Debian's is prometheus-alertmanager
        require_binary("prometheus-alertmanager")


@pytest.fixture
def sandbox(tmp_path: Path, binaries: None) -> Iterator[Sandbox]:
    """Two decode replicas behind two emulated vLLM servers, offered 36 req/s: busy, not queueing."""
    config = SandboxConfig(
        namespace=NAMESPACE, decode_replicas=2, vllm_servers=2, offered_rps=BASE_OFFERED_RPS
    )
    with Sandbox(config, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
def pd() -> Iterator[PagerDutyEmulator]:
    with PagerDutyEmulator() as emu:
        yield emu


@pytest.fixture
def gameday_settings(
    slack_settings: Settings, pd: PagerDutyEmulator, sandbox: Sandbox, tmp_path: Path
) -> Settings:
    """Slack and PagerDuty on their emulators, the runbooks on the sandbox; automatic runs on.

    prometheus_url is set once Prometheus runs (see `loop`): the runbook's PromQL steps and the
    still-firing guard then ask the real server.
    """
    return slack_settings.model_copy(
        update={
            "pagerduty_routing_key": SecretStr("R0UTINGKEYGAMEDAY"),
            "pagerduty_api_token": SecretStr("pd-api-token-gameday"),
            "pagerduty_from_email": "incident-bot@example.com",
            "pagerduty_events_url": pd.url,
            "pagerduty_api_url": pd.url,
            "pagerduty_ca_bundle": pd.ca_path,
            "kubeconfig": str(sandbox.kubeconfig),
            "kube_config_mode": "kubeconfig",
            "vllm_endpoints": sandbox.vllm_endpoints,
            "runbook_auto_run": True,
            "runbook_auto_dry_run": False,
            "runbook_recheck_prometheus": True,
        }
    )


class Loop:
    """The running loop's handles."""

    def __init__(self, prom: PrometheusProcess, am: Alertmanager, engine: Engine, bot_url: str) -> None:
        self.prom, self.am, self.engine, self.bot_url = prom, am, engine, bot_url

    def scalar(self, promql: str) -> float | None:
        result = self.prom.get_json("/api/v1/query", {"query": promql})["data"]["result"]
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def loop(
    gameday_settings: Settings,
    sandbox: Sandbox,
    redis_client: redis.Redis,
    store: IncidentStore,
    celery_worker: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Loop]:
    """Bot web + wired worker, then Alertmanager pointed at it, then Prometheus pointed at both."""
    am: Alertmanager | None = None
    engine: Engine | None = None
    workers.slack_tasks.use_runtime(
        build_runtime(gameday_settings, sender=CeleryTaskSender(gameday_settings))
    )
    workers.pagerduty_tasks.use_sync(wiring.build_sync(gameday_settings, store))
    workers.celery_app.use_fanout_settings(gameday_settings)
    try:
        with serve_in_thread(create_app(gameday_settings)) as bot_url:
            token = gameday_settings.alertmanager_token.get_secret_value()  # type: ignore[union-attr]
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
                settings = gameday_settings.model_copy(update={"prometheus_url": prom.url})
                engine = build_engine(settings)
                monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
                monkeypatch.setattr(runbook_tasks, "get_settings", lambda: settings)
                yield Loop(prom, am, engine, bot_url)
                # let the worker finish this loop's tasks while their runtimes and servers still exist
                broker = redis.Redis.from_url(settings.effective_broker_url)
                poll(lambda: worker_idle(celery_worker, broker), timeout=30, what="the worker to go idle")
                broker.close()
    finally:
        if engine is not None:
            engine.services.close()
        if am is not None:
            am.cleanup()
        workers.celery_app.use_fanout_settings(None)
        workers.pagerduty_tasks.use_sync(None)
        workers.slack_tasks.use_runtime(None)


def replies(emulator: SlackEmulator) -> tuple[list[str], list[str]]:
    """The incident's root message(s) in #incidents-medium and its thread, as Slack would show them."""
    roots = emulator.channel_messages(MEDIUM, top_level_only=True)
    shown = [to_console({"text": m.text, "blocks": m.blocks}) for m in roots]
    thread = emulator.thread(MEDIUM, roots[0].ts) if roots else []
    return shown, [to_console({"text": m.text, "blocks": m.blocks}) for m in thread]


def test_game_day_saturation_is_detected_mitigated_and_resolved_unattended(
    loop: Loop,
    sandbox: Sandbox,
    store: IncidentStore,
    emulator: SlackEmulator,
    pd: PagerDutyEmulator,
) -> None:
    started = time.monotonic()
    prom = loop.prom
    waiting = f'max(vllm:num_requests_waiting{{namespace="{NAMESPACE}"}})'
    prom.wait_targets_up(2, job="vllm")
    # Healthy before the traffic: both servers scraped with the namespace label, nothing queued or firing.
    poll(lambda: loop.scalar(waiting) == 0, timeout=15, what="both servers scraped with an empty queue")
    assert loop.scalar('count(ALERTS{alertstate="firing"})') is None
    assert sandbox.decode_ready() == 2
    sandbox.kube.clear_requests()

    plan = TrafficPlan(rps=TRAFFIC_RPS, duration_s=TRAFFIC_S, max_requests=int(TRAFFIC_RPS * TRAFFIC_S))
    traffic = BackgroundTraffic(sandbox.vllm_endpoints, plan).start()
    try:
        incident = poll(
            lambda: (store.recent() or [None])[0],
            timeout=45,
            what="an incident opened from Alertmanager's notification",
            on_timeout=lambda: (
                f"queue: {loop.scalar(waiting)}\n{prom.log_tail()}\n{loop.am.log.read_text()[-2000:]}"
            ),
        )
        opened_s = time.monotonic() - started
        poll(lambda: sandbox.decode_ready() == 4, timeout=45, what="the runbook to scale decode 2 -> 4")
        resolved = poll(
            lambda: (i := store.get(incident.id)).status is IncidentStatus.RESOLVED and i,
            timeout=45,
            what="the incident resolved by Alertmanager's resolved notification",
            on_timeout=lambda: f"queue: {loop.scalar(waiting)}; {store.timeline(incident.id)}",
        )
        resolved_s = time.monotonic() - started
    finally:
        report = traffic.stop()
    # The traffic was bounded and all of it was served (slowly while queued).
    assert report is not None and 0 < report.sent <= plan.total and report.failed == 0, report

    # Detection: the shipped rule fired on what Prometheus scraped; Alertmanager grouped it for the bot.
    assert loop.scalar(f"max_over_time({waiting}[5m:1s])") > 20  # type: ignore[operator]
    assert resolved.group_key == GROUP_KEY and resolved.receiver == "incident-bot"
    assert [a.labels["alertname"] for a in resolved.alerts.values()] == [ALERT]
    assert resolved.severity.value == "P2"
    assert resolved.severity_reason.startswith("P2 by rule 'latency-alert'")
    assert len(store.recent()) == 1  # no other shipped rule fired
    # ... though one would have with its shipped 5m `for:`: the saturated servers' KV cache was full too
    kv_pending = 'ALERTS{alertname="VLLMKVCacheExhausted", alertstate="pending"}'
    assert loop.scalar(f"max_over_time({kv_pending}[5m:1s])") == 1

    # Mitigation: the automatic high-latency run scaled decode once, and the queue is gone.
    assert sandbox.kube.count("PATCH", SCALE_PATH, mutating=True) == 1
    assert sandbox.kube.count(mutating=True) == 1  # nothing else in the cluster was changed
    assert loop.scalar(waiting) == 0
    assert loop.scalar(f'count(ALERTS{{alertname="{ALERT}"}})') is None
    run = poll(
        lambda: next((r for r in loop.engine.runs_of(incident.id) if r.status.terminal), None),
        timeout=30,
        what="the high-latency run to finish",
    )
    assert [(r.runbook, r.trigger) for r in loop.engine.runs_of(incident.id)] == [
        ("high-latency", "automatic")
    ]
    assert run.status is RunStatus.SUCCEEDED, store.timeline(incident.id)

    # The timeline tells the story in order: opened, the run (scale while firing), resolved.
    timeline = store.timeline(incident.id)
    kinds = [t.kind for t in timeline]
    steps = {t.data["step"]: t for t in timeline if t.kind == "runbook_step"}
    scale = steps["scale_decode"]
    assert scale.data["changed"] is True and "2 -> 4" in scale.message, scale.message
    assert steps["queue"].data["output"]["queue_depth"] > 10  # the runbook's own threshold, as shipped
    assert steps["verify"].data["status"] == "ok"
    assert steps["scale_prefill"].data["status"] == "skipped"
    assert kinds[0] == "opened" and kinds.count("resolved") == 1
    assert kinds.index("runbook_started") < timeline.index(scale) < kinds.index("resolved")

    # Slack: one root message in the P2 channel, RESOLVED, and a reply in its thread for every entry.
    expected = len(timeline) - 1  # "opened" is the root message itself
    roots, thread = poll(
        lambda: (
            (shown := replies(emulator)) and len(shown[1]) == expected and "RESOLVED" in shown[0][0] and shown
        ),
        timeout=40,
        what=f"Slack to show the resolved incident and {expected} replies",
        on_timeout=lambda: "\n---\n".join(replies(emulator)[1]),
    )
    assert len(roots) == 1 and "P2" in roots[0] and ALERT in roots[0]
    assert any("scale_decode" in r and "2 -> 4" in r for r in thread)
    # each reply's footer names its timeline kind: the thread is the timeline, in order, once each
    assert [FOOTER.search(r).group(1) for r in thread] == kinds[1:]  # type: ignore[union-attr]
    for channel in ("C0CRIT0001", "C0HIGH0001", "C0LOW00001"):
        assert emulator.channel_messages(channel) == []

    # PagerDuty: a P2 pages nobody; the one real change (the scale-out) is recorded as one change event.
    assert pd.events() == []
    changes = [c.body["payload"] for c in pd.calls if c.path == "/v2/change/enqueue"]
    assert len(changes) == 1 and len(pd.calls) == 1
    assert changes[0]["custom_details"]["action"] == "k8s.scale"
    assert changes[0]["custom_details"]["target"] == "llm-d/vllm-decode"

    total_s = time.monotonic() - started
    print(
        f"\ngame day: incident opened {opened_s:.1f}s, resolved {resolved_s:.1f}s, done {total_s:.1f}s "
        f"after the first scrape check; traffic {report.sent} requests, {kinds.count('runbook_step')} steps"
    )
    assert total_s < 90
