"""A bounded, loopback-only traffic generator that sends completions to emulated vLLM servers.

It is open-loop (requests are scheduled at a fixed rate, round-robin over the servers) with a cap on
requests in flight, and it is bounded three ways: ``max_requests`` (at most ``MAX_REQUESTS``),
``duration_s`` (at most ``MAX_DURATION_S``) and a stop event. It refuses any URL outside 127.0.0.0/8,
so a sandbox rehearsal can never load a real serving tier.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

import httpx

MAX_REQUESTS = 10_000
MAX_DURATION_S = 600.0


@dataclass(frozen=True)
class TrafficPlan:
    """How much traffic to send: rate, bounds and the request shape."""

    rps: float
    duration_s: float
    max_requests: int = 1_000
    concurrency: int = 32
    max_tokens: int = 8
    stream: bool = False
    chat: bool = False
    model: str | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.rps <= 1_000 and math.isfinite(self.rps)):
            raise ValueError("rps must be within (0, 1000]")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration_s must be within (0, {MAX_DURATION_S}]")
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            raise ValueError(f"max_requests must be within 1..{MAX_REQUESTS}")
        if not 1 <= self.concurrency <= 256:
            raise ValueError("concurrency must be within 1..256")

    @property
    def total(self) -> int:
        """Requests the plan sends at most."""
        return min(self.max_requests, math.ceil(self.rps * self.duration_s))


@dataclass(frozen=True)
class TrafficReport:
    """What happened: counts by outcome and latency of the successful requests."""

    sent: int
    ok: int
    failed: int
    outcomes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    elapsed_s: float = 0.0
    mean_latency_s: float | None = None
    max_latency_s: float | None = None


def require_loopback(url: str) -> str:
    """Return the URL without a trailing slash, or raise ValueError if its host is not loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL")
    if host != "localhost":
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{url!r}: host must be a 127.0.0.0/8 address or localhost") from None
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"{url!r} is outside 127.0.0.0/8; the traffic generator is sandbox-only")
    return url.rstrip("/")


async def generate_traffic(
    urls: Sequence[str],
    plan: TrafficPlan,
    *,
    api_key: str | None = None,
    stop: threading.Event | None = None,
) -> TrafficReport:
    """Send ``plan.total`` completions at ``plan.rps``, round-robin over ``urls``; returns a report."""
    targets = [require_loopback(u) for u in urls]
    if not targets:
        raise ValueError("no target URLs")
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(plan.concurrency)
    path = "/v1/chat/completions" if plan.chat else "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body: dict[str, object] = {"max_tokens": plan.max_tokens, "stream": plan.stream, "temperature": 0}
    if plan.model:
        body["model"] = plan.model
    if plan.chat:
        body["messages"] = [{"role": "user", "content": "ping"}]
    else:
        body["prompt"] = "ping"

    async def one(client: httpx.AsyncClient, url: str) -> None:
        started = time.perf_counter()
        try:
            async with client.stream("POST", url + path, json=body, headers=headers) as response:
                await response.aread()
            outcome = str(response.status_code)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError:
            outcome = "connection_error"
        finally:
            semaphore.release()
        outcomes[outcome] += 1

    started = time.perf_counter()
    deadline = started + plan.duration_s
    tasks: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=plan.concurrency)
    async with httpx.AsyncClient(timeout=plan.timeout_s, limits=limits, trust_env=False) as client:
        for i in range(plan.total):
            due = started + i / plan.rps
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if (stop is not None and stop.is_set()) or time.perf_counter() >= deadline:
                break
            await semaphore.acquire()
            tasks.append(asyncio.create_task(one(client, targets[i % len(targets)])))
        if tasks:
            await asyncio.gather(*tasks)
    ok = outcomes.get("200", 0)
    return TrafficReport(
        sent=len(tasks),
        ok=ok,
        failed=len(tasks) - ok,
        outcomes=MappingProxyType(dict(outcomes)),
        elapsed_s=time.perf_counter() - started,
        mean_latency_s=sum(latencies) / len(latencies) if latencies else None,
        max_latency_s=max(latencies) if latencies else None,
    )


def run_traffic(urls: Sequence[str], plan: TrafficPlan, *, api_key: str | None = None) -> TrafficReport:
    """Blocking ``generate_traffic`` for synchronous callers."""
    return asyncio.run(generate_traffic(urls, plan, api_key=api_key))


class BackgroundTraffic:
    """``generate_traffic`` in a daemon thread: ``start()``, later ``stop()`` or ``join()`` for the report."""

    def __init__(self, urls: Sequence[str], plan: TrafficPlan, *, api_key: str | None = None) -> None:
        self._urls = [require_loopback(u) for u in urls]
        self._plan = plan
        self._api_key = api_key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-traffic", daemon=True)
        self.report: TrafficReport | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.report = asyncio.run(
                generate_traffic(self._urls, self._plan, api_key=self._api_key, stop=self._stop)
            )
        except BaseException as exc:  # surfaced to the caller through join()
            self.error = exc

    def start(self) -> BackgroundTraffic:
        """Begin sending in the background."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> TrafficReport | None:
        """Wait for the plan to finish; re-raise its error; the report (None if still running)."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.report

    def stop(self, timeout: float = 15.0) -> TrafficReport | None:
        """Stop scheduling new requests, wait for those in flight, return the report."""
        self._stop.set()
        return self.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the generator thread is still sending."""
        return self._thread.is_alive()
