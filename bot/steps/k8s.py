"""Kubernetes steps: pods, events, logs, rollout history/status, Helm history (read); scale, restart, undo,
delete pods. Workload steps take ``kind`` (Deployment, StatefulSet, LeaderWorkerSet, Rollout).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bot.errors import PermanentError
from bot.integrations.helm import HelmHistory, describe_change, release_of, rollback_command
from bot.integrations.kube import KubeNotFound, PodSummary
from bot.plan.schema import Seconds
from bot.plan.steptypes import (
    Recovery,
    StepContext,
    StepParams,
    StepResult,
    TargetParams,
    recoverer,
    step,
)

MAX_LISTED = 20
WorkloadKind = Literal["Deployment", "StatefulSet", "LeaderWorkerSet", "Rollout"]


def _kind(value: Any) -> Any:
    """An empty kind (a runbook rendering ``labels.workload_kind`` that the alert lacks) is a Deployment."""
    return value or "Deployment"


class KindParams(StepParams):
    """``kind`` of the workload named by ``deployment`` (default Deployment; the catalog/targets give it)."""

    kind: WorkloadKind = "Deployment"

    @field_validator("kind", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        return _kind(value)


class WorkloadTarget(TargetParams):
    """A mutating step's target: ``namespace``/``deployment`` (the workload's name) and its ``kind``."""

    kind: WorkloadKind = "Deployment"

    @field_validator("kind", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        return _kind(value)


def _pods(ctx: StepContext, namespace: str, name: str | None, kind: str, selector: str | None = None) -> Any:
    if name is not None and kind != "Deployment":
        return ctx.kube.workload(kind).pods(namespace, name)
    return ctx.kube.list_pods(namespace, label_selector=selector, deployment=name)


def _pod_row(p: PodSummary) -> dict[str, Any]:
    return {
        "name": p.name,
        "status": p.status,
        "ready": p.ready,
        "restarts": p.restarts,
        "node": p.node,
        "last_terminated_reason": p.last_terminated_reason,
        "oom_killed": p.oom_killed,
        "pending_for_gpu": p.pending_for_gpu,
    }


# --- read steps ----------------------------------------------------------------------------------


class GetPodsParams(KindParams):
    """Pods of a workload (or matching a label selector)."""

    namespace: str = Field(min_length=1)
    deployment: str | None = None
    selector: str | None = None


@step(
    "k8s.get_pods",
    mutating=False,
    description="Pods of a Deployment, summarised (ready, crashloop, OOM, GPU)",
)
def get_pods(ctx: StepContext, params: GetPodsParams) -> StepResult:
    """Summarise the pods: how many are ready, crash-looping, OOMKilled, pending for a GPU."""
    pods = _pods(ctx, params.namespace, params.deployment, params.kind, params.selector)
    statuses = Counter(p.status for p in pods)
    out = {
        "total": len(pods),
        "ready": sum(1 for p in pods if p.ready),
        "not_ready": sum(1 for p in pods if not p.ready),
        "crashloop": statuses.get("CrashLoopBackOff", 0),
        "oom_killed": sum(1 for p in pods if p.oom_killed),
        "pending_for_gpu": sum(1 for p in pods if p.pending_for_gpu),
        "restarts": sum(p.restarts for p in pods),
        "statuses": dict(statuses),
        "pods": [_pod_row(p) for p in pods[:MAX_LISTED]],
    }
    return StepResult.ok(
        f"{out['ready']}/{out['total']} pods ready; statuses {dict(statuses) or '{}'}; "
        f"{out['oom_killed']} OOMKilled, {out['pending_for_gpu']} pending for a GPU",
        **out,
    )


class GetEventsParams(StepParams):
    """Events in a namespace, filtered."""

    namespace: str = Field(min_length=1)
    reason: str | None = None
    involved_name: str | None = None
    type: Literal["Normal", "Warning"] | None = None
    name_prefix: str | None = None
    """Keep only events about objects whose name starts with this (e.g. a Deployment's pods)."""
    limit: int = Field(20, ge=1, le=200)


@step("k8s.get_events", mutating=False, description="Events (e.g. reason=OOMKilled, BackOff), newest last")
def get_events(ctx: StepContext, params: GetEventsParams) -> StepResult:
    """List events by reason/type/object; output counts by reason."""
    events = ctx.kube.list_events(
        params.namespace, involved_name=params.involved_name, reason=params.reason, event_type=params.type
    )
    if params.name_prefix:
        events = [e for e in events if e.object_name.startswith(params.name_prefix)]
    reasons = Counter()  # type: Counter[str]
    for e in events:
        reasons[e.reason] += e.count
    rows = [
        {
            "type": e.type,
            "reason": e.reason,
            "object": f"{e.object_kind}/{e.object_name}",
            "message": e.message[:300],
            "count": e.count,
            "last_seen": e.last_seen.isoformat() if e.last_seen else None,
        }
        for e in events[-params.limit :]
    ]
    return StepResult.ok(
        f"{len(events)} event(s)" + (f": {dict(reasons)}" if reasons else ""),
        count=len(events),
        total=sum(reasons.values()),
        reasons=dict(reasons),
        events=rows,
    )


class LogsParams(KindParams):
    """Log tails of a Deployment's pods (or one pod), with a pattern count."""

    namespace: str = Field(min_length=1)
    deployment: str | None = None
    pod: str | None = None
    tail: int = Field(200, ge=1, le=5000)
    pattern: str = Field(min_length=1)
    previous: bool = False
    """Read the previous (crashed) container's log."""
    max_pods: int = Field(3, ge=1, le=20)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value


@step("k8s.logs", mutating=False, description="Tail pod logs and count lines matching a regex")
def logs(ctx: StepContext, params: LogsParams) -> StepResult:
    """Count lines matching the pattern in the tails of up to max_pods pods."""
    if params.pod:
        names = [params.pod]
    else:
        pods = _pods(ctx, params.namespace, params.deployment, params.kind)
        # Unhealthy pods first: they are the ones worth reading.
        pods.sort(key=lambda p: (p.ready, -p.restarts, p.name))
        names = [p.name for p in pods[: params.max_pods]]
    pattern = re.compile(params.pattern)
    matches = 0
    sample: list[str] = []
    read: list[str] = []
    for name in names:
        try:
            text = ctx.kube.pod_logs(params.namespace, name, tail_lines=params.tail, previous=params.previous)
        except PermanentError:  # gone, or no previous container to read: nothing to count
            continue
        read.append(name)
        for line in text.splitlines():
            if pattern.search(line):
                matches += 1
                if len(sample) < 5:
                    sample.append(f"{name}: {line[:300]}")
    return StepResult.ok(
        f"{matches} line(s) matching /{params.pattern}/ in {len(read)} pod(s)",
        matches=matches,
        pods=read,
        sample=sample,
    )


class HistoryParams(KindParams):
    """A workload's rollout history."""

    namespace: str = Field(min_length=1)
    deployment: str = Field(min_length=1)


@step(
    "k8s.rollout_history",
    mutating=False,
    description="Revisions of a Deployment and the age of the last rollout",
)
def rollout_history(ctx: StepContext, params: HistoryParams) -> StepResult:
    """Revisions (oldest first), the current one, and how long ago the current revision rolled out."""
    workload = ctx.kube.workload(params.kind)
    history = workload.history(params.namespace, params.deployment)
    current = workload.get(params.namespace, params.deployment)
    now = ctx.now()
    newest = max(history, key=lambda r: r.revision) if history else None
    created = newest.created if newest else None
    age = (now - created).total_seconds() if created else None
    return StepResult.ok(
        f"{len(history)} revision(s); current {current.revision}"
        + (f", rolled out {age / 60:.0f} min ago" if age is not None else ""),
        revisions=[
            {"revision": r.revision, "images": list(r.images), "change_cause": r.change_cause}
            for r in history[-10:]
        ],
        count=len(history),
        current_revision=current.revision,
        previous_revision=history[-2].revision if len(history) >= 2 else None,
        last_rollout_age_seconds=age,
        images=list(current.images),
    )


class SuggestRollbackParams(KindParams):
    """Suggest (never perform) a rollback when the Deployment rolled out recently."""

    namespace: str = Field(min_length=1)
    deployment: str = Field(min_length=1)
    max_age: Seconds = 3600.0


@step(
    "k8s.suggest_rollback",
    mutating=False,
    description="Offer a 'Roll back' button when the last rollout is recent (the ChatOps rollback flow)",
)
def suggest_rollback(ctx: StepContext, params: SuggestRollbackParams) -> StepResult:
    """Append a `rollback_suggested` timeline entry (Slack shows a Roll back button) for a recent rollout."""
    history = ctx.kube.workload(params.kind).history(params.namespace, params.deployment)
    if len(history) < 2:
        return StepResult.ok("no previous revision: nothing to suggest", suggested=False)
    newest = history[-1]
    age = (ctx.now() - newest.created).total_seconds() if newest.created else None
    if age is None or age > params.max_age:
        return StepResult.ok("no recent rollout: nothing to suggest", suggested=False, age_seconds=age)
    target = f"{params.namespace}/{params.deployment}"
    text = (
        f"{target} rolled out revision {newest.revision} ({', '.join(newest.images)}) "
        f"{age / 60:.0f} min ago; "
        f"rolling back to revision {history[-2].revision} ({', '.join(history[-2].images)}) is suggested"
    )
    if not ctx.dry_run:
        ctx.services.store.append_timeline(
            ctx.incident.id,
            "rollback_suggested",
            text + ".",
            {
                "namespace": params.namespace,
                "deployment": params.deployment,
                "kind": params.kind,
                "from_revision": newest.revision,
                "to_revision": history[-2].revision,
                "age_seconds": round(age),
            },
        )
    return StepResult.ok(text, suggested=True, age_seconds=age, to_revision=history[-2].revision)


class RolloutStatusParams(KindParams):
    """Wait for a workload's rollout to complete."""

    namespace: str = Field(min_length=1)
    deployment: str = Field(min_length=1)
    timeout: Seconds = 300.0
    interval: Seconds = 2.0


@step("k8s.rollout_status", mutating=False, description="Wait until a rollout completes (or its timeout)")
def rollout_status(ctx: StepContext, params: RolloutStatusParams) -> StepResult:
    """Poll the rollout like `kubectl rollout status`; fail on timeout or a passed progress deadline."""
    budget = max(0.0, min(params.timeout, ctx.deadline - time.monotonic()))
    status = _wait(ctx, params, budget)
    out = {
        "complete": status.complete,
        "deadline_exceeded": status.deadline_exceeded,
        "replicas": status.replicas,
        "available": status.available_replicas,
        "updated": status.updated_replicas,
        "message": status.message,
    }
    if status.complete:
        return StepResult.ok(status.message, **out)
    return StepResult.failed(f"{status.message} (waited {budget:.0f}s)", **out)


def _wait(ctx: StepContext, params: RolloutStatusParams, budget: float) -> Any:
    if params.kind == "Deployment":
        return ctx.kube.wait_for_rollout(
            params.namespace,
            params.deployment,
            timeout=budget,
            interval=params.interval,
            sleep=ctx.sleep,
            clock=lambda: ctx.now().timestamp(),
        )
    workload = ctx.kube.workload(params.kind)
    deadline = ctx.now().timestamp() + budget
    while True:
        status = workload.rollout_status(params.namespace, params.deployment)
        left = deadline - ctx.now().timestamp()
        if status.complete or status.deadline_exceeded or left <= 0:
            return status
        ctx.sleep(min(params.interval, max(0.0, left)))


# --- mutating steps ------------------------------------------------------------------------------


class ScaleParams(WorkloadTarget):
    """Scale to an absolute replica count or by a delta, bounded by min/max."""

    replicas: int | None = Field(None, ge=0)
    delta: int | None = None
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)

    @field_validator("delta")
    @classmethod
    def _nonzero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("delta must not be 0")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ScaleParams:
        """Exactly one of replicas/delta; min <= max."""
        if (self.replicas is None) == (self.delta is None):
            raise ValueError("give exactly one of replicas (absolute) or delta (+N / -N)")
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas is greater than max_replicas")
        return self


