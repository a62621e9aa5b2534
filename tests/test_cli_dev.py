"""`incident-bot dev` runs one worker per lane: intake (alerts, paging) embedded, the others as children."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bot import cli, runtime, tasknames
from tests.conftest import REDIS_BASE

REPO = Path(__file__).resolve().parents[1]


def test_dev_runs_one_worker_per_lane_with_intake_apart_from_slow_work() -> None:
    lanes = cli.dev_workers()
    assert lanes[0][0] == "intake"
    assert set(lanes[0][1]) == {tasknames.QUEUE_ALERTS, tasknames.QUEUE_PAGING}
    assert sorted(q for _, queues, _ in lanes for q in queues) == sorted(tasknames.ALL_QUEUES)
    assert all(threads >= 1 for _, _, threads in lanes)


def test_dev_starts_every_lane_and_stops_the_children() -> None:
    # In a child process on a broker database of its own: dev embeds a Celery worker, and Celery's worker
    # state is process-global; run in the test process, its shutdown stopped the session's test worker too
    # (every later test that needs the worker then failed).
    env = os.environ | {
        "REDIS_URL": f"{REDIS_BASE}/13",
        "BROKER_URL": f"{REDIS_BASE}/14",
        "PYTHONPATH": str(REPO),
    }
    code = "import json; from tests.support.dev_lanes import scenario; print(json.dumps(scenario()))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["rc"] == 0
    assert seen["queues"] == ["notifications", "runbooks"]
    assert seen["alive"] == [True, True]
    assert seen["left"] == dict.fromkeys(tasknames.ALL_QUEUES, 0)  # every lane consumed its queue
    assert seen["stopped"]  # the children stopped with dev


def test_serving_freezes_the_start_up_heap_so_full_collections_skip_it() -> None:
    import gc

    gc.unfreeze()
    try:
        runtime.settle_heap()
        assert gc.get_freeze_count() > 1000  # the start-up objects are out of the collector's walk
    finally:
        gc.unfreeze()
