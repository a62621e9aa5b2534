"""An emulated vLLM OpenAI-compatible server (one per pod) on loopback, for demos, rehearsals and tests.

Each ``VLLMEmulator`` is a real HTTP server (Starlette on uvicorn, in its own thread) on 127.0.0.1 and
an ephemeral port, so many can run in one process. It speaks the vLLM 0.33 wire protocol:
``/health``, ``/ping``, ``/version``, ``/load``, ``/v1/models``, ``/metrics`` (real metric names and
labels, rendered by prometheus_client) and ``/v1/completions`` / ``/v1/chat/completions`` (tiny
deterministic output, SSE streaming ending in ``data: [DONE]``), with an ``--api-key`` style guard on
``/v1`` paths.

Load model (per pod, recomputed whenever asked; no background thread):

    share     = offered_rps / replicas() + arrival rate of real requests at this pod
    capacity  = max_num_seqs / service_time_s                         (requests/s one replica serves)
    running   = min(max_num_seqs, max(share * service_time_s, real requests in flight))
    waiting   = max(0, share - capacity) * queue_horizon_s + real requests beyond max_num_seqs
    kv usage  = kv_base + kv_span * running / max_num_seqs + kv_queue_span * min(1, waiting / max_num_seqs)
    queue     = waiting / capacity;  TTFT = base_ttft_s + queue + extra_ttft_s;  e2e = service + queue

``offered_rps`` is the pool-wide synthetic load a scenario sets; ``replicas()`` is the number of ready
decode replicas (the Kubernetes emulator provides it; a constant by default), so scaling decode lowers
every pod's share and with it queue depth, KV-cache usage and latency. Counters and histograms
advance with the clock for the synthetic load served, and with every real request.

Faults are switched with ``set()``: ``engine_dead`` (503 on /health, 500 on /v1), ``slow_s`` (every
response delayed), ``legacy_metric_names`` (``vllm:gpu_cache_usage_perc`` and
``vllm:time_per_output_token_seconds`` instead of the 0.33 names), ``kv_cache_usage_min`` and
``preemptions_per_s`` (GPU memory pressure), ``error_ratio`` (that share of requests fails with a 500: a
bad canary at its traffic weight); ``stop()`` makes the port refuse connections. The gateway counters
``inference_objective_request_total`` / ``inference_objective_request_error_total`` (what llm-d's EPP
exports, and the shipped error-rate rules read) count this endpoint's synthetic and real requests.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                         10.0, 20.0, 40.0, 80.0)  # fmt: skip

_WORDS = ("the", " pool", " is", " healthy", " and", " tokens", " flow", " steadily", ".")


@dataclass(frozen=True)
class EmulatorConfig:
    """What a pod serves and how fast it is: fixed for the emulator's life."""

    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    served_model_name: str | None = None
    version: str = "0.33.0"
    engine: str = "0"
    max_model_len: int = 8192
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    max_num_seqs: int = 16
    service_time_s: float = 0.8
    base_ttft_s: float = 0.02
    inter_token_s: float = 0.002
    queue_horizon_s: float = 10.0
    rate_window_s: float = 5.0
    prompt_tokens: int = 128
    output_tokens: int = 64
    kv_base: float = 0.02
    kv_span: float = 0.7
    kv_queue_span: float = 0.25
    max_real_delay_s: float = 5.0
    """Real requests never sleep longer than this, however overloaded the model says the pod is."""

    def __post_init__(self) -> None:
        if not self.host.startswith("127."):
            raise ValueError("the vLLM emulator binds loopback (127.0.0.0/8) only")
        if self.max_num_seqs < 1 or self.service_time_s <= 0:
            raise ValueError("max_num_seqs and service_time_s must be positive")

    @property
    def name(self) -> str:
        """The model name clients use (``--served-model-name`` or the model)."""
        return self.served_model_name or self.model

    @property
    def capacity_rps(self) -> float:
        """Requests per second one replica serves without queueing."""
        return self.max_num_seqs / self.service_time_s


