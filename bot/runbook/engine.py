"""The runbook engine: runs a runbook for an incident one step at a time, exactly once per step.

State lives in Redis (:class:`bot.storage.runs.RunStore` holds the keys): the run with its cursor and
step outputs, one record per step (phase, intent, result, who approved), the approve/deny decisions, the
per-run lock and the markers of enqueued step tasks.

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from bot.catalog import TARGET_KEYS
from bot.errors import IncidentBotError, PermanentError, TransientError
from bot.models import Incident, IncidentStatus
from bot.plan.expr import ExprError, compile_expr, render_value
from bot.plan.schema import Runbook, StepSpec
from bot.plan.select import MissingParameter, incident_label_sets, resolve_parameters
from bot.plan.steptypes import (
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
from bot.runbook.guards import breaker_check
from bot.runbook.services import Services
from bot.runbook.targets import Resolution, TargetResolver
from bot.settings import Settings
from bot.severity import promql_string
from bot.storage.controls import Controls
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore
from bot.storage.runs import RunStore, Transaction

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
    NEEDS_TARGET = "needs_target"
    """Parked before its first step: the target is unknown; a person's run command with overrides goes on."""
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
    target: dict[str, Any] = Field(default_factory=dict)
    """How the target was found (bot.runbook.targets.Resolution.as_dict), or what was missing."""
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


@dataclass(frozen=True)
class StepCall:
    """One step of one run as the engine handles it: the run, its runbook, the step, its record, the incident.

    ``record`` is None until the step first starts (or when a fresh record must be written); the record
    object itself is mutable and is updated in place while the step runs (intent, scratch).
    """

    run: RunRecord
    runbook: Runbook
    spec: StepSpec
    step_type: StepType
    record: StepRecord | None
    incident: Incident


def _now() -> datetime:
    return datetime.now(UTC)


def _lacks_target(runbook: Runbook, labels: Mapping[str, str]) -> bool:
    """Whether a required label-backed parameter without default has no label value (a target is missing)."""
    return any(
        spec.label and spec.required and spec.default is None and not labels.get(spec.label)
        for spec in runbook.parameters.values()
    )


def _with_target_kind(call: StepCall, params: Any) -> Any:
    """A workload step that names the run's target but no ``kind`` gets the target's kind (the catalog or
    discovery found it: ``workload_kind``), so a shipped runbook acts on a LeaderWorkerSet as it would on a
    Deployment. A step naming another workload, or its own kind, is left alone."""
    labels = call.run.labels
    kind = labels.get("workload_kind")
    if (
        not kind
        or not labels.get("deployment")
        or not isinstance(params, dict)
        or "kind" in params
        or "kind" not in call.step_type.params_model.model_fields
        or params.get("deployment") != labels.get("deployment")
        or params.get("namespace") != labels.get("namespace")
    ):
        return params
    return {**params, "kind": kind}


