"""The vLLM serving tier over HTTP (httpx): health, models, metrics, load, version and warmup.

A model is served by several vLLM servers, each known by its base URL (``http://10.1.2.3:8000``):
a static list from ``VLLM_ENDPOINTS`` or pod URLs a caller discovered. Every call takes the base URL;
the ``*_all`` helpers fan out to many servers with bounded concurrency and return one result per
server, in the order given, without letting one dead server hide the others.

Error mapping (vendor errors never leave this module):

    timeouts, connection refused/reset, 5xx, 408, 429   -> TransientError
    other 4xx (401 bad key, 404 wrong path, 400 ...)    -> PermanentError
    a /metrics body that is not Prometheus text         -> PermanentError

``health()`` is an observation rather than an action, so it reports 200 / 503 / unreachable as a
``HealthState`` instead of raising; only a 4xx (not a vLLM server, or a proxy refusing us) raises.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.errors import IncidentBotError, PermanentError, TransientError
from bot.settings import Settings

T = TypeVar("T")

KV_CACHE_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
"""KV-cache usage gauges, newest name first (``gpu_cache_usage_perc`` is gone since vLLM 0.11)."""


# --- value objects ------------------------------------------------------------------------------


class HealthState(enum.Enum):
    """What ``GET /health`` said about one server."""

    OK = "ok"
    ENGINE_DEAD = "engine_dead"
    UNREACHABLE = "unreachable"
    ERROR = "error"


@dataclass(frozen=True)
class HealthReport:
    """One server's health: the state, the HTTP status if any, and why."""

    url: str
    state: HealthState
    status_code: int | None
    latency_s: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the server answered 200 on /health."""
        return self.state is HealthState.OK


@dataclass(frozen=True)
class ModelCard:
    """One entry of ``GET /v1/models``."""

    id: str
    owned_by: str
    root: str | None
    max_model_len: int | None


@dataclass(frozen=True)
class HistogramSummary:
    """A cumulative Prometheus histogram reduced to count, sum, mean and bucket quantiles."""

    count: float
    sum: float
    buckets: tuple[tuple[float, float], ...]
    """(upper bound, cumulative count) pairs, ascending, ``+Inf`` last."""

    @property
    def mean(self) -> float | None:
        """Mean observation, or None when nothing was observed."""
        return self.sum / self.count if self.count > 0 else None

    @property
    def p95(self) -> float | None:
        """Approximate 95th percentile from the buckets."""
        return self.quantile(0.95)

    def quantile(self, q: float) -> float | None:
        """Approximate quantile by linear interpolation inside a bucket, as PromQL histogram_quantile."""
        return bucket_quantile(q, self.buckets)

    def since(self, earlier: HistogramSummary) -> HistogramSummary:
        """The observations made after ``earlier`` (same buckets), for a windowed view."""
        before = dict(earlier.buckets)
        return HistogramSummary(
            count=self.count - earlier.count,
            sum=self.sum - earlier.sum,
            buckets=tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
        )


@dataclass(frozen=True)
class ModelMetrics:
    """The serving signals of one ``model_name`` on one server, summed over its engines."""

    model_name: str
    num_requests_running: float = 0.0
    num_requests_waiting: float = 0.0
    kv_cache_usage: float | None = None
    """0-1; the busiest engine's value."""
    kv_cache_metric: str | None = None
    """Which gauge supplied kv_cache_usage (new or legacy name)."""
    preemptions_total: float | None = None
    prefix_cache_queries_total: float | None = None
    prefix_cache_hits_total: float | None = None
    request_success_total: float | None = None
    ttft: HistogramSummary | None = None
    e2e_latency: HistogramSummary | None = None
    queue_time: HistogramSummary | None = None

    @property
    def prefix_cache_hit_ratio(self) -> float | None:
        """Prefix cache hits over queries since start, or None without queries."""
        if not self.prefix_cache_queries_total or self.prefix_cache_hits_total is None:
            return None
        return self.prefix_cache_hits_total / self.prefix_cache_queries_total


@dataclass(frozen=True)
class MetricsSnapshot:
    """A parsed ``/metrics`` page: per-model signals plus every vllm sample name seen."""

    url: str
    models: Mapping[str, ModelMetrics]
    metric_names: frozenset[str] = field(default_factory=frozenset)

    def model(self, name: str | None = None) -> ModelMetrics:
        """The metrics of ``name``, or of the only model when name is None."""
        if name is None:
            if len(self.models) != 1:
                raise PermanentError(f"{self.url}: {len(self.models)} models in /metrics; name one")
            return next(iter(self.models.values()))
        try:
            return self.models[name]
        except KeyError:
            raise PermanentError(f"{self.url}: no metrics for model {name!r}") from None

    @property
    def num_requests_waiting(self) -> float:
        """Queue depth summed over every model on the server."""
        return sum(m.num_requests_waiting for m in self.models.values())

    @property
    def num_requests_running(self) -> float:
        """Running requests summed over every model on the server."""
        return sum(m.num_requests_running for m in self.models.values())


