"""Redis failover with real processes: `kill -9` the Sentinel-managed master in the middle of the load.

Debian's redis-server and redis-sentinel (one master, two replicas, three sentinels on loopback ports), the
bot's web (`incident-bot serve`, REDIS_MIN_REPLICAS_ACK=1), a real prefork worker and a real beat, all
configured with REDIS_SENTINELS only, against the sandbox's Kubernetes emulator. While 2,000 notifications
arrive (8 senders that retry 503s and refused connections as Alertmanager does), a runbook run is between
two scaling steps (its `wait` step pending in the broker) and twelve escalation timers fall due, the test
kills the master. Asserted afterwards, on the promoted master:

* every notification that got a 2xx opened exactly one incident, with the same timeline as one that never
  saw the failover (no lost incident, no duplicate incident or timeline entry);
* intake recovered within RECOVERY_BOUND_S of the kill (the figure is printed);
* the runbook run finished, each of its scaling steps reached the API server exactly once;
* each escalation timer fired exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis

from bot import wiring
from bot.runbook.engine import RunRecord, RunStatus
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.storage.runs import RunStore
from tests.support.fixtures import wait_until
from tests.support.lifecycle import CONFIG, POLICY, Clock, firing, send
from tests.support.payloads import alert, notification
from tests.support.sentinel import MASTER_NAME, SentinelGroup
from tests.support.services import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
PREFIX = "ibfailover:"
NOTIFICATIONS = 2000
KILL_AFTER = 600  # 2xx answers before the kill
SENDERS = 8
RECOVERY_BOUND_S = 20.0
TIMERS = 12
ESCALATION_DUE_S = 8  # after seeding: the kill comes first (asserted)

DRILL = """
name: failover-drill
description: Scale up, hold for a few seconds (the hold straddles the failover), scale up again.
triggers: [FailoverDrill]
escalation: never (a test runbook)
match:
  alertnames: [FailoverDrill]
parameters:
  namespace: {label: namespace}
  deployment: {label: deployment}
steps:
  - id: first
    type: k8s.scale
    params:
      {namespace: "${params.namespace}", deployment: "${params.deployment}", replicas: 3, max_replicas: 4}
  - id: hold
    type: wait
    params: {timeout: 12s, interval: 1s}
  - id: second
    type: k8s.scale
    params:
      {namespace: "${params.namespace}", deployment: "${params.deployment}", replicas: 4, max_replicas: 4}
"""


class Process:
    """An `incident-bot …` subprocess logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    g = SentinelGroup(replicas=2)
    g.start()
    yield g
    g.cleanup()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(decode_replicas=1, vllm_servers=1, offered_rps=5.0), workdir=tmp_path) as sb:
        yield sb