@step("k8s.scale", mutating=True, description="Scale a Deployment (absolute or +N), bounded by min/max")
def scale(ctx: StepContext, params: ScaleParams) -> StepResult:
    """Scale within [min_replicas, max_replicas] (and the global MAX_REPLICAS bound)."""
    workload = ctx.kube.workload(params.kind)
    current = workload.get(params.namespace, params.deployment)
    wanted = params.replicas if params.replicas is not None else current.replicas + (params.delta or 0)
    ceiling = min(params.max_replicas, ctx.settings.runbook_max_replicas)
    target = max(params.min_replicas, min(ceiling, wanted))
    out: dict[str, Any] = {
        "from": current.replicas,
        "to": target,
        "requested": wanted,
        "clamped": target != wanted,
        "dry_run": ctx.dry_run,
    }
    if target == current.replicas:
        return StepResult.ok(
            f"{params.target} already at {target} replicas"
            + (
                f" (wanted {wanted}, bounded to [{params.min_replicas}, {ceiling}])"
                if target != wanted
                else ""
            ),
            **out,
        )
    ctx.record_intent({"replicas": target, "from": current.replicas, "generation": current.generation})
    result = workload.scale(params.namespace, params.deployment, target)
    verb = "would scale" if ctx.dry_run else "scaled"
    clamp = f" (wanted {wanted}, bounded by max {ceiling})" if target != wanted else ""
    return StepResult.ok(
        f"{verb} {params.target} {result.previous_replicas} -> {result.replicas}{clamp}", changed=True, **out
    )