@dataclass
class EmulatorControls:
    """The knobs a scenario or test turns while the emulator runs."""

    offered_rps: float = 0.0
    engine_dead: bool = False
    slow_s: float = 0.0
    legacy_metric_names: bool = False
    kv_cache_usage_min: float = 0.0
    preemptions_per_s: float = 0.0
    prefix_cache_hit_ratio: float = 0.3
    extra_ttft_s: float = 0.0
    error_ratio: float = 0.0
    """Share of requests that fail (HTTP 500, counted by the gateway metrics), e.g. a bad canary's weight."""

    def validate(self) -> None:
        """Raise ValueError when a knob is out of range."""
        for name in ("offered_rps", "slow_s", "preemptions_per_s", "extra_ttft_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("kv_cache_usage_min", "prefix_cache_hit_ratio", "error_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within [0, 1]")


CONTROL_NAMES = frozenset(f.name for f in dataclasses.fields(EmulatorControls))


@dataclass(frozen=True)
class LoadState:
    """The queueing model's answer for one instant."""

    share_rps: float
    capacity_rps: float
    running: float
    waiting: float
    kv_cache_usage: float
    queue_time_s: float
    ttft_s: float
    e2e_s: float


def compute_load(
    config: EmulatorConfig, controls: EmulatorControls, replicas: int, real_rps: float, inflight: int
) -> LoadState:
    """The pure queueing model: per-pod share of the offered load against this pod's capacity."""
    if controls.engine_dead:
        return LoadState(0.0, config.capacity_rps, 0.0, 0.0, controls.kv_cache_usage_min, 0.0, 0.0, 0.0)
    share = controls.offered_rps / max(1, replicas) + real_rps
    capacity = config.capacity_rps
    running = float(math.floor(min(config.max_num_seqs, max(share * config.service_time_s, inflight))))
    waiting = max(0.0, share - capacity) * config.queue_horizon_s + max(0, inflight - config.max_num_seqs)
    waiting = float(math.floor(waiting))
    kv = (
        config.kv_base
        + config.kv_span * running / config.max_num_seqs
        + config.kv_queue_span * min(1.0, waiting / config.max_num_seqs)
    )
    kv = round(min(1.0, max(kv, controls.kv_cache_usage_min)), 6)
    queue = waiting / capacity
    utilisation = min(1.0, share / capacity)
    ttft = config.base_ttft_s * (1 + utilisation) + queue + controls.extra_ttft_s
    e2e = config.service_time_s * (1 + 0.25 * utilisation) + queue + controls.extra_ttft_s
    return LoadState(share, capacity, running, waiting, kv, queue, ttft, e2e)


class ReplicaCount:
    """A settable ready-replica count to pass as ``replicas=`` (call it to read, ``set()`` to change)."""

    def __init__(self, value: int = 1) -> None:
        self._value = value

    def __call__(self) -> int:
        return self._value

    def set(self, value: int) -> None:
        """Change the count (as if the Deployment scaled and its pods became ready)."""
        if value < 0:
            raise ValueError("replicas cannot be negative")
        self._value = value


class _Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        if n <= 0:
            return
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                index = i
                break
        self.counts[index] += n
        self.sum += value * n

    def exposition(self) -> tuple[list[tuple[str, float]], float]:
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(cumulative)))
        return buckets, self.sum


class _Stats:
    """Counters and histograms of one pod, advanced lazily."""

    def __init__(self) -> None:
        self.success = 0
        self.preemptions = 0.0
        self.prefix_queries = 0.0
        self.prefix_hits = 0.0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.e2e = _Histogram(REQUEST_LATENCY_BUCKETS)
        self.queue = _Histogram(REQUEST_LATENCY_BUCKETS)
        self.itl = _Histogram(TOKEN_LATENCY_BUCKETS)
        self.pending = 0.0
        self.gateway_requests = 0.0
        self.gateway_errors = 0.0
        self.error_debt = 0.0


