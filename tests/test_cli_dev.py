"""`incident-bot dev` runs one worker per lane: intake (alerts, paging) embedded, the others as children."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
import redis

from bot import cli, runtime, tasknames
from bot.settings import Settings
from bot.wiring import CeleryTaskSender


def test_dev_runs_one_worker_per_lane_with_intake_apart_from_slow_work() -> None:
    lanes = cli.dev_workers()
    assert lanes[0][0] == "intake"
    assert set(lanes[0][1]) == {tasknames.QUEUE_ALERTS, tasknames.QUEUE_PAGING}
    assert sorted(q for _, queues, _ in lanes for q in queues) == sorted(tasknames.ALL_QUEUES)
    assert all(threads >= 1 for _, _, threads in lanes)


def test_dev_starts_every_lane_and_stops_the_children(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, redis_client: redis.Redis
) -> None:
    children: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(argv, **kw)
        children.append(proc)
        return proc

    monkeypatch.setattr(runtime.subprocess, "Popen", popen)
    broker = redis.Redis.from_url(settings.effective_broker_url)
    seen: dict[str, Any] = {}

    def serve(app: Any, **kw: Any) -> None:  # stands in for uvicorn while the workers run
        argv = [p.args for p in children]
        seen["queues"] = sorted(a[a.index("--queues") + 1] for a in argv)
        sender = CeleryTaskSender(settings)
        sender.send(tasknames.FLUSH_DIGEST, args=("#lane-check",))  # notifications child
        sender.send(tasknames.RUNBOOK_STEP, args=("no-such-run", 0))  # runbooks child
        sender.send(tasknames.TIMERS_TICK)  # the embedded intake worker
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(broker.llen(q) for q in tasknames.ALL_QUEUES):
            time.sleep(0.1)
        seen["left"] = {q: broker.llen(q) for q in tasknames.ALL_QUEUES}
        seen["alive"] = [p.poll() is None for p in children]

    monkeypatch.setattr("uvicorn.run", serve)
    broker.delete(*tasknames.ALL_QUEUES)
    parser = cli.build_parser()
    assert cli.cmd_dev(parser.parse_args(["dev", "--port", "1"]), settings) == 0
    assert seen["queues"] == ["notifications", "runbooks"]
    assert seen["alive"] == [True, True]
    assert seen["left"] == dict.fromkeys(tasknames.ALL_QUEUES, 0)  # every lane consumed its queue
    assert all(p.poll() is not None for p in children)  # stopped with dev


def test_serving_freezes_the_start_up_heap_so_full_collections_skip_it() -> None:
    import gc

    gc.unfreeze()
    try:
        runtime.settle_heap()
        assert gc.get_freeze_count() > 1000  # the start-up objects are out of the collector's walk
    finally:
        gc.unfreeze()
