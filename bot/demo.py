"""`incident-bot demo`: the whole product on the built-in sandbox, narrated.

What runs, all on loopback:

* the sandbox: an emulated llm-d cluster (Kubernetes API emulator with vllm-decode / vllm-prefill) and
  emulated vLLM servers whose queue depth follows offered load and the ready decode replicas;
* Slack and PagerDuty emulators (or the real services, when SLACK_* / PAGERDUTY_* settings are set);
* the bot itself, unchanged, as a child process: `incident-bot dev` (web + one worker per lane) on Redis;
* an alert evaluator standing in for Prometheus + Alertmanager: it reads the vLLM servers' /metrics and
  /health through the bot's own adapter every second and sends Alertmanager v4 notifications (the game-day
  test runs the same loop with a real Prometheus and Alertmanager).

Scenario: the decode pool saturates -> VLLMHighQueueDepth -> a P2 incident -> the high-latency runbook scales
decode -> the queue drains -> resolved; then a bad rollout crash-loops decode -> VLLMServiceDown -> a P0
incident that pages -> the service-down runbook rolls back -> healthy -> resolved in the bot and PagerDuty;
then a canary of the Argo Rollout vllm-decode-canary takes 20 % of the traffic and fails it ->
VLLMHighErrorRate -> the high-error-rate runbook aborts the Rollout -> stable -> errors stop -> resolved.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bot import wiring
from bot.integrations.vllm import HealthState, run_sync
from bot.models import Incident, IncidentStatus
from bot.settings import Settings
from bot.storage.incidents import IncidentStore

NAMESPACE = "llm-d"
BAD_IMAGE = "vllm/vllm-openai:v0.9.9-broken"
CANARY = "vllm-decode-canary"
CANARY_IMAGE = "vllm/vllm-openai:v0.9.9-canary"
OFFERED_RPS = 30.0  # one decode replica serves ~20 req/s in the emulator: a queue builds


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Progress:
    """One line per step, with the time since the demo started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        """Print a progress line."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 90.0) -> Any:
        """Poll until predicate() is truthy; raises DemoFailed with `what` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.25)
        raise DemoFailed(f"timed out after {timeout:.0f}s waiting for: {what}")


class DemoFailed(Exception):
    """The scenario did not reach a step in time."""


