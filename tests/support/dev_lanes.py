"""`incident-bot dev` with uvicorn stubbed, for tests/test_cli_dev.py, which runs it in a process of its own
(importing nothing of the test session's conftest: the child gets its Redis URLs from the environment)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import redis

from bot import cli, runtime, tasknames
from bot.wiring import CeleryTaskSender


def scenario() -> dict[str, Any]:
    """Run `incident-bot dev` with uvicorn stubbed: which children start, whether every lane drains its queue,
    whether the children stop with dev. Runs in a process of its own (see the test)."""
    from bot.settings import get_settings

    settings = get_settings()
    children: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(argv, **kw)
        children.append(proc)
        return proc

    runtime.subprocess.Popen = popen  # type: ignore[assignment, misc]
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

    import uvicorn

    uvicorn.run = serve  # type: ignore[assignment]
    broker.delete(*tasknames.ALL_QUEUES)
    parser = cli.build_parser()
    seen["rc"] = cli.cmd_dev(parser.parse_args(["dev", "--port", "1"]), settings)
    seen["stopped"] = all(p.poll() is not None for p in children)
    return seen
