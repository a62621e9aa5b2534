"""The rollback preview of an Argo Rollout: ``abort`` while a canary is in progress, else ``undo``.

For a Rollout mid-canary the right move is ``kubectl argo rollouts abort``: traffic and replicas go back to
the stable ReplicaSet at once, with no new revision. ``spec.template`` keeps the canary's image, so the
preview says so: a ``retry`` would roll it again, and ``undo`` makes the stable template permanent. Once no
canary is in progress (fully promoted, or already aborted), or when a person names a revision, the preview
is the plugin's ``undo`` to that revision (default: the previous one). Either way it shows the stable and
canary images, the canary's weight and step, the AnalysisRun that failed, the template diff (current ->
what will serve) and the server-side dry run of the exact patch. The refusals mirror the Deployment
preview's: not found, namespace not allowed, paused (``spec.paused``), generation not yet observed,
no history, target already current.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.errors import IncidentBotError
from bot.integrations.argo import HASH_LABEL, ArgoRollouts, RolloutState
from bot.integrations.kube import KubeClient, KubeNotFound, NamespaceNotAllowed, RevisionInfo, same_template
from bot.rollback.diff import diff_templates
from bot.rollback.preview import Preview, Refused, RevisionView, build_preview


def _hash_of(info: RevisionInfo) -> str | None:
    labels = ((info.template or {}).get("metadata") or {}).get("labels") or {}
    value = labels.get(HASH_LABEL)
    return str(value) if value else None


def _view(info: RevisionInfo) -> RevisionView:
    return RevisionView(info.revision, info.replicaset, info.created, info.images)


def _read(
    argo: ArgoRollouts, namespace: str, name: str
) -> tuple[RolloutState, dict[str, Any], list[RevisionInfo]]:
    try:
        return argo.status(namespace, name), argo.rollout_json(namespace, name), argo.history(namespace, name)
    except NamespaceNotAllowed as exc:
        raise Refused("namespace_not_allowed", str(exc)) from exc
    except KubeNotFound as exc:
        raise Refused("not_found", f"rollout {namespace}/{name} not found ({exc})") from exc


def _argo_summary(state: RolloutState, action: str, action_text: str) -> dict[str, Any]:
    failed = state.failed_analysis
    return {
        "action": action,
        "action_text": action_text,
        "phase": state.phase,
        "step": f"{state.step_index}/{state.step_count}" if state.step_index is not None else "-",
        "canary_weight": state.canary_weight,
        "canary_images": list(state.canary_images) if state.canary_in_progress else [],
        "stable_images": list(state.stable_images),
        "aborted": state.aborted,
        "failed_analysis": failed.name if failed else None,
        "failed_analysis_message": failed.message if failed else None,
        "failed_metrics": list(failed.failed_metrics) if failed else [],
    }


def _target(
    state: RolloutState,
    by_revision: dict[int, RevisionInfo],
    current: int,
    to_revision: int | None,
    what: str,
) -> RevisionInfo:
    if to_revision is not None:
        target = by_revision.get(to_revision)
        if target is None:
            known = ", ".join(str(r) for r in sorted(by_revision))
            raise Refused(
                "revision_not_found",
                f"revision {to_revision} is not in the history of {what} (known: {known})",
            )
        return target
    older = sorted(r for r in by_revision if r != current)
    if not older:
        raise Refused("no_previous_revision", f"{what} has no previous revision to roll back to")
    return by_revision[older[-1]]


def build_rollout_preview(
    argo: ArgoRollouts, namespace: str, name: str, to_revision: int | None, *, now: datetime
) -> Preview:
    """Abort (canary in progress, no revision named) or undo preview of a Rollout; or raise Refused."""
    state, raw, history = _read(argo, namespace, name)
    what = f"rollout {namespace}/{name}"
    if state.paused:
        raise Refused("paused", f"{what} is paused (spec.paused); `kubectl argo rollouts promote` it first")
    if state.generation > state.observed_generation:
        raise Refused(
            "rollout_in_progress",
            f"{what} changed a moment ago (generation {state.generation} not yet observed); request again",
        )
    by_revision = {r.revision: r for r in history}
    current_rev = state.revision or (max(by_revision) if by_revision else 0)
    current = by_revision.get(current_rev)
    if current is None:
        raise Refused("no_previous_revision", f"{what} has no rollout history")
    live = (raw.get("spec") or {}).get("template") or {}
    if state.canary_in_progress and to_revision is None:
        stable = next((r for r in history if _hash_of(r) == state.stable_hash), None)
        if stable is None:
            raise Refused(
                "no_previous_revision", f"{what}: the stable ReplicaSet {state.stable_hash} is gone"
            )
        text = (
            f"abort: the canary's {state.canary_weight}% goes back to the stable ReplicaSet "
            f"{stable.replicaset} (revision {stable.revision}) at once; spec.template keeps the canary "
            "image (a retry rolls it again; undo makes the stable template permanent)"
        )
        try:
            argo.abort(namespace, name, dry_run=True)
            ok, message = True, "server-side dry run accepted the abort (status.abort: true)"
        except IncidentBotError as exc:
            ok, message = False, f"server-side dry run refused: {exc}"
        summary = _argo_summary(state, "abort", text)
        target = stable
    else:
        target = _target(state, by_revision, current_rev, to_revision, what)
        if target.revision == current_rev or same_template(target.template, live):
            raise Refused("target_is_current", f"revision {target.revision} of {what} is what runs now")
        try:
            result = argo.undo(namespace, name, target.revision, dry_run=True)
            ok, message = True, f"server-side dry run accepted the undo to revision {result.to_revision}"
        except IncidentBotError as exc:
            ok, message = False, f"server-side dry run refused: {exc}"
        text = f"undo: spec.template back to revision {target.revision}; the Rollout's strategy rolls it out"
        summary = _argo_summary(state, "undo", text)
    return Preview(
        namespace=namespace,
        deployment=name,
        current=_view(current),
        target=_view(target),
        changes=tuple(diff_templates(live, target.template)),
        dry_run_ok=ok,
        dry_run_message=message,
        generation=state.generation,
        revisions=tuple(sorted(by_revision)),
        at=now,
        kind="Rollout",
        argo=summary,
    )


def preview_workload(
    kube: KubeClient, namespace: str, name: str, to_revision: int | None, *, now: datetime, kind: str | None
) -> Preview:
    """The rollback preview of any kind, the one the flow stores and the CLI's --dry-run prints: a Rollout's
    own (abort or undo); another named kind's (bot.rollback.preview); no kind: the Deployment, or else the
    Rollout of that name."""
    if kind == "Rollout":
        return build_rollout_preview(ArgoRollouts(kube), namespace, name, to_revision, now=now)
    if kind is not None:
        return build_preview(kube, namespace, name, to_revision, now=now, kind=kind)
    try:
        return build_preview(kube, namespace, name, to_revision, now=now)
    except Refused as refused:
        if refused.code != "not_found":
            raise
        first = refused
    try:
        return build_rollout_preview(ArgoRollouts(kube), namespace, name, to_revision, now=now)
    except Refused as again:
        if again.code == "not_found":
            raise first from None
        raise
