"""What "acknowledged means replicated" costs: POST /alertmanager with WAIT 1 against one replica, beside the
same run without it.

A redis-server master and one replica (``--replicaof``) on free loopback ports, the bot's web under uvicorn
on the master, wrk with bench/wrk_alertmanager.lua (5-alert payloads, distinct group keys). The two
settings alternate (off, on, off, on, …) so drift on a shared machine falls on both alike. For each run:
requests/s, p50/p99, 2xx answers against messages in Redis, and for the WAIT runs the messages the replica
holds. Ends with one JSON line: {"off": {...}, "on": {...}, "ratio_rps": on/off, "p99_delta_ms": ...}.

Usage: .venv/bin/python bench/replicated_ingest.py [--seconds 8] [--connections 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import free_port, start_http
from bench.ingest import TOKEN, wrk


def redis_server(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server on loopback that keeps nothing on disk, answering PING before this returns."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    data = workdir / str(port)
    data.mkdir()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", str(data), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server on {port} did not start")


def one_run(master: redis.Redis, replica: redis.Redis, url: str, acks: int, args: argparse.Namespace) -> Any:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "ALERTMANAGER_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "KEY_PREFIX": "bench:",
        "REDIS_MIN_REPLICAS_ACK": str(acks),
        "REDIS_WAIT_TIMEOUT_MS": "1000",
    }
    port = free_port()
    bot = start_http([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], env, port)
    try:
        wrk(port, 2, args.connections)  # warm-up
        time.sleep(0.5)
        master.delete("alerts")
        result = wrk(port, args.seconds, args.connections)
        time.sleep(0.5)  # requests cut off by wrk's stop finish
        result["in_redis"] = master.llen("alerts")
        master.execute_command("WAIT", 1, 2000)
        result["on_replica"] = replica.llen("alerts")
    finally:
        bot.terminate()
        bot.wait()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="bench-wait-"))
    mport, rport = free_port(), free_port()
    procs = [redis_server(mport, workdir)]
    procs.append(redis_server(rport, workdir, "--replicaof", "127.0.0.1", str(mport)))
    master, replica = redis.Redis(port=mport), redis.Redis(port=rport)
    try:
        while int(master.info("replication").get("connected_slaves", 0)) < 1:
            time.sleep(0.05)
        runs: dict[str, list[Any]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for name, acks in (("off", 0), ("on", 1)):
                runs[name].append(one_run(master, replica, f"redis://127.0.0.1:{mport}/0", acks, args))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.connections} connections, {args.seconds}s x {args.rounds} rounds, master + 1 replica"
    )
    print(f"{'':16} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'in Redis':>9} {'replica':>8}")
    lost = 0
    for name, label in (("off", "no WAIT"), ("on", "WAIT 1 replica")):
        for v in runs[name]:
            accepted = v["requests"] - v["non_2xx"]
            lost += max(0, accepted - v["in_redis"])
            print(
                f"{label:16} {v['rps']:8.0f} {v['p50_ms']:7.2f} {v['p99_ms']:7.2f} {v['non_2xx']:8d}"
                f" {v['in_redis']:9d} {v['on_replica']:8d}"
            )
    summary = {
        name: {key: median(r[key] for r in runs[name]) for key in ("rps", "p50_ms", "p99_ms")}
        for name in runs
    }
    ratio = summary["on"]["rps"] / summary["off"]["rps"]
    delta = summary["on"]["p99_ms"] - summary["off"]["p99_ms"]
    print(f"WAIT 1 / no WAIT throughput (medians): {ratio:.2f}; p99 {delta:+.1f} ms")
    print("2xx answered without a message in Redis: " + ("none" if lost == 0 else f"{lost} LOST"))
    figures = {**summary, "ratio_rps": round(ratio, 3), "p99_delta_ms": round(delta, 2)}
    print(json.dumps({**figures, "runs": runs}))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
