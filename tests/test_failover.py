"""Failover with real processes: the bot's web app and a Celery worker (subprocesses) on a Sentinel group.

2,000 Alertmanager notifications go to ``incident-bot serve`` (REDIS_MIN_REPLICAS_ACK=1) while a worker turns
them into incidents; mid-load the master is killed with SIGKILL and Sentinel promotes a replica. The load
generator retries 503s and connection errors as Alertmanager does. Every notification answered 2xx must be
recorded exactly once: one incident per group, one timeline entry each, nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.payloads import alert, notification
from tests.support.sentinel import MASTER_NAME, SentinelGroup
from tests.support.services import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
TOTAL = 2000
KILL_AFTER = 600  # acknowledged notifications before the master is killed
PREFIX = "ibfo:"


class Proc:
    """A subprocess whose output is kept (shown when the test fails)."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    g = SentinelGroup(replicas=2)
    g.start()
    yield g
    g.cleanup()


def bot_env(group: SentinelGroup, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BROKER_URL")}
    return env | {
        "PYTHONPATH": str(REPO),
        "REDIS_SENTINELS": group.sentinels,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "REDIS_MIN_REPLICAS_ACK": "1",
        "REDIS_WAIT_TIMEOUT_MS": "1000",
        "ENQUEUE_TIMEOUT_SECONDS": "1",
        "KEY_PREFIX": PREFIX,
        "ALERTMANAGER_TOKEN": TOKEN,
        "RUNBOOK_AUTO_RUN": "false",
        "LOG_LEVEL": "INFO",
        "PORT": str(port),
    }


def body(i: int) -> dict[str, object]:
    firing = alert("FailoverLoad", fingerprint=f"{i:016x}", n=str(i))
    return notification([firing], group_key=f'{{}}:{{alertname="FailoverLoad", n="{i}"}}')


async def send_all(
    url: str, on_ack: threading.Event, acked: list[int], first_after_kill: list[float]
) -> None:
    """POST every notification, retrying 5xx and connection errors with back-off (as Alertmanager does)."""
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, timeout=5, limits=limits) as client:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            delay = 0.05
            async with gate:
                while True:
                    try:
                        r = await client.post(
                            "/alertmanager", json=body(i), headers={"Authorization": f"Bearer {TOKEN}"}
                        )
                        if r.status_code < 300:
                            acked.append(i)
                            if on_ack.is_set() and not first_after_kill:
                                first_after_kill.append(time.monotonic())
                            return
                        assert r.status_code >= 500, r.text  # a 4xx would be dropped by Alertmanager
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)

        await asyncio.gather(*(one(i) for i in range(TOTAL)))


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_master_killed_mid_load_loses_and_doubles_nothing(group: SentinelGroup) -> None:
    port = free_port()
    env = bot_env(group, port)
    web = Proc([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], env)
    worker = Proc(
        [
            *[sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker", "--pool", "threads"],
            *["--concurrency", "4", "-Q", "alerts", "-n", f"fo-{port}@localhost", "--without-mingle"],
            *["--without-gossip", "--loglevel", "INFO"],
        ],
        env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), 30, "the web app:\n" + web.text())
        wait_until(lambda: " ready." in worker.text(), 30, "the worker:\n" + worker.text())

        acked: list[int] = []
        killed = threading.Event()
        first_after_kill: list[float] = []
        loader = threading.Thread(
            target=lambda: asyncio.run(send_all(url, killed, acked, first_after_kill)), daemon=True
        )
        started = time.monotonic()
        loader.start()
        wait_until(lambda: len(acked) >= KILL_AFTER, 60, "the first acknowledgements")
        old = group.kill_master()
        kill_time = time.monotonic()
        killed.set()
        new = group.wait_new_master(old)
        promoted = time.monotonic() - kill_time
        loader.join(90)
        assert not loader.is_alive(), "the load did not finish"
        recovery = (first_after_kill[0] - kill_time) if first_after_kill else 0.0
        print(
            f"\nfailover: master :{old} killed after {KILL_AFTER} acks; :{new} promoted in {promoted:.1f} s; "
            f"first 2xx after the kill {recovery:.1f} s; "
            f"{TOTAL} acknowledged in {time.monotonic() - started:.1f} s"
        )
        assert recovery < 20, f"intake took {recovery:.1f} s to recover"
        assert sorted(acked) == list(range(TOTAL))  # the load generator only stops on a 2xx

        state = redis.Redis(port=new)
        try:
            wait_until(lambda: state.zcard(f"{PREFIX}incidents") >= TOTAL, 60, "the worker")
        except AssertionError:
            pytest.fail(
                f"{state.zcard(f'{PREFIX}incidents')} incidents, {state.llen('alerts')} queued, "
                f"{state.hlen('unacked')} unacked; worker:\n{worker.text()[-3000:]}"
            )
        time.sleep(1.0)  # a redelivered duplicate would land now
        ids = [i.decode() for i in state.zrange(f"{PREFIX}incidents", 0, -1)]
        assert len(ids) == TOTAL, f"{len(ids) - TOTAL} duplicate incidents"
        pipe = state.pipeline(transaction=False)
        for incident_id in ids:
            pipe.xlen(f"{PREFIX}inc:{incident_id}:timeline")
        lengths = pipe.execute()
        assert set(lengths) == {1}, f"timeline lengths {sorted(set(lengths))}: a notification applied twice"
        groups = state.keys(f"{PREFIX}group:*")
        assert len(groups) == TOTAL  # every acknowledged group has its incident: none lost
    finally:
        web.stop()
        worker.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
