"""Webhook ingest benchmark: the bot's POST /alertmanager against a bare parse-and-LPUSH ASGI endpoint.

Both run under uvicorn (one process) on this machine, loaded by wrk (32 connections, realistic 5-alert
payloads with distinct group keys), against the same Redis. Prints requests/s, p50/p99 latency, and the
ratio bot/baseline; checks that every 2xx the bot gave is a message in Redis (no worker runs meanwhile).

Usage: .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import free_port, start_http

HERE = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/13"
TOKEN = "bench-token-7f3a9c"


def wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "wrk_alertmanager.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env={**os.environ, "BENCH_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise SystemExit(f"cannot parse wrk output:\n{out}")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    py = sys.executable
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "ALERTMANAGER_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "KEY_PREFIX": "bench:",
    }
    results = {}

    port = free_port()
    base = start_http(
        [
            py,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
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
        wrk(port, 2, args.connections)  # warm-up
        time.sleep(0.5)  # let requests cut off by the warm-up's stop finish
        r.delete("bench:baseline")
        results["baseline"] = wrk(port, args.seconds, args.connections)
        results["baseline"]["in_redis"] = r.llen("bench:baseline")
    finally:
        base.terminate()
        base.wait()

    port = free_port()
    bot = start_http([py, "-m", "bot.cli", "serve", "--port", str(port)], env, port)
    try:
        wrk(port, 2, args.connections)
        time.sleep(0.5)
        r.delete("alerts")
        results["bot"] = wrk(port, args.seconds, args.connections)
        time.sleep(0.5)  # let requests cut off by wrk's stop finish
        results["bot"]["in_redis"] = r.llen("alerts")
    finally:
        bot.terminate()
        bot.wait()
    r.flushdb()

    b, o = results["baseline"], results["bot"]
    accepted = o["requests"] - o["non_2xx"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.connections} connections, {args.seconds}s, 5-alert payloads (~3.4 KB)"
    )
    print(f"{'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'in Redis':>9}")
    for name, v in results.items():
        row = f"{v['rps']:9.0f} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f} {v['non_2xx']:8d} {v['in_redis']:9d}"
        print(f"{name:10} {row}")
    print(
        f"ratio bot/baseline throughput: {o['rps'] / b['rps']:.2f} (target >= 0.60); "
        f"bot p99 {o['p99_ms']:.1f} ms (target <= 50)"
    )
    lost = accepted - o["in_redis"]
    print(
        f"2xx answered: {accepted}, messages in Redis: {o['in_redis']} -> "
        f"{'none lost' if lost <= 0 else f'{lost} LOST'} (extra messages = requests cut off by wrk's stop)"
    )
    print(json.dumps({"results": results, "ratio": o["rps"] / b["rps"]}))
    return 0 if lost <= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