class VLLMEmulator:
    """One emulated vLLM server; ``start()`` it, read ``url``, ``set()`` faults, ``stop()`` it."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        replicas: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **controls: Any,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._replicas_fn = replicas or (lambda: 1)
        self._last_replicas = 1
        self._clock = clock
        self._lock = threading.RLock()
        self._controls = EmulatorControls()
        self._stats = _Stats()
        self._arrivals: deque[float] = deque()
        self._inflight = 0
        self._last_advance = clock()
        self._created = int(time.time())
        self._port = self.config.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)
        if controls:
            self.set(**controls)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (known once started; kept across stop/start)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if not self._port:
            raise RuntimeError("emulator not started yet")
        return f"http://{self.config.host}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the HTTP server is accepting connections."""
        return self._server is not None

    def start(self, timeout: float = 10.0) -> VLLMEmulator:
        """Bind (the previous port again after a stop) and serve in a background thread."""
        if self._server is not None:
            return self
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
        # socket's proto says TCP; with proto 0 every response body waited ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi_app(),
            lifespan="off",
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name=f"vllm-emulator-{self._port}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"vLLM emulator on port {self._port} did not start")
            time.sleep(0.01)
        self._server, self._thread, self._sock = server, thread, sock
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: the port then refuses connections (a dead pod)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = None
        self._sock = None
        with self._lock:
            self._inflight = 0

    def restart(self) -> VLLMEmulator:
        """Stop and start again on the same port with fresh counters (a restarted container)."""
        self.stop()
        with self._lock:
            self._stats = _Stats()
            self._arrivals.clear()
            self._last_advance = self._clock()
            self._controls = dataclasses.replace(self._controls, engine_dead=False)
        return self.start()

    def __enter__(self) -> VLLMEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- controls and model ------------------------------------------------------------------

    @property
    def controls(self) -> EmulatorControls:
        """A copy of the current knobs."""
        with self._lock:
            return dataclasses.replace(self._controls)

    def set(self, **changes: Any) -> None:
        """Change knobs (names of EmulatorControls); counters first catch up to now."""
        unknown = set(changes) - CONTROL_NAMES
        if unknown:
            raise ValueError(f"unknown emulator control(s): {sorted(unknown)}")
        with self._lock:
            self._advance()
            updated = dataclasses.replace(self._controls, **changes)
            updated.validate()
            self._controls = updated

    def set_replicas(self, replicas: Callable[[], int]) -> None:
        """Replace the source of the ready decode replica count."""
        with self._lock:
            self._advance()
            self._replicas_fn = replicas

    def replicas(self) -> int:
        """The ready decode replica count now (the last good value if the source fails)."""
        try:
            value = int(self._replicas_fn())
        except Exception:  # the source belongs to another emulator; keep serving on its failure
            log.warning("replicas() failed; using the last value %d", self._last_replicas, exc_info=True)
            return self._last_replicas
        self._last_replicas = max(0, value)
        return self._last_replicas

    def _real_rps(self, now: float) -> float:
        window = self.config.rate_window_s
        while self._arrivals and self._arrivals[0] < now - window:
            self._arrivals.popleft()
        return len(self._arrivals) / window

    def state(self) -> LoadState:
        """The queueing model's current answer."""
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> LoadState:
        return compute_load(self.config, self._controls, self.replicas(), self._real_rps(now), self._inflight)

    def _advance(self) -> None:
        """Account for the synthetic load served since the last call."""
        now = self._clock()
        dt = min(max(0.0, now - self._last_advance), 3600.0)
        self._last_advance = now
        if dt == 0:
            return
        controls, stats, cfg = self._controls, self._stats, self.config
        state = self._state(now)
        if controls.engine_dead:
            return
        synthetic = controls.offered_rps / max(1, self.replicas())
        stats.pending += min(synthetic, state.capacity_rps) * dt
        served = int(stats.pending)
        stats.pending -= served
        stats.gateway_requests += served
        stats.gateway_errors += served * controls.error_ratio
        stats.success += served
        stats.prompt_tokens += served * cfg.prompt_tokens
        stats.generation_tokens += served * cfg.output_tokens
        stats.prefix_queries += served * cfg.prompt_tokens
        stats.prefix_hits += served * cfg.prompt_tokens * controls.prefix_cache_hit_ratio
        stats.ttft.observe(state.ttft_s, served)
        stats.e2e.observe(state.e2e_s, served)
        stats.queue.observe(state.queue_time_s, served)
        itl = (state.e2e_s - state.ttft_s) / max(1, cfg.output_tokens - 1)
        stats.itl.observe(max(0.0, itl), served * (cfg.output_tokens - 1))
        pressure = state.running * 0.5 if state.kv_cache_usage >= 0.95 else 0.0
        stats.preemptions += (pressure + controls.preemptions_per_s) * dt

    # --- metrics -----------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """prometheus_client collector: the vLLM 0.33 metric families of this pod."""
        with self._lock:
            self._advance()
            state = self._state(self._clock())
            legacy = self._controls.legacy_metric_names
            stats = copy.deepcopy(self._stats)
        names = ["model_name", "engine"]
        labels = [self.config.name, self.config.engine]
        kv_name = "vllm:gpu_cache_usage_perc" if legacy else "vllm:kv_cache_usage_perc"
        gauges = [
            ("vllm:num_requests_running", "Number of requests in model execution batches.", state.running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", state.waiting),
            (kv_name, "KV-cache usage. 1 means 100 percent usage.", state.kv_cache_usage),
        ]
        counters = [
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", stats.preemptions),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.", stats.generation_tokens),
            ("vllm:prefix_cache_queries", "Prefix cache queries, in tokens.", stats.prefix_queries),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", stats.prefix_hits),
        ]
        itl_name = "vllm:time_per_output_token_seconds" if legacy else "vllm:inter_token_latency_seconds"
        histograms = [
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stats.ttft),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", stats.e2e),
            ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase.", stats.queue),
            (itl_name, "Histogram of inter-token latency in seconds.", stats.itl),
        ]
        out: list[Metric] = []
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=names)
            gauge.add_metric(labels, float(value))
            out.append(gauge)
        for name, doc, value in counters:
            counter = CounterMetricFamily(name, doc, labels=names)
            counter.add_metric(labels, float(math.floor(value)))
            out.append(counter)
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*names, "finished_reason"],
        )
        for reason in ("stop", "length", "abort"):
            success.add_metric([*labels, reason], float(stats.success) if reason == "length" else 0.0)
        out.append(success)
        out.extend(self._gateway_families(stats))
        for name, doc, hist in histograms:
            family = HistogramMetricFamily(name, doc, labels=names)
            buckets, total = hist.exposition()
            family.add_metric(labels, buckets, total)
            out.append(family)
        return out

    def _gateway_families(self, stats: _Stats) -> list[Metric]:
        """The gateway's (GAIE EPP) request and error counters for this endpoint: the sandbox has no EPP."""
        labels = [self.config.name, self.config.name]
        total = CounterMetricFamily(
            "inference_objective_request",
            "Counter of inference objective requests broken out for each model and target model.",
            labels=["model_name", "target_model_name"],
        )
        total.add_metric(labels, float(math.floor(stats.gateway_requests)))
        errors = CounterMetricFamily(
            "inference_objective_request_error",
            "Counter of inference objective requests errors broken out for each model and target model.",
            labels=["model_name", "target_model_name", "error_code"],
        )
        errors.add_metric([*labels, "Internal"], float(math.floor(stats.gateway_errors)))
        return [total, errors]

    def metrics_text(self) -> str:
        """The ``/metrics`` page as the server would send it."""
        return generate_latest(self._registry).decode()

    # --- HTTP --------------------------------------------------------------------------------

    def asgi_app(self) -> ASGIApp:
        """The ASGI application (routes plus the slow-response and API-key guard)."""
        routes = [
            Route("/health", self._health, methods=["GET"]),
            Route("/ping", self._health, methods=["GET", "POST"]),
            Route("/version", self._version, methods=["GET"]),
            Route("/load", self._load, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ]
        return _Guard(Starlette(routes=routes), self)

    async def _health(self, request: Request) -> Response:
        if self.controls.engine_dead:
            return Response(status_code=503)
        return Response(status_code=200)

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": self.config.version})

    async def _load(self, request: Request) -> Response:
        state = self.state()
        with self._lock:
            inflight = self._inflight
        synthetic = state.running + state.waiting
        return JSONResponse({"server_load": int(max(inflight, synthetic))})

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self._registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    async def _models(self, request: Request) -> Response:
        card = {
            "id": self.config.name,
            "object": "model",
            "created": self._created,
            "owned_by": "vllm",
            "root": self.config.model,
            "parent": None,
            "max_model_len": self.config.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def _completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def _chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "BadRequestError", "request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "BadRequestError", "request body must be an object")
        model = body.get("model", self.config.name)
        if model != self.config.name:
            return _error(404, "NotFoundError", f"The model `{model}` does not exist.")
        if chat and not isinstance(body.get("messages"), list):
            return _error(400, "BadRequestError", "messages is required")
        max_tokens = body.get("max_tokens") or 16
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, "BadRequestError", "max_tokens must be a positive integer")
        if self.controls.engine_dead:
            return _error(500, "InternalServerError", "EngineCore encountered an issue. See stack trace.")
        if self._fails_now():
            return _error(500, "InternalServerError", "EngineCore encountered an issue. See stack trace.")
        with self._lock:
            self._advance()
            now = self._clock()
            self._arrivals.append(now)
            self._inflight += 1
            state = self._state(now)
        tokens = [_WORDS[i % len(_WORDS)] for i in range(min(max_tokens, 64))]
        request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        ttft_delay = min(state.ttft_s, self.config.max_real_delay_s)
        if body.get("stream"):
            return StreamingResponse(
                self._stream(request_id, chat, tokens, ttft_delay, state.queue_time_s),
                media_type="text/event-stream",
            )
        started = time.perf_counter()
        try:
            await asyncio.sleep(ttft_delay + self.config.inter_token_s * len(tokens))
        finally:
            self._finish(time.perf_counter() - started, ttft_delay, state.queue_time_s, len(tokens))
        text = "".join(tokens)
        usage = {
            "prompt_tokens": self.config.prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": self.config.prompt_tokens + len(tokens),
        }
        finish = "length" if len(tokens) >= max_tokens else "stop"
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
        return JSONResponse(
            {
                "id": request_id,
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.config.name,
                "choices": [choice],
                "usage": usage,
            }
        )

    def _fails_now(self) -> bool:
        """Count a real request at the gateway; whether it is one of the ``error_ratio`` share that fails."""
        with self._lock:
            stats, ratio = self._stats, self._controls.error_ratio
            stats.gateway_requests += 1
            stats.error_debt += ratio
            if stats.error_debt >= 1.0:
                stats.error_debt -= 1.0
                stats.gateway_errors += 1
                return True
            return False

    async def _stream(
        self, request_id: str, chat: bool, tokens: list[str], ttft_delay: float, queue_time: float
    ) -> AsyncIterator[str]:
        started = time.perf_counter()
        first: float | None = None
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if piece is not None:
                    delta["content"] = piece
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish,
                          "stop_reason": None}  # fmt: skip
            payload = {"id": request_id, "object": kind, "created": created, "model": self.config.name,
                       "choices": [choice]}  # fmt: skip
            return f"data: {json.dumps(payload)}\n\n"

        try:
            if chat:
                yield chunk(None, None, role=True)
            await asyncio.sleep(ttft_delay)
            for i, token in enumerate(tokens):
                if i:
                    await asyncio.sleep(self.config.inter_token_s)
                if first is None:
                    first = time.perf_counter() - started
                last = i == len(tokens) - 1
                yield chunk(token, "length" if last else None)
            yield "data: [DONE]\n\n"
        finally:
            self._finish(time.perf_counter() - started, first or 0.0, queue_time, len(tokens))

    def _finish(self, e2e: float, ttft: float, queue_time: float, tokens: int) -> None:
        with self._lock:
            self._inflight = max(0, self._inflight - 1)
            stats = self._stats
            stats.success += 1
            stats.prompt_tokens += self.config.prompt_tokens
            stats.generation_tokens += tokens
            stats.prefix_queries += self.config.prompt_tokens
            stats.prefix_hits += self.config.prompt_tokens * self._controls.prefix_cache_hit_ratio
            stats.ttft.observe(ttft)
            stats.e2e.observe(e2e)
            stats.queue.observe(queue_time)
            if tokens > 1:
                stats.itl.observe(max(0.0, (e2e - ttft) / (tokens - 1)), tokens - 1)