@recoverer("k8s.scale")
def _recover_scale(ctx: StepContext, params: ScaleParams, intent: Mapping[str, Any]) -> Recovery:
    current = ctx.kube.workload(params.kind).get(params.namespace, params.deployment)
    if current.replicas == intent["replicas"]:
        return Recovery(
            "applied",
            f"{params.target} is at {current.replicas} replicas, as intended",
            StepResult.ok(
                f"scaled {params.target} {intent['from']} -> {intent['replicas']} (confirmed after restart)",
                changed=True,
                **{"from": intent["from"], "to": intent["replicas"], "recovered": True},
            ),
        )
    if current.generation == intent["generation"]:
        return Recovery(
            "not_applied", f"{params.target} unchanged since the intent (generation {current.generation})"
        )
    return Recovery(
        "unknown",
        f"{params.target} changed since the intent (generation {intent['generation']} -> "
        f"{current.generation}) "
        f"but has {current.replicas} replicas, not {intent['replicas']}",
    )


class RestartParams(WorkloadTarget):
    """Rollout restart of a Deployment."""


@step(
    "k8s.rollout_restart", mutating=True, description="Restart a Deployment's pods (kubectl rollout restart)"
)
def rollout_restart(ctx: StepContext, params: RestartParams) -> StepResult:
    """Set the restartedAt annotation (a rolling restart; spec.restartAt for a Rollout)."""
    workload = ctx.kube.workload(params.kind)
    current = workload.get(params.namespace, params.deployment)
    stamp = ctx.now().astimezone(dt.UTC).replace(microsecond=0)
    ctx.record_intent(
        {"restarted_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "generation": current.generation}
    )
    result = workload.restart(params.namespace, params.deployment, now=stamp)
    verb = "would restart" if ctx.dry_run else "restarted"
    return StepResult.ok(
        f"{verb} {params.target}",
        changed=True,
        restarted_at=stamp.isoformat(),
        generation=result.generation,
        dry_run=ctx.dry_run,
    )


@recoverer("k8s.rollout_restart")
def _recover_restart(ctx: StepContext, params: RestartParams, intent: Mapping[str, Any]) -> Recovery:
    workload = ctx.kube.workload(params.kind)
    marker = workload.restart_marker(params.namespace, params.deployment)
    generation = workload.get(params.namespace, params.deployment).generation
    if marker == intent["restarted_at"]:
        return Recovery(
            "applied",
            "restartedAt carries the intended stamp",
            StepResult.ok(
                f"restarted {params.target} (confirmed after a restart)", changed=True, recovered=True
            ),
        )
    if generation == intent["generation"]:
        return Recovery("not_applied", f"{params.target} unchanged since the intent")
    return Recovery("unknown", f"{params.target} changed since the intent, but not by this restart")


class UndoParams(WorkloadTarget):
    """Roll a Deployment back to the previous (or a given) revision."""

    to_revision: int | None = Field(None, ge=1)


@step(
    "k8s.rollout_undo", mutating=True, description="Roll back to the previous revision (kubectl rollout undo)"
)
def rollout_undo(ctx: StepContext, params: UndoParams) -> StepResult:
    """Roll back; a no-op when the target template is already current."""
    workload = ctx.kube.workload(params.kind)
    current = workload.get(params.namespace, params.deployment)
    history = workload.history(params.namespace, params.deployment)
    target = params.to_revision or (history[-2].revision if len(history) >= 2 else None)
    ctx.record_intent(
        {
            "generation": current.generation,
            "images": list(current.images),
            "to_revision": target,
            "to_images": next((list(r.images) for r in history if r.revision == target), None),
        }
    )
    result = workload.undo(params.namespace, params.deployment, params.to_revision)
    verb = "would roll back" if ctx.dry_run else "rolled back"
    summary = (
        f"{verb} {params.target} from revision {result.from_revision} to {result.to_revision} "
        f"({', '.join(result.images)})"
        if result.changed
        else f"{params.target}: revision {result.to_revision} is already current; nothing to undo"
    )
    return StepResult.ok(
        summary,
        changed=result.changed,
        from_revision=result.from_revision,
        to_revision=result.to_revision,
        images=list(result.images),
        source=result.source,
        dry_run=ctx.dry_run,
    )


@recoverer("k8s.rollout_undo")
def _recover_undo(ctx: StepContext, params: UndoParams, intent: Mapping[str, Any]) -> Recovery:
    current = ctx.kube.workload(params.kind).get(params.namespace, params.deployment)
    if (
        intent.get("to_images") is not None
        and list(current.images) == intent["to_images"]
        and (current.generation != intent["generation"])
    ):
        return Recovery(
            "applied",
            f"{params.target} runs {', '.join(current.images)}, the rollback target",
            StepResult.ok(
                f"rolled back {params.target} to revision {intent['to_revision']} (confirmed after restart)",
                changed=True,
                to_revision=intent["to_revision"],
                images=list(current.images),
                recovered=True,
            ),
        )
    if current.generation == intent["generation"]:
        return Recovery("not_applied", f"{params.target} unchanged since the intent")
    return Recovery("unknown", f"{params.target} changed since the intent, not to the rollback target")


class DeletePodsParams(WorkloadTarget):
    """Delete (so the ReplicaSet recreates) a bounded fraction of a Deployment's pods."""

    only: Literal["unhealthy", "all"] = "unhealthy"
    """unhealthy: not Ready, crash-looping or OOMKilled pods only."""
    max_fraction: float = Field(0.5, gt=0, le=1)
    max_pods: int | None = Field(None, ge=1)


def _unhealthy(p: PodSummary) -> bool:
    return not p.ready or p.status in ("CrashLoopBackOff", "Error") or p.oom_killed


@step("k8s.delete_pods", mutating=True, description="Delete a bounded fraction of a Deployment's pods")
def delete_pods(ctx: StepContext, params: DeletePodsParams) -> StepResult:
    """Delete at most max_fraction (and the global MAX_POD_DELETE_FRACTION) of the pods, unhealthy first."""
    pods = _pods(ctx, params.namespace, params.deployment, params.kind)
    fraction = min(params.max_fraction, ctx.settings.runbook_max_pod_delete_fraction)
    allowed = math.floor(len(pods) * fraction)
    if params.max_pods is not None:
        allowed = min(allowed, params.max_pods)
    candidates = [p for p in pods if params.only == "all" or _unhealthy(p)]
    candidates.sort(key=lambda p: (p.ready, -p.restarts, p.name))
    chosen = [p.name for p in candidates[:allowed]]
    out: dict[str, Any] = {
        "total": len(pods),
        "candidates": len(candidates),
        "allowed": allowed,
        "pods": chosen,
        "dry_run": ctx.dry_run,
    }
    if not chosen:
        why = "no matching pods" if not candidates else f"bound allows 0 of {len(pods)} pods"
        return StepResult.ok(f"{params.target}: nothing deleted ({why})", **out)
    ctx.record_intent({"pods": chosen})
    for name in chosen:
        try:
            ctx.kube.delete_pod(params.namespace, name)
        except KubeNotFound:
            continue
    verb = "would delete" if ctx.dry_run else "deleted"
    return StepResult.ok(
        f"{verb} {len(chosen)} of {len(pods)} pod(s) of {params.target}: {', '.join(chosen)}",
        changed=True,
        **out,
    )


@recoverer("k8s.delete_pods")
def _recover_delete(ctx: StepContext, params: DeletePodsParams, intent: Mapping[str, Any]) -> Recovery:
    existing = {p.name for p in _pods(ctx, params.namespace, params.deployment, params.kind)}
    left = [name for name in intent["pods"] if name in existing]
    if not left:
        return Recovery(
            "applied",
            "every pod chosen before the restart is gone",
            StepResult.ok(
                f"deleted {len(intent['pods'])} pod(s) of {params.target} (confirmed after a restart)",
                changed=True,
                pods=list(intent["pods"]),
                recovered=True,
            ),
        )
    # Deleting a named pod is idempotent and the names were chosen within the bound: finish the job.
    ctx.scratch["intent_recorded"] = True
    for name in left:
        try:
            ctx.kube.delete_pod(params.namespace, name)
        except KubeNotFound:
            continue
    return Recovery(
        "applied",
        f"finished deleting {len(left)} remaining pod(s) chosen before the restart",
        StepResult.ok(
            f"deleted {len(intent['pods'])} pod(s) of {params.target} (finished after a restart)",
            changed=True,
            pods=list(intent["pods"]),
            recovered=True,
        ),
    )


# --- Helm (read only): ``k8s.helm_history`` --------------------------------------------------------
# The release is the one named in ``release``, or the one whose ``meta.helm.sh/release-name`` annotation
# the workload carries. It never fails an incident for lack of Helm: a workload Helm does not manage, an
# unreadable history (RBAC) or a missing workload is an OK result saying so (``helm_managed: false``).


class HelmHistoryParams(KindParams):
    """The release (or the workload whose release to read) and how many revisions to list."""

    namespace: str = Field(min_length=1, max_length=63)
    deployment: str | None = None
    """The workload's name (its kind in ``kind``); its Helm annotations name the release."""
    release: str | None = None
    release_namespace: str | None = None
    limit: int = Field(10, ge=1, le=50)


def _release(ctx: StepContext, params: HelmHistoryParams) -> tuple[str, str] | str:
    if params.release:
        return params.release, params.release_namespace or params.namespace
    if not params.deployment:
        return "no release and no workload named"
    obj = ctx.kube.workload(params.kind).raw(params.namespace, params.deployment)
    found = release_of(obj)
    if found is None:
        return f"{params.kind} {params.namespace}/{params.deployment} is not managed by Helm"
    return found


@step(
    "k8s.helm_history",
    mutating=False,
    description="Recent changes: a Helm release's revisions (chart, status, age) from its release Secrets",
)
def helm_history(ctx: StepContext, params: HelmHistoryParams) -> StepResult:
    """Revisions oldest first, the change line and the ``helm rollback`` to the previous revision."""
    try:
        found = _release(ctx, params)
        if isinstance(found, str):
            return StepResult.ok(found, helm_managed=False, count=0)
        release, namespace = found
        history = HelmHistory(ctx.kube).history(namespace, release)
    except PermanentError as exc:  # not found, forbidden: say so, do not fail the incident
        return StepResult.ok(f"Helm history unavailable: {exc}", helm_managed=False, count=0)
    if not history:
        return StepResult.ok(f"no release Secrets for {namespace}/{release}", helm_managed=True, count=0)
    now = ctx.now()
    newest = history[-1]
    out: dict[str, Any] = {
        "helm_managed": True,
        "release": release,
        "release_namespace": namespace,
        "count": len(history),
        "current_revision": newest.revision,
        "previous_revision": history[-2].revision if len(history) >= 2 else None,
        "chart": f"{newest.chart}-{newest.chart_version}",
        "status": newest.status,
        "last_deployed_age_seconds": (now - newest.last_deployed).total_seconds()
        if newest.last_deployed
        else None,
        "revisions": [r.as_output() for r in history[-params.limit :]],
    }
    if len(history) >= 2:
        out["rollback_command"] = rollback_command(release, history[-2].revision, namespace)
    return StepResult.ok(describe_change(history, now) or "", **out)
