"""Alert -> first Slack call latency, at idle and during a storm; per-channel Slack rate after the burst.

Real processes as deployed (bot/tasknames.py LANES): `incident-bot serve`, one worker for the intake lane
(alerts, paging) and one for the notifications lane (Slack), threads pools, on a private redis-server; a
loopback Slack Web API emulator in this process. A latency runs from the alert's POST /alertmanager to the
emulator receiving the chat.postMessage that carries it.

Idle: alerts one at a time, 2.5 s apart (storm digest off; the channel's token bucket refilled). The
baseline, measured in the same run, is intake alone: POST to the incident existing in Redis.
Storm: 1,000 groups x 5 warning alerts at 32 connections with the shipped storm settings (5 root messages
per channel, then one digest updated in place). While it is ingested and drained, probe alerts (P0 and P1,
alternating, each channel at most one per 1.2 s) measure alert -> first Slack call for an incident that
opens during the storm. Afterwards: the most posts any channel got in a 1-second window once its burst
was spent (the sustained limit is SLACK_POSTS_PER_SECOND, 1/s).
Targets: idle p95 <= 250 ms, storm p95 <= 1 s, <= 1 post/s per channel after the burst.
Ends with one JSON line of the figures.

Usage: .venv/bin/python bench/slack_latency.py [--idle 15] [--groups 1000] [--probes 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import httpx
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (
    free_port,
    machine,
    notification,
    pct,
    peak_rss_mib,
    start_http,
    start_lanes,
    stop_all,
)
from bench.storm import TOKEN, post_all
from bot.sandbox.slack_emulator import SlackEmulator
from tests.support.services import RedisServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}
BURST = 3  # SLACK_POST_BURST's default


def start_bot(env: dict[str, str]) -> tuple[list[subprocess.Popen[bytes]], str]:
    """Web and one worker per lane; returns the processes (web first) and the web's base URL."""
    port = free_port()
    web = start_http([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], env, port)
    return [web, *start_lanes(env)], f"http://127.0.0.1:{port}"


def posted_text(call: object) -> str:
    """The text and blocks of a recorded chat call, as one string to search."""
    params = call.params  # type: ignore[attr-defined]
    return json.dumps(params.get("blocks", "")) + str(params.get("text", ""))


def first_post(slack: SlackEmulator, marker: str, deadline: float) -> float | None:
    """When (monotonic) the first chat.postMessage carrying `marker` arrived, waiting until `deadline`."""
    while time.monotonic() < deadline:
        hit = next((c for c in slack.calls_of("chat.postMessage") if marker in posted_text(c)), None)
        if hit is not None:
            return hit.at
        time.sleep(0.002)
    return None


def probe_body(n: int) -> tuple[dict[str, Any], str]:
    """A P0 (even n) or P1 (odd n) alert of a group of its own, and the marker its Slack post carries."""
    group = 200_000 + n
    body = notification(group, 1)
    labels = body["alerts"][0]["labels"]
    name = "VLLMAllReplicasDown" if n % 2 == 0 else "VLLMProbeCritical"
    labels.update({"alertname": name, "severity": "critical", "namespace": "llm-d"})
    body["commonLabels"] = {"alertname": name, "severity": "critical"}
    body["groupKey"] = f'{{}}:{{alertname="{name}", group="{group}"}}'
    return body, f"group {group})"


def idle_run(
    args: argparse.Namespace, env: dict[str, str], slack: SlackEmulator, r: redis.Redis
) -> dict[str, Any]:
    procs, base = start_bot({**env, "SLACK_STORM_THRESHOLD": "100000"})
    slack_ms, intake_ms = [], []
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            for g in range(args.idle + 1):  # the first is a warm-up
                body = notification(100_000 + g, 1)
                marker = f"group {100_000 + g})"
                t0_mono, t0 = time.monotonic(), time.perf_counter()
                http.post("/alertmanager", json=body, headers=AUTH)
                while not any(
                    body["groupKey"] == json.loads(x)["group_key"]
                    for x in r.mget([f"ib:inc:{i.decode()}" for i in r.zrange("ib:incidents", -3, -1)])
                    if x
                ):
                    time.sleep(0.001)
                intake = (time.perf_counter() - t0) * 1000
                at = first_post(slack, marker, time.monotonic() + 30)
                assert at is not None, f"no Slack post for group {g}"
                if g:
                    intake_ms.append(intake)
                    slack_ms.append((at - t0_mono) * 1000)
                time.sleep(2.5)  # idle: let the channel's token bucket refill
    finally:
        stop_all(*procs)
    return {"slack_ms": slack_ms, "intake_ms": intake_ms}


def probes(base: str, slack: SlackEmulator, count: int, out: list[float]) -> None:
    """Send `count` probes 0.6 s apart (each channel one per 1.2 s); append each one's latency (ms)."""
    with httpx.Client(base_url=base, timeout=30) as http:
        sent = []
        for n in range(count):
            body, marker = probe_body(n)
            t0 = time.monotonic()
            http.post("/alertmanager", json=body, headers=AUTH)
            sent.append((t0, marker))
            time.sleep(0.6)
        for t0, marker in sent:
            at = first_post(slack, marker, t0 + 60)
            out.append((at - t0) * 1000 if at is not None else float("inf"))