def _target_overrides(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """Overrides of target keys, as labels (so guards such as maintenance windows see a person's target)."""
    return {k: str(v) for k, v in (overrides or {}).items() if k in TARGET_KEYS and v}


def _supplied(overrides: Mapping[str, Any] | None, trigger: str) -> dict[str, Any]:
    given = _target_overrides(overrides)
    if not given:
        return {}
    target = (
        f"{given['namespace']}/{given['deployment']}" if {"namespace", "deployment"} <= set(given) else None
    )
    return {
        "source": f"supplied by a person ({trigger})",
        "supplied": given,
        **({"target": target} if target else {}),
    }


class Engine:
    """Creates runs and advances them; shared state lives in Redis so any worker can continue a run."""

    def __init__(
        self,
        runs: RunStore,
        guards: Guards,
        store: IncidentStore,
        services: Services,
        settings: Settings,
        runbooks: Mapping[str, Runbook],
        controls: Controls,
        *,
        clock: Callable[[], datetime] = _now,
        sleep: Callable[[float], None] = time.sleep,
        targets: TargetResolver | None = None,
    ) -> None:
        self.runs = runs
        self.guards = guards
        self.store = store
        self.services = services
        self.settings = settings
        self.runbooks = dict(runbooks)
        self.controls = controls
        self.clock = clock
        self.sleep = sleep
        self.registry = step_types()
        self.targets = targets

    # --- keys ----------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A key under the store prefix."""
        return self.store.key(*parts)

    def _save_step(
        self, run: RunRecord, step_id: str, record: StepRecord, tx: Transaction | None = None
    ) -> None:
        self.runs.save_step(run.incident_id, run.id, step_id, record.model_dump_json(), tx)

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
            existing = self.runs.run_for_request(request_id)
            if existing is not None:
                return self.get_run(existing), False
        if labels is None:
            sets = incident_label_sets(incident) or [dict(incident.common_labels)]
            labels = next((s for s in sets if runbook.match.matches(s, incident.severity)), sets[0])
        resolution = self.targets.resolve(labels) if self.targets else Resolution(dict(labels))
        labels = {**resolution.labels, **_target_overrides(overrides)}
        try:
            params = resolve_parameters(runbook, labels, overrides)
        except MissingParameter as exc:
            if self.targets is None or not _lacks_target(runbook, labels):
                raise
            return self._park(incident_id, runbook, dry_run, trigger, request_id, labels, resolution, exc)
        parked = self._parked(incident_id, runbook.name) if overrides else None
        now = self.clock()
        fields = {"dry_run": dry_run, "trigger": trigger, "params": params, "labels": dict(labels)}
        fields["target"] = {**resolution.as_dict(), **_supplied(overrides, trigger)}
        if parked is not None:
            run = parked.model_copy(update={**fields, "status": RunStatus.RUNNING, "updated_at": now})
        else:
            number = self.runs.next_number(incident_id)
            run = RunRecord(
                id=f"{incident_id}-R{number}",
                incident_id=incident_id,
                runbook=runbook.name,
                created_at=now,
                updated_at=now,
                **fields,
            )
        if request_id and not self.runs.claim_request(request_id, run.id):
            return self.get_run(str(self.runs.run_for_request(request_id))), False
        with self.runs.transaction() as tx:
            if parked is not None:
                self.runs.save_run(run.id, run.model_dump_json(), tx)
            else:
                self.runs.add_run(incident_id, run.id, run.model_dump_json(), tx)
            self._timeline_target(tx, run)
            self._timeline_started(tx, run, runbook)
        return run, True

    def _parked(self, incident_id: str, runbook: str) -> RunRecord | None:
        """The incident's run of *runbook* waiting for a target, if any (the newest)."""
        waiting = [r for r in self.runs_of(incident_id) if r.runbook == runbook]
        waiting = [r for r in waiting if r.status is RunStatus.NEEDS_TARGET]
        return waiting[-1] if waiting else None

    def _park(
        self,
        incident_id: str,
        runbook: Runbook,
        dry_run: bool,
        trigger: str,
        request_id: str | None,
        labels: Mapping[str, str],
        resolution: Resolution,
        missing: MissingParameter,
    ) -> tuple[RunRecord, bool]:
        """Park a run until a person names its target, saying what is missing and how to supply it."""
        existing = self._parked(incident_id, runbook.name)
        if existing is not None:
            return existing, False
        now, number = self.clock(), self.runs.next_number(incident_id)
        absent = [n for n, spec in runbook.parameters.items() if spec.label and not labels.get(spec.label)]
        absent = [
            n for n in absent if runbook.parameters[n].required and runbook.parameters[n].default is None
        ]
        command = f"/incident runbook {incident_id} {runbook.name} " + " ".join(f"{n}=…" for n in absent)
        why = "; ".join([str(missing), *resolution.tried])
        run = RunRecord(
            id=f"{incident_id}-R{number}",
            incident_id=incident_id,
            runbook=runbook.name,
            dry_run=dry_run,
            trigger=trigger,
            params={},
            labels=dict(labels),
            status=RunStatus.NEEDS_TARGET,
            reason=f"target unknown: {why}",
            created_at=now,
            updated_at=now,
            target={**resolution.as_dict(), "missing": absent, "command": command},
        )
        if request_id and not self.runs.claim_request(request_id, run.id):
            return self.get_run(str(self.runs.run_for_request(request_id))), False
        with self.runs.transaction() as tx:
            self.runs.add_run(incident_id, run.id, run.model_dump_json(), tx)
            self.store.append_timeline(
                incident_id,
                "runbook_needs_target",
                f"Runbook {runbook.name} waits for a person: the target is unknown ({why}). "
                f"Supply it with `{command}`.",
                {"run_id": run.id, "runbook": runbook.name, **run.target},
                pipe=tx,
            )
        return run, True

    def _timeline_target(self, tx: Transaction, run: RunRecord) -> None:
        source, target = run.target.get("source"), run.target.get("target")
        if not run.target.get("added") and source in (None, "", "alert labels"):
            return
        self.store.append_timeline(
            run.incident_id,
            "runbook_target",
            f"Runbook {run.runbook}: target {target or 'partly known'} via {source}",
            {"run_id": run.id, "runbook": run.runbook, **run.target},
            pipe=tx,
        )

    def _timeline_started(self, tx: Transaction, run: RunRecord, runbook: Runbook) -> None:
        mode = " (dry run)" if run.dry_run else ""
        self.store.append_timeline(
            run.incident_id,
            "runbook_started",
            f"Runbook {runbook.name}{mode} started ({run.trigger}): {len(runbook.steps)} steps, "
            f"params {json.dumps(run.params, sort_keys=True)}",
            {
                "run_id": run.id,
                "runbook": runbook.name,
                "dry_run": run.dry_run,
                "trigger": run.trigger,
                "params": run.params,
            },
            pipe=tx,
        )

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id."""
        raw = self.runs.run(run_id)
        if raw is None:
            raise RunNotFound(f"no runbook run {run_id!r}")
        return RunRecord.model_validate_json(raw)

    def runs_of(self, incident_id: str) -> list[RunRecord]:
        """The incident's runs, oldest first."""
        return [self.get_run(i) for i in self.runs.run_ids(incident_id)]

    def step_record(self, run: RunRecord, step_id: str) -> StepRecord | None:
        """The stored record of one step, if any."""
        raw = self.runs.step(run.incident_id, run.id, step_id)
        return StepRecord.model_validate_json(raw) if raw is not None else None

    def kicked(self, run_id: str, index: int) -> bool:
        """Whether the task for step *index* of the run has been enqueued."""
        return self.runs.kicked(run_id, index)

    def mark_kicked(self, run_id: str, index: int) -> None:
        """Remember that the task for step *index* has been enqueued."""
        self.runs.mark_kicked(run_id, index)

    # --- the step task's body ------------------------------------------------------------------
    def execute_step(self, run_id: str, index: int) -> Advance:
        """Advance the run by the step at *index* (a stale or duplicate call changes nothing)."""
        run = self.get_run(run_id)
        runbook = self.runbooks.get(run.runbook)
        longest = max((spec.timeout for spec in runbook.steps), default=600.0) if runbook else 600.0
        if not self.runs.lock_run(run_id, int(longest) + 60):
            raise RunBusy(f"run {run_id} is being advanced by another worker")
        try:
            return self._execute_locked(run_id, index)
        finally:
            self.runs.unlock_run(run_id)

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
        incident = self.store.get(run.incident_id)
        call = StepCall(
            run, runbook, spec, self.registry[spec.type], self.step_record(run, spec.id), incident
        )
        return self._execute_call(call)

    def _execute_call(self, call: StepCall) -> Advance:
        """Condition, approval gate and guards, then the step itself."""
        now = self.clock()
        if (call.record is None or call.record.phase == "done") and call.spec.when is not None:
            unmet = self._condition(call)
            if unmet is not None:
                return unmet
        approved_by = call.record.approved_by if call.record is not None else None
        if call.spec.needs_approval(call.incident.severity) and not call.run.dry_run and approved_by is None:
            return self._gate(call, now)
        if not call.step_type.mutating:
            return self._run_step(call, {}, None)
        params = self._params(call)
        if isinstance(params, StepResult):
            return self._complete(call, params)
        assert isinstance(params, TargetParams)
        if call.run.dry_run:
            return self._run_step(
                call, self._dry_guards(call.spec.type, params.target, call.run.labels), params.target
            )
        return self._guarded(call, params.target)

    def _condition(self, call: StepCall) -> Advance | None:
        """The step's `when` condition: None when it holds, else the step is done as failed or skipped."""
        run, spec = call.run, call.spec
        assert spec.when is not None
        context = expression_context(call.incident, run.params, run.outputs, run.labels, run.dry_run)
        unstarted = replace(call, record=None)
        try:
            go = compile_expr(spec.when, roots=ROOT_NAMES).truth(context)
        except ExprError as exc:
            return self._complete(unstarted, StepResult.failed(f"condition error: {exc}"))
        if not go:
            return self._complete(unstarted, StepResult.skipped(f"condition false: {spec.when}"))
        return None

    def _guarded(self, call: StepCall, target: str) -> Advance:
        """A live mutating step: controls, the target's lock, cooldown and circuit breaker, then the step."""
        stop = self._live_guards(call, target)
        if stop is not None:
            return stop
        token = self._lock(target, call.spec.timeout)
        if token is None:
            return self._complete(call, StepResult.failed(f"{target} stayed locked by another action"))
        record = call.record
        interrupted = record is not None and record.phase == "intent" and record.intent is not None
        try:
            if not interrupted:
                refused = self._cooldown_or_breaker(call, target)
                if refused is not None:
                    return refused
            return self._run_step(call, {}, target)
        finally:
            self.guards.release(target, token)

    def _cooldown_or_breaker(self, call: StepCall, target: str) -> Advance | None:
        """None when the action may go ahead (its slot in the breaker's window is then reserved)."""
        run, spec = call.run, call.spec
        left = self.guards.cooldown_left(spec.type, target)
        if left > 0:
            by = self.guards.cooldown_by(spec.type, target)
            return self._complete(
                call,
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
            self._record_only(call, StepResult.failed(reason, guard="circuit_breaker"))
            return self._escalate(run, spec, reason)
        return None

    # --- approval --------------------------------------------------------------------------------
    def _gate(self, call: StepCall, now: datetime) -> Advance:
        run, spec, record = call.run, call.spec, call.record
        timeout = float(self.settings.runbook_approval_timeout_seconds)
        if spec.type == "approval":
            timeout = float(self._params_model_value(spec, call.step_type, "timeout") or timeout)
        decision = self._decision(run.id, spec.id)
        if record is None or record.phase == "done":
            return self._request_approval(call, now, timeout)
        if decision is None:
            assert record.approval_deadline is not None
            left = (record.approval_deadline - now).total_seconds()
            if left > 0:
                return Advance(RunStatus.AWAITING_APPROVAL, recheck_after=left)
            return self._complete(call, StepResult.failed(f"approval timed out after {timeout:.0f}s"))
        if decision["decision"] != "approve":
            return self._complete(
                call, StepResult.failed(f"denied by {decision['actor']}", denied_by=decision["actor"])
            )
        record = record.model_copy(update={"phase": "approved", "approved_by": decision["actor"]})
        self._save_step(run, spec.id, record)
        run = run.model_copy(update={"status": RunStatus.RUNNING})
        self.runs.save_run(run.id, run.model_dump_json())
        return self._execute_locked(run.id, run.cursor)

    def _request_approval(self, call: StepCall, now: datetime, timeout: float) -> Advance:
        """Record that the step waits for a person, with the deadline, and say so in the timeline."""
        run, runbook, spec = call.run, call.runbook, call.spec
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
        with self.runs.transaction() as tx:
            self._save_step(run, spec.id, record, tx)
            run = run.model_copy(update={"status": RunStatus.AWAITING_APPROVAL, "updated_at": now})
            self.runs.save_run(run.id, run.model_dump_json(), tx)
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
                    "mutating": call.step_type.mutating,
                    "message": message,
                    "deadline": deadline.isoformat(),
                    "timeout_s": timeout,
                },
                pipe=tx,
            )
        return Advance(RunStatus.AWAITING_APPROVAL, recheck_after=timeout)

    def _params_model_value(self, spec: StepSpec, step_type: StepType, name: str) -> Any:
        try:
            return getattr(step_type.params_model.model_validate(spec.params), name, None)
        except ValidationError:
            return None

    def _decision(self, run_id: str, step_id: str) -> dict[str, str] | None:
        raw = self.runs.decision(run_id, step_id)
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
            if not self.runs.claim_decision(run.id, step_id, value):
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

    def _live_guards(self, call: StepCall, target: str) -> Advance | None:
        run = call.run
        if not self.controls.automation_enabled():
            reason = "automation is disabled (kill switch); a person must act"
            self._record_only(call, StepResult.failed(reason, guard="kill_switch"))
            return self._finish(run, RunStatus.BLOCKED, reason)
        maintenance = self.controls.in_maintenance(run.labels)
        if maintenance:
            reason = f"maintenance window: {maintenance}"
            self._record_only(call, StepResult.failed(reason, guard="maintenance"))
            return self._finish(run, RunStatus.BLOCKED, reason)
        added = run.target.get("added") or {}
        alert_labels = {k: v for k, v in run.labels.items() if k not in added}
        firing, why = self._still_firing(call.incident, alert_labels)
        if not firing:
            self._record_only(call, StepResult.skipped(f"not acting: {why}", guard="resolved"))
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
    def _params(self, call: StepCall) -> Any:
        """The step's params rendered against the run so far, or a failed StepResult when they are bad."""
        run = call.run
        context = expression_context(call.incident, run.params, run.outputs, run.labels, run.dry_run)
        try:
            rendered = render_value(call.spec.params, context)
            return call.step_type.params_model.model_validate(_with_target_kind(call, rendered))
        except (ValidationError, ExprError) as exc:
            return StepResult.failed(f"bad params at run time: {exc}")

    def _context(self, call: StepCall, outputs: dict[str, dict[str, Any]]) -> StepContext:
        """What the step function sees; recording the intent writes the step's record at once."""
        run, spec, record = call.run, call.spec, call.record
        assert record is not None

        def record_intent(plan: dict[str, Any]) -> None:
            record.intent = plan
            record.phase = "intent"
            if not run.dry_run:
                self._save_step(run, spec.id, record)
            ctx.scratch["intent_recorded"] = True

        def refresh(step_id: str) -> Mapping[str, Any]:
            return self._refresh(call, outputs, ctx, step_id)

        ctx = StepContext(
            incident=call.incident,
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

    def _refresh(
        self, call: StepCall, outputs: dict[str, dict[str, Any]], ctx: StepContext, step_id: str
    ) -> Mapping[str, Any]:
        """Run the earlier read-only step *step_id* again; its new output replaces the old one."""
        index = call.runbook.step_index(step_id)
        earlier = call.runbook.steps[index]
        earlier_type = self.registry[earlier.type]
        if earlier_type.mutating:
            raise PermanentError(f"cannot refresh mutating step {step_id}")
        record = StepRecord(
            run_id=call.run.id, step_id=earlier.id, index=index, type=earlier.type, phase="intent"
        )
        sub = replace(call, spec=earlier, step_type=earlier_type, record=record)
        params = self._params(replace(sub, run=call.run.model_copy(update={"outputs": outputs})))
        if isinstance(params, StepResult):
            result = params
        else:
            result = self._call(earlier_type, self._context(sub, outputs), params, earlier.timeout)
        outputs[step_id] = _output(result)
        ctx.steps = outputs
        return outputs[step_id]

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

    def _run_step(self, call: StepCall, guard_note: dict[str, Any], target: str | None) -> Advance:
        """Start (or resume) the step, call it with retries, and record what came of it."""
        now = self.clock()
        params = self._params(call)
        if isinstance(params, StepResult):
            return self._complete(call, params)
        record = call.record
        if record is None or record.phase == "done":
            record = StepRecord(
                run_id=call.run.id,
                step_id=call.spec.id,
                index=call.run.cursor,
                type=call.spec.type,
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
                "dry_run": call.run.dry_run,
            }
        )
        call = replace(call, record=record)
        outputs = dict(call.run.outputs)
        started = time.monotonic()
        if interrupted and call.step_type.mutating and not call.run.dry_run and record.intent is not None:
            recovered = self._resume(call, params, outputs, started, target)
            if recovered is not None:
                return recovered
        # Persist "started" before calling out: a crash from here on is seen as interrupted.
        if not call.run.dry_run:
            self._save_step(call.run, call.spec.id, record)
        result, ctx = self._attempts(call, params, outputs)
        return self._after_call(call, result, ctx, started, guard_note, target)

    def _resume(
        self,
        call: StepCall,
        params: Any,
        outputs: dict[str, dict[str, Any]],
        started: float,
        target: str | None,
    ) -> Advance | None:
        """An interrupted mutating step: its recoverer decides; None when it must act afresh."""
        run, spec, record = call.run, call.spec, call.record
        assert record is not None and record.intent is not None
        recovery = self._recover(call.step_type, self._context(call, outputs), params, record.intent)
        log.warning(
            "run %s step %s interrupted earlier: %s (%s)", run.id, spec.id, recovery.verdict, recovery.detail
        )
        if recovery.verdict == "applied" and recovery.result is not None:
            if target is not None and recovery.result.changed:
                self.guards.start_cooldown(spec.type, target, f"{run.id}:{spec.id}")
            return self._complete(
                call, recovery.result, started=started, outputs=outputs, note={"recovery": recovery.detail}
            )
        if recovery.verdict == "unknown":
            unknown = StepResult.failed(
                f"interrupted before its result was recorded; {recovery.detail}", needs_human=True
            )
            self._record_only(call, unknown)
            return self._escalate(
                run,
                spec,
                f"step {spec.id} ({spec.type}) state unknown after a worker "
                f"restart: {recovery.detail}; needs a human",
                status=RunStatus.NEEDS_HUMAN,
            )
        record.intent = None  # not applied: act afresh
        return None

    def _attempts(
        self, call: StepCall, params: Any, outputs: dict[str, dict[str, Any]]
    ) -> tuple[StepResult, StepContext]:
        """Call the step, retrying transient errors up to `retries` times; the result and the last context."""
        spec, step_type = call.spec, call.step_type
        result: StepResult | None = None
        for attempt in range(spec.retries + 1):
            ctx = self._context(call, outputs)
            try:
                result = self._call(step_type, ctx, params, spec.timeout)
                break
            except TransientError as exc:
                result = self._recovered(call, ctx, params, exc)
                if result is not None:
                    break
                result = StepResult.failed(f"{type(exc).__name__}: {exc}")
                if attempt < spec.retries:
                    self.sleep(min(2.0**attempt, 10.0))
            except IncidentBotError as exc:
                result = StepResult.failed(f"{type(exc).__name__}: {exc}")
                break
            except Exception as exc:  # a bug in a step must fail the step, not wedge the run
                log.exception("step %s of run %s raised", spec.id, call.run.id)
                result = StepResult.failed(f"internal error: {type(exc).__name__}: {exc}")
                break
        assert result is not None
        return result, ctx

    def _recovered(
        self, call: StepCall, ctx: StepContext, params: Any, exc: TransientError
    ) -> StepResult | None:
        """After a transient error past the intent: the recoverer's result, or None to retry."""
        record = call.record
        if not (call.step_type.mutating and ctx.scratch.get("intent_recorded")):
            return None
        if record is None or record.intent is None:
            return None
        recovery = self._recover(call.step_type, ctx, params, record.intent)
        if recovery.verdict == "applied" and recovery.result is not None:
            return recovery.result
        if recovery.verdict == "unknown":
            return StepResult.failed(f"{exc}; afterwards {recovery.detail}", needs_human=True)
        return None

    def _after_call(
        self,
        call: StepCall,
        result: StepResult,
        ctx: StepContext,
        started: float,
        guard_note: dict[str, Any],
        target: str | None,
    ) -> Advance:
        """Record the step's result: waiting, needs a human, or done (cooldown started when it changed)."""
        run, spec, record = call.run, call.spec, call.record
        assert record is not None
        outputs = {k: dict(v) for k, v in ctx.steps.items()}  # a wait step may have refreshed some
        record.scratch = dict(ctx.scratch)
        if result.status is StepStatus.PENDING:
            return self._wait(call, result, outputs)
        if result.changed and not run.dry_run and target is not None:
            self.guards.start_cooldown(spec.type, target, f"{run.id}:{spec.id}")
        if result.output.get("needs_human"):
            self._record_only(call, result)
            return self._escalate(run, spec, result.summary, status=RunStatus.NEEDS_HUMAN)
        note = {"guards": guard_note} if guard_note else None
        return self._complete(call, result, started=started, outputs=outputs, note=note)

    def _wait(self, call: StepCall, result: StepResult, outputs: dict[str, dict[str, Any]]) -> Advance:
        """A PENDING result: the step and the run wait; the same step is looked at again later."""
        record = call.record
        assert record is not None
        record.phase = "waiting"
        record.output = dict(result.output)
        record.summary = result.summary
        run = call.run.model_copy(
            update={"status": RunStatus.WAITING, "outputs": outputs, "updated_at": self.clock()}
        )
        with self.runs.transaction() as tx:
            self._save_step(run, call.spec.id, record, tx)
            self.runs.save_run(run.id, run.model_dump_json(), tx)
        return Advance(RunStatus.WAITING, recheck_after=max(0.05, result.recheck_after))

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
    def _record_only(self, call: StepCall, result: StepResult) -> None:
        """Store a step's final result and its timeline entry without moving the cursor."""
        record = _finished(call.record, call.run, call.spec, result, self.clock())
        with self.runs.transaction() as tx:
            self._save_step(call.run, call.spec.id, record, tx)
            self._timeline_step(tx, call, record, result)

    def _timeline_step(self, tx: Transaction, call: StepCall, record: StepRecord, result: StepResult) -> None:
        run, spec, mutating = call.run, call.spec, call.step_type.mutating
        total = len(self.runbooks[run.runbook].steps)
        mode = "dry run, " if run.dry_run else ""
        who = f", approved by {record.approved_by}" if record.approved_by else ""
        kind = "mutating" if mutating else "read"
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
                "mutating": mutating,
                "dry_run": run.dry_run,
                "status": result.status.value,
                "changed": result.changed,
                "inputs": record.inputs,
                "output": result.output,
                "duration_s": record.duration_s,
                "attempts": record.attempts,
                "approved_by": record.approved_by,
            },
            pipe=tx,
        )

    def _complete(
        self,
        call: StepCall,
        result: StepResult,
        *,
        started: float | None = None,
        outputs: dict[str, dict[str, Any]] | None = None,
        note: dict[str, Any] | None = None,
    ) -> Advance:
        """Write the step's result, timeline entry, output and the cursor move in one transaction."""
        run, spec = call.run, call.spec
        now = self.clock()
        output = dict(result.output)
        if note:
            output.update(note)
        result = result.model_copy(update={"output": output})
        record = _finished(call.record, run, spec, result, now).model_copy(
            update={
                "duration_s": round(time.monotonic() - started, 4) if started is not None else None,
                "changed": result.changed,
            }
        )
        outputs = dict(outputs if outputs is not None else run.outputs)
        outputs[spec.id] = _output(result)
        cursor = run.cursor + 1
        status, reason, escalate = _next_status(spec, result, run.reason, cursor >= len(call.runbook.steps))
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
        with self.runs.transaction() as tx:
            self._save_step(run, spec.id, record, tx)
            self.runs.save_run(run.id, run.model_dump_json(), tx)
            self._timeline_step(tx, call, record, result)
            if escalate:
                self._timeline_escalate(tx, run, spec.id, reason)
            if status.terminal:
                self._timeline_finished(tx, run)
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
        with self.runs.transaction() as tx:
            self.runs.save_run(run.id, run.model_dump_json(), tx)
            if escalate_step is not None:
                self._timeline_escalate(tx, run, escalate_step, reason)
            self._timeline_finished(tx, run)
        return Advance(status)

    def _timeline_escalate(self, tx: Transaction, run: RunRecord, step_id: str, reason: str) -> None:
        self.store.append_timeline(
            run.incident_id,
            "escalate",
            f"Runbook {run.runbook} escalates to a person: {reason}",
            {"run_id": run.id, "runbook": run.runbook, "step": step_id, "reason": reason},
            pipe=tx,
        )

    def _timeline_finished(self, tx: Transaction, run: RunRecord) -> None:
        self.store.append_timeline(
            run.incident_id,
            "runbook_finished",
            f"Runbook {run.runbook}{' (dry run)' if run.dry_run else ''} {run.status.value}: {run.reason}",
            {"run_id": run.id, "runbook": run.runbook, "status": run.status.value, "dry_run": run.dry_run},
            pipe=tx,
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


def _next_status(spec: StepSpec, result: StepResult, reason: str, last: bool) -> tuple[RunStatus, str, bool]:
    """The run's status and reason after a step finished with *result*, and whether it escalates."""
    if result.status is StepStatus.FAILED and spec.on_failure != "continue":
        failed = f"step {spec.id} failed: {result.summary}"
        if spec.on_failure == "escalate":
            return RunStatus.ESCALATED, failed, True
        return RunStatus.FAILED, failed, False
    if last:
        return RunStatus.SUCCEEDED, "all steps done", False
    return RunStatus.RUNNING, reason, False