@contextlib.contextmanager
def _redis(settings: Settings, progress: Progress) -> Iterator[str]:
    """The configured Redis when reachable, else a private redis-server started for the demo."""
    if wiring.redis_answers(settings.redis_url, connect_timeout=1):
        progress.say(f"Redis: using {settings.redis_url.split('@')[-1]}")
        yield settings.redis_url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoFailed(
            "Redis is not reachable and redis-server is not installed: run `bash scripts/services.sh "
            "--redis-only` (apt-get install redis-server) or set REDIS_URL"
        )
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="demo-redis-")
    proc = subprocess.Popen(  # noqa: S603 - our own binary lookup, fixed arguments
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            if wiring.redis_answers(url, connect_timeout=0.2):
                break
            time.sleep(0.05)
        progress.say(
            f"Redis: {settings.redis_url} is not reachable; started a private redis-server on :{port}"
        )
        yield url
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class AlertRule:
    """One alert the evaluator keeps: its labels, and when it started firing."""

    name: str
    severity: str
    summary: str
    fingerprint: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    since: datetime | None = None
    deployment: str = "vllm-decode"


class AlertEvaluator:
    """Stands in for Prometheus + Alertmanager: evaluates two rules on the vLLM servers, sends v4 webhooks."""

    def __init__(self, settings: Settings, base_url: str, token: str, endpoints: list[str]) -> None:
        self.settings = settings
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.token = token
        self.endpoints = endpoints
        self.queue = AlertRule("VLLMHighQueueDepth", "warning", "decode queue depth above 10")
        self.down = AlertRule("VLLMServiceDown", "critical", "no healthy vLLM server behind the service")
        self.errors = AlertRule(
            "VLLMHighErrorRate", "critical", "more than 5% of inference requests failing", deployment=CANARY
        )
        self._gateway: list[tuple[float, float, float]] = []  # (time, requests, errors)

    def measure(self) -> tuple[float, int]:
        """(requests waiting across servers, healthy servers), read through the bot's vLLM adapter."""
        health = run_sync(lambda c: c.health_all(self.endpoints), self.settings)
        metrics = run_sync(lambda c: c.metrics_all(self.endpoints), self.settings)
        waiting = sum(m.value.model().num_requests_waiting for m in metrics if m.value is not None)
        return waiting, sum(1 for h in health if h.state is HealthState.OK)

    def evaluate(self) -> tuple[float, int]:
        """One evaluation round: send firing/resolved notifications on changes."""
        waiting, healthy = self.measure()
        self._transition(self.queue, waiting > 10 and healthy > 0)
        self._transition(self.down, healthy == 0)
        ratio = self.error_ratio()
        self._transition(self.errors, ratio is not None and ratio > 0.05)
        return waiting, healthy

    def error_ratio(self, window_s: float = 3.0) -> float | None:
        """The gateway error ratio over the last seconds (the rule's rate(errors) / rate(requests))."""
        requests = errors = 0.0
        for url in self.endpoints:
            text = httpx.get(f"{url}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith("inference_objective_request_total"):
                    requests += float(line.rsplit(" ", 1)[1])
                elif line.startswith("inference_objective_request_error_total"):
                    errors += float(line.rsplit(" ", 1)[1])
        now = time.monotonic()
        self._gateway = [s for s in self._gateway if s[0] >= now - window_s] + [(now, requests, errors)]
        first = self._gateway[0]
        served = requests - first[1]
        return (errors - first[2]) / served if served > 0 else None

    def _transition(self, rule: AlertRule, firing: bool) -> None:
        if firing and rule.since is None:
            rule.since = datetime.now(UTC).replace(microsecond=0)
            self._send(rule, "firing")
        elif not firing and rule.since is not None:
            self._send(rule, "resolved")
            rule.since = None
            rule.fingerprint = uuid.uuid4().hex[:16]

    def _send(self, rule: AlertRule, status: str) -> None:
        assert rule.since is not None
        labels = {
            "alertname": rule.name,
            "severity": rule.severity,
            "namespace": NAMESPACE,
            "deployment": rule.deployment,
        }
        body = {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{rule.name}", namespace="{NAMESPACE}"}}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "incident-bot",
            "groupLabels": {"alertname": rule.name, "namespace": NAMESPACE},
            "commonLabels": labels,
            "commonAnnotations": {"summary": rule.summary},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": labels,
                    "annotations": {"summary": rule.summary},
                    "startsAt": rule.since.isoformat(),
                    "endsAt": datetime.now(UTC).isoformat()
                    if status == "resolved"
                    else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph",
                    "fingerprint": rule.fingerprint,
                }
            ],
        }
        r = self.http.post("/alertmanager", json=body, headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()


def _incident(store: IncidentStore, alertname: str, status: IncidentStatus | None = None) -> Incident | None:
    for incident in store.recent(limit=20):
        if alertname in incident.group_key and (status is None or incident.status is status):
            return incident
    return None


def run_demo(settings: Settings) -> int:
    """Run the scenario end to end; returns the process exit code."""
    progress = Progress()
    print("== incident-bot demo: the built-in llm-d sandbox, the bot, Slack and PagerDuty emulators\n")
    try:
        with _redis(settings, progress) as redis_url:
            return _play(settings, redis_url, progress)
    except DemoFailed as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        return 1


def _play(settings: Settings, redis_url: str, progress: Progress) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="incident-bot-demo-"))
    prefix = f"demo-{uuid.uuid4().hex[:6]}:"
    token = secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        sandbox = _start_sandbox(stack, workdir, progress)
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "KEY_PREFIX": prefix,
            "ALERTMANAGER_TOKEN": token,
            "RUNBOOK_AUTO_RUN": "true",
            "LOG_LEVEL": os.environ.get("DEMO_BOT_LOG_LEVEL", "WARNING"),
            **sandbox.environment(),
        }
        env.pop("BROKER_URL", None)
        slack = _slack(stack, settings, env, progress)
        pd = _pagerduty(stack, settings, env, progress)
        base = _start_bot(stack, env, workdir / "bot.log", prefix, progress)

        # the demo reads the incidents the bot writes: same Redis, same key prefix
        bot_settings = settings.model_copy(update={"redis_url": redis_url, "key_prefix": prefix})
        store = wiring.incident_store(bot_settings, wiring.redis_client(bot_settings, "cli"))
        evaluator = AlertEvaluator(settings, base, token, sandbox.vllm_endpoints)
        stage = _Stage(progress, sandbox, store, evaluator, pd)
        first = _act_saturation(stage)
        second = _act_bad_rollout(stage)
        third = _act_canary(stage)
        progress.wait(
            "the runbooks to finish",
            lambda: _runbooks_done(store, [first.id, second.id, third.id]),
            timeout=60,
        )
        time.sleep(2)  # let the last Slack updates land

        # --- what people saw ---------------------------------------------------------------------------
        _show_slack(slack)
        _show_pagerduty(pd)
        for incident in (first, second, third):
            _show_timeline(store, incident.id)
    print("\ndemo: done. All three incidents were handled end to end; exit 0.")
    return 0


