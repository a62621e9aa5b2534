"""Shared helpers of the benchmarks: processes, ports, payloads, memory readings."""

from __future__ import annotations

import math
import os
import platform
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    """One line describing where the benchmark ran."""
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {python}, {platform.system()}"


def start_http(
    cmd: list[str], env: dict[str, str], port: int, path: str = "/healthz"
) -> subprocess.Popen[bytes]:
    """Start a server process and wait until it answers on `path`."""
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=0.5)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    err = proc.stderr.read().decode() if proc.stderr else ""
    raise SystemExit(f"server did not start: {' '.join(cmd)}\n{err[-2000:]}")


def peak_rss_mib(pid: int, *, children: bool = True) -> float:
    """Peak resident memory (VmHWM) of a process, plus its children's, in MiB."""
    pids = [pid]
    if children:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
        pids += [int(p) for p in out.split()]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def notification(group: int, alerts: int = 5, *, status: str = "firing") -> dict[str, Any]:
    """A realistic Alertmanager v4 notification for group number `group`."""
    items = []
    for i in range(alerts):
        items.append(
            {
                "status": status,
                "labels": {
                    "alertname": "VLLMHighQueueDepth",
                    "severity": "warning",
                    "namespace": f"tenant-{group % 50}",
                    "deployment": "vllm-decode",
                    "pod": f"vllm-decode-{i}",
                    "group": str(group),
                },
                "annotations": {"summary": f"decode queue depth above 10 (group {group})"},
                "startsAt": "2026-11-26T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-26T10:30:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": f"{group:08x}{i:08x}",
            }
        )
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="VLLMHighQueueDepth", group="{group}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "incident-bot",
        "groupLabels": {"alertname": "VLLMHighQueueDepth", "group": str(group)},
        "commonLabels": {"alertname": "VLLMHighQueueDepth", "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": items,
    }


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest-rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def time_interleaved(
    calls: dict[str, Callable[[], object]], n: int, *, warmup: int = 20
) -> dict[str, list[float]]:
    """Per-call wall times in ms of each of `calls`, taken in turn (a, b, a, b …) so they share conditions."""
    for _ in range(warmup):  # connections, TLS sessions, caches
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def bare_http_server(
    body: bytes, *, tls: ssl.SSLContext | None = None, content_type: str = "application/json"
) -> tuple[ThreadingHTTPServer, str]:
    """A minimal stdlib HTTP/1.1 server on 127.0.0.1 answering every GET/POST/PUT with `body`.

    The baseline for the loopback emulators: ThreadingHTTPServer, keep-alive, TCP_NODELAY, the body
    prebuilt, headers and body written the way BaseHTTPRequestHandler does (end_headers, then the body),
    TLS with `tls`. Returns the server (stop it with ``shutdown()`` + ``server_close()``) and its base URL.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = answer

        def log_message(self, format: str, *args: Any) -> None:
            """No access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="bare-http", daemon=True).start()
    return server, f"{'https' if tls is not None else 'http'}://127.0.0.1:{server.server_address[1]}"


#: The lanes as deploy/ and the Procfile run them (bot/tasknames.py LANES): queues, pool, threads.
LANE_WORKERS = {
    "intake": ("alerts,paging", 4),
    "notifications": ("notifications", 8),
    "runbooks": ("runbooks", 2),
}


def start_lanes(
    env: dict[str, str], lanes: tuple[str, ...] = ("intake", "notifications")
) -> list[subprocess.Popen[bytes]]:
    """One `incident-bot worker` process per lane (threads pool), as deployed; waits for them to boot."""
    import sys

    procs = []
    for lane in lanes:
        queues, threads = LANE_WORKERS[lane]
        argv = [sys.executable, "-m", "bot.cli", "worker", "--queues", queues]
        argv += ["--pool", "threads", "--concurrency", str(threads)]
        procs.append(
            subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    time.sleep(3.0)  # worker boot (imports, broker connection)
    return procs


def stop_all(*procs: subprocess.Popen[bytes]) -> None:
    """Terminate (Celery's warm shutdown) and reap."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
