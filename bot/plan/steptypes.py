"""Step types: functions with typed (pydantic) params, registered by name and checked at registration.

    @step("k8s.scale", mutating=True, description="…")
    def scale(ctx: StepContext, params: ScaleParams) -> StepResult: …

A mutating step's params subclass :class:`TargetParams` (namespace + deployment: the guards' target), and
the function must call ``ctx.record_intent(plan)`` before its first change: the adapter handed to it
(``ctx.kube``) refuses mutating calls until then. A mutating step may register a recoverer
(``@recoverer("k8s.scale")``) that decides, after a worker died between intent and result, whether the
change was applied, was certainly not applied, or is unknown.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bot.models import Incident
from bot.settings import Settings

P = TypeVar("P", bound=BaseModel)
T = TypeVar("T")


class StepStatus(StrEnum):
    """How one execution of a step ended."""

    OK = "ok"
    FAILED = "failed"
    PENDING = "pending"
    SKIPPED = "skipped"


class StepResult(BaseModel):
    """What a step function returns: status, a one-line summary and JSON-able output for later steps."""

    model_config = ConfigDict(frozen=True)

    status: StepStatus = StepStatus.OK
    summary: str = ""
    output: dict[str, Any] = Field(default_factory=dict)
    changed: bool = False
    """It changed the cluster (or, in a dry run, would have)."""
    recheck_after: float = 0.0
    """For PENDING: seconds until the step should be looked at again."""

    @classmethod
    def ok(cls, summary: str, changed: bool = False, **output: Any) -> StepResult:
        """A successful result."""
        return cls(status=StepStatus.OK, summary=summary, output=output, changed=changed)

    @classmethod
    def failed(cls, summary: str, **output: Any) -> StepResult:
        """A failed result (the step's on_failure decides what happens next)."""
        return cls(status=StepStatus.FAILED, summary=summary, output=output)

    @classmethod
    def skipped(cls, summary: str, **output: Any) -> StepResult:
        """The step had nothing to do (e.g. Prometheus is not configured)."""
        return cls(status=StepStatus.SKIPPED, summary=summary, output=output)

    @classmethod
    def pending(cls, summary: str, recheck_after: float, **output: Any) -> StepResult:
        """Not finished yet: look again after *recheck_after* seconds."""
        return cls(status=StepStatus.PENDING, summary=summary, output=output, recheck_after=recheck_after)


class StepParams(BaseModel):
    """Base of every step's params: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetParams(StepParams):
    """Params of a step that acts on one Deployment (the guards' lock and cooldown target)."""

    namespace: str = Field(min_length=1, max_length=63)
    deployment: str = Field(min_length=1, max_length=253)

    @property
    def target(self) -> str:
        """``namespace/deployment``."""
        return f"{self.namespace}/{self.deployment}"


class StepServices(Protocol):
    """The adapters a step reaches through ``ctx.services`` (``bot.runbook.services.Services`` in the bot).

    Declared here, in the core, so step types need no feature package; the adapters' own types live
    above the core, hence the ``Any`` results.
    """

    @property
    def store(self) -> Any:
        """The incident store (timeline entries)."""

    @property
    def vllm_endpoints(self) -> list[str]:
        """The configured vLLM servers."""

    def kube_for(self, ctx: StepContext) -> Any:
        """The Kubernetes adapter as this step sees it."""

    def prometheus(self) -> Any:
        """The Prometheus client, or None when none is configured."""

    def vllm(self, factory: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run one vLLM client coroutine to completion."""

    def http(self, timeout: float) -> Any:
        """A plain HTTP client for probes."""


@dataclass
class StepContext:
    """Everything a step function may use: the incident, earlier outputs, adapters, the clock."""

    incident: Incident
    run_id: str
    step_id: str
    step_type: str
    params: Mapping[str, Any]
    """The runbook's resolved parameters."""
    steps: Mapping[str, Mapping[str, Any]]
    """Outputs of earlier steps by id."""
    labels: Mapping[str, str]
    dry_run: bool
    settings: Settings
    services: StepServices
    deadline: float
    """time.monotonic() value by which this execution should finish."""
    first_started_at: datetime
    """When this step was first started (a PENDING step keeps it across re-checks)."""
    now: Callable[[], datetime]
    sleep: Callable[[float], None] = time.sleep
    record_intent: Callable[[dict[str, Any]], None] = lambda plan: None
    intent: Mapping[str, Any] | None = None
    """The plan recorded by an earlier attempt of this step (for recoverers)."""
    approved_by: str | None = None
    refresh: Callable[[str], Mapping[str, Any]] | None = None
    """Re-run an earlier read-only step by id and return its new output (used by ``wait``)."""
    scratch: dict[str, Any] = field(default_factory=dict)

    def expr_context(self) -> dict[str, Any]:
        """The names conditions and ``${…}`` placeholders can read."""
        return expression_context(self.incident, self.params, self.steps, self.labels, self.dry_run)

    @property
    def kube(self) -> Any:
        """The Kubernetes adapter (mutating calls refused until the intent is recorded)."""
        return self.services.kube_for(self)


def expression_context(
    incident: Incident,
    params: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    dry_run: bool,
) -> dict[str, Any]:
    """The evaluation context of conditions: params, steps, labels, incident, severity, dry_run."""
    return {
        "params": dict(params),
        "steps": {k: dict(v) for k, v in steps.items()},
        "labels": dict(labels),
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "status": incident.status.value,
            "severity": incident.severity.value,
            "firing": incident.firing_count,
        },
        "severity": incident.severity.value,
        "dry_run": dry_run,
    }


ROOT_NAMES = ("params", "steps", "labels", "incident", "severity", "dry_run")


@dataclass(frozen=True)
class Recovery:
    """A recoverer's verdict on an interrupted mutating step."""

    verdict: Literal["applied", "not_applied", "unknown"]
    detail: str
    result: StepResult | None = None


StepFn = Callable[[StepContext, Any], StepResult]
RecoverFn = Callable[[StepContext, Any, Mapping[str, Any]], Recovery]


@dataclass
class StepType:
    """A registered step type."""

    name: str
    fn: StepFn
    params_model: type[StepParams]
    mutating: bool
    description: str
    recover: RecoverFn | None = None


REGISTRY: dict[str, StepType] = {}


def _check_signature(name: str, fn: Callable[..., Any], mutating: bool) -> type[StepParams]:
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise TypeError(f"step {name!r}: cannot resolve annotations of {fn.__name__}: {exc}") from exc
    arg_names = [a for a in fn.__code__.co_varnames[: fn.__code__.co_argcount]]
    if len(arg_names) != 2:
        raise TypeError(f"step {name!r}: {fn.__name__} must take exactly (ctx, params)")
    ctx_type, params_type = hints.get(arg_names[0]), hints.get(arg_names[1])
    if ctx_type is not StepContext:
        raise TypeError(f"step {name!r}: first argument must be annotated StepContext")
    if not (isinstance(params_type, type) and issubclass(params_type, StepParams)):
        raise TypeError(f"step {name!r}: second argument must be annotated with a StepParams subclass")
    if hints.get("return") is not StepResult:
        raise TypeError(f"step {name!r}: must be annotated to return StepResult")
    if mutating and not issubclass(params_type, TargetParams):
        raise TypeError(f"step {name!r}: a mutating step's params must subclass TargetParams")
    return params_type


TypedStepFn = Callable[[StepContext, P], StepResult]


def step(name: str, *, mutating: bool, description: str) -> Callable[[TypedStepFn[P]], TypedStepFn[P]]:
    """Register a step type under *name*; TypeError when the signature is not (StepContext, params)."""

    def register(fn: TypedStepFn[P]) -> TypedStepFn[P]:
        if name in REGISTRY:
            raise TypeError(f"step type {name!r} is already registered")
        params_model = _check_signature(name, fn, mutating)
        REGISTRY[name] = StepType(name, fn, params_model, mutating, description)
        return fn

    return register


def recoverer(name: str) -> Callable[[RecoverFn], RecoverFn]:
    """Attach a recoverer to the mutating step type *name*."""

    def attach(fn: RecoverFn) -> RecoverFn:
        step_type = REGISTRY.get(name)
        if step_type is None or not step_type.mutating:
            raise TypeError(f"recoverer for {name!r}: no mutating step type of that name")
        step_type.recover = fn
        return fn

    return attach


def step_types() -> Mapping[str, StepType]:
    """Every registered step type (whoever needs the shipped ones imports ``bot.steps`` first)."""
    return REGISTRY
