"""Alert -> first Slack call latency, at idle and during a storm; per-channel Slack rate during the storm.

Real processes: `incident-bot serve` and `incident-bot worker` (threads pool) on a private redis-server, a
loopback Slack Web API emulator in this process. Idle: alerts one at a time, 2.5 s apart (storm digest off;
the channel's 1 post/s token bucket refilled); each
alert's latency is from its POST /alertmanager to the emulator receiving the chat.postMessage that carries
it. The baseline, measured in the same run, is intake alone: POST to the incident existing in Redis.
Storm: 1,000 groups x 5 alerts at 32 connections with the shipped storm settings (5 root messages per
channel, then one digest updated in place): posts per channel in any 1-second window, digests, time until
the backlog is drained.

Usage: .venv/bin/python bench/slack_latency.py [--idle 15] [--groups 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict

import httpx
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, free_port, machine, notification, peak_rss_mib, start_http
from bench.storm import TOKEN, post_all
from bot.sandbox.slack_emulator import SlackEmulator
from tests.support.services import RedisServer


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def start_bot(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    """Web and worker processes; returns them and the web's base URL."""
    port = free_port()
    web = start_http([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], env, port)
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker", "--pool", "threads", "--concurrency", "4"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2.5)
    return web, worker, f"http://127.0.0.1:{port}"


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """Terminate and reap."""
    for p in procs:
        p.terminate()
        p.wait(30)


def posted_text(call: object) -> str:
    """The text and blocks of a recorded chat call, as one string to search."""
    params = call.params  # type: ignore[attr-defined]
    return json.dumps(params.get("blocks", "")) + str(params.get("text", ""))


def main() -> int:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=int, default=15)
    parser.add_argument("--groups", type=int, default=1000)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    r = redis.Redis.from_url(url)
    results: dict[str, object] = {}
    try:
        with SlackEmulator() as slack:
            env = {
                **os.environ,
                "REDIS_URL": url,
                "ALERTMANAGER_TOKEN": TOKEN,
                "LOG_LEVEL": "WARNING",
                "KEY_PREFIX": "ib:",
                "SLACK_BOT_TOKEN": slack.token,
                "SLACK_SIGNING_SECRET": "s" * 32,
                "SLACK_API_URL": slack.api_url,
                "RUNBOOK_AUTO_RUN": "false",
            }
            # --- idle: one alert at a time, digest off ---------------------------------------------
            web, worker, base = start_bot({**env, "SLACK_STORM_THRESHOLD": "100000"})
            slack_ms, intake_ms = [], []
            try:
                with httpx.Client(base_url=base, timeout=10) as http:
                    for g in range(args.idle):
                        body = notification(100_000 + g, 1)
                        marker = f"group {100_000 + g})"
                        t0_mono, t0 = time.monotonic(), time.perf_counter()
                        http.post("/alertmanager", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
                        while not any(
                            body["groupKey"] == json.loads(x)["group_key"]
                            for x in r.mget(
                                [f"ib:inc:{i.decode()}" for i in r.zrange("ib:incidents", -3, -1)]
                            )
                            if x
                        ):
                            time.sleep(0.001)
                        intake_ms.append((time.perf_counter() - t0) * 1000)
                        deadline = time.monotonic() + 30
                        hit = None
                        while hit is None and time.monotonic() < deadline:
                            hit = next(
                                (c for c in slack.calls_of("chat.postMessage") if marker in posted_text(c)),
                                None,
                            )
                            time.sleep(0.002)
                        assert hit is not None, f"no Slack post for group {g}"
                        slack_ms.append((hit.at - t0_mono) * 1000)
                        time.sleep(2.5)  # idle: let the channel's token bucket (1 post/s) refill
            finally:
                stop(web, worker)
            results["idle"] = {"slack_ms": slack_ms, "intake_ms": intake_ms}
            r.flushdb()
            slack.reset()
            # --- storm ---------------------------------------------------------------------------------
            web, worker, base = start_bot(env)
            try:
                bodies = [json.dumps(notification(g, 5)).encode() for g in range(args.groups)]
                started = time.monotonic()
                ingest_s, codes = asyncio.run(post_all(f"{base}/alertmanager", bodies))
                drained = None
                while time.monotonic() - started < 600:
                    queues = sum(r.llen(q) for q in ("alerts", "notifications"))
                    if r.zcard("ib:incidents") >= args.groups and queues == 0:
                        drained = time.monotonic() - started
                        break
                    time.sleep(0.1)
                time.sleep(3)  # the last digest flush
                web_rss, worker_rss = peak_rss_mib(web.pid, children=False), peak_rss_mib(worker.pid)
            finally:
                stop(web, worker)
            posts = [c for c in slack.ok_calls_of("chat.postMessage")]
            per_channel: dict[str, Counter[int]] = defaultdict(Counter)
            for c in posts:
                per_channel[str(c.params.get("channel"))][int(c.at - started)] += 1
            first_post = min((c.at for c in posts), default=started) - started
            results["storm"] = {
                "ingest_s": ingest_s,
                "codes": codes,
                "drained_s": drained,
                "posts": len(posts),
                "updates": len(slack.ok_calls_of("chat.update")),
                "max_posts_per_channel_second": max(
                    (max(v.values()) for v in per_channel.values()), default=0
                ),
                "channels": sorted(per_channel),
                "first_post_s": first_post,
                "incidents": r.zcard("ib:incidents"),
                "web_rss": web_rss,
                "worker_rss": worker_rss,
            }
    finally:
        server.cleanup()

    idle = results["idle"]
    s = results["storm"]
    print(f"machine: {machine()}")
    sl, it = idle["slack_ms"], idle["intake_ms"]  # type: ignore[index]
    print(f"idle, {len(sl)} alerts one at a time (alert -> first chat.postMessage at the emulator):")
    print(
        f"  alert -> Slack      p50 {pct(sl, 50):7.1f} ms  p95 {pct(sl, 95):7.1f} ms  "
        f"p99 {pct(sl, 99):7.1f} ms"
    )
    print(
        f"  baseline intake     p50 {pct(it, 50):7.1f} ms  p95 {pct(it, 95):7.1f} ms  "
        f"p99 {pct(it, 99):7.1f} ms"
        f"  (POST -> incident in Redis)"
    )
    print(f"  ratio (p50) Slack / intake: {statistics.median(sl) / statistics.median(it):.2f}")
    print(f"storm, {args.groups} groups x 5 alerts, 32 connections:")
    print(
        f"  ingest {s['ingest_s']:.2f} s {s['codes']}; backlog drained after {s['drained_s']} s; "  # type: ignore[index]
        f"{s['incidents']} incidents recorded"
    )  # type: ignore[index]
    print(
        f"  Slack: {s['posts']} chat.postMessage, {s['updates']} chat.update, channels {s['channels']}; "  # type: ignore[index]
        f"max {s['max_posts_per_channel_second']} posts in one channel-second; first post after "  # type: ignore[index]
        f"{s['first_post_s']:.2f} s"
    )  # type: ignore[index]
    print(f"  peak RSS: web {s['web_rss']:.0f} MiB, worker {s['worker_rss']:.0f} MiB")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
