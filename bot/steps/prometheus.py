"""Prometheus steps: run a PromQL query, or assert its value against a threshold."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from bot.plan.steptypes import StepContext, StepParams, StepResult, step

_OPS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "gt": (">", operator.gt),
    "gte": (">=", operator.ge),
    "lt": ("<", operator.lt),
    "lte": ("<=", operator.le),
    "eq": ("==", operator.eq),
}


class QueryParams(StepParams):
    """A PromQL instant query reduced to one number."""

    query: str = Field(min_length=1, max_length=4000)
    reduce: Literal["max", "min", "sum", "single"] = "max"


def _value(ctx: StepContext, query: str, reduce: str) -> tuple[float | None, int] | None:
    """(value, series count), or None when Prometheus is not configured."""
    client = ctx.services.prometheus()
    if client is None:
        return None
    if reduce == "single":
        return client.query_value(query), 1
    values = [s.value for s in client.query(query) if not math.isnan(s.value)]
    if not values:
        return None, 0
    if reduce == "max":
        return max(values), len(values)
    if reduce == "min":
        return min(values), len(values)
    return sum(values), len(values)


@step(
    "prometheus.query", mutating=False, description="Run a PromQL query; output.value is the reduced number"
)
def query(ctx: StepContext, params: QueryParams) -> StepResult:
    """Evaluate the query now; skipped when PROMETHEUS_URL is not set."""
    got = _value(ctx, params.query, params.reduce)
    if got is None:
        return StepResult.skipped(
            "Prometheus is not configured (PROMETHEUS_URL)", value=None, query=params.query
        )
    value, series = got
    shown = "no data" if value is None else f"{value:.4g}"
    return StepResult.ok(f"{shown} ({series} series)", value=value, series=series, query=params.query)


class AssertParams(QueryParams):
    """A PromQL value compared with a threshold."""

    op: Literal["gt", "gte", "lt", "lte", "eq"]
    threshold: float
    no_data: Literal["pass", "fail"] = "fail"


@step(
    "prometheus.assert", mutating=False, description="Fail unless a PromQL value compares true to a threshold"
)
def assert_(ctx: StepContext, params: AssertParams) -> StepResult:
    """OK when ``value <op> threshold`` holds; no data passes or fails as configured."""
    got = _value(ctx, params.query, params.reduce)
    if got is None:
        return StepResult.skipped("Prometheus is not configured (PROMETHEUS_URL)", value=None, holds=None)
    value, _series = got
    symbol, compare = _OPS[params.op]
    out: dict[str, Any] = {
        "value": value,
        "threshold": params.threshold,
        "op": params.op,
        "query": params.query,
    }
    if value is None:
        text = f"no data for the query; treated as {params.no_data}"
        if params.no_data == "pass":
            return StepResult.ok(text, holds=True, **out)
        return StepResult.failed(text, holds=False, **out)
    holds = compare(value, params.threshold)
    text = f"{value:.4g} {symbol} {params.threshold:g}: {'holds' if holds else 'does not hold'}"
    return StepResult.ok(text, holds=True, **out) if holds else StepResult.failed(text, holds=False, **out)