@dataclass(frozen=True)
class WarmupResult:
    """Outcome of a tiny streamed completion: time to first token and to the end."""

    url: str
    model: str
    ttft_s: float
    total_s: float
    text: str
    chunks: int


@dataclass(frozen=True)
class FanoutResult(Generic[T]):
    """One server's answer in a fan-out: a value or the project error it raised."""

    url: str
    value: T | None
    error: IncidentBotError | None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None


@dataclass(frozen=True)
class VLLMTimeouts:
    """Client timeouts in seconds."""

    connect: float = 2.0
    read: float = 10.0
    warmup: float = 60.0

    def httpx(self) -> httpx.Timeout:
        """As an httpx.Timeout."""
        return httpx.Timeout(self.read, connect=self.connect)


# --- /metrics parsing (pure) -----------------------------------------------------------------


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Quantile q (0-1) from cumulative (upper bound, count) buckets, as PromQL histogram_quantile."""
    if not 0 <= q <= 1:
        raise ValueError("quantile must be within [0, 1]")
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in ordered:
        if count >= rank:
            if math.isinf(upper_bound):
                # Like Prometheus: a rank in the +Inf bucket reports the highest finite bound.
                return lower_bound
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return lower_bound


class _HistogramParts:
    def __init__(self) -> None:
        self.buckets: dict[float, float] = {}
        self.count = 0.0
        self.sum = 0.0

    def summary(self) -> HistogramSummary:
        return HistogramSummary(count=self.count, sum=self.sum, buckets=tuple(sorted(self.buckets.items())))


_GAUGES_SUMMED = {
    "vllm:num_requests_running": "num_requests_running",
    "vllm:num_requests_waiting": "num_requests_waiting",
}
_COUNTERS = {
    "vllm:num_preemptions_total": "preemptions_total",
    "vllm:prefix_cache_queries_total": "prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits_total",
    "vllm:request_success_total": "request_success_total",
}
_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": "ttft",
    "vllm:e2e_request_latency_seconds": "e2e_latency",
    "vllm:request_queue_time_seconds": "queue_time",
}


def parse_metrics(text: str, url: str = "") -> MetricsSnapshot:
    """Parse a vLLM ``/metrics`` page (Prometheus text format) into a typed snapshot per model_name."""
    values: dict[str, dict[str, Any]] = {}
    kv: dict[str, dict[str, float]] = {}
    histograms: dict[str, dict[str, _HistogramParts]] = {}
    names: set[str] = set()

    def slot(model: str) -> dict[str, Any]:
        return values.setdefault(model, {})

    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, TypeError) as exc:
        raise PermanentError(f"{url or 'metrics'}: not Prometheus text exposition: {exc}") from exc
    for family in families:
        for sample in family.samples:
            name = sample.name
            if not name.startswith("vllm:"):
                continue
            names.add(name)
            model = sample.labels.get("model_name", "")
            value = float(sample.value)
            if name in _GAUGES_SUMMED:
                key = _GAUGES_SUMMED[name]
                slot(model)[key] = slot(model).get(key, 0.0) + value
            elif name in KV_CACHE_METRICS:
                current = kv.setdefault(model, {})
                current[name] = max(current.get(name, 0.0), value)
            elif name in _COUNTERS:
                key = _COUNTERS[name]
                slot(model)[key] = slot(model).get(key, 0.0) + value
            else:
                for base, key in _HISTOGRAMS.items():
                    if not name.startswith(base):
                        continue
                    suffix = name[len(base) :]
                    parts = histograms.setdefault(model, {}).setdefault(key, _HistogramParts())
                    if suffix == "_bucket":
                        le = float(sample.labels["le"])
                        parts.buckets[le] = parts.buckets.get(le, 0.0) + value
                    elif suffix == "_count":
                        parts.count += value
                    elif suffix == "_sum":
                        parts.sum += value
                    break

    models: dict[str, ModelMetrics] = {}
    for model in set(values) | set(kv) | set(histograms):
        fields: dict[str, Any] = dict(values.get(model, {}))
        for metric in KV_CACHE_METRICS:
            if metric in kv.get(model, {}):
                fields["kv_cache_usage"] = kv[model][metric]
                fields["kv_cache_metric"] = metric
                break
        for key, parts in histograms.get(model, {}).items():
            fields[key] = parts.summary()
        models[model] = ModelMetrics(model_name=model, **fields)
    return MetricsSnapshot(url=url, models=models, metric_names=frozenset(names))


# --- the client ---------------------------------------------------------------------------------


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise PermanentError(f"vLLM server URL {url!r} is not http(s)")
    return url.rstrip("/")


def _raise_for_status(response: httpx.Response, what: str) -> None:
    code = response.status_code
    if code < 400:
        return
    body = response.text[:300]
    message = f"{what}: HTTP {code} {body}".strip()
    if code >= 500 or code in (408, 429):
        raise TransientError(message)
    raise PermanentError(message)


def _transport_error(exc: httpx.HTTPError, what: str) -> IncidentBotError:
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"{what}: timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}")
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


class VLLMClient:
    """Async client of the vLLM OpenAI-compatible server; one instance talks to many servers."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        timeouts: VLLMTimeouts | None = None,
        max_concurrency: int = 16,
        warmup_max_tokens: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._api_key = api_key
        self._timeouts = timeouts or VLLMTimeouts()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._warmup_max_tokens = warmup_max_tokens
        self._http = httpx.AsyncClient(
            timeout=self._timeouts.httpx(),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMClient:
        """A client configured from the VLLM_* settings."""
        key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
        return cls(
            api_key=key or None,
            timeouts=VLLMTimeouts(
                connect=settings.vllm_connect_timeout_seconds,
                read=settings.vllm_read_timeout_seconds,
                warmup=settings.vllm_warmup_timeout_seconds,
            ),
            max_concurrency=settings.vllm_max_concurrency,
            warmup_max_tokens=settings.vllm_warmup_max_tokens,
        )

    async def __aenter__(self) -> VLLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _headers(self, path: str) -> dict[str, str]:
        # vLLM's --api-key guards only the OpenAI routes; never leak the key to other paths.
        if self._api_key and path.startswith("/v1"):
            return {"Authorization": f"Bearer {self._api_key}"}
        return {}

    async def _get(self, url: str, path: str) -> httpx.Response:
        what = f"GET {_base(url)}{path}"
        async with self._semaphore:
            try:
                response = await self._http.get(_base(url) + path, headers=self._headers(path))
            except httpx.HTTPError as exc:
                raise _transport_error(exc, what) from exc
        _raise_for_status(response, what)
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentError(f"{what}: response is not JSON") from exc

    async def health(self, url: str) -> HealthReport:
        """``GET /health``: 200 OK, 503 engine dead, no answer unreachable; 4xx raises PermanentError."""
        base = _base(url)
        started = time.perf_counter()
        async with self._semaphore:
            try:
                response = await self._http.get(base + "/health")
            except httpx.HTTPError as exc:
                return HealthReport(
                    url=base,
                    state=HealthState.UNREACHABLE,
                    status_code=None,
                    latency_s=time.perf_counter() - started,
                    detail=str(_transport_error(exc, f"GET {base}/health")),
                )
        latency = time.perf_counter() - started
        code = response.status_code
        if code == 200:
            return HealthReport(base, HealthState.OK, code, latency)
        if code == 503:
            return HealthReport(base, HealthState.ENGINE_DEAD, code, latency, response.text[:200])
        if code >= 500:
            return HealthReport(base, HealthState.ERROR, code, latency, response.text[:200])
        _raise_for_status(response, f"GET {base}/health")
        return HealthReport(base, HealthState.ERROR, code, latency, f"unexpected HTTP {code}")

    async def models(self, url: str) -> list[ModelCard]:
        """``GET /v1/models``: the models this server serves."""
        response = await self._get(url, "/v1/models")
        body = self._json(response, f"{url}/v1/models")
        try:
            return [
                ModelCard(
                    id=str(item["id"]),
                    owned_by=str(item.get("owned_by", "")),
                    root=item.get("root"),
                    max_model_len=item.get("max_model_len"),
                )
                for item in body["data"]
            ]
        except (KeyError, TypeError) as exc:
            raise PermanentError(f"{url}/v1/models: unexpected body shape ({exc})") from exc

    async def metrics(self, url: str) -> MetricsSnapshot:
        """``GET /metrics`` parsed into a typed snapshot."""
        response = await self._get(url, "/metrics")
        return parse_metrics(response.text, url=_base(url))

    async def load(self, url: str) -> int:
        """``GET /load``: requests in flight (needs ``--enable-server-load-tracking``)."""
        response = await self._get(url, "/load")
        body = self._json(response, f"{url}/load")
        try:
            return int(body["server_load"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"{url}/load: no server_load in {body!r}") from exc

    async def version(self, url: str) -> str:
        """``GET /version``: the vLLM version string."""
        response = await self._get(url, "/version")
        body = self._json(response, f"{url}/version")
        if not isinstance(body, dict) or "version" not in body:
            raise PermanentError(f"{url}/version: no version in {body!r}")
        return str(body["version"])

    async def warmup(
        self, url: str, model: str | None = None, *, prompt: str = "Hello", chat: bool = False
    ) -> WarmupResult:
        """Send a tiny streamed completion and measure time to first token (TTFT)."""
        base = _base(url)
        if model is None:
            cards = await self.models(base)
            if not cards:
                raise PermanentError(f"{base}: serves no model to warm up")
            model = cards[0].id
        path = "/v1/chat/completions" if chat else "/v1/completions"
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": self._warmup_max_tokens,
            "temperature": 0,
            "stream": True,
        }
        if chat:
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        what = f"POST {base}{path}"
        async with self._semaphore:
            try:
                return await asyncio.wait_for(
                    self._stream_completion(base, path, payload, model, chat, what),
                    timeout=self._timeouts.warmup,
                )
            except TimeoutError as exc:
                raise TransientError(f"{what}: warmup exceeded {self._timeouts.warmup}s") from exc
            except httpx.HTTPError as exc:
                raise _transport_error(exc, what) from exc

    async def _stream_completion(
        self, base: str, path: str, payload: dict[str, Any], model: str, chat: bool, what: str
    ) -> WarmupResult:
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        chunks = 0
        async with self._http.stream("POST", base + path, json=payload, headers=self._headers(path)) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for_status(resp, what)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                    choice = chunk["choices"][0] if chunk.get("choices") else {}
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise PermanentError(f"{what}: bad stream chunk {data[:100]!r}") from exc
                if "error" in chunk:
                    raise TransientError(f"{what}: error in stream: {chunk['error']}")
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                chunks += 1
                if text:
                    if first is None:
                        first = time.perf_counter()
                    pieces.append(text)
        ended = time.perf_counter()
        if first is None:
            raise TransientError(f"{what}: stream ended without any token")
        return WarmupResult(
            url=base,
            model=model,
            ttft_s=first - started,
            total_s=ended - started,
            text="".join(pieces),
            chunks=chunks,
        )

    # --- fan-out -----------------------------------------------------------------------------

    async def _fanout(
        self, urls: Iterable[str], call: Callable[[str], Awaitable[T]]
    ) -> list[FanoutResult[T]]:
        async def one(url: str) -> FanoutResult[T]:
            try:
                return FanoutResult(url=url, value=await call(url), error=None)
            except IncidentBotError as exc:
                return FanoutResult(url=url, value=None, error=exc)

        return list(await asyncio.gather(*(one(u) for u in urls)))

    async def health_all(self, urls: Iterable[str]) -> list[HealthReport]:
        """``health()`` of every server, concurrently (bounded), in the given order."""
        results = await self._fanout(urls, self.health)
        reports = []
        for result in results:
            if result.value is not None:
                reports.append(result.value)
            else:
                reports.append(HealthReport(result.url, HealthState.ERROR, None, 0.0, str(result.error)))
        return reports

    async def models_all(self, urls: Iterable[str]) -> list[FanoutResult[list[ModelCard]]]:
        """``models()`` of every server, concurrently (bounded), in the given order."""
        return await self._fanout(urls, self.models)

    async def metrics_all(self, urls: Iterable[str]) -> list[FanoutResult[MetricsSnapshot]]:
        """``metrics()`` of every server, concurrently (bounded), in the given order."""
        return await self._fanout(urls, self.metrics)

    async def warmup_all(
        self, urls: Iterable[str], model: str | None = None
    ) -> list[FanoutResult[WarmupResult]]:
        """``warmup()`` of every server, concurrently (bounded), in the given order."""

        async def call(url: str) -> WarmupResult:
            return await self.warmup(url, model)

        return await self._fanout(urls, call)


def run_sync(factory: Callable[[VLLMClient], Coroutine[Any, Any, T]], settings: Settings) -> T:
    """Run one client coroutine to completion from synchronous code (a Celery task)."""

    async def main() -> T:
        async with VLLMClient.from_settings(settings) as client:
            return await factory(client)

    return asyncio.run(main())