def _error(code: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=code
    )


class _Guard:
    """ASGI wrapper: the scripted response delay, then vLLM's API-key check on ``/v1`` paths."""

    def __init__(self, app: ASGIApp, emulator: VLLMEmulator) -> None:
        self._app = app
        self._emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        delay = self._emulator.controls.slow_s
        if delay:
            await asyncio.sleep(delay)
        key = self._emulator.config.api_key
        if key and scope["path"].startswith("/v1") and scope["method"] != "OPTIONS":
            headers = dict(scope["headers"])
            if headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {key}":
                await JSONResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
                return
        await self._app(scope, receive, send)


# --- fleets -------------------------------------------------------------------------------------


class EmulatorFleet:
    """Several emulated vLLM servers of one model (the pods of a decode pool)."""

    def __init__(self, emulators: Sequence[VLLMEmulator]) -> None:
        self.emulators = list(emulators)

    def __len__(self) -> int:
        return len(self.emulators)

    def __iter__(self) -> Iterator[VLLMEmulator]:
        return iter(self.emulators)

    def __getitem__(self, index: int) -> VLLMEmulator:
        return self.emulators[index]

    @property
    def urls(self) -> list[str]:
        """Base URLs, in pod order."""
        return [e.url for e in self.emulators]

    def set(self, **changes: Any) -> None:
        """Apply the same knob changes to every pod."""
        for emulator in self.emulators:
            emulator.set(**changes)

    def start(self) -> EmulatorFleet:
        """Start every pod that is not running."""
        for emulator in self.emulators:
            emulator.start()
        return self

    def stop(self) -> None:
        """Stop every pod."""
        for emulator in self.emulators:
            emulator.stop()

    def __enter__(self) -> EmulatorFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulators(
    count: int,
    config: EmulatorConfig | None = None,
    *,
    replicas: Callable[[], int] | None = None,
    **controls: Any,
) -> EmulatorFleet:
    """Start ``count`` emulated vLLM servers on ephemeral loopback ports; ``replicas`` defaults to count."""
    if not 1 <= count <= 64:
        raise ValueError("count must be within 1..64")
    source = replicas or (lambda: count)
    fleet = EmulatorFleet([VLLMEmulator(config, replicas=source, **controls) for _ in range(count)])
    try:
        return fleet.start()
    except BaseException:
        fleet.stop()
        raise
