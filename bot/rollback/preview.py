"""The preview of a rollback: current and target revisions, what changes, the server-side dry run.

`build_preview` reads the Deployment and its history through the Kubernetes adapter and refuses, with
a reason a person can act on, whatever `kubectl rollout undo` would refuse or do nothing for, plus a
Deployment whose latest change the controller has not observed yet. The diff itself is pure
(`bot.rollback.diff`); the dry run is the adapter's undo with ``dryRun=All``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import IncidentBotError, PermanentError
from bot.integrations.kube import (
    HASH_LABEL,
    KubeClient,
    KubeNotFound,
    NamespaceNotAllowed,
    RevisionInfo,
    same_template,
)
from bot.rollback.diff import Change, diff_templates


class Refused(PermanentError):
    """The rollback cannot go ahead; `code` names the rule, the message says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RevisionView:
    """One revision as the preview shows it."""

    revision: int
    replicaset: str
    created: datetime | None
    images: tuple[str, ...]

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the revision's ReplicaSet was created."""
        return (now - self.created).total_seconds() if self.created else None


@dataclass(frozen=True)
class Preview:
    """Everything a person needs to approve a rollback."""

    namespace: str
    deployment: str
    current: RevisionView
    target: RevisionView
    changes: tuple[Change, ...]
    dry_run_ok: bool
    dry_run_message: str
    generation: int
    revisions: tuple[int, ...]
    at: datetime
    kind: str = "Deployment"
    argo: dict[str, Any] | None = None
    """For a Rollout (bot.rollback.preview_argo): abort or undo, weight, stable/canary images, analysis."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored with the request."""

        def rev(r: RevisionView) -> dict[str, Any]:
            return {
                "revision": r.revision,
                "replicaset": r.replicaset,
                "created": r.created.isoformat() if r.created else None,
                "age_s": r.age_s(self.at),
                "images": list(r.images),
            }

        return {
            "namespace": self.namespace,
            "deployment": self.deployment,
            "current": rev(self.current),
            "target": rev(self.target),
            "changes": [{"kind": c.kind, "container": c.container, "text": c.text} for c in self.changes],
            "dry_run_ok": self.dry_run_ok,
            "dry_run_message": self.dry_run_message,
            "generation": self.generation,
            "revisions": list(self.revisions),
            "at": self.at.isoformat(),
            **({"kind": self.kind, "argo": self.argo} if self.argo is not None else {}),
        }


def _view(info: RevisionInfo) -> RevisionView:
    return RevisionView(info.revision, info.replicaset, info.created, info.images)


def _clean(template: Any) -> Any:
    copy = dict(template)
    meta = dict(copy.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    copy["metadata"] = meta
    return copy


def build_preview(
    kube: KubeClient, namespace: str, deployment: str, to_revision: int | None, *, now: datetime
) -> Preview:
    """Read the Deployment and its history, diff current vs target, dry-run the undo; or raise Refused."""
    try:
        dep = kube.get_deployment(namespace, deployment)
        raw = kube.deployment_json(namespace, deployment)
        history = kube.rollout_history(namespace, deployment)
    except NamespaceNotAllowed as exc:
        raise Refused("namespace_not_allowed", str(exc)) from exc
    except KubeNotFound as exc:
        raise Refused("not_found", f"deployment {namespace}/{deployment} not found ({exc})") from exc
    target_name = f"{namespace}/{deployment}"
    if dep.paused:
        raise Refused(
            "paused",
            f"{target_name} is paused; resume it (kubectl rollout resume) before rolling back",
        )
    if dep.generation > dep.observed_generation:
        raise Refused(
            "rollout_in_progress",
            f"{target_name} changed a moment ago (generation {dep.generation} not yet observed by the "
            "controller); wait for the rollout to start, then request again",
        )
    by_revision = {r.revision: r for r in history}
    current_rev = dep.revision or (max(by_revision) if by_revision else 0)
    current = by_revision.get(current_rev)
    if current is None:
        raise Refused("no_previous_revision", f"{target_name} has no rollout history")
    if to_revision is not None:
        target = by_revision.get(to_revision)
        if target is None:
            raise Refused(
                "revision_not_found",
                f"revision {to_revision} is not in the history of {target_name} "
                f"(known: {', '.join(str(r) for r in sorted(by_revision))})",
            )
    else:
        older = sorted(r for r in by_revision if r != current_rev)
        if not older:
            raise Refused("no_previous_revision", f"{target_name} has no previous revision to roll back to")
        target = by_revision[older[-1]]
    live_template = (raw.get("spec") or {}).get("template") or {}
    if target.revision == current_rev or same_template(_clean(target.template), live_template):
        raise Refused(
            "target_is_current",
            f"revision {target.revision} of {target_name} is what runs now; nothing to roll back",
        )
    changes = tuple(diff_templates(live_template, target.template))
    try:
        result = kube.rollout_undo(namespace, deployment, to_revision=target.revision, dry_run=True)
        ok, message = True, f"server-side dry run accepted the change to revision {result.to_revision}"
    except IncidentBotError as exc:
        ok, message = False, f"server-side dry run refused: {exc}"
    return Preview(
        namespace=namespace,
        deployment=deployment,
        current=_view(current),
        target=_view(target),
        changes=changes,
        dry_run_ok=ok,
        dry_run_message=message,
        generation=dep.generation,
        revisions=tuple(sorted(by_revision)),
        at=now,
    )


def age_text(seconds: float | None) -> str:
    """`42s`, `17 min`, `3 h`, `2 d` ago, or `age unknown`."""
    if seconds is None:
        return "age unknown"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def argo_lines(argo: dict[str, Any]) -> list[str]:
    """What a Rollout's preview adds: the action and its meaning, the canary, the failed analysis."""
    lines = [f"  action:  {argo['action_text']}"]
    if argo.get("canary_images"):
        lines.append(
            f"  canary:  {', '.join(argo['canary_images'])} at {argo['canary_weight']}% "
            f"({argo['phase']}, step {argo['step']})"
        )
    lines.append(f"  stable:  {', '.join(argo['stable_images']) or 'unknown'}")
    if argo.get("failed_analysis"):
        lines.append(
            f"  analysis {argo['failed_analysis']} failed: {argo.get('failed_analysis_message') or ''}"
        )
    return lines


def preview_lines(p: dict[str, Any]) -> list[str]:
    """The stored preview as plain text lines (the CLI prints these)."""
    cur, tgt = p["current"], p["target"]
    argo = p.get("argo")
    what = (
        f"{'Abort' if argo and argo['action'] == 'abort' else 'Rollback'} of Rollout"
        if argo
        else "Rollback of"
    )
    lines = [
        f"{what} {p['namespace']}/{p['deployment']}",
        *(argo_lines(argo) if argo else []),
        f"  current: revision {cur['revision']} ({age_text(cur['age_s'])}): {', '.join(cur['images'])}",
        f"  target:  revision {tgt['revision']} ({age_text(tgt['age_s'])}): {', '.join(tgt['images'])}",
        "  changes:",
    ]
    changes: Sequence[dict[str, str]] = p["changes"]
    for c in changes or [{"container": "", "text": "none in the pod template"}]:
        where = f"[{c['container']}] " if c["container"] else ""
        lines.append(f"    - {where}{c['text']}")
    lines.append(f"  dry run: {p['dry_run_message']}")
    return lines