def _start_sandbox(stack: contextlib.ExitStack, workdir: Path, progress: Progress) -> Any:
    """The emulated llm-d cluster and vLLM servers, stopped when `stack` closes."""
    from bot.sandbox.sandbox import Sandbox, SandboxConfig

    sandbox = stack.enter_context(
        Sandbox(
            SandboxConfig(decode_replicas=1, vllm_servers=2, offered_rps=0.0, canary_rollout=CANARY),
            workdir=workdir,
        )
    )
    progress.say(
        f"sandbox: Kubernetes API {sandbox.kube.url}, namespace {NAMESPACE} (vllm-decode x1, "
        f"vllm-prefill x1, Argo Rollout {CANARY} x1), vLLM servers {', '.join(sandbox.vllm_endpoints)}"
    )
    return sandbox


def _slack(stack: contextlib.ExitStack, settings: Settings, env: dict[str, str], progress: Progress) -> Any:
    """The Slack emulator (its settings added to `env`), or None when a real workspace is configured."""
    if settings.slack_configured:
        progress.say("Slack: real workspace (SLACK_BOT_TOKEN is set): the bot posts there")
        return None
    from bot.sandbox.slack_emulator import SlackEmulator

    slack = stack.enter_context(SlackEmulator())
    env |= {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "SLACK_API_URL": slack.api_url,
    }
    progress.say(f"Slack: emulator at {slack.api_url} (set SLACK_* to post to a real workspace)")
    return slack


def _pagerduty(
    stack: contextlib.ExitStack, settings: Settings, env: dict[str, str], progress: Progress
) -> Any:
    """The PagerDuty emulator (its settings added to `env`), or None when a real account is configured."""
    if settings.pagerduty_configured:
        progress.say("PagerDuty: real account (PAGERDUTY_ROUTING_KEY is set): P0/P1 page for real")
        return None
    from bot.sandbox.pagerduty_emulator import PagerDutyEmulator

    pd = stack.enter_context(PagerDutyEmulator())
    env |= {
        "PAGERDUTY_ROUTING_KEY": "demo-routing-key",
        "PAGERDUTY_EVENTS_URL": pd.url,
        "PAGERDUTY_API_URL": pd.url,
        "PAGERDUTY_CA_BUNDLE": str(pd.ca_path),
    }
    progress.say(f"PagerDuty: emulator at {pd.url} (HTTPS; set PAGERDUTY_* for a real account)")
    return pd


