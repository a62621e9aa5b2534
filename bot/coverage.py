"""Pure checks for Prometheus alert rules: metric names vLLM or the inference extension renamed or removed.

Work in progress for issue 15 ("coverage"): only the metric-name check is here so far.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Old metric name -> replacement (None: removed without replacement). From INTEGRATION_NOTES.md.
RENAMED: dict[str, str | None] = {
    "vllm:gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries": "vllm:prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits": "vllm:prefix_cache_hits_total",
    "vllm:gpu_prefix_cache_queries_total": "vllm:prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits_total": "vllm:prefix_cache_hits_total",
    "vllm:time_per_output_token_seconds": "vllm:inter_token_latency_seconds",
    "vllm:num_preemptions": "vllm:num_preemptions_total",
    "vllm:num_requests_swapped": None,
    "vllm:cpu_cache_usage_perc": None,
    "vllm:cpu_prefix_cache_hit_rate": None,
    "vllm:gpu_prefix_cache_hit_rate": None,
    "vllm:time_in_queue_requests": None,
    "vllm:model_forward_time_milliseconds": None,
    "vllm:model_execute_time_milliseconds": None,
}

_IDENT_RE = re.compile(r"(?<![A-Za-z0-9_:])[A-Za-z_:][A-Za-z0-9_:]*")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Rename:
    """A metric an expression uses that was renamed (replacement) or removed (replacement None)."""

    metric: str
    replacement: str | None


def _lookup(name: str) -> Rename | None:
    if name in RENAMED:
        return Rename(name, RENAMED[name])
    if name.startswith("inference_model_"):
        return Rename(name, "inference_objective_" + name.removeprefix("inference_model_"))
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in RENAMED:
            new = RENAMED[base]
            return Rename(name, None if new is None else new + suffix)
    return None


def renamed_metrics(expr: str) -> list[Rename]:
    """Renamed/removed metrics used in *expr*, matched as whole PromQL identifiers, in order, once each."""
    found: dict[str, Rename] = {}
    for match in _IDENT_RE.finditer(expr):
        hit = _lookup(match.group(0))
        if hit is not None:
            found.setdefault(hit.metric, hit)
    return list(found.values())
