"""vLLM tier steps: health, metrics, models and a warmup completion, fanned out over the servers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bot.integrations.vllm import HealthState, MetricsSnapshot
from bot.plan.steptypes import StepContext, StepParams, StepResult, step


class Endpoints(StepParams):
    """Which servers: the given URLs, else VLLM_ENDPOINTS."""

    endpoints: list[str] | None = None

    def urls(self, ctx: StepContext) -> list[str]:
        """The servers to contact."""
        return list(self.endpoints) if self.endpoints else list(ctx.services.vllm_endpoints)


class HealthParams(Endpoints):
    """GET /health on every server."""

    require: Literal["all", "any", "none"] = "all"


@step("vllm.health", mutating=False, description="GET /health on every vLLM server")
def health(ctx: StepContext, params: HealthParams) -> StepResult:
    """Healthy vs total; fails when `require` (all / any) is not met."""
    urls = params.urls(ctx)
    reports = ctx.services.vllm(lambda c: c.health_all(urls))
    healthy = sum(1 for r in reports if r.ok)
    out: dict[str, Any] = {
        "total": len(reports),
        "healthy": healthy,
        "unhealthy": len(reports) - healthy,
        "engine_dead": sum(1 for r in reports if r.state is HealthState.ENGINE_DEAD),
        "states": {r.url: r.state.value for r in reports},
    }
    text = f"{healthy}/{len(reports)} vLLM servers healthy"
    met = {"all": healthy == len(reports) and healthy > 0, "any": healthy > 0, "none": True}[params.require]
    return StepResult.ok(text, **out) if met else StepResult.failed(text, **out)


class MetricsParams(Endpoints):
    """/metrics of every server, aggregated."""

    model: str | None = None


def _agg(snaps: list[MetricsSnapshot], model: str | None) -> dict[str, float | None]:
    queue = running = preemptions = 0.0
    kv: list[float] = []
    ttft: list[float] = []
    e2e: list[float] = []
    hits = queries = 0.0
    for snap in snaps:
        models = [snap.models[model]] if model and model in snap.models else list(snap.models.values())
        for m in models:
            queue += m.num_requests_waiting
            running += m.num_requests_running
            preemptions += m.preemptions_total or 0.0
            if m.kv_cache_usage is not None:
                kv.append(m.kv_cache_usage)
            if m.ttft is not None and m.ttft.p95 is not None:
                ttft.append(m.ttft.p95)
            if m.e2e_latency is not None and m.e2e_latency.p95 is not None:
                e2e.append(m.e2e_latency.p95)
            hits += m.prefix_cache_hits_total or 0.0
            queries += m.prefix_cache_queries_total or 0.0
    return {
        "queue_depth": queue,
        "running": running,
        "kv_cache_usage": max(kv) if kv else None,
        "preemptions": preemptions,
        "ttft_p95": max(ttft) if ttft else None,
        "e2e_p95": max(e2e) if e2e else None,
        "prefix_cache_hit_ratio": hits / queries if queries else None,
    }


@step(
    "vllm.metrics",
    mutating=False,
    description="Queue depth, running, KV-cache, preemptions, TTFT from /metrics",
)
def metrics(ctx: StepContext, params: MetricsParams) -> StepResult:
    """Sum queue/running/preemptions, max KV-cache and p95s over the reachable servers."""
    urls = params.urls(ctx)
    results = ctx.services.vllm(lambda c: c.metrics_all(urls))
    snaps = [r.value for r in results if r.value is not None]
    if not snaps:
        return StepResult.failed(f"no vLLM server answered /metrics ({len(urls)} tried)", reachable=0)
    out: dict[str, Any] = dict(_agg(snaps, params.model))

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3g}"

    return StepResult.ok(
        f"queue {fmt(out['queue_depth'])}, running {fmt(out['running'])}, "
        f"KV-cache {fmt(out['kv_cache_usage'])}, "
        f"TTFT p95 {fmt(out['ttft_p95'])} s, preemptions {fmt(out['preemptions'])} "
        f"({len(snaps)}/{len(urls)} servers)",
        reachable=len(snaps),
        servers=len(urls),
        **out,
    )


class ModelsParams(Endpoints):
    """GET /v1/models on every server."""

    expect: str | None = None
    """Fail unless every reachable server serves this model."""


@step("vllm.models", mutating=False, description="GET /v1/models; optionally require a model")
def models(ctx: StepContext, params: ModelsParams) -> StepResult:
    """The models served; fails when `expect` is missing anywhere or nothing answered."""
    urls = params.urls(ctx)
    results = ctx.services.vllm(lambda c: c.models_all(urls))
    served: dict[str, list[str]] = {r.url: [m.id for m in r.value] for r in results if r.value is not None}
    names = sorted({m for ms in served.values() for m in ms})
    out: dict[str, Any] = {"models": names, "reachable": len(served), "servers": len(urls)}
    if not served:
        return StepResult.failed("no vLLM server answered /v1/models", **out)
    if params.expect and any(params.expect not in ms for ms in served.values()):
        return StepResult.failed(f"{params.expect} is not served by every reachable server", **out)
    return StepResult.ok(f"{len(served)}/{len(urls)} servers serve {', '.join(names) or 'nothing'}", **out)


class WarmupParams(Endpoints):
    """A tiny streamed completion on every server, measuring TTFT."""

    model: str | None = None
    max_ttft_s: float | None = Field(None, gt=0)


@step("vllm.warmup", mutating=False, description="Warm up every server with a tiny completion; records TTFT")
def warmup(ctx: StepContext, params: WarmupParams) -> StepResult:
    """Warm the servers up; fails when none completes or the worst TTFT exceeds max_ttft_s."""
    urls = params.urls(ctx)
    results = ctx.services.vllm(lambda c: c.warmup_all(urls, params.model))
    done = [r.value for r in results if r.value is not None]
    errors = {r.url: str(r.error) for r in results if r.error is not None}
    ttfts = [w.ttft_s for w in done]
    out: dict[str, Any] = {
        "warmed": len(done),
        "servers": len(urls),
        "ttft_max_s": max(ttfts) if ttfts else None,
        "ttft_mean_s": sum(ttfts) / len(ttfts) if ttfts else None,
        "ttft_s": {w.url: round(w.ttft_s, 4) for w in done},
        "errors": errors,
    }
    if not done:
        return StepResult.failed(f"warmup failed on all {len(urls)} servers", **out)
    text = f"warmed {len(done)}/{len(urls)} servers; TTFT max {max(ttfts):.3f}s"
    if params.max_ttft_s is not None and max(ttfts) > params.max_ttft_s:
        return StepResult.failed(text + f" > {params.max_ttft_s}s", **out)
    return StepResult.ok(text, **out)