def _start_bot(
    stack: contextlib.ExitStack, env: dict[str, str], log_path: Path, prefix: str, progress: Progress
) -> str:
    """`incident-bot dev` as a child process, stopped when `stack` closes; its base URL once it is ready."""
    port = _free_port()
    log = stack.enter_context(log_path.open("wb"))
    bot = subprocess.Popen(  # noqa: S603 - this interpreter running this package
        [sys.executable, "-m", "bot.cli", "dev", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    stack.callback(_stop, bot)
    base = f"http://127.0.0.1:{port}"
    progress.wait("the bot to answer /readyz", lambda: _ready(base), timeout=60)
    progress.say(
        f"bot: `incident-bot dev` (web + a worker per lane) on {base}, Redis key prefix {prefix}; "
        f"log {log_path}"
    )
    return base


@dataclass
class _Stage:
    """What the acts play on: the narration, the sandbox, the bot's incidents, the alerts, PagerDuty."""

    progress: Progress
    sandbox: Any
    store: IncidentStore
    evaluator: AlertEvaluator
    pd: Any

    def tick(self) -> tuple[float, int]:
        """One alert evaluation round: (requests waiting, healthy servers)."""
        return self.evaluator.evaluate()

    def resolved(self, incident_id: str) -> bool:
        """Evaluate once, then whether the incident is resolved."""
        return bool(self.tick()) and self.store.get(incident_id).status is IncidentStatus.RESOLVED


def _act_saturation(stage: _Stage) -> Incident:
    """Act 1: the decode pool saturates, the runbook scales it, the queue drains; returns the incident."""
    progress, sandbox, tick = stage.progress, stage.sandbox, stage.tick
    print()
    progress.say(f"ACT 1: traffic rises to {OFFERED_RPS:.0f} req/s on one decode replica")
    assert sandbox.vllm is not None
    sandbox.vllm.set(offered_rps=OFFERED_RPS)
    progress.wait("the queue to build", lambda: tick()[0] > 10)
    progress.say(
        f"queue depth {stage.evaluator.measure()[0]:.0f} > 10: VLLMHighQueueDepth fires, sent to the bot"
    )
    first: Incident = progress.wait("an incident", lambda: _incident(stage.store, "VLLMHighQueueDepth"))
    progress.say(f"{first.id} opened at {first.severity.value}: {first.severity_reason}")
    progress.wait(
        "the high-latency runbook to scale vllm-decode",
        lambda: tick() and sandbox.decode_ready() > 1,
    )
    progress.say(f"runbook scaled vllm-decode to {sandbox.decode_ready()} replicas")
    progress.wait("the queue to drain", lambda: tick()[0] <= 10)
    progress.say(f"queue depth {stage.evaluator.measure()[0]:.0f}: the alert resolves")
    progress.wait(f"{first.id} to resolve", lambda: stage.resolved(first.id))
    progress.say(f"{first.id} resolved")
    return first


def _act_bad_rollout(stage: _Stage) -> Incident:
    """Act 2: a bad rollout takes every server down, pages, and is rolled back; returns the incident."""
    progress, sandbox, tick, pd = stage.progress, stage.sandbox, stage.tick, stage.pd
    print()
    progress.say(f"ACT 2: a Recreate rollout of vllm-decode to {BAD_IMAGE} (its pods crash-loop)")
    sandbox.cluster.script_pods("crashloop", image=BAD_IMAGE)
    _set_image(sandbox, BAD_IMAGE)
    progress.wait("the servers to go unhealthy", lambda: tick()[1] == 0)
    progress.say("no healthy vLLM server: VLLMServiceDown fires")
    second: Incident = progress.wait("a P0 incident", lambda: _incident(stage.store, "VLLMServiceDown"))
    progress.say(f"{second.id} opened at {second.severity.value}: {second.severity_reason}")
    if pd is not None:
        progress.wait("PagerDuty to be paged", lambda: pd.events("trigger"))
        progress.say(f"PagerDuty paged (dedup key {pd.events('trigger')[-1]['dedup_key']})")
    progress.say(
        "the service-down runbook sees a rollout within the hour and rolls back (its rollback step "
        "needs no approval in the shipped runbook, so nobody is asked)"
    )
    progress.wait("the rollback", lambda: tick() and _image(sandbox) != BAD_IMAGE, timeout=120)
    progress.say(f"vllm-decode rolled back to {_image(sandbox)}")
    progress.wait("the servers to recover", lambda: tick()[1] == len(sandbox.vllm_endpoints))
    progress.wait(f"{second.id} to resolve", lambda: stage.resolved(second.id))
    progress.say(f"{second.id} resolved")
    if pd is not None:
        progress.wait("PagerDuty to resolve", lambda: pd.events("resolve"))
        progress.say("PagerDuty alert resolved")
    return second


def _act_canary(stage: _Stage) -> Incident:
    """Act 3: a bad canary of an Argo Rollout fails 20 % of requests and is aborted; returns the incident."""
    progress, sandbox, tick = stage.progress, stage.sandbox, stage.tick
    print()
    progress.say(f"ACT 3: a canary of the Argo Rollout {CANARY} to {CANARY_IMAGE} takes 20 % of the traffic")
    sandbox.start_canary(CANARY_IMAGE)
    progress.wait("requests to fail", lambda: tick() and (stage.evaluator.error_ratio() or 0) > 0.05)
    progress.say(f"{sandbox.canary_error_ratio():.0%} of requests fail: VLLMHighErrorRate fires")
    # keep evaluating: the wait above read the ratio itself, so the rule may not have fired (and sent) yet
    third: Incident = progress.wait(
        "an incident", lambda: tick() and _incident(stage.store, "VLLMHighErrorRate")
    )
    progress.say(f"{third.id} opened at {third.severity.value}: {third.severity_reason}")
    progress.wait("the runbook to abort the canary", lambda: tick() and _aborted(sandbox), timeout=120)
    progress.say(f"the high-error-rate runbook aborted {CANARY}: back to the stable ReplicaSet")
    progress.wait(f"{third.id} to resolve", lambda: stage.resolved(third.id))
    progress.say(f"errors stopped; {third.id} resolved")
    return third


def _aborted(sandbox: Any) -> bool:
    status = sandbox.cluster.get("Rollout", NAMESPACE, CANARY).get("status") or {}
    return bool(status.get("abort"))


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _image(sandbox: Any) -> str:
    deployment = sandbox.cluster.get("Deployment", NAMESPACE, "vllm-decode")
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _set_image(sandbox: Any, image: str) -> None:
    """A rollout of a new image with the Recreate strategy, applied to the emulated cluster.

    GPU pools often roll out with Recreate (no spare GPUs to surge into), so a broken image takes every
    replica down at once: a service-down incident rather than a stuck rolling update.
    """
    patch = {
        "spec": {
            "strategy": {"type": "Recreate", "rollingUpdate": None},
            "template": {"spec": {"containers": [{"name": "vllm", "image": image}]}},
        }
    }
    sandbox.cluster.patch_deployment(
        NAMESPACE, "vllm-decode", "application/strategic-merge-patch+json", patch
    )


def _runbooks_done(store: IncidentStore, incident_ids: list[str]) -> bool:
    for incident_id in incident_ids:
        kinds = [t.kind for t in store.timeline(incident_id)]
        if kinds.count("runbook_started") > kinds.count("runbook_finished"):
            return False
    return True


def _show_slack(slack: Any) -> None:
    if slack is None:
        return
    from bot.sandbox.slack_emulator import to_console

    print("\n== What Slack showed (rendered from templates/slack through the emulator)")
    for name, channel_id in sorted(slack.channels.items()):
        roots = slack.channel_messages(channel_id, top_level_only=True)
        if not roots:
            continue
        print(f"\n#{name.lstrip('#')}")
        for root in roots:
            print(_indent(to_console({"blocks": root.blocks, "text": root.text}), "  | "))
            for reply in slack.thread(channel_id, root.ts)[1:]:
                print(_indent(to_console({"blocks": reply.blocks, "text": reply.text}), "  |   ↳ "))


def _show_pagerduty(pd: Any) -> None:
    if pd is None:
        return
    print("\n== What PagerDuty received (Events API v2 and change events, through the emulator)")
    for call in pd.calls:
        body = call.body or {}
        if call.path == "/v2/enqueue":
            summary = (body.get("payload") or {}).get("summary", "")
            print(f"  {body.get('event_action'):<11} {body.get('dedup_key')}  {summary}")
        elif call.path == "/v2/change/enqueue":
            print(f"  change      {(body.get('payload') or {}).get('summary', '')}")


def _show_timeline(store: IncidentStore, incident_id: str) -> None:
    incident = store.get(incident_id)
    print(f"\n== {incident.id} [{incident.severity.value}, {incident.status.value}] {incident.title}")
    for entry in store.timeline(incident_id):
        print(f"  {entry.at:%H:%M:%S}  {entry.kind:<22} {entry.message[:160]}")


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines() if line.strip())
