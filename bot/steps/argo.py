"""Argo Rollouts steps: ``argo.status`` (read) and abort, retry, promote, pause, undo (mutating).

Each takes ``namespace`` and ``name`` (the Rollout's) plus typed params; the mutating ones record their
intent (the exact patch and the Rollout's generation/abort flag before acting) and have a recoverer, so a
worker killed mid-abort never aborts twice nor loses the result. ``argo.status`` answers
``kind: Deployment`` without touching the API (``is_rollout: false``), so a runbook can run it first for
any workload and gate the rest with ``when: steps.<id>.canary_in_progress``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field

from bot.integrations.argo import RolloutState
from bot.integrations.kube import KubeNotFound
from bot.plan.steptypes import (
    Recovery,
    StepContext,
    StepParams,
    StepResult,
    TargetParams,
    recoverer,
    step,
)


class RolloutParams(TargetParams):
    """A Rollout: ``namespace`` and ``name`` (the guards' target is ``namespace/name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    deployment: str = Field(alias="name", min_length=1, max_length=253)


class StatusParams(StepParams):
    """Status of a Rollout (or nothing to do for another kind)."""

    namespace: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    kind: str | None = "Rollout"
    """The workload's kind (a runbook passes ``workload_kind``); anything but Rollout is reported as such;
    ``None`` (the kind is unknown) looks the Rollout up and answers ``is_rollout: false`` on a 404."""


def _summary(s: RolloutState) -> str:
    step = f"step {s.step_index}/{s.step_count}" if s.step_index is not None else "no steps"
    text = f"Rollout {s.namespace}/{s.name}: {s.phase}, {step}, canary weight {s.canary_weight}%"
    if s.canary_in_progress:
        text += (
            f"; canary {', '.join(s.canary_images) or s.canary_hash} vs stable {', '.join(s.stable_images)}"
        )
    if s.aborted:
        text += "; aborted"
    failed = s.failed_analysis
    if failed:
        text += f"; analysis {failed.name} {failed.phase}" + (
            f" ({failed.message})" if failed.message else ""
        )
    return text


def _not_a_rollout(params: StatusParams, kind: str | None) -> StepResult:
    what = f"a {kind}" if kind else "not found as a Rollout (kind unknown)"
    return StepResult.ok(
        f"{params.namespace}/{params.name} is {what}, not an Argo Rollout",
        is_rollout=False,
        canary_in_progress=False,
        aborted=False,
        kind=kind,
    )


@step("argo.status", mutating=False, description="Argo Rollout phase, step, canary weight, analysis runs")
def status(ctx: StepContext, params: StatusParams) -> StepResult:
    """The Rollout's state; for another kind an OK result with ``is_rollout: false`` (no API call)."""
    if params.kind not in ("Rollout", None):
        return _not_a_rollout(params, params.kind)
    try:
        state = ctx.kube.argo.status(params.namespace, params.name)
    except KubeNotFound:
        if params.kind is None:
            return _not_a_rollout(params, None)
        raise
    return StepResult.ok(_summary(state), is_rollout=True, **state.as_output())


# --- abort / retry -------------------------------------------------------------------------------


@step("argo.abort", mutating=True, description="Abort a Rollout's update: back to the stable ReplicaSet")
def abort(ctx: StepContext, params: RolloutParams) -> StepResult:
    """``kubectl argo rollouts abort``; a no-op when already aborted or fully promoted."""
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    out: dict[str, Any] = {
        "stable_images": list(state.stable_images),
        "canary_images": list(state.canary_images),
    }
    if state.aborted:
        return StepResult.ok(f"Rollout {params.target} is already aborted", **out)
    if state.fully_promoted:
        return StepResult.ok(f"Rollout {params.target} is fully promoted: nothing to abort", **out)
    ctx.record_intent({"abort": True, "generation": state.generation, "canary_hash": state.canary_hash})
    ctx.kube.argo.abort(params.namespace, params.deployment)
    verb = "would abort" if ctx.dry_run else "aborted"
    return StepResult.ok(
        f"{verb} Rollout {params.target} at canary weight {state.canary_weight}%: back to stable "
        f"{', '.join(state.stable_images) or state.stable_hash}",
        changed=True,
        dry_run=ctx.dry_run,
        from_weight=state.canary_weight,
        **out,
    )


def _recover_flag(ctx: StepContext, params: RolloutParams, intent: Mapping[str, Any], verb: str) -> Recovery:
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    if state.aborted == intent["abort"]:
        return Recovery(
            "applied",
            f"status.abort is {str(state.aborted).lower()}, as intended",
            StepResult.ok(
                f"{verb} Rollout {params.target} (confirmed after a restart)", changed=True, recovered=True
            ),
        )
    if state.canary_hash == intent["canary_hash"]:
        # The same update is still there and the flag is unset: the patch never landed; setting a flag is
        # idempotent, so the engine acts afresh.
        return Recovery("not_applied", f"status.abort still {str(state.aborted).lower()} on the same update")
    return Recovery("unknown", f"Rollout {params.target} moved to another update since the intent")


@recoverer("argo.abort")
def _recover_abort(ctx: StepContext, params: RolloutParams, intent: Mapping[str, Any]) -> Recovery:
    return _recover_flag(ctx, params, intent, "aborted")


@step("argo.retry", mutating=True, description="Retry an aborted Rollout (clear status.abort)")
def retry(ctx: StepContext, params: RolloutParams) -> StepResult:
    """``kubectl argo rollouts retry rollout``; a no-op unless aborted."""
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    if not state.aborted:
        return StepResult.ok(f"Rollout {params.target} is not aborted: nothing to retry")
    ctx.record_intent({"abort": False, "generation": state.generation, "canary_hash": state.canary_hash})
    ctx.kube.argo.retry(params.namespace, params.deployment)
    return StepResult.ok(
        f"{'would retry' if ctx.dry_run else 'retried'} Rollout {params.target}",
        changed=True,
        dry_run=ctx.dry_run,
    )


@recoverer("argo.retry")
def _recover_retry(ctx: StepContext, params: RolloutParams, intent: Mapping[str, Any]) -> Recovery:
    return _recover_flag(ctx, params, intent, "retried")


# --- promote / pause -----------------------------------------------------------------------------


class PromoteParams(RolloutParams):
    """Promote one step, or ``full`` (skip every remaining step and analysis)."""

    full: bool = False


@step("argo.promote", mutating=True, description="Promote a Rollout one step (or --full)")
def promote(ctx: StepContext, params: PromoteParams) -> StepResult:
    """``kubectl argo rollouts promote [--full]``."""
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    if params.full and state.fully_promoted:
        return StepResult.ok(f"Rollout {params.target} is already fully promoted")
    ctx.record_intent(
        {
            "full": params.full,
            "step_index": state.step_index,
            "generation": state.generation,
            "paused": state.paused,
        }
    )
    result = ctx.kube.argo.promote(params.namespace, params.deployment, full=params.full)
    verb = "would promote" if ctx.dry_run else "promoted"
    return StepResult.ok(
        f"{verb} Rollout {params.target}" + (" fully" if params.full else f" from step {state.step_index}"),
        changed=result.changed,
        patches=[{"subresource": p.subresource, "body": p.body} for p in result.patches],
        dry_run=ctx.dry_run,
    )


@recoverer("argo.promote")
def _recover_promote(ctx: StepContext, params: PromoteParams, intent: Mapping[str, Any]) -> Recovery:
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    moved = (
        state.fully_promoted
        if intent["full"]
        else (state.step_index != intent["step_index"] or state.paused != intent["paused"])
    )
    if moved:
        return Recovery(
            "applied",
            "the Rollout moved past the step it was on",
            StepResult.ok(
                f"promoted Rollout {params.target} (confirmed after a restart)", changed=True, recovered=True
            ),
        )
    # Promoting twice skips two steps: never repeat blindly.
    return Recovery(
        "unknown", f"Rollout {params.target} is still at step {state.step_index}; promote not confirmed"
    )


@step("argo.pause", mutating=True, description="Pause a Rollout (spec.paused)")
def pause(ctx: StepContext, params: RolloutParams) -> StepResult:
    """``kubectl argo rollouts pause``; a no-op when already paused."""
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    if state.paused:
        return StepResult.ok(f"Rollout {params.target} is already paused")
    ctx.record_intent({"paused": True, "generation": state.generation})
    ctx.kube.argo.pause(params.namespace, params.deployment)
    return StepResult.ok(
        f"{'would pause' if ctx.dry_run else 'paused'} Rollout {params.target}",
        changed=True,
        dry_run=ctx.dry_run,
    )


@recoverer("argo.pause")
def _recover_pause(ctx: StepContext, params: RolloutParams, intent: Mapping[str, Any]) -> Recovery:
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    if state.paused:
        return Recovery(
            "applied",
            "spec.paused is true",
            StepResult.ok(
                f"paused Rollout {params.target} (confirmed after a restart)", changed=True, recovered=True
            ),
        )
    if state.generation == intent["generation"]:
        return Recovery("not_applied", f"Rollout {params.target} unchanged since the intent")
    return Recovery("unknown", f"Rollout {params.target} changed since the intent but is not paused")


# --- undo ----------------------------------------------------------------------------------------


class UndoParams(RolloutParams):
    """Roll the Rollout's template back to a revision (default: the previous one)."""

    to_revision: int | None = Field(None, ge=1)


@step(
    "argo.undo", mutating=True, description="Roll a Rollout back to a revision (kubectl argo rollouts undo)"
)
def undo(ctx: StepContext, params: UndoParams) -> StepResult:
    """JSON-patch ``/spec/template`` to the revision's template; a no-op when it is already current."""
    history = ctx.kube.argo.history(params.namespace, params.deployment)
    state = ctx.kube.argo.status(params.namespace, params.deployment)
    target = params.to_revision or (history[-2].revision if len(history) >= 2 else None)
    ctx.record_intent(
        {
            "generation": state.generation,
            "to_revision": target,
            "to_images": next((list(r.images) for r in history if r.revision == target), None),
        }
    )
    result = ctx.kube.argo.undo(params.namespace, params.deployment, params.to_revision)
    verb = "would roll back" if ctx.dry_run else "rolled back"
    summary = (
        f"{verb} Rollout {params.target} to revision {result.to_revision} ({', '.join(result.images)})"
        if result.changed
        else f"Rollout {params.target}: revision {result.to_revision} is already current; nothing to undo"
    )
    return StepResult.ok(
        summary,
        changed=result.changed,
        from_revision=result.from_revision,
        to_revision=result.to_revision,
        images=list(result.images),
        dry_run=ctx.dry_run,
    )


@recoverer("argo.undo")
def _recover_undo(ctx: StepContext, params: UndoParams, intent: Mapping[str, Any]) -> Recovery:
    workload = ctx.kube.argo.rollout_json(params.namespace, params.deployment)
    containers = (((workload.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    images = [str(c.get("image", "")) for c in containers]
    generation = int((workload.get("metadata") or {}).get("generation") or 0)
    if intent.get("to_images") is not None and images == intent["to_images"]:
        return Recovery(
            "applied",
            f"Rollout {params.target} runs {', '.join(images)}, the rollback target",
            StepResult.ok(
                f"rolled back Rollout {params.target} to revision {intent['to_revision']} (after a restart)",
                changed=True,
                to_revision=intent["to_revision"],
                images=images,
                recovered=True,
            ),
        )
    if generation == intent["generation"]:
        return Recovery("not_applied", f"Rollout {params.target} unchanged since the intent")
    return Recovery(
        "unknown", f"Rollout {params.target} changed since the intent, not to the rollback target"
    )
