"""Alert storm: 5,000 alerts in 1,000 groups posted within ~10 s; every alert recorded, no incident lost.

Runs a real web process (`incident-bot serve`) and a real Celery worker (`incident-bot worker`, prefork) on
a private redis-server, posts the storm with 32 concurrent connections, then waits for the backlog to drain.
The baseline is the same storm posted to a bare parse-and-LPUSH endpoint (ingest only). Prints ingest
time, drain time, incidents/alerts recorded, the ratio of the bot's ingest time to the baseline's, and the
peak RSS of the web and worker processes.

Usage: .venv/bin/python bench/storm.py [--groups 1000] [--alerts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, free_port, machine, notification, peak_rss_mib, start_http
from tests.support.services import RedisServer

TOKEN = "storm-token-5c1e"


async def post_all(url: str, bodies: list[bytes], concurrency: int = 32) -> tuple[float, dict[int, int]]:
    """POST every body; returns the elapsed seconds and a count per status code."""
    codes: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post(url, content=body, headers=headers)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - started, codes


def main() -> int:
    """Run the storm and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=5)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()

    server = RedisServer()
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    env = {
        **os.environ,
        "REDIS_URL": url,
        "ALERTMANAGER_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "KEY_PREFIX": "ib:",
    }
    bodies = [json.dumps(notification(g, args.alerts)).encode() for g in range(args.groups)]
    r = redis.Redis.from_url(url)
    py = sys.executable
    try:
        port = free_port()
        base = start_http(
            [
                py,
                "-m",
                "uvicorn",
                "--app-dir",
                str(ROOT / "bench"),
                "baseline_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env,
            port,
        )
        try:
            baseline_s, baseline_codes = asyncio.run(
                post_all(f"http://127.0.0.1:{port}/alertmanager", bodies)
            )
        finally:
            base.terminate()
            base.wait()
        r.flushdb()

        port = free_port()
        web = start_http([py, "-m", "bot.cli", "serve", "--port", str(port)], env, port)
        worker = subprocess.Popen(
            [
                py,
                "-m",
                "bot.cli",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(args.worker_concurrency),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)  # worker boot
            started = time.perf_counter()
            ingest_s, codes = asyncio.run(post_all(f"http://127.0.0.1:{port}/alertmanager", bodies))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if r.zcard("ib:incidents") >= args.groups and r.llen("alerts") == 0:
                    break
                time.sleep(0.05)
            drain_s = time.perf_counter() - started
            incidents = r.zcard("ib:incidents")
            ids = [i.decode() for i in r.zrange("ib:incidents", 0, -1)]
            raws = r.mget([f"ib:inc:{i}" for i in ids]) if ids else []
            alerts = sum(len(json.loads(x)["alerts"]) for x in raws if x)
            groups = {json.loads(x)["group_key"] for x in raws if x}
            web_rss = peak_rss_mib(web.pid, children=False)
            worker_rss = peak_rss_mib(worker.pid)
        finally:
            for p in (web, worker):
                p.terminate()
                p.wait(30)
    finally:
        server.cleanup()

    accepted = sum(n for c, n in codes.items() if 200 <= c < 300)
    print(f"machine: {machine()}")
    print(
        f"storm: {args.groups} groups x {args.alerts} alerts = {args.groups * args.alerts} alerts, "
        "32 connections"
    )
    print(f"baseline ingest (bare parse+LPUSH): {baseline_s:.2f} s  {baseline_codes}")
    print(
        f"bot ingest:                          {ingest_s:.2f} s  {codes}  "
        f"(ratio bot/baseline {ingest_s / baseline_s:.2f})"
    )
    print(f"bot end to end (ingest + worker drain): {drain_s:.2f} s  ({args.groups / drain_s:.0f} groups/s)")
    print(
        f"recorded: {incidents} incidents for {len(groups)} distinct groups, {alerts} alerts "
        f"(expected {args.groups} and {args.groups * args.alerts}); 2xx answered {accepted}"
    )
    print(
        f"peak RSS: web {web_rss:.0f} MiB, "
        f"worker (parent + {args.worker_concurrency} children) {worker_rss:.0f} MiB"
    )
    lost = incidents != args.groups or alerts != args.groups * args.alerts or len(groups) != args.groups
    print("RESULT:", "LOST INCIDENTS OR ALERTS" if lost else "every alert recorded, no incident lost")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
