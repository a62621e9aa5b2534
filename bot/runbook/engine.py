"""The runbook engine: runs a runbook for an incident one step at a time, exactly once per step.

State (Redis, under the store prefix):

    runbook:run:<run id>                         the run (JSON): cursor, status, params, step outputs
    runbook:runs:<incident id>                   list of the incident's run ids
    runbook:request:<request id>                 run id created for a request (a redelivered `run` task
                                                 finds it and creates nothing)
    incident:step:<incident id>:<run id>:<step>  one step's record: phase, intent, result, who approved
    runbook:runlock:<run id>                     one worker advances a run at a time
    runbook:kick:<run id>:<index>                the task for step <index> has been enqueued
    runbook:approval:<run id>:<step>             the approve/deny decision (first one wins)

A step is executed as: (approval gate) -> `when` -> guards (mutating steps only) -> intent -> act -> result.
The step function records its *intent* (the exact change: target replica count, pod names, restart stamp,
rollback target, and the Deployment's generation before acting) before its first change; the result, the
step's timeline entry, the output and the cursor move are written together in one MULTI/EXEC.

A worker that dies mid-step leaves the intent without a result. The redelivered task never repeats a
mutating step blindly: the step's recoverer re-reads the target and says

* ``applied``      the intended state is there: the step is recorded as done, nothing is sent again;
* ``not_applied``  the Deployment's generation is unchanged since the intent, so the change never landed:
                   the step runs again (for pod deletion: the remaining named pods are deleted);
* ``unknown``      something else changed it: the run stops as ``needs_human`` and escalates.

Read-only steps are simply run again. Without a recoverer, an interrupted mutating step is ``unknown``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import redis
from pydantic import BaseModel, Field, ValidationError

from bot.controls import Controls
from bot.errors import IncidentBotError, PermanentError, TransientError
from bot.incidents.store import IncidentStore
from bot.models import Incident, IncidentStatus
from bot.runbook.expr import ExprError, compile_expr, render_value
from bot.runbook.guards import breaker_check
from bot.runbook.plan import incident_label_sets, resolve_parameters
from bot.runbook.registry import (
    ROOT_NAMES,
    Recovery,
    StepContext,
    StepResult,
    StepStatus,
    StepType,
    TargetParams,
    expression_context,
    step_types,
)
from bot.runbook.schema import Runbook, StepSpec
from bot.runbook.services import Services
from bot.settings import Settings
from bot.severity import promql_string
from bot.storage.guards import Guards

log = logging.getLogger("incident_bot.runbook")


class RunStatus(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    WAITING = "waiting"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"
    BLOCKED = "blocked"
    NEEDS_HUMAN = "needs_human"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """Whether the run is over."""
        return self not in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.AWAITING_APPROVAL)


class RunBusy(TransientError):
    """Another worker is advancing this run right now."""


class RunNotFound(PermanentError):
    """No run has that id."""


class RunRecord(BaseModel):
    """One run of a runbook for an incident."""

    id: str
    incident_id: str
    runbook: str
    dry_run: bool
    trigger: str
    params: dict[str, Any]
    labels: dict[str, str]
    status: RunStatus = RunStatus.RUNNING
    cursor: int = 0
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    reason: str = ""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class StepRecord(BaseModel):
    """What is known about one step of one run."""

    run_id: str
    step_id: str
    index: int
    type: str
    phase: Literal["awaiting_approval", "approved", "intent", "waiting", "done"]
    status: str | None = None
    attempts: int = 0
    first_started_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    intent: dict[str, Any] | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    approved_by: str | None = None
    approval_deadline: datetime | None = None
    dry_run: bool = False
    changed: bool = False
    scratch: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Advance:
    """What the caller (a Celery task or the inline runner) should do after one step call."""

    status: RunStatus
    next_index: int | None = None
    """Run this step next (enqueue `step(run_id, next_index)`)."""
    recheck_after: float | None = None
    """Call the same step again after this many seconds."""
    resend: bool = False
    """next_index came from a stale delivery: enqueue it only if nobody has."""


@dataclass(frozen=True)
class Decision:
    """The outcome of an approve/deny request."""

    accepted: bool
    message: str
    run_id: str | None = None
    index: int | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Engine:
    """Creates runs and advances them; shared state lives in Redis so any worker can continue a run."""

    def __init__(
        self,
        client: redis.Redis,
        store: IncidentStore,
        services: Services,
        settings: Settings,
        runbooks: Mapping[str, Runbook],
        controls: Controls,
        *,
        clock: Callable[[], datetime] = _now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._r = client
        self.store = store
        self.services = services
        self.settings = settings
        self.runbooks = dict(runbooks)
        self.controls = controls
        self.clock = clock
        self.sleep = sleep
        self.registry = step_types()
        self.guards = Guards(
            client,
            settings.key_prefix,
            cooldown_seconds=settings.runbook_cooldown_seconds,
            max_actions=settings.runbook_max_actions,
            window_seconds=settings.runbook_action_window_seconds,
        )

    # --- keys ----------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A key under the store prefix."""
        return self.store.key(*parts)

    def _step_key(self, run: RunRecord, step_id: str) -> str:
        return self.key("incident", "step", run.incident_id, run.id, step_id)

    # --- runs ----------------------------------------------------------------------------------
    def create_run(
        self,
        incident_id: str,
        runbook_name: str,
        *,
        dry_run: bool = False,
        trigger: str = "manual",
        request_id: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[RunRecord, bool]:
        """Create a run (or return the one this request already created); (run, created)."""
        runbook = self.runbooks.get(runbook_name)
        if runbook is None:
            raise PermanentError(
                f"no runbook named {runbook_name!r} (known: {', '.join(sorted(self.runbooks))})"
            )
        incident = self.store.get(incident_id)
        if request_id:
            existing = self._r.get(self.key("runbook", "request", request_id))
            if existing is not None:
                return self.get_run(_text(existing)), False
        if labels is None:
            sets = incident_label_sets(incident) or [dict(incident.common_labels)]
            labels = next((s for s in sets if runbook.match.matches(s, incident.severity)), sets[0])
        params = resolve_parameters(runbook, labels, overrides)
        number = int(self._r.incr(self.key("runbook", "seq", incident_id)))
        now = self.clock()
        run = RunRecord(
            id=f"{incident_id}-R{number}",
            incident_id=incident_id,
            runbook=runbook.name,
            dry_run=dry_run,
            trigger=trigger,
            params=params,
            labels=dict(labels),
            created_at=now,
            updated_at=now,
        )
        if request_id and not self._r.set(
            self.key("runbook", "request", request_id), run.id, nx=True, ex=7 * 86400
        ):
            return self.get_run(_text(self._r.get(self.key("runbook", "request", request_id)))), False
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self.key("runbook", "run", run.id), run.model_dump_json())
        pipe.rpush(self.key("runbook", "runs", incident_id), run.id)
        mode = " (dry run)" if dry_run else ""
        self.store.append_timeline(
            incident_id,
            "runbook_started",
            f"Runbook {runbook.name}{mode} started ({trigger}): {len(runbook.steps)} steps, "
            f"params {json.dumps(params, sort_keys=True)}",
            {
                "run_id": run.id,
                "runbook": runbook.name,
                "dry_run": dry_run,
                "trigger": trigger,
                "params": params,
            },
            pipe=pipe,
        )
        pipe.execute()
        return run, True

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id."""
        raw = self._r.get(self.key("runbook", "run", run_id))
        if raw is None:
            raise RunNotFound(f"no runbook run {run_id!r}")
        return RunRecord.model_validate_json(raw)

    def runs_of(self, incident_id: str) -> list[RunRecord]:
        """The incident's runs, oldest first."""
        ids = [_text(i) for i in self._r.lrange(self.key("runbook", "runs", incident_id), 0, -1)]
        return [self.get_run(i) for i in ids]

    def step_record(self, run: RunRecord, step_id: str) -> StepRecord | None:
        """The stored record of one step, if any."""
        raw = self._r.get(self._step_key(run, step_id))
        return StepRecord.model_validate_json(raw) if raw is not None else None

    def kicked(self, run_id: str, index: int) -> bool:
        """Whether the task for step *index* of the run has been enqueued."""
        return bool(self._r.exists(self.key("runbook", "kick", run_id, str(index))))

    def mark_kicked(self, run_id: str, index: int) -> None:
        """Remember that the task for step *index* has been enqueued."""
        self._r.set(self.key("runbook", "kick", run_id, str(index)), "1", ex=7 * 86400)

    # --- the step task's body ------------------------------------------------------------------
    def execute_step(self, run_id: str, index: int) -> Advance:
        """Advance the run by the step at *index* (a stale or duplicate call changes nothing)."""
        run = self.get_run(run_id)
        runbook = self.runbooks.get(run.runbook)
        longest = max((spec.timeout for spec in runbook.steps), default=600.0) if runbook else 600.0
        ttl = int(longest) + 60
        lock_key = self.key("runbook", "runlock", run_id)
        if not self._r.set(lock_key, "1", nx=True, ex=ttl):
            raise RunBusy(f"run {run_id} is being advanced by another worker")
        try:
            return self._execute_locked(run_id, index)
        finally:
            self._r.delete(lock_key)

    def _execute_locked(self, run_id: str, index: int) -> Advance:
        run = self.get_run(run_id)
        if run.status.terminal:
            return Advance(run.status)
        if run.cursor != index:
            if run.cursor > index:
                return Advance(run.status, next_index=run.cursor, resend=True)
            return Advance(run.status)
        runbook = self.runbooks.get(run.runbook)
        if runbook is None:
            return self._finish(run, RunStatus.FAILED, f"runbook {run.runbook!r} is no longer loaded")
        if index >= len(runbook.steps):
            return self._finish(run, RunStatus.SUCCEEDED, "all steps done")
        spec = runbook.steps[index]
        step_type = self.registry[spec.type]
        incident = self.store.get(run.incident_id)
        record = self.step_record(run, spec.id)
        now = self.clock()

        fresh = record is None or record.phase == "done"
        if fresh and spec.when is not None:
            context = expression_context(incident, run.params, run.outputs, run.labels, run.dry_run)
            try:
                go = compile_expr(spec.when, roots=ROOT_NAMES).truth(context)
            except ExprError as exc:
                return self._complete(
                    run, runbook, spec, step_type, None, StepResult.failed(f"condition error: {exc}")
                )
            if not go:
                return self._complete(
                    run, runbook, spec, step_type, None, StepResult.skipped(f"condition false: {spec.when}")
                )

        # --- approval gate ---
        approved_by = record.approved_by if record is not None else None
        if spec.needs_approval(incident.severity) and not run.dry_run and approved_by is None:
            return self._gate(run, runbook, spec, step_type, record, incident, now)

        # --- guards for changes ---
        guard_note: dict[str, Any] = {}
        token: str | None = None
        target: str | None = None
        if step_type.mutating:
            params_or_error = self._params(run, incident, spec, step_type)
            if isinstance(params_or_error, StepResult):
                return self._complete(run, runbook, spec, step_type, record, params_or_error)
            assert isinstance(params_or_error, TargetParams)
            target = params_or_error.target
            if run.dry_run:
                guard_note = self._dry_guards(spec.type, target, run.labels)
            else:
                stop = self._live_guards(run, runbook, spec, step_type, record, incident, target)
                if stop is not None:
                    return stop
                token = self._lock(target, spec.timeout)
                if token is None:
                    return self._complete(
                        run,
                        runbook,
                        spec,
                        step_type,
                        record,
                        StepResult.failed(f"{target} stayed locked by another action"),
                    )
        interrupted = record is not None and record.phase == "intent" and record.intent is not None
        try:
            if step_type.mutating and not run.dry_run and not interrupted:
                assert target is not None
                left = self.guards.cooldown_left(spec.type, target)
                if left > 0:
                    by = self.guards.cooldown_by(spec.type, target)
                    return self._complete(
                        run,
                        runbook,
                        spec,
                        step_type,
                        record,
                        StepResult.failed(
                            f"cooldown: {spec.type} on {target} ran recently ({by}); {left:.0f}s left",
                            guard="cooldown",
                        ),
                    )
                if not self.guards.reserve_action(f"{run.id}:{spec.id}:{target}"):
                    reason = (
                        f"circuit breaker open: {self.guards.max_actions} changes in the last "
                        f"{self.guards.window_seconds}s; not running {spec.type} on {target}"
                    )
                    self._record_only(
                        run, spec, step_type, record, StepResult.failed(reason, guard="circuit_breaker")
                    )
                    return self._escalate(run, spec, reason)
            return self._run_step(run, runbook, spec, step_type, record, incident, guard_note, target)
        finally:
            if token is not None and target is not None:
                self.guards.release(target, token)

    # --- approval --------------------------------------------------------------------------------
    def _gate(
        self,
        run: RunRecord,
        runbook: Runbook,
        spec: StepSpec,
        step_type: StepType,
        record: StepRecord | None,
        incident: Incident,
        now: datetime,
    ) -> Advance:
        timeout = float(self.settings.runbook_approval_timeout_seconds)
        if spec.type == "approval":
            timeout = float(self._params_model_value(spec, step_type, "timeout") or timeout)
        decision = self._decision(run.id, spec.id)
        if record is None or record.phase == "done":
            deadline = now + timedelta(seconds=timeout)
            record = StepRecord(
                run_id=run.id,
                step_id=spec.id,
                index=run.cursor,
                type=spec.type,
                phase="awaiting_approval",
                first_started_at=now,
                approval_deadline=deadline,
            )
            message = str(spec.params.get("message") or spec.description or f"{spec.type} ({spec.id})")
            step_key = f"{run.id}:{spec.id}"
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._step_key(run, spec.id), record.model_dump_json())
            run = run.model_copy(update={"status": RunStatus.AWAITING_APPROVAL, "updated_at": now})
            pipe.set(self.key("runbook", "run", run.id), run.model_dump_json())
            self.store.append_timeline(
                run.incident_id,
                "approval_requested",
                f"Runbook {runbook.name} waits for approval of step {spec.id} ({spec.type}): {message}. "
                f"Approve or deny before {deadline:%H:%M:%S} UTC (step key {step_key}).",
                {
                    "run_id": run.id,
                    "runbook": runbook.name,
                    "step": spec.id,
                    "step_key": step_key,
                    "type": spec.type,
                    "mutating": step_type.mutating,
                    "message": message,
                    "deadline": deadline.isoformat(),
                    "timeout_s": timeout,
                },
                pipe=pipe,
            )
            pipe.execute()
            return Advance(RunStatus.AWAITING_APPROVAL, recheck_after=timeout)
        if decision is None:
            assert record.approval_deadline is not None
            left = (record.approval_deadline - now).total_seconds()
            if left > 0:
                return Advance(RunStatus.AWAITING_APPROVAL, recheck_after=left)
            return self._complete(
                run,
                runbook,
                spec,
                step_type,
                record,
                StepResult.failed(f"approval timed out after {timeout:.0f}s"),
            )
        if decision["decision"] != "approve":
            return self._complete(
                run,
                runbook,
                spec,
                step_type,
                record,
                StepResult.failed(f"denied by {decision['actor']}", denied_by=decision["actor"]),
            )
        record = record.model_copy(update={"phase": "approved", "approved_by": decision["actor"]})
        self._r.set(self._step_key(run, spec.id), record.model_dump_json())
        run = run.model_copy(update={"status": RunStatus.RUNNING})
        self._r.set(self.key("runbook", "run", run.id), run.model_dump_json())
        return self._execute_locked(run.id, run.cursor)

    def _params_model_value(self, spec: StepSpec, step_type: StepType, name: str) -> Any:
        try:
            return getattr(step_type.params_model.model_validate(spec.params), name, None)
        except ValidationError:
            return None

    def _decision(self, run_id: str, step_id: str) -> dict[str, str] | None:
        raw = self._r.get(self.key("runbook", "approval", run_id, step_id))
        return json.loads(raw) if raw is not None else None

    def decide(self, incident_id: str, step_key: str, decision: str, actor: str) -> Decision:
        """Record approve/deny for a step waiting for approval (the first decision wins)."""
        if decision not in ("approve", "deny"):
            return Decision(False, f"decision must be approve or deny, not {decision!r}")
        if ":" in step_key:
            run_id, step_id = step_key.rsplit(":", 1)
            candidates = [self.get_run(run_id)]
        else:
            step_id = step_key
            candidates = [r for r in self.runs_of(incident_id) if r.status is RunStatus.AWAITING_APPROVAL]
        for run in candidates:
            if run.incident_id != incident_id:
                return Decision(False, f"run {run.id} belongs to {run.incident_id}, not {incident_id}")
            record = self.step_record(run, step_id)
            if record is None or record.phase != "awaiting_approval":
                continue
            value = json.dumps({"decision": decision, "actor": actor, "at": self.clock().isoformat()})
            if not self._r.set(
                self.key("runbook", "approval", run.id, step_id), value, nx=True, ex=30 * 86400
            ):
                earlier = self._decision(run.id, step_id) or {}
                return Decision(
                    False, f"already decided: {earlier.get('decision')} by {earlier.get('actor')}", run.id
                )
            verb = "approved" if decision == "approve" else "denied"
            self.store.append_timeline(
                incident_id,
                "approval_decision",
                f"{actor} {verb} step {step_id} of runbook {run.runbook}.",
                {"run_id": run.id, "step": step_id, "decision": decision, "actor": actor},
            )
            return Decision(True, f"{verb} {run.id}:{step_id}", run.id, record.index)
        return Decision(False, f"no step {step_key!r} of {incident_id} is waiting for approval")

    # --- guards ----------------------------------------------------------------------------------
    def _dry_guards(self, action: str, target: str, labels: Mapping[str, str]) -> dict[str, Any]:
        notes: dict[str, Any] = {"automation_enabled": self.controls.automation_enabled()}
        maintenance = self.controls.in_maintenance(labels)
        if maintenance:
            notes["maintenance"] = maintenance
        left = self.guards.cooldown_left(action, target)
        if left:
            notes["cooldown_left_s"] = round(left, 1)
        breaker = breaker_check(self.guards)
        if not breaker.allowed:
            notes["circuit_breaker"] = breaker.reason
        if self.guards.holder(target):
            notes["locked"] = True
        return notes

    def _live_guards(
        self,
        run: RunRecord,
        runbook: Runbook,
        spec: StepSpec,
        step_type: StepType,
        record: StepRecord | None,
        incident: Incident,
        target: str,
    ) -> Advance | None:
        if not self.controls.automation_enabled():
            reason = "automation is disabled (kill switch); a person must act"
            self._record_only(run, spec, step_type, record, StepResult.failed(reason, guard="kill_switch"))
            return self._finish(run, RunStatus.BLOCKED, reason)
        maintenance = self.controls.in_maintenance(run.labels)
        if maintenance:
            reason = f"maintenance window: {maintenance}"
            self._record_only(run, spec, step_type, record, StepResult.failed(reason, guard="maintenance"))
            return self._finish(run, RunStatus.BLOCKED, reason)
        firing, why = self._still_firing(incident, run.labels)
        if not firing:
            self._record_only(
                run, spec, step_type, record, StepResult.skipped(f"not acting: {why}", guard="resolved")
            )
            return self._finish(run, RunStatus.STOPPED, why)
        return None

    def _still_firing(self, incident: Incident, labels: Mapping[str, str]) -> tuple[bool, str]:
        if incident.status is IncidentStatus.RESOLVED or incident.firing_count == 0:
            return False, f"{incident.id} has no firing alert any more"
        if not (self.settings.runbook_recheck_prometheus and self.settings.prometheus_url):
            return True, "firing (incident store)"
        name = labels.get("alertname")
        if not name:
            return True, "firing (incident store)"
        matchers = [f"alertname={promql_string(name)}", 'alertstate="firing"']
        if labels.get("namespace"):
            matchers.append(f"namespace={promql_string(labels['namespace'])}")
        try:
            client = self.services.prometheus()
            samples = client.query("ALERTS{" + ",".join(matchers) + "}") if client else [None]
        except IncidentBotError as exc:
            log.warning("could not re-check %s in Prometheus (%s); trusting the incident store", name, exc)
            return True, "firing (incident store; Prometheus re-check failed)"
        if not samples:
            return False, f"Prometheus reports {name} no longer firing"
        return True, "firing (incident store and Prometheus)"

    def _lock(self, target: str, timeout: float) -> str | None:
        deadline = time.monotonic() + min(timeout, 30.0)
        while True:
            token = self.guards.acquire(target, timeout + 30)
            if token is not None or time.monotonic() >= deadline:
                return token
            self.sleep(0.1)

    # --- running a step --------------------------------------------------------------------------
    def _params(self, run: RunRecord, incident: Incident, spec: StepSpec, step_type: StepType) -> Any:
        context = expression_context(incident, run.params, run.outputs, run.labels, run.dry_run)
        try:
            return step_type.params_model.model_validate(render_value(spec.params, context))
        except (ValidationError, ExprError) as exc:
            return StepResult.failed(f"bad params at run time: {exc}")

    def _context(
        self,
        run: RunRecord,
        runbook: Runbook,
        spec: StepSpec,
        incident: Incident,
        record: StepRecord,
        outputs: dict[str, dict[str, Any]],
    ) -> StepContext:
        def record_intent(plan: dict[str, Any]) -> None:
            record.intent = plan
            record.phase = "intent"
            if not run.dry_run:
                self._r.set(self._step_key(run, spec.id), record.model_dump_json())
            ctx.scratch["intent_recorded"] = True

        def refresh(step_id: str) -> Mapping[str, Any]:
            index = runbook.step_index(step_id)
            earlier = runbook.steps[index]
            earlier_type = self.registry[earlier.type]
            if earlier_type.mutating:
                raise PermanentError(f"cannot refresh mutating step {step_id}")
            params = self._params(
                run.model_copy(update={"outputs": outputs}), incident, earlier, earlier_type
            )
            if isinstance(params, StepResult):
                result = params
            else:
                sub = self._context(
                    run,
                    runbook,
                    earlier,
                    incident,
                    StepRecord(
                        run_id=run.id, step_id=earlier.id, index=index, type=earlier.type, phase="intent"
                    ),
                    outputs,
                )
                result = self._call(earlier_type, sub, params, earlier.timeout)
            outputs[step_id] = _output(result)
            ctx.steps = outputs
            return outputs[step_id]

        ctx = StepContext(
            incident=incident,
            run_id=run.id,
            step_id=spec.id,
            step_type=spec.type,
            params=run.params,
            steps=outputs,
            labels=run.labels,
            dry_run=run.dry_run,
            settings=self.settings,
            services=self.services,
            deadline=time.monotonic() + spec.timeout,
            first_started_at=record.first_started_at or self.clock(),
            now=self.clock,
            sleep=self.sleep,
            record_intent=record_intent,
            intent=record.intent,
            approved_by=record.approved_by,
            refresh=refresh,
            scratch=dict(record.scratch),
        )
        return ctx

    def _call(self, step_type: StepType, ctx: StepContext, params: Any, timeout: float) -> StepResult:
        """Run a step function; read-only steps are cut off at the timeout (mutating ones run to the end)."""
        try:
            if step_type.mutating:
                return step_type.fn(ctx, params)
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="runbook-step")
            try:
                return pool.submit(step_type.fn, ctx, params).result(timeout=timeout)
            finally:
                pool.shutdown(wait=False)
        except concurrent.futures.TimeoutError:
            return StepResult.failed(f"timed out after {timeout:.0f}s")

    def _run_step(
        self,
        run: RunRecord,
        runbook: Runbook,
        spec: StepSpec,
        step_type: StepType,
        record: StepRecord | None,
        incident: Incident,
        guard_note: dict[str, Any],
        target: str | None,
    ) -> Advance:
        now = self.clock()
        params = self._params(run, incident, spec, step_type)
        if isinstance(params, StepResult):
            return self._complete(run, runbook, spec, step_type, record, params)
        if record is None or record.phase == "done":
            record = StepRecord(
                run_id=run.id,
                step_id=spec.id,
                index=run.cursor,
                type=spec.type,
                phase="intent",
                first_started_at=now,
            )
        interrupted = record.phase == "intent" and record.attempts > 0
        record = record.model_copy(
            update={
                "phase": "intent" if record.phase != "waiting" else "waiting",
                "attempts": record.attempts + 1,
                "started_at": now,
                "inputs": params.model_dump(mode="json"),
                "dry_run": run.dry_run,
            }
        )
        outputs = dict(run.outputs)
        started = time.monotonic()

        if interrupted and step_type.mutating and not run.dry_run and record.intent is not None:
            ctx = self._context(run, runbook, spec, incident, record, outputs)
            recovery = self._recover(step_type, ctx, params, record.intent)
            log.warning(
                "run %s step %s interrupted earlier: %s (%s)",
                run.id,
                spec.id,
                recovery.verdict,
                recovery.detail,
            )
            if recovery.verdict == "applied" and recovery.result is not None:
                if target is not None and recovery.result.changed:
                    self.guards.start_cooldown(spec.type, target, f"{run.id}:{spec.id}")
                return self._complete(
                    run,
                    runbook,
                    spec,
                    step_type,
                    record,
                    recovery.result,
                    started=started,
                    outputs=outputs,
                    note={"recovery": recovery.detail},
                )
            if recovery.verdict == "unknown":
                unknown = StepResult.failed(
                    f"interrupted before its result was recorded; {recovery.detail}", needs_human=True
                )
                self._record_only(run, spec, step_type, record, unknown)
                return self._escalate(
                    run,
                    spec,
                    f"step {spec.id} ({spec.type}) state unknown after a worker "
                    f"restart: {recovery.detail}; needs a human",
                    status=RunStatus.NEEDS_HUMAN,
                )
            record.intent = None  # not applied: act afresh

        # Persist "started" before calling out: a crash from here on is seen as interrupted.
        if not run.dry_run:
            self._r.set(self._step_key(run, spec.id), record.model_dump_json())
        result: StepResult | None = None
        for attempt in range(spec.retries + 1):
            ctx = self._context(run, runbook, spec, incident, record, outputs)
            try:
                result = self._call(step_type, ctx, params, spec.timeout)
                break
            except TransientError as exc:
                if step_type.mutating and ctx.scratch.get("intent_recorded") and record.intent is not None:
                    recovery = self._recover(step_type, ctx, params, record.intent)
                    if recovery.verdict == "applied" and recovery.result is not None:
                        result = recovery.result
                        break
                    if recovery.verdict == "unknown":
                        result = StepResult.failed(f"{exc}; afterwards {recovery.detail}", needs_human=True)
                        break
                result = StepResult.failed(f"{type(exc).__name__}: {exc}")
                if attempt < spec.retries:
                    self.sleep(min(2.0**attempt, 10.0))
            except IncidentBotError as exc:
                result = StepResult.failed(f"{type(exc).__name__}: {exc}")
                break
            except Exception as exc:  # a bug in a step must fail the step, not wedge the run
                log.exception("step %s of run %s raised", spec.id, run.id)
                result = StepResult.failed(f"internal error: {type(exc).__name__}: {exc}")
                break
        assert result is not None
        outputs = {k: dict(v) for k, v in ctx.steps.items()}  # a wait step may have refreshed some
        record.scratch = dict(ctx.scratch)
        if result.status is StepStatus.PENDING:
            record.phase = "waiting"
            record.output = dict(result.output)
            record.summary = result.summary
            run = run.model_copy(
                update={"status": RunStatus.WAITING, "outputs": outputs, "updated_at": self.clock()}
            )
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._step_key(run, spec.id), record.model_dump_json())
            pipe.set(self.key("runbook", "run", run.id), run.model_dump_json())
            pipe.execute()
            return Advance(RunStatus.WAITING, recheck_after=max(0.05, result.recheck_after))
        if result.changed and not run.dry_run and target is not None:
            self.guards.start_cooldown(spec.type, target, f"{run.id}:{spec.id}")
        if result.output.get("needs_human"):
            self._record_only(run, spec, step_type, record, result)
            return self._escalate(run, spec, result.summary, status=RunStatus.NEEDS_HUMAN)
        note = {"guards": guard_note} if guard_note else None
        return self._complete(
            run, runbook, spec, step_type, record, result, started=started, outputs=outputs, note=note
        )

    def _recover(
        self, step_type: StepType, ctx: StepContext, params: Any, intent: Mapping[str, Any]
    ) -> Recovery:
        if step_type.recover is None:
            return Recovery("unknown", f"{step_type.name} has no way to check whether it was applied")
        try:
            return step_type.recover(ctx, params, intent)
        except IncidentBotError as exc:
            return Recovery("unknown", f"could not re-read the target: {exc}")

    # --- recording -------------------------------------------------------------------------------
    def _record_only(
        self,
        run: RunRecord,
        spec: StepSpec,
        step_type: StepType,
        record: StepRecord | None,
        result: StepResult,
    ) -> None:
        """Store a step's final result and its timeline entry without moving the cursor."""
        record = _finished(record, run, spec, result, self.clock())
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._step_key(run, spec.id), record.model_dump_json())
        self._timeline_step(pipe, run, spec, step_type, record, result)
        pipe.execute()

    def _timeline_step(
        self,
        pipe: redis.client.Pipeline,
        run: RunRecord,
        spec: StepSpec,
        step_type: StepType,
        record: StepRecord,
        result: StepResult,
    ) -> None:
        total = len(self.runbooks[run.runbook].steps)
        mode = "dry run, " if run.dry_run else ""
        who = f", approved by {record.approved_by}" if record.approved_by else ""
        kind = "mutating" if step_type.mutating else "read"
        self.store.append_timeline(
            run.incident_id,
            "runbook_step",
            f"[{record.index + 1}/{total}] {spec.id} ({spec.type}, {mode}{kind}"
            f"{who}): {result.status.value} - {result.summary}",
            {
                "run_id": run.id,
                "runbook": run.runbook,
                "step": spec.id,
                "index": record.index,
                "type": spec.type,
                "mutating": step_type.mutating,
                "dry_run": run.dry_run,
                "status": result.status.value,
                "changed": result.changed,
                "inputs": record.inputs,
                "output": result.output,
                "duration_s": record.duration_s,
                "attempts": record.attempts,
                "approved_by": record.approved_by,
            },
            pipe=pipe,
        )

    def _complete(
        self,
        run: RunRecord,
        runbook: Runbook,
        spec: StepSpec,
        step_type: StepType,
        record: StepRecord | None,
        result: StepResult,
        *,
        started: float | None = None,
        outputs: dict[str, dict[str, Any]] | None = None,
        note: dict[str, Any] | None = None,
    ) -> Advance:
        """Write the step's result, timeline entry, output and the cursor move in one transaction."""
        now = self.clock()
        output = dict(result.output)
        if note:
            output.update(note)
        result = result.model_copy(update={"output": output})
        record = _finished(record, run, spec, result, now).model_copy(
            update={
                "duration_s": round(time.monotonic() - started, 4) if started is not None else None,
                "changed": result.changed,
            }
        )
        outputs = dict(outputs if outputs is not None else run.outputs)
        outputs[spec.id] = _output(result)
        status, reason, cursor = RunStatus.RUNNING, run.reason, run.cursor + 1
        escalate = None
        if result.status is StepStatus.FAILED and spec.on_failure != "continue":
            if spec.on_failure == "escalate":
                status, reason = RunStatus.ESCALATED, f"step {spec.id} failed: {result.summary}"
                escalate = reason
            else:
                status, reason = RunStatus.FAILED, f"step {spec.id} failed: {result.summary}"
        elif cursor >= len(runbook.steps):
            status, reason = RunStatus.SUCCEEDED, "all steps done"
        run = run.model_copy(
            update={
                "status": status,
                "reason": reason,
                "cursor": cursor,
                "outputs": outputs,
                "updated_at": now,
                "finished_at": now if status.terminal else None,
            }
        )
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._step_key(run, spec.id), record.model_dump_json())
        pipe.set(self.key("runbook", "run", run.id), run.model_dump_json())
        self._timeline_step(pipe, run, spec, step_type, record, result)
        if escalate:
            self._timeline_escalate(pipe, run, spec.id, escalate)
        if status.terminal:
            self._timeline_finished(pipe, run)
        pipe.execute()
        if status.terminal:
            return Advance(status)
        return Advance(status, next_index=cursor)

    def _escalate(
        self, run: RunRecord, spec: StepSpec, reason: str, *, status: RunStatus = RunStatus.ESCALATED
    ) -> Advance:
        return self._finish(run, status, reason, escalate_step=spec.id)

    def _finish(
        self, run: RunRecord, status: RunStatus, reason: str, *, escalate_step: str | None = None
    ) -> Advance:
        now = self.clock()
        run = run.model_copy(
            update={"status": status, "reason": reason, "updated_at": now, "finished_at": now}
        )
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self.key("runbook", "run", run.id), run.model_dump_json())
        if escalate_step is not None:
            self._timeline_escalate(pipe, run, escalate_step, reason)
        self._timeline_finished(pipe, run)
        pipe.execute()
        return Advance(status)

    def _timeline_escalate(
        self, pipe: redis.client.Pipeline, run: RunRecord, step_id: str, reason: str
    ) -> None:
        self.store.append_timeline(
            run.incident_id,
            "escalate",
            f"Runbook {run.runbook} escalates to a person: {reason}",
            {"run_id": run.id, "runbook": run.runbook, "step": step_id, "reason": reason},
            pipe=pipe,
        )

    def _timeline_finished(self, pipe: redis.client.Pipeline, run: RunRecord) -> None:
        self.store.append_timeline(
            run.incident_id,
            "runbook_finished",
            f"Runbook {run.runbook}{' (dry run)' if run.dry_run else ''} {run.status.value}: {run.reason}",
            {"run_id": run.id, "runbook": run.runbook, "status": run.status.value, "dry_run": run.dry_run},
            pipe=pipe,
        )

    # --- inline running (CLI, tests) -------------------------------------------------------------
    def run_inline(self, run_id: str, *, max_seconds: float = 3600.0) -> RunRecord:
        """Run every step in this process until the run ends (waits and approvals are polled)."""
        deadline = time.monotonic() + max_seconds
        while True:
            run = self.get_run(run_id)
            if run.status.terminal:
                return run
            if time.monotonic() > deadline:
                return run
            try:
                advance = self.execute_step(run_id, run.cursor)
            except RunBusy:
                self.sleep(0.5)
                continue
            if advance.recheck_after is not None:
                self.sleep(
                    min(advance.recheck_after, 2.0 if advance.status is RunStatus.AWAITING_APPROVAL else 60.0)
                )


def _finished(
    record: StepRecord | None, run: RunRecord, spec: StepSpec, result: StepResult, now: datetime
) -> StepRecord:
    """The step's record marked done with the result (a fresh record when the step never started)."""
    record = record or StepRecord(
        run_id=run.id, step_id=spec.id, index=run.cursor, type=spec.type, phase="done", first_started_at=now
    )
    return record.model_copy(
        update={
            "phase": "done",
            "status": result.status.value,
            "finished_at": now,
            "output": dict(result.output),
            "summary": result.summary,
        }
    )


def _output(result: StepResult) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "summary": result.summary,
        "changed": result.changed,
        **result.output,
    }
