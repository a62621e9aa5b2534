"""Timers with real processes: Celery beat sends ticks, workers are killed and restarted, two tick at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from bot.settings import get_settings
from bot.storage.incidents import IncidentStore
from tests.support.fixtures import wait_until
from tests.support.lifecycle import Clock, firing, make_store, send
from tests.support.services import RedisServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


class Proc:
    """A Celery worker or beat subprocess whose output is collected in the background."""

    def __init__(self, *args: str, broker: str, ready: str) -> None:
        cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", *args, "--loglevel", "INFO"]
        # state stays on the test database; the broker is a private redis-server, so the in-process test
        # worker of other tests never takes these ticks
        env = os.environ | {
            "BROKER_URL": broker,
            "TIMER_TICK_SECONDS": "0.5",
            "TIMER_LEASE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
        }
        self.p = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not self._ready.wait(30):
            self.kill()
            pytest.fail("celery process did not start:\n" + "".join(self.lines[-30:]))

    def _read(self, ready: str) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)
            if ready in line:
                self._ready.set()

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no acks."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)


def worker(name: str, broker: str) -> Proc:
    """A solo-pool worker on the alerts queue (where ticks go)."""
    host = f"{name}-{uuid.uuid4().hex[:6]}@localhost"
    args = ["worker", "--pool", "solo", "-Q", "alerts", "-n", host, "--without-mingle", "--without-gossip"]
    return Proc(*args, broker=broker, ready=" ready.")


@pytest.fixture
def procs(tmp_path: Path, redis_client: redis.Redis) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def escalated(store: IncidentStore) -> list[object]:
    return [e.data["incident_id"] for e in store.events.read(type_="escalated")]


def test_escalation_fires_once_across_a_worker_kill_restart_and_two_tickers(
    procs: list[Proc], redis_client: redis.Redis, tmp_path: Path, private_redis: RedisServer
) -> None:
    broker = private_redis.url
    procs.append(Proc("beat", "-s", str(tmp_path / "beat-schedule"), broker=broker, ready="beat: Starting"))
    first = worker("w1", broker)
    procs.append(first)

    # P1 incidents whose 30 min escalation falls due a few seconds from now (real time)
    due_in = timedelta(seconds=4)
    clock = Clock(datetime.now(UTC) - timedelta(minutes=30) + due_in)
    seeder = make_store(redis_client, clock)
    for n in range(12):
        body = firing(severity="critical", fingerprint=f"fp{n}")
        body["groupKey"] = f'{{}}:{{alertname="X", n="{n}"}}'
        send(seeder, body)
    # one more whose timers a worker had already claimed when it died (lease 3 s, never finished)
    lost = firing(severity="critical", fingerprint="lost")
    lost["groupKey"] = '{}:{alertname="X", n="lost"}'
    send(seeder, lost)
    due = seeder.get("INC-0013").escalation_due
    assert due is not None
    assert {t.kind for t in seeder.timers.claim(due, lease_seconds=3)} == {"escalate", "remind"}

    first.kill()  # between scheduling and firing
    assert not any("timers fired" in line for line in first.lines)
    restarted, beside = worker("w2", broker), worker("w3", broker)  # restarted, and a second ticker beside it
    procs.extend([restarted, beside])

    observer = make_store(redis_client, Clock())
    wait_until(lambda: len(escalated(observer)) >= 13, timeout=40)
    time.sleep(3)  # a few more beat ticks on both workers: nothing may fire twice
    ids = escalated(observer)
    assert sorted(ids) == sorted(f"INC-{n:04d}" for n in range(1, 14))
    for n in range(1, 14):
        entries = [t for t in observer.timeline(f"INC-{n:04d}") if t.kind == "escalated"]
        assert len(entries) == 1
    assert redis_client.zcard(f"{get_settings().key_prefix}timers:claimed") == 0
    fired_lines = [ln for ln in restarted.lines + beside.lines if "timers fired" in ln]
    assert fired_lines and sum(ln.count("=escalated") for ln in fired_lines) == 13
    stats = observer.task_stats()
    assert stats.get("timers.tick:escalated") == 13
    assert stats.get("timers.tick:reminded") == 13