def bot_env(group: SentinelGroup, sandbox: Sandbox, runbooks: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BROKER_URL")}
    return (
        env
        | sandbox.environment()
        | {
            "PYTHONPATH": str(REPO),
            "REDIS_SENTINELS": group.sentinels,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_MIN_REPLICAS_ACK": "1",
            "REDIS_WAIT_TIMEOUT_MS": "500",
            "KEY_PREFIX": PREFIX,
            "ALERTMANAGER_TOKEN": TOKEN,
            "LOG_LEVEL": "INFO",
            "RUNBOOK_AUTO_RUN": "true",
            "RUNBOOKS_DIR": str(runbooks),
            "RUNBOOK_COOLDOWN_SECONDS": "0",
            "TIMER_TICK_SECONDS": "0.5",
            "TIMER_LEASE_SECONDS": "5",
            # the smallest allowed: a message whose processing the dead master took with it (asynchronous
            # replication) is still unacknowledged on the new one and comes back after this (+ the 10 s sweep)
            "CELERY_VISIBILITY_TIMEOUT": "60",
        }
    )


def load_body(n: int) -> dict[str, object]:
    body = notification(
        [alert("FailoverLoad", fingerprint=f"{n:016x}", n=str(n))],
        group_key=f'{{}}:{{alertname="FailoverLoad", n="{n}"}}',
    )
    body["commonLabels"] = {"alertname": "FailoverLoad", "namespace": "llm-d", "n": str(n)}
    return body


class Load:
    """SENDERS threads posting NOTIFICATIONS bodies; a 503 or a refused connection is retried after 200 ms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: dict[int, float] = {}  # n -> monotonic time of its 2xx
        self.retries = 0
        self.failed: list[float] = []  # monotonic times of 503s and refused connections
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, args=(range(i, NOTIFICATIONS, SENDERS),), daemon=True)
            for i in range(SENDERS)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    def _send(self, numbers: range) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            for n in numbers:
                while True:
                    try:
                        answer = client.post(self.url, json=load_body(n))
                        if answer.status_code < 300:
                            with self._lock:
                                self.acked[n] = time.monotonic()
                            break
                        assert answer.status_code == 503, answer.text  # anything else is a bug
                    except httpx.TransportError:
                        pass
                    with self._lock:
                        self.retries += 1
                        self.failed.append(time.monotonic())
                    time.sleep(0.2)


def wait_http(url: str, proc: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        assert proc.proc.poll() is None, proc.text()[-3000:]
        time.sleep(0.1)
    pytest.fail(f"{proc.name} did not answer:\n{proc.text()[-3000:]}")


def test_kill_9_of_the_master_loses_nothing_and_does_nothing_twice(
    group: SentinelGroup, sandbox: Sandbox, settings: Settings, tmp_path: Path
) -> None:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "failover-drill.yaml").write_text(DRILL)
    env = bot_env(group, sandbox, runbooks)
    port = free_port()
    procs = [
        Process("web", ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path),
        Process(
            "worker",
            ["worker", "--queues", "alerts,paging,notifications,runbooks", "--concurrency", "3"],
            env,
            tmp_path,
        ),
        Process("beat", ["beat", "--schedule-file", str(tmp_path / "beat-schedule")], env, tmp_path),
    ]
    ha = settings.model_copy(
        update={"redis_sentinels": group.sentinels.split(","), "redis_sentinel_master": MASTER_NAME}
    )
    client = wiring.redis_client(ha, "cli")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", procs[0])
        sandbox.kube.clear_requests()
        drill = _start_drill(base, client)
        due = _seed_escalations(client)
        load = Load(f"{base}/alertmanager")
        load.start()
        wait_until(lambda: len(load.acked) >= KILL_AFTER, timeout=60)
        observer = IncidentStore(client, prefix=PREFIX, policy=POLICY)
        in_flight = _drill_run(client, drill)
        fired_before = _escalated(observer)
        old = group.kill_master()
        killed_at = time.monotonic()
        # what the kill interrupts: the run between its two scaling steps, the timers not yet fired
        assert in_flight is not None and not in_flight.status.terminal and in_flight.cursor == 1
        assert not set(due) & set(fired_before), "timers fired before the kill: the test proves nothing"
        new = group.wait_new_master(old)
        print(f"\nfailover: master {old} killed, {new} promoted after {time.monotonic() - killed_at:.1f} s")
        load.join(timeout=120)
        assert len(load.acked) == NOTIFICATIONS, f"only {len(load.acked)} notifications were acknowledged"
        # recovery: from the kill to the first 2xx after the first refusal the kill caused
        first_failure = min((t for t in load.failed if t > killed_at), default=None)
        after = [t for t in load.acked.values() if first_failure is not None and t > first_failure]
        recovery = (min(after) - killed_at) if after else 0.0
        print(f"failover: intake answered 2xx again {recovery:.2f} s after the kill ({load.retries} retries)")
        assert recovery <= RECOVERY_BOUND_S

        _assert_every_notification_once(observer, procs)
        _assert_drill_ran_once(client, drill, sandbox)
        _assert_escalated_once(observer, due)
    finally:
        for p in procs:
            p.stop()
        for p in procs:
            assert "Unrecoverable error" not in p.text(), p.text()[-4000:]


def _start_drill(base: str, client: redis.Redis) -> str:
    """Open the drill incident; return its id once its run is in the `hold` step (first scale done)."""
    body = notification(
        [alert("FailoverDrill", fingerprint="d1", deployment="vllm-decode")],
        group_key='{}:{alertname="FailoverDrill"}',
    )
    for _ in range(50):  # a 503 (no replica acknowledged in time) is retried, as Alertmanager does
        answer = httpx.post(f"{base}/alertmanager", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        if answer.status_code != 503:
            break
        time.sleep(0.2)
    assert answer.status_code < 300, answer.text
    store = IncidentStore(client, prefix=PREFIX, policy=POLICY)
    incident = wait_until(lambda: next(iter(store.recent()), None), timeout=30)
    incident_id = str(incident.id)  # type: ignore[attr-defined]
    wait_until(lambda: (run := _drill_run(client, incident_id)) is not None and run.cursor >= 1, timeout=30)
    return incident_id


def _drill_run(client: redis.Redis, incident_id: str) -> RunRecord | None:
    runs = RunStore(client, prefix=PREFIX)
    ids = runs.run_ids(incident_id)
    raw = runs.run(ids[0]) if ids else None
    return RunRecord.model_validate_json(raw) if raw else None


def _seed_escalations(client: redis.Redis) -> list[str]:
    """TIMERS P1 incidents whose 30 min escalation falls due a few seconds from now (around the kill)."""
    clock = Clock(datetime.now(UTC) - timedelta(minutes=30) + timedelta(seconds=ESCALATION_DUE_S))
    seeder = IncidentStore(client, prefix=PREFIX, policy=POLICY, config=CONFIG, clock=clock)
    ids = []
    for n in range(TIMERS):
        body = firing(severity="critical", fingerprint=f"e{n}")
        body["groupKey"] = f'{{}}:{{alertname="X", timer="{n}"}}'
        incident_id = send(seeder, body).incident_id
        assert incident_id is not None
        ids.append(incident_id)
    return ids


def _assert_every_notification_once(store: IncidentStore, procs: list[Process]) -> None:
    wanted = {f'{{}}:{{alertname="FailoverLoad", n="{n}"}}' for n in range(NOTIFICATIONS)}

    def recorded() -> list[object]:
        return [i for i in store.recent(limit=NOTIFICATIONS + 100) if i.group_key in wanted]

    started = time.monotonic()
    try:
        incidents = wait_until(
            lambda: found if len(found := recorded()) >= NOTIFICATIONS else None, timeout=150
        )
    except BaseException:
        have = {i.group_key for i in recorded()}  # type: ignore[attr-defined]
        unacked = store.redis_client.hlen("unacked")
        print(f"missing {len(wanted - have)} incidents; {unacked} messages unacknowledged in the broker")
        print(procs[1].text()[-3000:])
        raise
    took = time.monotonic() - started
    print(f"failover: all {NOTIFICATIONS} incidents recorded {took:.1f} s after the load ended")
    per_group = Counter(i.group_key for i in incidents)  # type: ignore[attr-defined, union-attr]
    assert set(per_group) == wanted and set(per_group.values()) == {1}
    kinds = {tuple(t.kind for t in store.timeline(i.id)) for i in incidents}  # type: ignore[attr-defined, union-attr]
    assert len(kinds) == 1, f"timelines differ (a lost or duplicate entry): {Counter(kinds)}"


def _assert_drill_ran_once(client: redis.Redis, incident_id: str, sandbox: Sandbox) -> None:
    run = wait_until(
        lambda: (r := _drill_run(client, incident_id)) is not None and r.status.terminal and r, timeout=60
    )
    assert run.status is RunStatus.SUCCEEDED, run.reason  # type: ignore[union-attr]
    assert len(RunStore(client, prefix=PREFIX).run_ids(incident_id)) == 1
    scales = [
        r.body
        for r in sandbox.kube.requests
        if r.mutating and r.path.endswith("/deployments/vllm-decode/scale")
    ]
    assert [b["spec"]["replicas"] for b in scales] == [3, 4], scales  # each scaling step reached the API once


def _escalated(store: IncidentStore) -> list[object]:
    return [e.data["incident_id"] for e in store.events.read(type_="escalated", count=10_000)]


def _assert_escalated_once(store: IncidentStore, ids: list[str]) -> None:
    wait_until(lambda: set(ids) <= set(_escalated(store)), timeout=60)
    time.sleep(2)  # a few more beat ticks: nothing may fire twice
    fired = Counter(_escalated(store))
    assert {i: fired[i] for i in ids} == dict.fromkeys(ids, 1)