def after_burst_rate(posts: list[Any]) -> tuple[float, dict[str, int]]:
    """The highest rate (posts/s) any channel sustained beyond its burst, over any stretch of its posts.

    For each run of a channel's posts from the i-th to the j-th (at least 2 s apart), (count - BURST) /
    duration: a token bucket of 1 post/s with a burst of BURST keeps this at or under 1.0.
    """
    by_channel: dict[str, list[float]] = defaultdict(list)
    for c in posts:
        by_channel[str(c.params.get("channel"))].append(c.at)
    worst = 0.0
    for times in by_channel.values():
        ts = sorted(times)
        for i in range(len(ts)):
            for j in range(i + 1, len(ts)):
                span = ts[j] - ts[i]
                if span >= 2.0:
                    worst = max(worst, (j - i + 1 - BURST) / span)
    return round(worst, 2), {ch: len(t) for ch, t in by_channel.items()}


def storm_run(
    args: argparse.Namespace, env: dict[str, str], slack: SlackEmulator, r: redis.Redis
) -> dict[str, Any]:
    procs, base = start_bot(env)
    probe_ms: list[float] = []
    try:
        bodies = [json.dumps(notification(g, 5)).encode() for g in range(args.groups)]
        prober = threading.Thread(target=probes, args=(base, slack, args.probes, probe_ms), daemon=True)
        started = time.monotonic()
        prober.start()
        ingest_s, codes = asyncio.run(post_all(f"{base}/alertmanager", bodies))
        drained = None
        while time.monotonic() - started < 600:
            queues = sum(r.llen(q) for q in ("alerts", "paging", "notifications"))
            if r.zcard("ib:incidents") >= args.groups + args.probes and queues == 0:
                drained = time.monotonic() - started
                break
            time.sleep(0.1)
        prober.join(120)
        time.sleep(3)  # the last digest flush
        web_rss = peak_rss_mib(procs[0].pid, children=False)
        worker_rss = sum(peak_rss_mib(p.pid) for p in procs[1:])
    finally:
        stop_all(*procs)
    posts = slack.ok_calls_of("chat.postMessage")
    worst, per_channel = after_burst_rate(posts)
    return {
        "ingest_s": ingest_s,
        "codes": codes,
        "drained_s": drained,
        "posts": len(posts),
        "posts_per_channel": per_channel,
        "updates": len(slack.ok_calls_of("chat.update")),
        "max_posts_per_channel_second_after_burst": worst,
        "probe_ms": probe_ms,
        "incidents": r.zcard("ib:incidents"),
        "web_rss": web_rss,
        "worker_rss": worker_rss,
    }


def report(args: argparse.Namespace, idle: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    sl, it, pr = idle["slack_ms"], idle["intake_ms"], s["probe_ms"]
    print(f"machine: {machine()}")
    print(f"idle, {len(sl)} alerts one at a time (alert -> first chat.postMessage at the emulator):")
    print(
        f"  alert -> Slack      p50 {pct(sl, 50):7.1f} ms  p95 {pct(sl, 95):7.1f} ms  "
        f"p99 {pct(sl, 99):7.1f} ms"
    )
    print(
        f"  baseline intake     p50 {pct(it, 50):7.1f} ms  p95 {pct(it, 95):7.1f} ms  "
        f"p99 {pct(it, 99):7.1f} ms  (POST -> incident in Redis)"
    )
    print(f"  ratio (p50) Slack / intake: {statistics.median(sl) / statistics.median(it):.2f}")
    print(f"storm, {args.groups} groups x 5 alerts, 32 connections, {len(pr)} P0/P1 probes meanwhile:")
    print(
        f"  ingest {s['ingest_s']:.2f} s {s['codes']}; backlog drained after {s['drained_s']:.2f} s; "
        f"{s['incidents']} incidents recorded"
    )
    print(
        f"  probe alert -> Slack  p50 {pct(pr, 50):7.1f} ms  p95 {pct(pr, 95):7.1f} ms  max {max(pr):7.1f} ms"
    )
    print(
        f"  Slack: {s['posts']} chat.postMessage {s['posts_per_channel']}, {s['updates']} chat.update; "
        f"beyond each channel's burst of {BURST}: at most {s['max_posts_per_channel_second_after_burst']} "
        "posts/s sustained by any channel"
    )
    print(f"  peak RSS: web {s['web_rss']:.0f} MiB, workers {s['worker_rss']:.0f} MiB")
    figures = {
        "idle": {"p50_ms": round(pct(sl, 50), 1), "p95_ms": round(pct(sl, 95), 1), "n": len(sl)},
        "idle_intake_baseline": {"p50_ms": round(pct(it, 50), 1), "p95_ms": round(pct(it, 95), 1)},
        "storm": {"p50_ms": round(pct(pr, 50), 1), "p95_ms": round(pct(pr, 95), 1), "n": len(pr)},
        "posts_per_channel_second_after_burst": s["max_posts_per_channel_second_after_burst"],
        "storm_drained_s": round(s["drained_s"] or -1, 2),
    }
    ok = figures["idle"]["p95_ms"] <= 250 and figures["storm"]["p95_ms"] <= 1000
    ok = ok and figures["posts_per_channel_second_after_burst"] <= 1
    print(
        "targets (idle p95 <= 250 ms, storm p95 <= 1 s, <= 1 post/s per channel): "
        + ("met" if ok else "MISSED")
    )
    print(json.dumps(figures))
    return figures


def main() -> int:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=int, default=15)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=8)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    r = redis.Redis.from_url(url)
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
            idle = idle_run(args, env, slack, r)
            r.flushdb()
            slack.reset()
            storm = storm_run(args, env, slack, r)
    finally:
        server.cleanup()
    report(args, idle, storm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
