"""Flow steps: an HTTP probe, waiting for a condition, a templated notification, an approval gate."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import httpx
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import Field

from bot.plan.expr import compile_expr
from bot.plan.schema import Seconds
from bot.plan.steptypes import ROOT_NAMES, StepContext, StepParams, StepResult, step

_JINJA = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def render_template(source: str, context: dict[str, Any]) -> str:
    """Render operator-written text in Jinja2's immutable sandbox (alert text is data, never source)."""
    return _JINJA.from_string(source).render(**context)


class ProbeParams(StepParams):
    """An HTTP request whose status (and optionally body) is checked."""

    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "POST", "HEAD"] = "GET"
    json_body: dict[str, Any] | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200])
    contains: str | None = None
    timeout: Seconds = 5.0


@step("http.probe", mutating=False, description="HTTP request; checks the status code and a body substring")
def probe(ctx: StepContext, params: ProbeParams) -> StepResult:
    """Send the request; OK when the status is expected (and the body contains `contains`)."""
    started = time.perf_counter()
    try:
        with ctx.services.http(params.timeout) as client:
            response = client.request(params.method, params.url, json=params.json_body)
    except httpx.HTTPError as exc:
        return StepResult.failed(f"{params.method} {params.url}: {type(exc).__name__}", status=None, ok=False)
    latency = time.perf_counter() - started
    good = response.status_code in params.expect_status and (
        params.contains is None or params.contains in response.text
    )
    out: dict[str, Any] = {"status": response.status_code, "latency_s": round(latency, 4), "ok": good}
    text = f"{params.method} {params.url}: HTTP {response.status_code} in {latency * 1000:.0f} ms"
    return StepResult.ok(text, **out) if good else StepResult.failed(text, **out)


class WaitParams(StepParams):
    """Wait until a condition holds (re-running earlier read steps), or for a fixed time."""

    expressions: ClassVar[tuple[str, ...]] = ("until",)

    until: str | None = None
    refresh: list[str] = Field(default_factory=list)
    """Ids of earlier read-only steps to re-run before each check."""
    timeout: Seconds = 300.0
    interval: Seconds = 30.0


@step("wait", mutating=False, description="Wait until a condition holds or the timeout passes")
def wait(ctx: StepContext, params: WaitParams) -> StepResult:
    """Re-run `refresh` steps, evaluate `until`; pending until true, failed after `timeout`."""
    elapsed = (ctx.now() - ctx.first_started_at).total_seconds()
    remaining = params.timeout - elapsed
    if params.until is None:
        if remaining <= 0:
            return StepResult.ok(f"waited {params.timeout:.0f}s")
        return StepResult.pending(
            f"waiting {remaining:.0f}s more", recheck_after=min(remaining, params.interval)
        )
    for step_id in params.refresh:
        assert ctx.refresh is not None
        ctx.refresh(step_id)
    condition = compile_expr(params.until, roots=ROOT_NAMES)
    checks = int(ctx.scratch.get("checks", 0)) + 1
    if condition.truth(ctx.expr_context()):
        return StepResult.ok(f"{params.until} holds after {elapsed:.0f}s", elapsed_s=elapsed, holds=True)
    if remaining <= 0:
        return StepResult.failed(
            f"{params.until} still false after {params.timeout:.0f}s", elapsed_s=elapsed, holds=False
        )
    return StepResult.pending(
        f"{params.until} is false; checking again in {min(params.interval, remaining):.0f}s",
        recheck_after=min(params.interval, remaining),
        holds=False,
        checks=checks,
    )


class NotifyParams(StepParams):
    """A templated update posted to the incident (the Slack side relays `notify` timeline entries)."""

    templates: ClassVar[tuple[str, ...]] = ("message",)

    message: str = Field(min_length=1, max_length=4000)
    level: Literal["info", "warning", "critical"] = "info"


@step("notify", mutating=False, description="Append a templated `notify` entry to the incident timeline")
def notify(ctx: StepContext, params: NotifyParams) -> StepResult:
    """Render the message; append it as a `notify` timeline entry (a dry run only shows it)."""
    text = render_template(params.message, ctx.expr_context())
    if ctx.dry_run:
        return StepResult.ok(f"would notify: {text}", text=text, posted=False)
    ctx.services.store.append_timeline(
        ctx.incident.id,
        "notify",
        text,
        {"level": params.level, "run_id": ctx.run_id, "step": ctx.step_id},
    )
    return StepResult.ok(f"notified: {text}", text=text, posted=True)


class EscalateParams(StepParams):
    """Hand the incident to a person, saying why (a templated reason)."""

    templates: ClassVar[tuple[str, ...]] = ("reason",)

    reason: str = Field(min_length=1, max_length=2000)


@step("escalate", mutating=False, description="Fail with a templated reason (pair with on_failure: escalate)")
def escalate(ctx: StepContext, params: EscalateParams) -> StepResult:
    """Always fails with the reason, so the step's on_failure (usually escalate) takes over."""
    return StepResult.failed(render_template(params.reason, ctx.expr_context()))


class ApprovalParams(StepParams):
    """Pause until a person approves or denies (Slack button or `incident-bot runbook approve`)."""

    message: str = Field("Approve the next action?", min_length=1, max_length=2000)
    timeout: Seconds = 1800.0


@step("approval", mutating=False, description="Pause until approved or denied (Slack or CLI), with a timeout")
def approval(ctx: StepContext, params: ApprovalParams) -> StepResult:
    """The engine holds this step until a decision; reaching the function means it was approved."""
    if ctx.dry_run:
        return StepResult.ok("would wait for approval", would_require_approval=True)
    return StepResult.ok(f"approved by {ctx.approved_by}", approved_by=ctx.approved_by)
